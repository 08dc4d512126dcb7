//! Stages 8 and 9: the environment lock completed and its drift from the snapshot day, the
//! report assembled from what every stage found, and the outputs written (report, summary,
//! locks, artifacts, in-toto attestation).

use std::path::Path;

use super::Run;
use super::release::ReleaseAt;
use crate::envlock::{Drift, EnvLock, ServedPackage};
use crate::error::{IoContext, Result};
use crate::inputs::archive::ResolvedPackage;
use crate::inputs::lock::InputsLock;
use crate::plan::Plan;
use crate::report::attestation::{Statement, Subject};
use crate::report::{Check, Hosts, Report, StepRecord, Verdict};
use crate::verify::audit::LateTimestamp;
use crate::verify::tardiff::FileDiff;

/// The packages of `inputs` the mirror served, by URL path, for the environment lock.
pub fn served_packages(inputs: &InputsLock) -> Vec<ServedPackage> {
    inputs
        .entries
        .iter()
        .filter(|e| e.url.contains(".pkg.tar"))
        .filter_map(|e| {
            let path = e
                .url
                .split_once("://")
                .map(|(_, r)| r.split_once('/').map(|(_, p)| p).unwrap_or(""))?;
            Some(ServedPackage {
                url_path: format!("/{path}"),
                sha256: e.sha256.clone()?,
            })
        })
        .collect()
}

/// Complete an environment lock from the day's repository databases: a package the
/// environment steps did not need to download was not served, but the day's database pins
/// it (when it has the same version).
pub fn complete_env_lock(lock: &mut EnvLock, resolve: impl Fn(&str) -> Option<ResolvedPackage>) {
    for p in &mut lock.packages {
        if p.sha256.is_none()
            && let Some(r) = resolve(&p.name)
            && r.version == p.version
        {
            p.sha256 = Some(r.sha256);
            p.repo = Some(r.repo);
            p.day = Some(r.day);
        }
    }
}

impl Run<'_> {
    /// The environment lock of `root` as rolled to `day`, with the sha256 of every package
    /// the mirror served, completed from the day's databases.
    pub fn env_lock(&self, root: &Path, day: &str) -> Result<EnvLock> {
        let mut lock = EnvLock::record(root, Some(day), &served_packages(&self.ledger.inputs))?;
        complete_env_lock(&mut lock, |name| self.archive.resolve(day, name).ok());
        Ok(lock)
    }

    /// Stage 8: the environment's packages whose versions differ from the profile's environment day's (`Plan::env_day`).
    pub fn drift(&mut self, lock: &EnvLock) -> Vec<Drift> {
        let mut drift = Vec::new();
        for p in &lock.packages {
            match self.archive.resolve(&self.plan.env_day, &p.name) {
                Ok(r) if r.version != p.version => drift.push(Drift {
                    name: p.name.clone(),
                    a: Some(r.version),
                    b: Some(p.version.clone()),
                }),
                Ok(_) => {}
                // Not in the environment day's repositories at all.
                Err(e) if e.exit_code() == 2 => {}
                Err(e) => self.ledger.notes.push(format!(
                    "could not resolve the environment day's version of {}: {e}",
                    p.name
                )),
            }
        }
        drift
    }
}

/// Everything the report is made of besides the plan.
pub struct Findings {
    /// The archive day the environment was rolled to.
    pub environment_day: String,
    /// Which Dockerfile the image step built.
    pub image_from: super::ImageFrom,
    pub backend: &'static str,
    pub microvm: Option<serde_json::Value>,
    /// The release's source revision; `None` when the run stopped before the release was read.
    pub source_revision: Option<String>,
    /// The checkout the build ran in, as it was before the first step.
    pub workspace: super::workspace::WorkspaceRecord,
    /// The step that failed, if one did: the verdict is then incomplete.
    pub failed_step: Option<String>,
    pub checks: Vec<Check>,
    pub file_diffs: Vec<FileDiff>,
    /// What `file_diffs` compared with when not the published tarball.
    pub file_diffs_source: Option<String>,
    pub drift: Vec<Drift>,
    pub late: Vec<LateTimestamp>,
    pub steps: Vec<StepRecord>,
    pub external_diffs: Vec<String>,
    pub notes: Vec<String>,
    /// The egress's record: its CA certificate, rules, requests, refusals, drift.
    pub egress: Option<crate::egress::EgressRecord>,
    /// `--packages-from published`: the set the build was served.
    pub published_packages: Option<super::published::PublishedPackages>,
}

