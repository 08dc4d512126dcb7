//! `reprobox reproduce PROFILE BUILD_VERSION [--backend container|microvm] [--kernel PATH
//! [--initrd PATH]] [--vm-memory MIB] [--vm-cpus N] [--offline] [--out DIR] [--json]`

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::cmd::store::StoreArg;
use crate::error::{Error, Result};
use crate::pipeline::{self, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Namespaces, pivot_root, dropped capabilities, Landlock (src/sandbox).
    Container,
    /// qemu `-M microvm` guests (src/vm) with their own kernel and wall clock, sharing one
    /// root disk for the whole reproduction.
    Microvm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: crate::cmd::plan::Target,
    #[command(flatten)]
    pub store: StoreArg,
    /// Where the build runs.
    #[arg(long, value_enum, default_value = "container")]
    pub backend: Backend,
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
    /// Roll the build environment to this archive day (YYYY/MM/DD) instead of the snapshot
    /// day, to see what a later (or earlier) environment does to the output.
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
    /// Print only the report (JSON) on stdout; the build's own output goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// microVM: the guest kernel (bzImage) [default: the `linux` package of the
    /// environment's day from the archive].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// microVM: an extra initramfs loaded before reprobox's own (needs --kernel).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// microVM: guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = pipeline::microvm::DEFAULT_MEMORY_MIB)]
    pub vm_memory: u64,
    /// microVM: guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub vm_cpus: u32,
}

/// Send fd 1 to stderr until dropped, so the build's output cannot mix with the JSON.
struct StdoutToStderr {
    saved: OwnedFd,
}

impl StdoutToStderr {
    fn new() -> Result<StdoutToStderr> {
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
    let backend = match a.backend {
        Backend::Container => {
            if a.kernel.is_some() || a.initrd.is_some() {
                return Err(Error::bad_input(
                    "--kernel/--initrd",
                    "only with --backend microvm",
                ));
            }
            pipeline::BackendChoice::Container
        }
        Backend::Microvm => {
            if a.initrd.is_some() && a.kernel.is_none() {
                return Err(Error::bad_input(
                    "--initrd",
                    "--initrd needs --kernel PATH (a bzImage) as well",
                ));
            }
            if a.vm_cpus == 0 || a.vm_memory < 256 {
                return Err(Error::bad_input(
                    "--vm-cpus/--vm-memory",
                    "at least 1 CPU and 256 MiB",
                ));
            }
            pipeline::BackendChoice::Microvm(pipeline::microvm::MicrovmChoice {
                kernel: a.kernel.clone(),
                initrd: a.initrd.clone(),
                memory_mib: a.vm_memory,
                cpus: a.vm_cpus,
            })
        }
    };
    let plan = a.target.plan()?;
    let store = a.store.open()?;
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
        progress: !a.json || std::io::stderr().is_terminal(),
        timeout: a.timeout.map(std::time::Duration::from_secs),
        keep_work: a.keep_work,
        env_cache: !a.fresh_env,
        backend,
    };
    let outcome = {
        let _redirect = if a.json {
            Some(StdoutToStderr::new()?)
        } else {
            None
        };
        pipeline::reproduce(&plan, store, &opts)?
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.report).expect("plain JSON")
        );
    } else {
        print!("{}", outcome.report.summary());
        println!("\nreport: {}", out.join("report.json").display());
    }
    Ok(outcome.exit_code)
}
