//! `reprobox reproduce PROFILE BUILD_VERSION [--backend container|microvm] [--kernel PATH
//! [--initrd PATH]] [--vm-memory MIB] [--vm-cpus N] [--offline] [--out DIR] [--json]`

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::cmd::backend::BackendArgs;
use crate::cmd::store::StoreArg;
use crate::error::{Error, Result};
use crate::pipeline::{self, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: crate::cmd::plan::Target,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Use only what the store holds: nothing leaves the machine; a miss fails the run.
    #[arg(long)]
    pub offline: bool,
    /// Output directory: report.json, summary.txt, env.lock, inputs.lock, attestation.json,
    /// artifacts/ [default: reprobox-out/PROFILE-BUILD_VERSION].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip the profile's rollback steps: build in the environment as the base has it.
    #[arg(long)]
    pub no_rollback: bool,
    /// Roll the build environment to this archive day (YYYY/MM/DD) instead of the profile's
    /// (the build day, or the snapshot day: `reprobox plan` says which), to see what a later
    /// (or earlier) environment does to the output.
    #[arg(long, value_name = "YYYY/MM/DD", conflicts_with = "no_rollback")]
    pub env_day: Option<String>,
    /// Kill any one command of the build after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Keep the work directory (the environment root and the workspace) for inspection.
    #[arg(long)]
    pub keep_work: bool,
    /// Prepare the environment from the base for this run alone: do not use, or add to,
    /// the store's prepared environments (`reprobox store envs`).
    #[arg(long)]
    pub fresh_env: bool,
    /// Which Dockerfile the image step builds: `rebuilt`, the one the build regenerated
    /// (over the rebuilt rootfs); `published`, the release's own Dockerfile.repro at the tag,
    /// whose verify stage downloads the published rootfs (through the egress, pinned by the
    /// release's hash), to tell image drift from rootfs drift.
    #[arg(long, value_enum, value_name = "FROM", default_value_t = ImageFromArg::Rebuilt)]
    pub image_from: ImageFromArg,
    /// Which packages make-rootfs.sh installs: `snapshot`, the snapshot day's repositories;
    /// `published`, exactly the set the published rootfs records in its pacman database
    /// (for releases built from live mirrors), from the archive's `packages/` tree.
    #[arg(long, value_enum, value_name = "FROM", default_value_t = PackagesFromArg::Snapshot)]
    pub packages_from: PackagesFromArg,
    /// Print only the report (JSON) on stdout; the build's own output goes to stderr.
    #[arg(long)]
    pub json: bool,
}

/// `--image-from`: [`pipeline::ImageFrom`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFromArg {
    /// The Dockerfile the build regenerated, over the rebuilt rootfs.
    Rebuilt,
    /// The release's own Dockerfile.repro, over the published rootfs.
    Published,
}

/// `--packages-from`: [`pipeline::PackagesFrom`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackagesFromArg {
    /// The snapshot day's repositories.
    Snapshot,
    /// The published rootfs' own package set.
    Published,
}

/// Send fd 1 to stderr until dropped, so the build's output cannot mix with the JSON.
pub(crate) struct StdoutToStderr {
    saved: OwnedFd,
}

impl StdoutToStderr {
    pub(crate) fn new() -> Result<StdoutToStderr> {
        // SAFETY: dup/dup2 on the process's standard descriptors.
        unsafe {
            let saved = libc::dup(1);
            if saved < 0 || libc::dup2(2, 1) < 0 {
                return Err(Error::Environment("cannot redirect stdout".into()));
            }
            Ok(StdoutToStderr {
                saved: OwnedFd::from_raw_fd(saved),
            })
        }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        // SAFETY: restores fd 1 from the descriptor saved above.
        unsafe {
            libc::dup2(self.saved.as_raw_fd(), 1);
        }
    }
}

pub fn execute(a: Args) -> Result<i32> {
    let backend = a
        .backend
        .choice(crate::backend::microvm::DEFAULT_MEMORY_MIB)?;
    let plan = a.target.plan()?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("reprobox-out").join(format!("{}-{}", plan.profile, plan.version))
    });
    let opts = Options {
        offline: a.offline,
        rollback: !a.no_rollback,
        env_day: a
            .env_day
            .as_deref()
            .map(crate::inputs::archive::parse_day)
            .transpose()?,
        out: out.clone(),
        progress: match crate::progress::mode() {
            // The JSON alone on stdout, and off a terminal no progress lines either; the
            // build's own output goes to stderr as it always did.
            crate::progress::Mode::Lines if a.json && !std::io::stderr().is_terminal() => {
                crate::progress::Mode::Off
            }
            m => m,
        },
        timeout: a.timeout.map(std::time::Duration::from_secs),
        keep_work: a.keep_work,
        use_prepared_envs: !a.fresh_env,
        backend,
        image_from: match a.image_from {
            ImageFromArg::Rebuilt => pipeline::ImageFrom::Rebuilt,
            ImageFromArg::Published => pipeline::ImageFrom::Published,
        },
        packages_from: match a.packages_from {
            PackagesFromArg::Snapshot => pipeline::PackagesFrom::Snapshot,
            PackagesFromArg::Published => pipeline::PackagesFrom::Published,
        },
    };
    // What this run needs of the host, tried before any work (`reprobox doctor`); from here
    // on a failure still writes the report (verdict incomplete, the stage, the reason).
    let needs = crate::doctor::Needs::jobs_on(&opts.backend, !a.fresh_env);
    let started = crate::doctor::preflight(needs)
        .map_err(|e| ("host checks", e))
        .and_then(|()| a.store.open().map_err(|e| ("store", e)));
    let outcome = match started {
        Err((stage, e)) => pipeline::stopped_before(&plan, &opts, stage, e)?,
        Ok(store) => {
            let _redirect = if a.json {
                Some(StdoutToStderr::new()?)
            } else {
                None
            };
            pipeline::reproduce(&plan, store, &opts)?
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.report).expect("plain JSON")
        );
    } else if crate::progress::quiet() {
        println!("{}", outcome.report.verdict_line());
    } else {
        print!("{}", outcome.report.summary());
        println!("\nreport: {}", out.join("report.json").display());
    }
    // A run that stopped: its report is written and shown; the error is printed and gives
    // the exit code.
    let outcome = outcome.or_stopped()?;
    Ok(outcome.exit_code)
}
