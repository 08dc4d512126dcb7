//! `reprobox bisect`: the cause of an environment drift. First the environment day: the
//! days the archive has between a good and a bad one are probed by halves (each probe an
//! ordinary reproduction with `--env-day`, kept under `OUT/probes/`), until the last good
//! and the first bad day are next to each other. Then the packages: the version changes
//! between those two days' environment locks are applied over the good day's environment
//! in halves (`narrow.rs`), each package file taken exactly from the archive's `packages/`
//! tree and checked against the bad day's database, until the smallest set that changes
//! the outcome is left. Prepared environments (one per day and per set) make a probe of a
//! recipe seen before cost only its build.
//!
//! - `days.rs`: which days exist (the archive's listing, the store's databases);
//! - `narrow.rs`: the smallest set, by halves (pure);
//! - `probe.rs`: one probe through [`crate::pipeline::reproduce`], and what it is compared by.

pub mod days;
pub mod narrow;
pub mod probe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::envlock::EnvLock;
use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::{Archive, parse_day};
use crate::inputs::fetch::Fetcher;
use crate::inputs::store::Store;
use crate::pipeline::Options;
use crate::plan::Plan;
use probe::{Change, Probe, ProbeRecord, Prober, Signature};

/// The bisection report's schema (`bisect.json`).
pub const SCHEMA: &str = "reprobox.bisect/v1";

/// What to bisect between.
#[derive(Debug, Clone)]
pub struct Request {
    /// `YYYY/MM/DD`; default the plan's snapshot day.
    pub good_day: Option<String>,
    /// `YYYY/MM/DD`; default the latest day the archive lists or the store holds.
    pub bad_day: Option<String>,
    /// The options of every probe (their `out` and `env_day` are set per probe; `out` here
    /// is the bisection's output directory).
    pub options: Options,
}

/// `bisect.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BisectReport {
    pub schema: &'static str,
    pub profile: String,
    pub version: String,
    pub good_day: String,
    pub bad_day: String,
    /// The days between them (both included) that the archive or the store has: the only
    /// days probed.
    pub days: Vec<String>,
    /// The good day's outcome, which every other probe is compared with.
    pub baseline: Signature,
    /// The bad day's outcome differs from the good day's.
    pub changed: bool,
    pub last_good_day: Option<String>,
    pub first_bad_day: Option<String>,
    /// Package versions that differ between the two days' environments.
    pub changes: Vec<Change>,
    /// Changes that could not be applied (no package file on the bad day), left out.
    pub not_applied: Vec<String>,
    /// Every applicable change applied over the last good day changes the outcome.
    pub explained: bool,
    /// The smallest set of changes that changes the outcome.
    pub culprits: Vec<Change>,
    /// What that set changes in the rebuilt rootfs, against the last good day's.
    pub rootfs_changes: Vec<String>,
    /// The one-line answer.
    pub message: String,
    pub probes: Vec<ProbeRecord>,
}

/// Check the days of a request before any work: each a real `YYYY/MM/DD`, the good one
/// before the bad one. Bad input (exit 2) names the flag.
pub fn check_days(good: Option<&str>, bad: Option<&str>) -> Result<()> {
    let g = good
        .map(|d| parse_day(d).map_err(|e| flag_error("--good-day", e)))
        .transpose()?;
    let b = bad
        .map(|d| parse_day(d).map_err(|e| flag_error("--bad-day", e)))
        .transpose()?;
    if let (Some(g), Some(b)) = (&g, &b)
        && g >= b
    {
        return Err(Error::bad_input(
            format!("--good-day {g} --bad-day {b}"),
            "the good day must come before the bad day",
        ));
    }
    Ok(())
}

fn flag_error(flag: &str, e: Error) -> Error {
    match e {
        Error::BadInput { input, message } => {
            let what = input.strip_prefix("day ").unwrap_or(&input);
            Error::bad_input(format!("{flag} {what}"), message)
        }
        e => e,
    }
}

