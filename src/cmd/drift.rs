//! `reprobox drift`: which environment packages differ between two environments.
//!
//! - `drift A B`: two environment locks, or two report directories (their `env.lock`), or
//!   one of each;
//! - `drift --report DIR --day D` (or `drift A --day D`): a report's (or lock's) environment
//!   against what the archive had on day D, from D's repository databases alone: nothing is
//!   built or installed ([`day_lock`]);
//! - `drift --release V1 --release V2 [--profile P] [-L NAME=URL]…`: two releases' published
//!   rootfs, each read into a lock from its own pacman database (`pipeline::published`).

use std::path::{Path, PathBuf};

use crate::envlock::{EnvLock, LockedPackage, drift};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first environment: an environment lock, or a report directory (its env.lock).
    #[arg(value_name = "A")]
    pub a: Option<PathBuf>,
    /// The second environment: a lock or a report directory (or give --day instead).
    #[arg(value_name = "B")]
    pub b: Option<PathBuf>,
    /// The first environment is this report directory's env.lock (same as giving DIR as A).
    #[arg(long, value_name = "DIR", conflicts_with = "a")]
    pub report: Option<PathBuf>,
    /// Compare with what the archive had on this day (YYYY/MM/DD): each package of the
    /// first environment as that day's repositories resolve it (nothing is built).
    #[arg(long, value_name = "YYYY/MM/DD", conflicts_with = "b")]
    pub day: Option<String>,
    /// With --day: the archive (default: the report's profile's `archive` location,
    /// REPROBOX_LOCATION_ARCHIVE overriding it).
    #[arg(long, value_name = "URL", requires = "day")]
    pub archive: Option<String>,
    /// With --day or --release: use only what the store holds; nothing leaves the machine.
    #[arg(long)]
    pub offline: bool,
    /// Compare two releases' published package sets instead: give exactly two, the older
    /// first (BUILD_VERSION, e.g. 20260518.0.532496).
    #[arg(long = "release", value_name = "BUILD_VERSION", conflicts_with_all = ["a", "b", "report", "day"])]
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
    pub store: super::store::StoreArg,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when the two environments hold the same package versions, 1 when they differ.