/// The report of a reproduction: the verdict is incomplete when a required step failed,
/// else what the checks say.
pub fn assemble_report(plan: &Plan, f: Findings) -> Report {
    let verdict = if f.failed_step.is_some() {
        Verdict::Incomplete
    } else {
        Verdict::of(&f.checks)
    };
    let local_locations: Vec<String> = plan
        .locations
        .iter()
        .filter(|(_, l)| Hosts::is_local(&l.url))
        .map(|(k, _)| k.clone())
        .collect();
    Report {
        schema: crate::report::REPORT_SCHEMA,
        reprobox_version: env!("CARGO_PKG_VERSION"),
        profile: plan.profile.clone(),
        profile_origin: plan.profile_origin.clone(),
        profile_sha256: plan.profile_sha256.clone(),
        version: plan.version.to_string(),
        snapshot: plan.snapshot.clone(),
        source_date_epoch: plan.source_date_epoch,
        source_git: plan.source.git.clone(),
        tag: plan.source.tag.clone(),
        registry: plan.expected.registry.clone(),
        image: plan.expected_image_ref(),
        hosts: Hosts::of(local_locations.len(), plan.locations.len()),
        local_locations,
        environment_day: f.environment_day,
        profile_environment_day: plan.env_day.clone(),
        profile_environment_day_reason: plan.env_day_reason.clone(),
        image_from: f.image_from.describe().to_string(),
        workspace: f.workspace,
        egress: f.egress,
        packages_from_published: f.published_packages,
        backend: f.backend.into(),
        microvm: f.microvm,
        source_revision: f.source_revision,
        stopped: None,
        verdict,
        checks: f.checks,
        file_diffs: f.file_diffs,
        file_diffs_source: f.file_diffs_source,
        environment_drift: f.drift,
        late_timestamps: f.late,
        steps: f.steps,
        external_diffs: f.external_diffs,
        notes: f.notes,
    }
}

/// What the attestation records besides the report.
pub struct Provenance<'a> {
    pub release: &'a ReleaseAt,
    pub base: &'a super::environment::PinnedBase,
    pub pinned_images: &'a [crate::inputs::images::PinnedImage],
    pub prepared: Option<&'a crate::inputs::prepared::PreparedEnv>,
    /// The directory the artifacts were built into (the workspace's artifacts dir).
    pub built: &'a Path,
}