/// Run the bisection of `plan` into `req.options.out`; returns its report (also written as
/// `OUT/bisect.json`).
pub fn bisect(plan: &Plan, store: Store, req: &Request) -> Result<BisectReport> {
    check_days(req.good_day.as_deref(), req.bad_day.as_deref())?;
    let out = req.options.out.clone();
    crate::error::dir_or_absent(&out, "output directory")?;
    let fetcher =
        Fetcher::new(store.clone(), req.options.offline).with_names(plan.location_names());
    let base = plan
        .locations
        .get("archive")
        .map(|l| l.url.clone())
        .ok_or_else(|| {
            Error::bad_input(
                format!("profile {}", plan.profile),
                "names no `archive` location, so there are no days to bisect",
            )
        })?;
    let (good, good_what) = match &req.good_day {
        Some(d) => (d.clone(), format!("--good-day {d}")),
        None => (
            plan.snapshot.clone(),
            format!(
                "the snapshot day {} (the default --good-day)",
                plan.snapshot
            ),
        ),
    };
    let days: Vec<String> = days::available(&fetcher, &base, Some(&good), req.bad_day.as_deref())?
        .into_iter()
        .collect();
    let listed = || {
        if days.is_empty() {
            "none".to_string()
        } else {
            days.join(", ")
        }
    };
    if days.first() != Some(&good) {
        return Err(Error::bad_input(
            good_what,
            format!(
                "is not a day the archive at {base} lists, nor one the store holds; days from then on: {}",
                listed()
            ),
        ));
    }
    let bad = match &req.bad_day {
        Some(d) if days.last() != Some(d) => {
            return Err(Error::bad_input(
                format!("--bad-day {d}"),
                format!(
                    "is not a day the archive at {base} lists, nor one the store holds; days from {good} to it: {}",
                    listed()
                ),
            ));
        }
        Some(d) => d.clone(),
        None if days.len() < 2 => {
            return Err(Error::bad_input(
                good_what,
                format!(
                    "is the latest day the archive at {base} lists or the store holds: there is no later day to bisect to"
                ),
            ));
        }
        None => days.last().cloned().expect("two days or more"),
    };
    std::fs::create_dir_all(&out).ctx("create", &out)?;

    let mut prober = Prober {
        plan,
        store,
        options: req.options.clone(),
        out: out.clone(),
        records: Vec::new(),
        baseline: None,
    };
    let good_probe = prober.day(&good)?;
    let baseline = good_probe.signature.clone();
    prober.baseline = Some(baseline.clone());
    let mut report = BisectReport {
        schema: SCHEMA,
        profile: plan.profile.clone(),
        version: plan.version.to_string(),
        good_day: good.clone(),
        bad_day: bad.clone(),
        days: days.clone(),
        baseline: baseline.clone(),
        changed: false,
        last_good_day: None,
        first_bad_day: None,
        changes: Vec::new(),
        not_applied: Vec::new(),
        explained: false,
        culprits: Vec::new(),
        rootfs_changes: Vec::new(),
        message: String::new(),
        probes: Vec::new(),
    };
    let bad_probe = prober.day(&bad)?;
    if bad_probe.signature == baseline {
        report.message = format!(
            "no change: the environments of {good} and {bad} give the same outcome ({})",
            bad_probe.report.verdict_line()
        );
        return finish(report, prober, &out);
    }
    report.changed = true;

    // 1. The day, by halves over the days that exist.
    let mut probes: BTreeMap<usize, Probe> = BTreeMap::new();
    probes.insert(0, good_probe);
    probes.insert(days.len() - 1, bad_probe);
    let hi = narrow::first_changed(days.len(), &mut |i| {
        let p = prober.day(&days[i])?;
        let changed = p.signature != baseline;
        probes.insert(i, p);
        Ok(changed)
    })?;
    let lo = *probes.range(..hi).next_back().expect("day 0 was probed").0;
    debug_assert_eq!(lo + 1, hi);
    let (last_good, first_bad) = (
        probes.remove(&lo).expect("probed"),
        probes.remove(&hi).expect("probed"),
    );
    let (good_day, bad_day) = (days[lo].clone(), days[hi].clone());
    report.last_good_day = Some(good_day.clone());
    report.first_bad_day = Some(bad_day.clone());

    // 2. The packages: the version changes between the two days' environments.
    let archive = Archive::new(&base, &fetcher);
    let (changes, not_applied) = changes_between(
        &EnvLock::load(&last_good.dir.join("env.lock"))?,
        &EnvLock::load(&first_bad.dir.join("env.lock"))?,
        &archive,
        &fetcher,
        &bad_day,
    )?;
    report.changes = changes.clone();
    report.not_applied = not_applied;
    let applicable: Vec<Change> = changes
        .iter()
        .filter(|c| c.file.is_some() || c.to.is_none())
        .cloned()
        .collect();
    if applicable.is_empty() {
        report.message = format!(
            "the outcome changes first on {bad_day} (last good {good_day}), but the two days' environments have the same package versions{}: the cause is not a package of the environment",
            if report.not_applied.is_empty() {
                String::new()
            } else {
                format!(
                    " but for changes without a package file ({})",
                    report.not_applied.join(", ")
                )
            }
        );
        return finish(report, prober, &out);
    }
    let mut kept: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    let all = prober.packages(&good_day, &applicable)?;
    kept.insert(names(&applicable), all.dir.clone());
    if all.signature == baseline {
        report.message = format!(
            "the outcome changes first on {bad_day} (last good {good_day}), but applying every package change ({}) to the environment of {good_day} does not change it: the cause is not in those packages alone",
            applicable
                .iter()
                .map(Change::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return finish(report, prober, &out);
    }
    report.explained = true;
    let found = if applicable.len() == 1 {
        vec![0]
    } else {
        narrow::minimal(&applicable, &mut |set: &[Change]| {
            let p: Probe = prober.packages(&good_day, set)?;
            kept.insert(names(set), p.dir.clone());
            Ok(p.signature != baseline)
        })?
    };
    let culprits: Vec<Change> = found.iter().map(|&i| applicable[i].clone()).collect();
    let culprit_dir = match kept.get(&names(&culprits)) {
        Some(d) => d.clone(),
        None => prober.packages(&good_day, &culprits)?.dir,
    };
    report.rootfs_changes = rootfs_changes(plan, &last_good.dir, &culprit_dir)?;
    report.message = format!(
        "{}: {} (first on {bad_day})",
        culprits
            .iter()
            .map(Change::describe)
            .collect::<Vec<_>>()
            .join(" and "),
        effect(&report.rootfs_changes, &baseline, &first_bad.signature)
    );
    report.culprits = culprits;
    finish(report, prober, &out)
}

fn names(set: &[Change]) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|c| c.name.clone()).collect();
    v.sort();
    v
}

