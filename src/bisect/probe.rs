//! One probe of a bisection: an ordinary reproduction through [`crate::pipeline`], kept
//! under `OUT/probes/<label>/` like any other report. A day probe rolls the environment to
//! that day (`--env-day`); a package probe rolls it to the last good day and then installs
//! the first bad day's exact package files (one more environment step, so the store keeps
//! a prepared environment per set as for any recipe).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::Archive;
use crate::inputs::fetch::Fetcher;
use crate::inputs::store::Store;
use crate::pipeline::{self, Options};
use crate::plan::{Plan, PlannedStep, Role};
use crate::report::Report;

/// The name of the environment step a package probe adds.
pub const APPLY_STEP: &str = "bisect-apply";

/// What two probes are compared by: the verdict and the artifacts' hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    pub verdict: crate::report::Verdict,
    /// sha256 of the rebuilt rootfs tarball (`rootfs-sha256`'s actual side).
    pub rootfs_sha256: Option<String>,
    /// The rebuilt image's config digest (`image-config-digest`'s actual side).
    pub image_config_digest: Option<String>,
}

impl Signature {
    pub fn of(report: &Report) -> Signature {
        let actual = |name: &str| {
            report
                .checks
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.actual.clone())
        };
        Signature {
            verdict: report.verdict,
            rootfs_sha256: actual("rootfs-sha256"),
            image_config_digest: actual("image-config-digest"),
        }
    }
}

/// One package version that differs between the last good and the first bad day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    /// The version on the last good day (absent: the bad day added it).
    pub from: Option<String>,
    /// The version on the first bad day (absent: the bad day no longer has it).
    pub to: Option<String>,
    /// The bad day's package file, when there is one to install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PackageFile>,
}

impl Change {
    /// `name from → to`, `(absent)` for a missing side.
    pub fn describe(&self) -> String {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(absent)".into());
        format!("{} {} → {}", self.name, v(&self.from), v(&self.to))
    }
}

/// A package file of the archive's `packages/` tree, pinned by the sha256 its day's
/// repository database lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageFile {
    /// Where it is fetched from (the archive location).
    pub url: String,
    /// The path the job's mirror serves it under.
    pub path: String,
    pub sha256: String,
    /// The day whose database listed that sha256, and the repository.
    pub day: String,
    pub repo: String,
}

/// Pin the package file of `name` at `version` as `day` lists it, and fetch it from the
/// `packages/` tree into the store, checked against that sha256 (so the job's mirror
/// serves exactly those bytes). Its detached signature is fetched too when the archive has
/// one (pacman checks it).
pub fn pin_package(
    archive: &Archive,
    fetcher: &Fetcher,
    day: &str,
    name: &str,
    version: &str,
) -> Result<PackageFile> {
    let r = archive.resolve(day, name)?;
    if r.version != version {
        return Err(Error::Environment(format!(
            "{name}: the environment of {day} had {version}, but that day's {} database lists {}",
            r.repo, r.version
        )));
    }
    let first = name.chars().next().unwrap_or('_');
    let path = format!("/packages/{first}/{name}/{}", r.filename);
    let url = format!("{}{path}", archive.base());
    fetcher.fetch_outcome(&url, Some(&r.sha256), true)?;
    fetcher.try_fetch(&format!("{url}.sig"), None, true)?;
    Ok(PackageFile {
        url,
        path,
        sha256: r.sha256,
        day: r.day,
        repo: r.repo,
    })
}

/// What a probe applied.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Applied {
    /// The environment of this day.
    Day,
    /// The environment of the day, plus these changes of the first bad day.
    Packages { changes: Vec<String> },
}

/// One probe as the bisection report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRecord {
    pub label: String,
    /// The environment day (`--env-day`).
    pub day: String,
    #[serde(flatten)]
    pub applied: Applied,
    pub signature: Signature,
    /// Its outcome differs from the baseline's (the good day's).
    pub changed: bool,
    /// Its reproduction report, relative to the bisection's output directory.
    pub report: String,
}

/// A finished probe.
pub struct Probe {
    pub report: Report,
    pub signature: Signature,
    /// Its output directory (report, env.lock, artifacts/).
    pub dir: PathBuf,
}

/// Runs probes into `OUT/probes/` with one plan and one set of options.
pub struct Prober<'a> {
    pub plan: &'a Plan,
    pub store: Store,
    /// The options every probe starts from (its `out` and `env_day` are the probe's).
    pub options: Options,
    pub out: PathBuf,
    pub records: Vec<ProbeRecord>,
    pub baseline: Option<Signature>,
}