/// Stage 9: write every output into `out`: the artifacts, both locks, the report, the
/// summary and the in-toto attestation (each file written whole, then renamed).
pub fn write_outputs(
    plan: &Plan,
    out: &Path,
    report: &Report,
    env_lock: &EnvLock,
    inputs: &InputsLock,
    p: &Provenance,
) -> Result<()> {
    let arts = out.join("artifacts");
    std::fs::create_dir_all(&arts).ctx("create", &arts)?;
    let mut subjects = Vec::new();
    for f in &plan.artifacts.files {
        let src = p.built.join(f);
        if src.is_file() {
            let dst = arts.join(f);
            std::fs::copy(&src, &dst).ctx("copy into", &dst)?;
            subjects.push(Subject::sha256(
                f.clone(),
                crate::digest::sha256_file(&dst)?,
            ));
        }
    }
    let env_text = env_lock.to_text();
    let inputs_text = inputs.to_string();
    write_atomic(&out.join("env.lock"), env_text.as_bytes())?;
    write_atomic(&out.join("inputs.lock"), inputs_text.as_bytes())?;
    let json = serde_json::to_string_pretty(report).expect("plain JSON");
    write_atomic(&out.join("report.json"), json.as_bytes())?;
    write_atomic(&out.join("summary.txt"), report.summary().as_bytes())?;
    let statement = Statement::new(
        subjects,
        serde_json::json!({
            "plan": plan,
            "release": {
                "tag": plan.source.tag,
                "tag_commit": p.release.tag_commit,
                "source_revision": p.release.release.source_revision,
                "rootfs_sha256": p.release.release.rootfs_sha256,
            },
            "base": p.base,
            "verdict": report.verdict,
            "checks": report.checks,
            "environment_lock": env_text,
            "inputs_lock": inputs_text,
            "steps": report.steps,
            "pinned_images": p.pinned_images,
            "backend": report.backend,
            "microvm": report.microvm,
            "prepared_environment": p.prepared.map(|e| serde_json::json!({
                "key": e.key,
                "recipe": e.meta().ok().map(|m| m.recipe),
            })),
        }),
    );
    write_atomic(
        &out.join("attestation.json"),
        serde_json::to_string_pretty(&statement)
            .expect("plain JSON")
            .as_bytes(),
    )
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-reprobox");
    std::fs::write(&tmp, bytes).ctx("write", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename into", path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envlock::LockedPackage;
    use crate::inputs::lock::Status;
    use crate::report::Status as CheckStatus;

    fn findings(checks: Vec<Check>, failed: Option<&str>) -> Findings {
        Findings {
            environment_day: "2026/05/17".into(),
            image_from: Default::default(),
            workspace: Default::default(),
            backend: "container",
            microvm: None,
            source_revision: Some("34b87485162b028c8d957bdcd2674359d883cd21".into()),
            failed_step: failed.map(String::from),
            checks,
            file_diffs: Vec::new(),
            file_diffs_source: None,
            drift: Vec::new(),
            late: Vec::new(),
            steps: Vec::new(),
            external_diffs: Vec::new(),
            notes: vec!["n".into()],
            egress: None,
            published_packages: None,
        }
    }

    #[test]
    fn the_report_takes_the_plans_dates_and_the_verdict_of_the_checks() {
        let plan = super::super::test_plan();
        let pass = Check::compare(
            "rootfs-sha256",
            true,
            Some("a".into()),
            Some("a".into()),
            String::new(),
        );
        let fail = Check::compare(
            "image-config-digest",
            true,
            Some("a".into()),
            Some("b".into()),
            String::new(),
        );
        let r = assemble_report(&plan, findings(vec![pass.clone()], None));
        assert_eq!(r.verdict, Verdict::Reproduced);
        assert_eq!(r.snapshot, "2026/05/17");
        assert_eq!(r.version, "20260518.0.532496");
        assert_eq!(r.source_date_epoch, plan.source_date_epoch);
        assert_eq!(r.profile, "archlinux-repro");
        assert_eq!(r.notes, ["n"]);
        assert_eq!(r.checks[0].status, CheckStatus::Pass);
        // What was compared with what comes from the plan.
        assert_eq!(r.source_git, plan.source.git);
        assert_eq!(r.tag, "v20260518.0.532496");
        assert_eq!(r.registry, plan.expected.registry);
        assert_eq!(r.image, plan.expected_image_ref());
        assert_eq!(r.environment_day, "2026/05/17");
        assert_eq!(r.hosts, Hosts::Real);
        assert!(r.local_locations.is_empty());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["hosts"], "real");
        assert_eq!(json["source_git"], plan.source.git.as_str());
        let r = assemble_report(&plan, findings(vec![pass.clone(), fail], None));
        assert_eq!(r.verdict, Verdict::Differs);
        // A failed step makes the run incomplete whatever the checks say.
        let r = assemble_report(&plan, findings(vec![pass], Some("make")));
        assert_eq!(r.verdict, Verdict::Incomplete);
    }

    #[test]
    fn a_plan_on_loopback_hosts_is_a_local_world() {
        let lp = crate::plan::profile::Profile::load("archlinux-repro").unwrap();
        let v = crate::plan::version::BuildVersion::parse("20260518.0.532496").unwrap();
        // Every location the profile names on loopback (git as a local file).
        let real = Plan::with_overrides(&lp, &v, &[], &[]).unwrap();
        let mut all: Vec<(String, String)> = real
            .locations
            .keys()
            .filter(|k| *k != "git" && *k != "archive")
            .map(|k| (k.to_string(), "http://127.0.0.1:9".to_string()))
            .collect();
        all.insert(0, ("archive".to_string(), "http://127.0.0.1:9".to_string()));
        all.push(("git".to_string(), "file:///srv/up.git".to_string()));
        let plan = Plan::with_overrides(&lp, &v, &[], &all).unwrap();
        let r = assemble_report(&plan, findings(Vec::new(), None));
        assert_eq!(r.hosts, Hosts::LocalWorld);
        assert!(
            r.summary()
                .lines()
                .nth(1)
                .unwrap()
                .contains("a local world")
        );
        let plan = Plan::with_overrides(&lp, &v, &[], &all[..1]).unwrap();
        let r = assemble_report(&plan, findings(Vec::new(), None));
        assert_eq!(r.hosts, Hosts::Mixed);
        assert_eq!(r.local_locations, ["archive"]);
    }

    #[test]
    fn served_packages_are_keyed_by_url_path_and_need_a_hash() {
        let mut l = InputsLock::default();
        l.record(
            Status::Fetched,
            "http://127.0.0.1:7878/repos/2026/05/17/core/os/x86_64/zstd-1.5-1-x86_64.pkg.tar.zst",
            Some(("ab", 3)),
        );
        l.record(
            Status::Fetched,
            "http://127.0.0.1:7878/repos/2026/05/17/core/os/x86_64/core.db",
            Some(("cd", 3)),
        );
        l.record(Status::Miss, "http://127.0.0.1:7878/gone.pkg.tar.zst", None);
        let s = served_packages(&l);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            s[0].url_path,
            "/repos/2026/05/17/core/os/x86_64/zstd-1.5-1-x86_64.pkg.tar.zst"
        );
        assert_eq!(s[0].sha256, "ab");
    }

    #[test]
    fn completion_pins_only_unserved_packages_of_the_same_version() {
        let pkg = |name: &str, version: &str, sha: Option<&str>| LockedPackage {
            name: name.into(),
            version: version.into(),
            arch: None,
            sha256: sha.map(String::from),
            repo: None,
            day: None,
        };
        let mut lock = EnvLock {
            packages: vec![
                pkg("a", "1-1", None),
                pkg("b", "1-1", None),
                pkg("c", "1-1", Some("served")),
            ],
            schema: 1,
            snapshot: None,
        };
        complete_env_lock(&mut lock, |name| {
            Some(ResolvedPackage {
                name: name.into(),
                version: if name == "b" {
                    "2-1".into()
                } else {
                    "1-1".into()
                },
                filename: format!("{name}.pkg.tar.zst"),
                sha256: format!("db-{name}"),
                repo: "core".into(),
                day: "2026/05/17".into(),
                url: String::new(),
            })
        });
        assert_eq!(lock.packages[0].sha256.as_deref(), Some("db-a"));
        assert_eq!(lock.packages[0].repo.as_deref(), Some("core"));
        assert_eq!(
            lock.packages[1].sha256, None,
            "another version: not pinned by that day"
        );
        assert_eq!(lock.packages[2].sha256.as_deref(), Some("served"));
    }
}