/// The version changes from `good` to `bad`, each new version pinned to its package file
/// of the bad day; the names of those that have none (left out).
fn changes_between(
    good: &EnvLock,
    bad: &EnvLock,
    archive: &Archive,
    fetcher: &Fetcher,
    bad_day: &str,
) -> Result<(Vec<Change>, Vec<String>)> {
    let mut changes = Vec::new();
    let mut not_applied = Vec::new();
    for d in crate::envlock::drift(good, bad) {
        let file = match &d.b {
            Some(v) => match probe::pin_package(archive, fetcher, bad_day, &d.name, v) {
                Ok(f) => Some(f),
                Err(e @ (Error::Tampered { .. } | Error::Interrupted)) => return Err(e),
                Err(e) => {
                    not_applied.push(format!("{} ({e})", d.name));
                    None
                }
            },
            None => None,
        };
        changes.push(Change {
            name: d.name,
            from: d.a,
            to: d.b,
            file,
        });
    }
    Ok((changes, not_applied))
}

/// The files that differ between two probes' rebuilt rootfs tarballs (empty when either
/// built none).
fn rootfs_changes(plan: &Plan, good: &Path, culprit: &Path) -> Result<Vec<String>> {
    let (Some(a), Some(b)) = (
        probe::rootfs_of(plan, good),
        probe::rootfs_of(plan, culprit),
    ) else {
        return Ok(Vec::new());
    };
    let (ia, ib) = (
        crate::verify::tarindex::read_index(&a)?,
        crate::verify::tarindex::read_index(&b)?,
    );
    Ok(crate::verify::tardiff::diff(&ia, &ib)
        .iter()
        .map(|d| d.path.clone())
        .collect())
}

/// What the culprits do, in words.
fn effect(rootfs: &[String], good: &Signature, bad: &Signature) -> String {
    if !rootfs.is_empty() {
        const SHOWN: usize = 5;
        let mut s = rootfs
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if rootfs.len() > SHOWN {
            s.push_str(&format!(" and {} more", rootfs.len() - SHOWN));
        }
        return format!("changes {s} in the rootfs");
    }
    if good.image_config_digest != bad.image_config_digest {
        return "changes the image (its config digest), not the rootfs".into();
    }
    format!(
        "changes the verdict ({:?} → {:?})",
        good.verdict, bad.verdict
    )
    .to_lowercase()
}

fn finish(mut report: BisectReport, prober: Prober, out: &Path) -> Result<BisectReport> {
    report.probes = prober.records;
    let path = out.join("bisect.json");
    let json = serde_json::to_string_pretty(&report).expect("plain JSON");
    std::fs::write(&path, json + "\n").ctx("write", &path)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_checked_before_any_work() {
        assert!(check_days(None, None).is_ok());
        assert!(check_days(Some("2026/05/20"), Some("2026/06/02")).is_ok());
        for (g, b, flag) in [
            (Some("2026-05-20"), None, "--good-day"),
            (None, Some("2026/13/01"), "--bad-day"),
            (Some("2026/06/02"), Some("2026/05/20"), "--good-day"),
            (Some("2026/06/02"), Some("2026/06/02"), "--good-day"),
        ] {
            let e = check_days(g, b).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().starts_with(flag), "{e}");
        }
    }

    #[test]
    fn the_effect_names_the_rootfs_files_first() {
        let s = |v: crate::report::Verdict, c: &str| Signature {
            verdict: v,
            rootfs_sha256: Some("a".into()),
            image_config_digest: Some(c.into()),
        };
        use crate::report::Verdict::*;
        assert_eq!(
            effect(
                &["etc/pacman.conf".into()],
                &s(Reproduced, "x"),
                &s(Differs, "y")
            ),
            "changes etc/pacman.conf in the rootfs"
        );
        let many: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        assert!(
            effect(&many, &s(Reproduced, "x"), &s(Differs, "y"))
                .ends_with("and 2 more in the rootfs")
        );
        assert!(effect(&[], &s(Reproduced, "x"), &s(Differs, "y")).contains("image"));
        assert_eq!(
            effect(&[], &s(Reproduced, "x"), &s(Incomplete, "x")),
            "changes the verdict (reproduced → incomplete)"
        );
    }
}
