//! `reprobox drift A.lock B.lock [--json]`: which environment packages differ; and
//! `reprobox drift --release V1 --release V2 [--profile P] [-L NAME=URL]…`: which packages
//! differ between two releases' published rootfs (each read into a lock from its own pacman
//! database, `pipeline::published`).

use std::path::PathBuf;

use crate::cmd::store::StoreArg;
use crate::envlock::{EnvLock, drift};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first environment lock (for example the snapshot day's, or the original build's).
    #[arg(required_unless_present = "releases")]
    pub a: Option<PathBuf>,
    /// The second environment lock.
    #[arg(required_unless_present = "releases")]
    pub b: Option<PathBuf>,
    /// Compare two releases' published package sets instead of two lock files: give exactly
    /// two, the older first (BUILD_VERSION, e.g. 20260518.0.532496).
    #[arg(long = "release", value_name = "BUILD_VERSION", conflicts_with_all = ["a", "b"])]
    pub releases: Vec<String>,
    /// The profile whose locations say where the releases are published (with --release).
    #[arg(long, default_value = "archlinux-repro", requires = "releases")]
    pub profile: String,
    /// Override a profile location, NAME=URL (repeatable; with --release).
    #[arg(
        short = 'L',
        long = "location",
        value_name = "NAME=URL",
        requires = "releases"
    )]
    pub locations: Vec<String>,
    #[command(flatten)]
    pub store: StoreArg,
    /// Use only what the store holds (with --release); nothing leaves the machine.
    #[arg(long, requires = "releases")]
    pub offline: bool,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when the two hold the same package versions, 1 when they differ.
pub fn execute(a: Args) -> Result<i32> {
    let (la, lb, what) = match (&a.a, &a.b) {
        (Some(x), Some(y)) => (EnvLock::load(x)?, EnvLock::load(y)?, None),
        _ => {
            let [v1, v2] = a.releases.as_slice() else {
                return Err(Error::bad_input(
                    "--release",
                    format!(
                        "given {} time(s); expected exactly two releases (--release V1 --release V2) or two lock files",
                        a.releases.len()
                    ),
                ));
            };
            let store = a.store.open()?;
            let mut locks = Vec::new();
            let mut sources = Vec::new();
            for v in [v1, v2] {
                let target = crate::cmd::plan::Target {
                    profile: a.profile.clone(),
                    build_version: v.clone(),
                    locations: a.locations.clone(),
                };
                let plan = target.plan()?;
                let set = crate::pipeline::published::published_set(&plan, &store, a.offline)?;
                sources.push(format!("{v}: {}", set.source));
                locks.push(set.lock);
            }
            let lb = locks.pop().expect("two locks");
            let la = locks.pop().expect("two locks");
            (la, lb, Some(sources))
        }
    };
    let d = drift(&la, &lb);
    if a.json {
        let v = match &what {
            Some(sources) => serde_json::json!({ "sources": sources, "drift": d }),
            None => serde_json::to_value(&d).expect("plain JSON"),
        };
        println!("{}", serde_json::to_string_pretty(&v).expect("plain JSON"));
    } else {
        for s in what.iter().flatten() {
            println!("# {s}");
        }
        if d.is_empty() {
            println!("no drift: {} packages, same versions", la.packages.len());
        } else {
            for x in &d {
                println!("{x}");
            }
        }
    }
    Ok(if d.is_empty() { 0 } else { 1 })
}