pub fn execute(a: Args) -> Result<i32> {
    let (la, lb, sources) = if a.releases.is_empty() {
        let (la, lb) = two_environments(&a)?;
        (la, lb, None)
    } else {
        let (la, lb, sources) = two_releases(&a)?;
        (la, lb, Some(sources))
    };
    let d = drift(&la, &lb);
    if a.json {
        let v = match &sources {
            Some(sources) => serde_json::json!({ "sources": sources, "drift": d }),
            None => serde_json::to_value(&d).expect("plain JSON"),
        };
        println!("{}", serde_json::to_string_pretty(&v).expect("plain JSON"));
    } else {
        for s in sources.iter().flatten() {
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

/// The two environments of `drift A B` or `drift A --day D`.
fn two_environments(a: &Args) -> Result<(EnvLock, EnvLock)> {
    let first = a.report.as_ref().or(a.a.as_ref()).ok_or_else(|| {
        Error::bad_input(
            "drift",
            "expected two environments (A B: locks or report directories), or one (A or --report DIR) and --day YYYY/MM/DD",
        )
    })?;
    let la = load_env(first)?;
    let lb = match (&a.b, &a.day) {
        (Some(b), None) => load_env(b)?,
        (None, Some(day)) => {
            let day = crate::inputs::archive::parse_day(day)?;
            let (archive, names) = archive_for(a, first, &day)?;
            let store = a.store.open()?;
            let fetcher = crate::inputs::fetch::Fetcher::new(store, a.offline).with_names(names);
            let url = crate::inputs::archive::repo_db_url(
                &archive,
                &day,
                crate::inputs::archive::DEFAULT_REPOS[0],
            );
            if crate::inputs::archive::load_repo_db(&fetcher, &url)?.is_none() {
                return Err(Error::bad_input(
                    format!("--day {day}"),
                    format!(
                        "the archive {archive} has no such day ({url} is not there); expected a day the archive holds"
                    ),
                ));
            }
            day_lock(
                &la,
                &crate::inputs::archive::Archive::new(&archive, &fetcher),
                &day,
            )?
        }
        _ => {
            return Err(Error::bad_input(
                format!("drift {}", first.display()),
                "expected a second environment (B) or --day YYYY/MM/DD",
            ));
        }
    };
    Ok((la, lb))
}

/// The published package sets of `drift --release V1 --release V2`, with where each came
/// from (the tarball, or the image's layer when the tarball is gone).
fn two_releases(a: &Args) -> Result<(EnvLock, EnvLock, Vec<String>)> {
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
    Ok((la, lb, sources))
}

/// An environment lock from a lock file, or from a report directory's `env.lock`.
pub fn load_env(path: &Path) -> Result<EnvLock> {
    if path.is_dir() {
        let lock = path.join("env.lock");
        if !lock.is_file() {
            return Err(Error::bad_input(
                format!("report directory {}", path.display()),
                "has no env.lock; expected the output directory of `reprobox reproduce`",
            ));
        }
        return EnvLock::load(&lock);
    }
    EnvLock::load(path)
}

/// The archive `--day` reads: `--archive`, else the `archive` location of the report's
/// profile (its report.json's `profile`; archlinux-repro for a bare lock), with
/// REPROBOX_LOCATION_ARCHIVE applied.
/// The archive to read `day` from (`--archive`, else the profile's `archive` location), and
/// the names the store holds its files under (a location stands for the profile's archive
/// host: what a reproduction stored replays here, `Fetcher::with_names`).
fn archive_for(a: &Args, first: &Path, day: &str) -> Result<(String, Vec<(String, String)>)> {
    let profile = report_profile(first)?.unwrap_or_else(|| super::run::DEFAULT_PROFILE.to_string());
    let plan = super::plan::make_plan(&profile, &super::run::snapshot_version(day)?, &[])?;
    let location = plan.locations.get("archive").map(|l| l.url.clone());
    let archive = match (&a.archive, &location) {
        (Some(url), _) => crate::inputs::archive::parse_base(url)?,
        (None, Some(url)) => url.clone(),
        (None, None) => {
            return Err(Error::bad_input(
                format!("profile {profile}"),
                "has no `archive` location; give --archive URL",
            ));
        }
    };
    let mut names = plan.location_names();
    if let Some(loc) = &location {
        names.push((archive.clone(), plan.canonical_url(loc)));
    }
    Ok((archive, names))
}

/// The profile a report directory's report.json names, if `path` is one.
fn report_profile(path: &Path) -> Result<Option<String>> {
    let file = path.join("report.json");
    if !path.is_dir() || !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            format!("report {}", file.display()),
            format!("not JSON: {e}"),
        )
    })?;
    Ok(v["profile"].as_str().map(str::to_string))
}

/// The lock `lock`'s packages would have on `day`: each name as the day's repository
/// databases resolve it (version, sha256, repository, day). A name the day's repositories
/// do not have is left out (it shows as absent).
pub fn day_lock(
    lock: &EnvLock,
    archive: &crate::inputs::archive::Archive,
    day: &str,
) -> Result<EnvLock> {
    let mut packages = Vec::new();
    for p in &lock.packages {
        match archive.resolve(day, &p.name) {
            Ok(r) => packages.push(LockedPackage {
                name: r.name,
                version: r.version,
                arch: None,
                sha256: Some(r.sha256),
                repo: Some(r.repo),
                day: Some(r.day),
            }),
            // In none of the day's repositories.
            Err(e) if e.exit_code() == 2 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(EnvLock {
        schema: crate::envlock::ENVLOCK_SCHEMA,
        snapshot: Some(day.to_string()),
        packages,
    })
}
