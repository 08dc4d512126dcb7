//! The `dockerfile` check: the Dockerfile the build regenerated (upstream's REPRO.md,
//! `make-dockerfile.sh repro.tar.zst repro output/ "true" "repro" SDE`) against the
//! release's `Dockerfile.repro` at the tag (upstream's pre-release job,
//! `make-dockerfile.sh "repro-V.tar.zst" repro output "curl -sOJL \"URL\"" repro SDE`, then
//! `sed -i "/^COPY repro-V.tar.zst \/$/d"`).
//!
//! The two invocations differ in the rootfs file name and the download command only, so
//! exactly these lines are expected to differ, and nothing else:
//! - `COPY repro.tar.zst /` is ours alone (the release deleted its COPY line);
//! - the download line: ours `RUN true && \`, the release's `RUN curl -sOJL "…/repro-V.tar.zst" && \`;
//! - the file name in the `echo "HASH  FILE" > /tmp/sha256sums.txt` and
//!   `tar … --extract --file FILE` lines (`repro.tar.zst` vs `repro-V.tar.zst`).
//!
//! Any other difference (a label, the title, the revision, BUILD_VERSION, the hash) is
//! reported. The check is evidence, not part of the verdict: the image checks decide.

use std::path::Path;

use super::Run;
use super::release::ReleaseAt;
use crate::report::{Check, Status};

impl Run<'_> {
    /// The `dockerfile` check over the build's output directory `built`, after the rootfs
    /// check (in `checks`): a rootfs that differs explains a differing hash line.
    pub fn check_dockerfile(
        &mut self,
        release: &ReleaseAt,
        built: &Path,
        checks: &[Check],
    ) -> Check {
        let plan = self.plan;
        let file = built.join(&plan.source.release_file);
        let ours = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "no regenerated {}/{} ({e}): the build step did not write it",
                plan.artifacts.dir, plan.source.release_file
            )
        });
        let rootfs_differs = checks
            .iter()
            .any(|c| c.name == "rootfs-sha256" && c.status == Status::Fail);
        check(
            ours.as_deref().map_err(Clone::clone),
            &release.text,
            plan.version.as_str(),
            &format!("{} at {}", plan.source.release_file, plan.source.tag),
            rootfs_differs,
        )
    }
}

/// The check's name in the report.
pub const CHECK: &str = "dockerfile";

/// The cause of a difference in the hash of the `echo` line when the rootfs itself differs.
pub const ROOTFS_HASH_CAUSE: &str =
    "the rootfs differs (rootfs-sha256): the Dockerfile names the rebuilt rootfs's hash";

/// The regenerated Dockerfile against the release's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The expected differences that were found (what they are, in words).
    pub expected: Vec<String>,
    /// Every other difference: `-` a line of the release's file, `+` a line of ours.
    pub unexpected: Vec<String>,
    /// The only unexpected difference is the rootfs hash of the `echo` line.
    pub only_the_hash: bool,
}

/// Our Dockerfile as the release's pre-release job would have written it: the expected
/// differences applied. Returns the lines and which expected differences were applied.
fn as_released(ours: &str, release: &str, version: &str) -> (Vec<String>, Vec<String>) {
    let ours_file = "repro.tar.zst";
    let theirs_file = format!("repro-{version}.tar.zst");
    let download = release.lines().find(|l| {
        l.starts_with("RUN curl -sOJL \"") && l.ends_with(&format!("/{theirs_file}\" && \\"))
    });
    let mut out = Vec::new();
    let mut applied = Vec::new();
    for l in ours.lines() {
        if l == format!("COPY {ours_file} /") {
            applied.push(format!(
                "the line `{l}` (the release's pre-release job deleted its COPY line)"
            ));
            continue;
        }
        if let (true, Some(d)) = (l == "RUN true && \\", download) {
            applied.push(format!(
                "the download line: ours `{l}`, the release's `{d}`"
            ));
            out.push(d.to_string());
            continue;
        }
        let t = l.trim_start();
        if (t.starts_with("echo \"")
            && t.ends_with(&format!("  {ours_file}\" > /tmp/sha256sums.txt && \\")))
            || (t.starts_with("tar ") && t.ends_with(&format!(" --file {ours_file}")))
        {
            let n = l.replace(ours_file, &theirs_file);
            applied.push(format!(
                "the rootfs file name in `{}`: {ours_file} vs {theirs_file}",
                t.split_whitespace().next().unwrap_or_default()
            ));
            out.push(n);
            continue;
        }
        out.push(l.to_string());
    }
    (out, applied)
}