impl Prober<'_> {
    /// A reproduction with the environment of `day`.
    pub fn day(&mut self, day: &str) -> Result<Probe> {
        let label = format!("day-{}", day.replace('/', "-"));
        self.run(label, day, self.plan.clone(), Applied::Day)
    }

    /// A reproduction with the environment of `day` and `changes` applied over it.
    pub fn packages(&mut self, day: &str, changes: &[Change]) -> Result<Probe> {
        let n = self
            .records
            .iter()
            .filter(|r| matches!(r.applied, Applied::Packages { .. }))
            .count();
        let label = format!("packages-{}", n + 1);
        let plan = with_changes(self.plan, changes)?;
        let applied = Applied::Packages {
            changes: changes.iter().map(Change::describe).collect(),
        };
        self.run(label, day, plan, applied)
    }

    fn run(&mut self, label: String, day: &str, plan: Plan, applied: Applied) -> Result<Probe> {
        let dir = self.out.join("probes").join(&label);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ctx("remove the earlier probe", &dir)?;
        }
        let mut o = self.options.clone();
        o.out = dir.clone();
        o.env_day = (day != plan.env_day).then(|| day.to_string());
        crate::progress::line(&format!(
            "bisect: probe {label}: environment of {day}{}",
            match &applied {
                Applied::Day => String::new(),
                Applied::Packages { changes } => format!(" with {}", changes.join(", ")),
            }
        ));
        let outcome = pipeline::reproduce(&plan, self.store.clone(), &o)?;
        let signature = Signature::of(&outcome.report);
        let changed = self.baseline.as_ref().is_some_and(|b| *b != signature);
        crate::progress::line(&format!(
            "bisect: probe {label}: {}{}",
            outcome.report.verdict_line(),
            if self.baseline.is_none() {
                " (the baseline)"
            } else if changed {
                " (changed)"
            } else {
                " (as the baseline)"
            }
        ));
        self.records.push(ProbeRecord {
            label: label.clone(),
            day: day.to_string(),
            applied,
            signature: signature.clone(),
            changed,
            report: format!("probes/{label}/report.json"),
        });
        Ok(Probe {
            report: outcome.report,
            signature,
            dir,
        })
    }
}

