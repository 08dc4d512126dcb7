//! The run record: the verdict with every check and its evidence, the human summary, and
//! the in-toto attestation.
//!
//! DESIGN.md decision 6: "reproduced" only when the rootfs sha256, the image config digest
//! and the diffIDs all match; and the manifest digest of the rebuilt image pushed as the
//! publisher pushed it (`pipeline/image.rs`), unless it differs only in compressed layer
//! bytes (a known cause, then not part of the verdict). A check
//! that could not be computed is `unknown`, and an unknown is never a pass.

pub mod attestation;

use serde::Serialize;

use crate::envlock::Drift;
use crate::job::Enforcement;
use crate::verify::audit::LateTimestamp;
use crate::verify::tardiff::FileDiff;

pub const REPORT_SCHEMA: &str = "reprobox.report/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Fail,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `rootfs-sha256`, `image-config-digest`, `image-diff-ids`, `image-manifest-digest`.
    pub name: String,
    pub status: Status,
    /// Whether the verdict depends on it (not the `dockerfile` evidence, nor a difference
    /// with a known, harmless cause).
    pub decisive: bool,
    pub expected: Option<String>,
    pub actual: Option<String>,
    /// Where each side came from, or why it is unknown.
    pub evidence: String,
    /// A difference whose cause is known and harmless (a non-decisive check only): why the
    /// two sides differ although the decisive checks show the same image. The summary shows
    /// it as such, never as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_cause: Option<String>,
}

impl Check {
    pub fn compare(
        name: &str,
        decisive: bool,
        expected: Option<String>,
        actual: Option<String>,
        evidence: String,
    ) -> Check {
        let status = match (&expected, &actual) {
            (Some(e), Some(a)) if e == a => Status::Pass,
            (Some(_), Some(_)) => Status::Fail,
            _ => Status::Unknown,
        };
        Check {
            name: name.into(),
            status,
            decisive,
            expected,
            actual,
            evidence,
            known_cause: None,
        }
    }

    /// How the summary shows the check: `pass`, `differs` (with what is known of it), or
    /// `not run: WHY` (an unknown is never shown as a pass).
    pub fn outcome(&self) -> String {
        match self.status {
            Status::Pass => "pass".into(),
            Status::Fail => match (&self.known_cause, self.decisive) {
                (Some(cause), _) => {
                    format!("differs (known, harmless: {cause} — not part of the verdict)")
                }
                (None, false) => "differs (evidence only, not part of the verdict)".into(),
                (None, true) => "differs".into(),
            },
            Status::Unknown => format!("not run: {}", self.why_not_run()),
        }
    }

    /// Why an unknown check could not be made: which side is missing.
    fn why_not_run(&self) -> &'static str {
        match (&self.expected, &self.actual) {
            (None, None) => "neither the published nor the rebuilt value could be read",
            (None, Some(_)) => "the published value could not be read",
            _ => "nothing rebuilt to compare (its step did not run or did not finish)",
        }
    }
}

/// Whether the published side came from the real hosts or from a local world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hosts {
    /// No location of the plan on loopback or file://.
    Real,
    /// Every location on loopback (127.0.0.1, localhost, ::1) or file://.
    LocalWorld,
    /// Some of each (`local_locations` names the local ones).
    Mixed,
}

