//! `reprobox bisect PROFILE VERSION [--good-day D1] [--bad-day D2] [--out DIR] [--json]`:
//! the first environment day whose outcome changes, and the package version change(s)
//! responsible (`src/bisect/`). Every probe is an ordinary reproduction, kept under
//! `OUT/probes/<label>/`; the answer is one line and `OUT/bisect.json`.

use std::path::PathBuf;

use crate::cmd::backend::BackendArgs;
use crate::cmd::store::StoreArg;
use crate::error::Result;
use crate::pipeline::{ImageFrom, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: crate::cmd::plan::Target,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The day whose environment gives the expected outcome (YYYY/MM/DD) [default: the
    /// snapshot day].
    #[arg(long, value_name = "YYYY/MM/DD")]
    pub good_day: Option<String>,
    /// The day whose environment changes it (YYYY/MM/DD) [default: the latest day the
    /// archive lists or the store holds].
    #[arg(long, value_name = "YYYY/MM/DD")]
    pub bad_day: Option<String>,
    /// Use only what the store holds (days, packages, everything a probe needs).
    #[arg(long)]
    pub offline: bool,
    /// Output directory: bisect.json and probes/<label>/ (each an ordinary reproduction's
    /// output) [default: reprobox-out/bisect-PROFILE-BUILD_VERSION].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Kill any one command of a probe after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print only bisect.json on stdout; the probes' output goes to stderr.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(a: Args) -> Result<i32> {
    crate::bisect::check_days(a.good_day.as_deref(), a.bad_day.as_deref())?;
    let backend = a
        .backend
        .choice(crate::backend::microvm::DEFAULT_MEMORY_MIB)?;
    let plan = a.target.plan()?;
    crate::doctor::preflight(crate::doctor::Needs::jobs_on(&backend, true))?;
    let store = a.store.open()?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("reprobox-out").join(format!("bisect-{}-{}", plan.profile, plan.version))
    });
    let options = Options {
        offline: a.offline,
        rollback: true,
        env_day: None,
        out: out.clone(),
        // Many reproductions in a row: plain lines (one spinner per probe would hide which
        // probe is running).
        progress: match crate::progress::mode() {
            crate::progress::Mode::Off => crate::progress::Mode::Off,
            _ => crate::progress::Mode::Lines,
        },
        timeout: a.timeout.map(std::time::Duration::from_secs),
        keep_work: false,
        use_prepared_envs: true,
        backend,
        image_from: ImageFrom::Rebuilt,
        packages_from: crate::pipeline::PackagesFrom::Snapshot,
    };
    let req = crate::bisect::Request {
        good_day: a.good_day,
        bad_day: a.bad_day,
        options,
    };
    let report = {
        let _redirect = if a.json {
            Some(crate::cmd::reproduce::StdoutToStderr::new()?)
        } else {
            None
        };
        crate::bisect::bisect(&plan, store, &req)?
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain JSON")
        );
    } else {
        println!("{}", report.message);
        if !crate::progress::quiet() {
            for p in &report.probes {
                println!(
                    "  probe {:<14} {:<10} {}{}  {}",
                    p.label,
                    p.day,
                    format!("{:?}", p.signature.verdict).to_lowercase(),
                    if p.changed { " (changed)" } else { "" },
                    out.join(&p.report).display()
                );
            }
            println!("report: {}", out.join("bisect.json").display());
        }
    }
    Ok(0)
}