/// `plan` with one more environment step after its last one: the bad day's package files
/// installed exactly (`pacman -Udd`, from the job's mirror, which serves the bytes pinned
/// into the store) and the packages it no longer has removed (`pacman -Rdd`). The step is
/// the last environment step's twin (network, isolation, writable paths, clock) with other
/// commands. Dependencies are not resolved: a probe applies exactly its set.
pub fn with_changes(plan: &Plan, changes: &[Change]) -> Result<Plan> {
    let last = plan
        .steps
        .iter()
        .rposition(crate::pipeline::steps::is_env_step)
        .ok_or_else(|| {
            Error::bad_input(
                format!("profile {}", plan.profile),
                "has no rollback or install step, so package versions cannot be applied to its environment",
            )
        })?;
    let mut step: PlannedStep = plan.steps[last].clone();
    step.name = APPLY_STEP.into();
    step.description = "reprobox bisect: the first bad day's package files of this probe's set, installed exactly from the archive's packages/ tree (sha256 checked against that day's database)".into();
    step.role = Role::Install;
    step.optional = false;
    step.commands = Vec::new();
    let urls: Vec<String> = changes
        .iter()
        .filter_map(|c| c.file.as_ref())
        .map(|f| format!("{}{}", plan.mirror, f.path))
        .collect();
    if !urls.is_empty() {
        let mut argv: Vec<String> = ["pacman", "-Udd", "--noconfirm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(urls);
        step.commands.push(argv);
    }
    let gone: Vec<String> = changes
        .iter()
        .filter(|c| c.to.is_none())
        .map(|c| c.name.clone())
        .collect();
    if !gone.is_empty() {
        let mut argv: Vec<String> = ["pacman", "-Rdd", "--noconfirm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(gone);
        step.commands.push(argv);
    }
    let mut p = plan.clone();
    p.steps.insert(last + 1, step);
    Ok(p)
}

/// The rebuilt rootfs tarball a probe kept, if the build made one.
pub fn rootfs_of(plan: &Plan, probe_dir: &Path) -> Option<PathBuf> {
    let p = probe_dir.join("artifacts").join(&plan.artifacts.rootfs);
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::fixtures::{DAY1, DAY2, MiniArchive};

    fn test_plan() -> Plan {
        let lp = crate::plan::profile::Profile::load("archlinux-repro").unwrap();
        let v = crate::plan::version::BuildVersion::parse("20260518.0.532496").unwrap();
        Plan::with_overrides(&lp, &v, &[], &[]).unwrap()
    }

    fn change(name: &str, to: Option<&str>, path: Option<&str>) -> Change {
        Change {
            name: name.into(),
            from: Some("1-1".into()),
            to: to.map(str::to_string),
            file: path.map(|p| PackageFile {
                url: format!("https://archive.archlinux.org{p}"),
                path: p.into(),
                sha256: "a".repeat(64),
                day: "2026/05/19".into(),
                repo: "extra".into(),
            }),
        }
    }

    #[test]
    fn a_package_set_is_one_more_install_step_after_the_environment_steps() {
        let plan = test_plan();
        let set = [
            change(
                "devtools",
                Some("2-1"),
                Some("/packages/d/devtools/devtools-2-1-any.pkg.tar.zst"),
            ),
            change("gone", None, None),
        ];
        let p = with_changes(&plan, &set).unwrap();
        assert_eq!(p.steps.len(), plan.steps.len() + 1);
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rollback",
                "install",
                "install-optional",
                APPLY_STEP,
                "make",
                "image"
            ]
        );
        let s = &p.steps[3];
        assert_eq!(s.role, Role::Install);
        assert!(!s.optional && s.faketime);
        assert_eq!(
            s.commands,
            vec![
                vec![
                    "pacman".to_string(),
                    "-Udd".into(),
                    "--noconfirm".into(),
                    format!(
                        "{}/packages/d/devtools/devtools-2-1-any.pkg.tar.zst",
                        crate::plan::MIRROR_URL
                    ),
                ],
                vec![
                    "pacman".into(),
                    "-Rdd".into(),
                    "--noconfirm".into(),
                    "gone".into()
                ],
            ]
        );
        // The environment steps stay first, so the set gets a prepared environment.
        let sel = crate::pipeline::steps::select(
            &p,
            &crate::pipeline::Options {
                offline: true,
                rollback: true,
                env_day: None,
                out: "/nonexistent".into(),
                progress: crate::progress::Mode::Off,
                timeout: None,
                keep_work: false,
                use_prepared_envs: true,
                backend: crate::backend::BackendChoice::Container,
                image_from: crate::pipeline::ImageFrom::Rebuilt,
            },
            &mut Vec::new(),
        );
        assert_eq!(sel.n_env, 4);
        assert!(sel.env_first);
    }

    #[test]
    fn package_files_are_pinned_by_the_days_database_and_tampering_is_refused() {
        let a = MiniArchive::build().unwrap();
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let fetcher = Fetcher::new(store.clone(), false);
        let base = format!("file://{}", a.root().display());
        let archive = Archive::new(&base, &fetcher);
        let hello = a.pkg("hello", "1.1-1");
        let f = pin_package(&archive, &fetcher, DAY2, "hello", "1.1-1").unwrap();
        assert_eq!(f.sha256, hello.sha256());
        assert_eq!(f.path, format!("/packages/h/hello/{}", hello.filename()));
        assert_eq!(f.day, DAY2);
        assert_eq!(f.repo, "core");
        assert!(store.blob(&f.sha256).is_some());
        // The environment had another version than the day lists: refused, named.
        let e = pin_package(&archive, &fetcher, DAY1, "hello", "1.1-1").unwrap_err();
        assert!(e.to_string().contains("lists 1.0-1"), "{e}");
        // Bytes in packages/ that are not the ones the database lists: refused, not stored.
        let fresh = Store::open(t.path().join("fresh")).unwrap();
        let fetcher = Fetcher::new(fresh.clone(), false);
        let archive = Archive::new(&base, &fetcher);
        let file = a.root().join(f.path.trim_start_matches('/'));
        std::fs::write(&file, b"not the package").unwrap();
        let e = pin_package(&archive, &fetcher, DAY2, "hello", "1.1-1").unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
        assert!(fresh.blob(&hello.sha256()).is_none());
        assert!(
            fresh
                .list()
                .unwrap()
                .iter()
                .all(|b| b.sha256 != crate::digest::sha256_hex(b"not the package"))
        );
    }
}