/// A line diff (longest common subsequence; Dockerfiles are a few dozen lines).
fn diff(a: &[String], b: &[&str]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("-{}", b[j]));
            j += 1;
        } else {
            out.push(format!("+{}", a[i]));
            i += 1;
        }
    }
    out
}

/// Compare `ours` (the regenerated Dockerfile) with `release` (the release's, at the tag)
/// for `version`.
pub fn compare(ours: &str, release: &str, version: &str) -> Comparison {
    let (lines, expected) = as_released(ours, release, version);
    let theirs: Vec<&str> = release.lines().collect();
    let unexpected = diff(&lines, &theirs);
    let is_echo = |l: &str| {
        l[1..].trim_start().starts_with("echo \"") && l.ends_with(" > /tmp/sha256sums.txt && \\")
    };
    let only_the_hash = unexpected.len() == 2 && unexpected.iter().all(|l| is_echo(l));
    Comparison {
        expected,
        unexpected,
        only_the_hash,
    }
}

/// The `dockerfile` check of the report. `ours`: the regenerated Dockerfile, or why there is
/// none; `rootfs_differs`: the rootfs-sha256 check failed.
pub fn check(
    ours: std::result::Result<&str, String>,
    release: &str,
    version: &str,
    release_name: &str,
    rootfs_differs: bool,
) -> Check {
    let what = format!(
        "the build's regenerated output/Dockerfile.repro vs {release_name} (evidence only, not part of the verdict)"
    );
    let ours = match ours {
        Ok(t) => t,
        Err(why) => {
            return Check::compare(
                CHECK,
                false,
                Some(release_name.into()),
                None,
                format!("{what}; {why}"),
            );
        }
    };
    let c = compare(ours, release, version);
    let expected_text = if c.expected.is_empty() {
        "no expected difference found".to_string()
    } else {
        format!(
            "expected differences only where the two invocations differ: {}",
            c.expected.join("; ")
        )
    };
    if c.unexpected.is_empty() {
        return Check {
            name: CHECK.into(),
            status: Status::Pass,
            decisive: false,
            expected: Some(release_name.to_string()),
            actual: Some("the same lines, but for the expected differences".into()),
            evidence: format!("{what}; {expected_text}"),
            known_cause: None,
        };
    }
    let (minus, plus): (Vec<&String>, Vec<&String>) =
        c.unexpected.iter().partition(|l| l.starts_with('-'));
    let join = |v: Vec<&String>| {
        v.iter()
            .map(|l| l[1..].trim().to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    Check {
        name: CHECK.into(),
        status: Status::Fail,
        decisive: false,
        expected: Some(join(minus)),
        actual: Some(join(plus)),
        evidence: format!(
            "{what}; {} line(s) differ beyond the expected ones ({expected_text})",
            c.unexpected.len()
        ),
        known_cause: (c.only_the_hash && rootfs_differs).then(|| ROOTFS_HASH_CAUSE.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const TAG_VERSION: &str = "20260518.0.532496";
    const SOURCE_REVISION: &str = "34b87485162b028c8d957bdcd2674359d883cd21";
    const ROOTFS_SHA: &str = "2fd2e5f7c5b08ebe3ac829083995f3f5faf7fa80d6f36fe080a6740bc341005c";

    /// The real upstream repository, cloned from the bundle (test data, never copied into
    /// the project).
    fn upstream() -> (tempfile::TempDir, PathBuf) {
        // $REPROBOX_UPSTREAM_DIR (scripts/test sets it), else ../shared/upstream.
        let bundle = crate::world::default_bundle().unwrap_or_else(|e| {
            panic!("these tests read the real upstream repository from its bundle: {e}")
        });
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("upstream");
        let ok = Command::new("git")
            .args(["clone", "-q"])
            .arg(&bundle)
            .arg(&repo)
            .status()
            .expect("git");
        assert!(ok.success(), "git clone {}", bundle.display());
        (t, repo)
    }

    fn git(repo: &Path, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Run upstream's own make-dockerfile.sh at the source revision as REPRO.md does
    /// (BUILD_VERSION set, CI_COMMIT_SHA not), with an SHA256 file naming `sha`.
    fn regenerate(repo: &Path, sha: &str) -> String {
        git(repo, &["checkout", "-q", SOURCE_REVISION]);
        let out = repo.join("output");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("repro.tar.zst.SHA256"),
            format!("{sha}  repro.tar.zst\n"),
        )
        .unwrap();
        let o = Command::new("bash")
            .current_dir(repo)
            .env("BUILD_VERSION", TAG_VERSION)
            .env_remove("CI_COMMIT_SHA")
            .args([
                "scripts/make-dockerfile.sh",
                "repro.tar.zst",
                "repro",
                "output/",
                "true",
                "repro",
                "1779062400",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out.join("Dockerfile.repro")).unwrap()
    }

    #[test]
    fn the_regenerated_dockerfile_of_a_real_tag_differs_only_where_the_invocations_do() {
        let (_t, repo) = upstream();
        let release = git(
            &repo,
            &["show", &format!("v{TAG_VERSION}:Dockerfile.repro")],
        );
        let ours = regenerate(&repo, ROOTFS_SHA);
        let c = compare(&ours, &release, TAG_VERSION);
        assert!(c.unexpected.is_empty(), "{:#?}", c.unexpected);
        // The COPY line, the download line, and the file name in the echo and tar lines.
        assert_eq!(c.expected.len(), 4, "{:#?}", c.expected);
        let k = check(
            Ok(&ours),
            &release,
            TAG_VERSION,
            "Dockerfile.repro at the tag",
            false,
        );
        assert_eq!(k.status, Status::Pass, "{k:?}");
        assert!(!k.decisive);

        // Another rootfs: the hash line differs, explained by the rootfs check.
        let other = regenerate(&repo, &"0".repeat(64));
        let c = compare(&other, &release, TAG_VERSION);
        assert!(c.only_the_hash, "{:#?}", c.unexpected);
        let k = check(
            Ok(&other),
            &release,
            TAG_VERSION,
            "Dockerfile.repro at the tag",
            true,
        );
        assert_eq!(k.status, Status::Fail);
        assert_eq!(k.known_cause.as_deref(), Some(ROOTFS_HASH_CAUSE));

        // The Makefile's own title ("Dev") and a BUILD_VERSION left to its default are
        // differences the report names.
        let dev = ours
            .replace("Arch Linux repro Image", "Arch Linux Dev Image")
            .replace(&format!("VERSION_ID={TAG_VERSION}"), "VERSION_ID=dev");
        let k = check(
            Ok(&dev),
            &release,
            TAG_VERSION,
            "Dockerfile.repro at the tag",
            false,
        );
        assert_eq!(k.status, Status::Fail, "{k:?}");
        assert!(k.known_cause.is_none());
        assert!(
            k.actual
                .as_deref()
                .unwrap()
                .contains("Arch Linux Dev Image"),
            "{k:?}"
        );
        assert!(
            k.actual.as_deref().unwrap().contains("VERSION_ID=dev"),
            "{k:?}"
        );
        assert!(
            k.expected
                .as_deref()
                .unwrap()
                .contains("Arch Linux repro Image"),
            "{k:?}"
        );
    }

    #[test]
    fn no_regenerated_dockerfile_is_unknown() {
        let k = check(
            Err("the make step did not finish".into()),
            "x",
            "1",
            "r",
            false,
        );
        assert_eq!(k.status, Status::Unknown);
        assert!(k.evidence.contains("did not finish"));
    }
}