impl Hosts {
    /// A URL on this machine: loopback or file://.
    pub fn is_local(url: &str) -> bool {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        if scheme == "file" {
            return true;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or_default()
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// From how many of the plan's `n` locations are local.
    pub fn of(local: usize, n: usize) -> Hosts {
        match local {
            0 => Hosts::Real,
            l if l == n => Hosts::LocalWorld,
            _ => Hosts::Mixed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every decisive check passed.
    Reproduced,
    /// At least one decisive check failed.
    Differs,
    /// No decisive check failed, but at least one could not be made.
    Incomplete,
}

impl Verdict {
    pub fn of(checks: &[Check]) -> Verdict {
        let decisive: Vec<&Check> = checks.iter().filter(|c| c.decisive).collect();
        if decisive.is_empty() {
            return Verdict::Incomplete;
        }
        if decisive.iter().any(|c| c.status == Status::Fail) {
            Verdict::Differs
        } else if decisive.iter().all(|c| c.status == Status::Pass) {
            Verdict::Reproduced
        } else {
            Verdict::Incomplete
        }
    }

    /// DESIGN.md decision 7.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Reproduced => crate::error::exit::OK,
            Verdict::Differs => crate::error::exit::DIFFERS,
            Verdict::Incomplete => crate::error::exit::INCOMPLETE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub optional: bool,
    pub exit_code: i32,
    pub wall_time_ms: u64,
    pub enforcement: Vec<Enforcement>,
    /// Not run: the environment step's result was taken from this prepared environment
    /// (its key in the store's `envs/`), made earlier by the very same steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
    /// The environment variables the profile gave the step's commands (after substitution).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// The step's scratch directories, each with how it was given (an empty directory of
    /// the run, or the environment's own written in place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<String>,
    /// For a nested-containers step: the podman configuration reprobox gave its jobs (the
    /// files' text and the variables pointing at them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_podman: Option<serde_json::Value>,
    /// The profile's artifacts (`[artifacts] files`) this step made: absent before it ran
    /// (the checkout is cleared of them before the build), present after. An artifact no
    /// step made cannot have been rebuilt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub reprobox_version: &'static str,
    pub profile: String,
    /// Where the profile was found (a `./profiles` file overrides the built-in one of the
    /// same name) and the sha256 of its text: the name alone does not say which rules
    /// decided.
    pub profile_origin: crate::plan::profile::Origin,
    pub profile_sha256: String,
    pub version: String,
    pub snapshot: String,
    pub source_date_epoch: i64,
    /// The upstream git remote the release tag and its release file came from.
    pub source_git: String,
    /// The release tag the expected hashes were read at.
    pub tag: String,
    /// The registry base URL the published image was read from.
    pub registry: String,
    /// The published image (`host/repository:tag`).
    pub image: String,
    /// Whether the plan's locations were the real hosts or a local world.
    pub hosts: Hosts,
    /// The plan's locations on loopback or file:// (by name).
    pub local_locations: Vec<String>,
    /// The archive day the environment was rolled to (the snapshot day unless `--env-day`).
    pub environment_day: String,
    /// The profile's environment day for this release (the build day or the snapshot day,
    /// `[rollback] env_day`), and why; `environment_day` differs from it only with
    /// `--env-day`.
    #[serde(default)]
    pub profile_environment_day: String,
    #[serde(default)]
    pub profile_environment_day_reason: String,
    /// Which Dockerfile the image step built (`--image-from`): the regenerated one over the
    /// rebuilt rootfs, or the release's own over the published rootfs.
    #[serde(default)]
    pub image_from: String,
    /// The source checkout before the build: its revision, whether git saw it clean, and
    /// the committed artifacts removed so that the build makes them.
    pub workspace: crate::pipeline::workspace::WorkspaceRecord,
    /// The egress (a profile with `[[egress]]`): the run CA's certificate (never its key),
    /// the rules, every request with its status, every refusal with its step, drift and
    /// tampered bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressRecord>,
    /// `--packages-from published`: the published package set make-rootfs.sh's pacman was
    /// served instead of the snapshot day, where it was read, and the packages that differ
    /// from the snapshot day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages_from_published: Option<crate::pipeline::published::PublishedPackages>,
    pub backend: String,
    /// The microVM backend's machine: accelerator, guest kernel (release, sha256, where it
    /// came from), memory, CPUs, root disk. Absent for the container backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microvm: Option<serde_json::Value>,
    pub source_revision: Option<String>,
    pub verdict: Verdict,
    /// Where and why a run stopped before its end (the verdict is then incomplete): every
    /// failure after the plan still writes the report (`pipeline/stopped.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<crate::pipeline::stopped::Stopped>,
    pub checks: Vec<Check>,
    /// Files that differ between the published and the rebuilt rootfs.
    pub file_diffs: Vec<FileDiff>,
    /// What `file_diffs` took the published side from when it is not the published tarball
    /// (the tarball being gone: a layer of the published image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_diffs_source: Option<String>,
    /// Environment packages whose versions differ from the profile's environment day's.
    pub environment_drift: Vec<Drift>,
    /// Timestamps newer than SOURCE_DATE_EPOCH in the outputs.
    pub late_timestamps: Vec<LateTimestamp>,
    pub steps: Vec<StepRecord>,
    /// Outputs of external diff tools, when they ran (file names in the output directory).
    pub external_diffs: Vec<String>,
    /// Notes a reader needs: what could not be enforced or checked, and why.
    pub notes: Vec<String>,
}

impl Report {
    /// The verdict line, the summary's first: `PROFILE VERSION — VERDICT` (all `--quiet`
    /// prints).
    pub fn verdict_line(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Reproduced => "REPRODUCED",
            Verdict::Differs => "DIFFERS",
            Verdict::Incomplete => "INCOMPLETE",
        };
        format!("{} {} — {verdict}", self.profile, self.version)
    }

    /// Where the published side came from, in words.
    fn hosts_text(&self) -> String {
        match self.hosts {
            Hosts::Real => "the real hosts".into(),
            Hosts::LocalWorld => "a local world (loopback hosts, not the real ones): this shows what upstream's scripts give with the world's packages and images; only a run against the real hosts shows it for Arch's and Docker Hub's".into(),
            Hosts::Mixed => format!(
                "the real hosts, but {} local (loopback or file://)",
                self.local_locations.join(", ")
            ),
        }
    }

    /// The human summary (`summary.txt`): the verdict; what was compared with what; each
    /// check; the steps; then every difference and note.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "{}", self.verdict_line());
        if let Some(s) = &self.stopped {
            let _ = writeln!(
                o,
                "the run stopped at stage {}: {} (exit {}); what it did not reach is unknown",
                s.stage, s.error, s.exit_code
            );
        }
        let _ = writeln!(
            o,
            "published: release {} of {}; image {} from {} — {}",
            self.tag,
            self.source_git,
            self.image,
            self.registry,
            self.hosts_text()
        );
        let day = if self.environment_day == self.profile_environment_day {
            self.profile_environment_day_reason.clone()
        } else {
            format!(
                "--env-day: not the profile's day {}",
                self.profile_environment_day
            )
        };
        let checkout = match (
            self.workspace.revision.is_empty(),
            self.workspace.clean_checkout,
        ) {
            (true, _) => "",
            (false, true) => ", a clean checkout",
            (false, false) => ", a checkout git did not see clean",
        };
        let _ = writeln!(
            o,
            "rebuilt: source revision {}{checkout} on backend {}, environment day {} ({day})",
            self.source_revision.as_deref().unwrap_or("(unknown)"),
            self.backend,
            self.environment_day
        );
        if !self.image_from.is_empty() {
            let _ = writeln!(o, "image built from {}", self.image_from);
        }
        if let Some(p) = &self.packages_from_published {
            let _ = writeln!(
                o,
                "packages: the {} of the published rootfs ({}), {} differing from the snapshot day",
                p.packages,
                p.source,
                p.differ_from_snapshot.len()
            );
        }
        let _ = writeln!(
            o,
            "snapshot {}, SOURCE_DATE_EPOCH {}",
            self.snapshot, self.source_date_epoch
        );
        if let Some(m) = &self.microvm {
            let _ = writeln!(
                o,
                "microVM: accel {}, kernel {} ({} {}), {} MiB, {} CPUs",
                m["accel"].as_str().unwrap_or("?"),
                m["kernel_release"].as_str().unwrap_or("?"),
                m["kernel_origin"]["kind"].as_str().unwrap_or("?"),
                m["kernel_origin"]["source"].as_str().unwrap_or("?"),
                m["memory_mib"],
                m["cpus"]
            );
        }
        let _ = writeln!(o, "\nchecks");
        for c in &self.checks {
            let _ = writeln!(o, "  {:<24} {}", c.name, c.outcome());
            if c.status != Status::Pass {
                let _ = writeln!(
                    o,
                    "    expected {}",
                    c.expected.as_deref().unwrap_or("(unknown)")
                );
                let _ = writeln!(
                    o,
                    "    actual   {}",
                    c.actual.as_deref().unwrap_or("(unknown)")
                );
            }
            let _ = writeln!(o, "    {}", c.evidence);
        }
        if !self.steps.is_empty() {
            let _ = writeln!(o, "\nsteps");
            for st in &self.steps {
                let opt = if st.optional { " (optional)" } else { "" };
                if let Some(key) = &st.cached {
                    let _ = writeln!(
                        o,
                        "  {:<24} prepared earlier: environment {}{opt}",
                        st.name,
                        &key[..key.len().min(12)]
                    );
                    continue;
                }
                let _ = writeln!(
                    o,
                    "  {:<24} exit {}{opt}, {:.1} s",
                    st.name,
                    st.exit_code,
                    st.wall_time_ms as f64 / 1000.0
                );
            }
        }
        if !self.environment_drift.is_empty() {
            let _ = writeln!(
                o,
                "\nenvironment packages that differ from the profile's environment day ({})",
                self.profile_environment_day
            );
            for d in &self.environment_drift {
                let _ = writeln!(o, "  {d}");
            }
        }
        if !self.file_diffs.is_empty() {
            let _ = writeln!(
                o,
                "\nfiles that differ ({} -> rebuilt): {}",
                self.file_diffs_source.as_deref().unwrap_or("published"),
                self.file_diffs.len()
            );
            for d in self.file_diffs.iter().take(200) {
                let _ = writeln!(o, "  {d}");
            }
            if self.file_diffs.len() > 200 {
                let _ = writeln!(o, "  … {} more in report.json", self.file_diffs.len() - 200);
            }
        }
        if !self.late_timestamps.is_empty() {
            let _ = writeln!(
                o,
                "\ntimestamps newer than SOURCE_DATE_EPOCH: {}",
                self.late_timestamps.len()
            );
            for t in self.late_timestamps.iter().take(50) {
                let _ = writeln!(o, "  {}: {} {} = {}", t.artifact, t.path, t.field, t.value);
            }
        }
        if !self.external_diffs.is_empty() {
            let _ = writeln!(o, "\nexternal diffs: {}", self.external_diffs.join(", "));
        }
        for n in &self.notes {
            let _ = writeln!(o, "\nnote: {n}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, decisive: bool, e: Option<&str>, a: Option<&str>) -> Check {
        Check::compare(
            name,
            decisive,
            e.map(Into::into),
            a.map(Into::into),
            String::new(),
        )
    }

    fn report(checks: Vec<Check>, hosts: Hosts, local: &[&str]) -> Report {
        Report {
            schema: REPORT_SCHEMA,
            reprobox_version: "0",
            profile: "archlinux-repro".into(),
            profile_origin: crate::plan::profile::Origin::Embedded,
            profile_sha256: "0".repeat(64),
            version: "20260518.0.532496".into(),
            snapshot: "2026/05/17".into(),
            source_date_epoch: 1_779_062_400,
            source_git: "https://gitlab.archlinux.org/archlinux/archlinux-docker.git".into(),
            tag: "v20260518.0.532496".into(),
            registry: "https://registry-1.docker.io".into(),
            image: "registry-1.docker.io/archlinux/archlinux:repro-20260518.0.532496".into(),
            hosts,
            local_locations: local.iter().map(|s| s.to_string()).collect(),
            environment_day: "2026/05/17".into(),
            profile_environment_day: "2026/05/17".into(),
            profile_environment_day_reason:
                "the snapshot day: the profile's [rollback] env_day = \"snapshot\"".into(),
            image_from: String::new(),
            workspace: Default::default(),
            egress: None,
            packages_from_published: None,
            backend: "container".into(),
            microvm: None,
            source_revision: Some("34b8748".into()),
            verdict: Verdict::of(&checks),
            stopped: None,
            checks,
            file_diffs: Vec::new(),
            file_diffs_source: None,
            environment_drift: Vec::new(),
            late_timestamps: Vec::new(),
            steps: Vec::new(),
            external_diffs: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_summary_says_what_was_compared_with_what_and_each_checks_outcome() {
        let mut manifest = c("image-manifest-digest", false, Some("m1"), Some("m2"));
        manifest.known_cause = Some("layers compressed on one side only".into());
        let r = report(
            vec![
                c("rootfs-sha256", true, Some("a"), Some("a")),
                c("image-config-digest", true, Some("b"), Some("b")),
                manifest,
            ],
            Hosts::Real,
            &[],
        );
        let s = r.summary();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "archlinux-repro 20260518.0.532496 — REPRODUCED");
        assert_eq!(lines[0], r.verdict_line());
        assert!(
            lines[1].starts_with(
                "published: release v20260518.0.532496 of https://gitlab.archlinux.org/"
            ),
            "{s}"
        );
        assert!(lines[1].contains("image registry-1.docker.io/archlinux/archlinux:repro-20260518.0.532496 from https://registry-1.docker.io"), "{s}");
        assert!(lines[1].ends_with("— the real hosts"), "{s}");
        assert_eq!(
            lines[2],
            "rebuilt: source revision 34b8748 on backend container, environment day 2026/05/17 (the snapshot day: the profile's [rollback] env_day = \"snapshot\")"
        );
        assert!(s.contains("  rootfs-sha256            pass\n"), "{s}");
        assert!(
            s.contains("image-manifest-digest    differs (known, harmless: layers compressed on one side only — not part of the verdict)"),
            "{s}"
        );
        assert!(!s.contains("FAIL"), "{s}");

        let r = report(
            vec![
                c("rootfs-sha256", true, Some("a"), None),
                c("image-config-digest", true, None, Some("b")),
                c("image-diff-ids", true, Some("a"), Some("b")),
            ],
            Hosts::LocalWorld,
            &["archive", "git", "registry", "rootfs"],
        );
        let s = r.summary();
        assert!(
            s.starts_with("archlinux-repro 20260518.0.532496 — DIFFERS\n"),
            "{s}"
        );
        assert!(
            s.contains("— a local world (loopback hosts, not the real ones)"),
            "{s}"
        );
        assert!(
            s.contains("rootfs-sha256            not run: nothing rebuilt to compare"),
            "{s}"
        );
        assert!(
            s.contains("image-config-digest      not run: the published value could not be read"),
            "{s}"
        );
        assert!(s.contains("image-diff-ids           differs\n"), "{s}");
        assert!(
            !s.contains(" pass"),
            "an unknown is never shown as a pass: {s}"
        );

        let s = report(Vec::new(), Hosts::Mixed, &["archive"]).summary();
        assert!(s.contains("the real hosts, but archive local"), "{s}");
    }

    #[test]
    fn loopback_and_file_urls_are_local() {
        for u in [
            "http://127.0.0.1:8080",
            "https://localhost/x",
            "http://LOCALHOST:1",
            "http://[::1]:5000/v2",
            "http://user@127.0.0.2/",
            "file:///srv/up.git",
        ] {
            assert!(Hosts::is_local(u), "{u}");
        }
        for u in [
            "https://archive.archlinux.org",
            "https://registry-1.docker.io",
            "http://127.example.org/",
            "http://localhost.example.org/",
            "not a url",
        ] {
            assert!(!Hosts::is_local(u), "{u}");
        }
        assert_eq!(Hosts::of(0, 4), Hosts::Real);
        assert_eq!(Hosts::of(4, 4), Hosts::LocalWorld);
        assert_eq!(Hosts::of(1, 4), Hosts::Mixed);
    }

    #[test]
    fn verdict_needs_every_decisive_check_to_pass() {
        let pass = c("rootfs-sha256", true, Some("a"), Some("a"));
        let fail = c("image-config-digest", true, Some("a"), Some("b"));
        let unknown = c("image-diff-ids", true, Some("a"), None);
        let evidence_fail = c("image-manifest-digest", false, Some("a"), Some("b"));
        assert_eq!(
            Verdict::of(&[pass.clone(), evidence_fail.clone()]),
            Verdict::Reproduced
        );
        assert_eq!(Verdict::of(&[pass.clone(), fail.clone()]), Verdict::Differs);
        assert_eq!(
            Verdict::of(&[pass.clone(), unknown.clone()]),
            Verdict::Incomplete
        );
        assert_eq!(Verdict::of(&[unknown, fail]), Verdict::Differs);
        assert_eq!(Verdict::of(&[evidence_fail]), Verdict::Incomplete);
        assert_eq!(Verdict::of(&[]), Verdict::Incomplete);
        assert_eq!(Verdict::Differs.exit_code(), 1);
        assert_eq!(Verdict::Incomplete.exit_code(), 3);
    }
}
