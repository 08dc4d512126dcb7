//! The source checkout the build runs in, checked before any step sees it: it is the release's
//! source revision, git sees nothing added, changed or ignored in it, and none of the
//! artifacts the build must make is already there. A committed `output/repro.tar.zst` would
//! make upstream's `make` skip the build, and a rootfs that was never rebuilt could then
//! pass; such a file is removed before the build and the report says so.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::plan::Plan;

/// What the report says about the checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkspaceRecord {
    /// `git rev-parse HEAD` of the checkout.
    pub revision: String,
    /// `git status --porcelain --ignored` printed nothing after the checkout.
    pub clean_checkout: bool,
    /// Artifacts (relative to the workspace) the checkout already held, removed before the
    /// build so that the build makes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_before_build: Vec<String>,
}

fn git(workspace: &Path, args: &[&str]) -> Result<String> {
    let mut c = Command::new("git");
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("-C")
        .arg(workspace)
        .args(args);
    let what = format!("git {} in {}", args.join(" "), workspace.display());
    let out = crate::inputs::git::run(c, &what)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Checks the fresh checkout at `workspace` against `revision` and clears the artifacts it
/// must not hold. A checkout of another revision is an environment error (exit 3): the
/// source is not what the release names.
pub fn verify(plan: &Plan, workspace: &Path, revision: &str) -> Result<WorkspaceRecord> {
    let head = git(workspace, &["rev-parse", "HEAD"])?.trim().to_string();
    if head != revision {
        return Err(Error::Environment(format!(
            "the checkout in {} is at {head}, not at the release's source revision {revision}",
            workspace.display()
        )));
    }
    let status = git(workspace, &["status", "--porcelain", "--ignored"])?;
    let mut removed = Vec::new();
    for f in &plan.artifacts.files {
        let rel = format!("{}/{f}", plan.artifacts.dir.trim_end_matches('/'));
        let p = workspace.join(&rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).ctx("remove a committed artifact", &p)?;
            removed.push(rel);
        }
    }
    Ok(WorkspaceRecord {
        revision: head,
        clean_checkout: status.trim().is_empty(),
        removed_before_build: removed,
    })
}

/// The report's notes for `r`.
pub fn notes(r: &WorkspaceRecord) -> Vec<String> {
    let mut n = Vec::new();
    if !r.clean_checkout {
        n.push(format!(
            "the checkout of {} was not clean (git status listed files) before the build",
            r.revision
        ));
    }
    if !r.removed_before_build.is_empty() {
        n.push(format!(
            "the source revision holds build artifacts ({}); they were removed before the build, so the checked artifacts are the build's own",
            r.removed_before_build.join(", ")
        ));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let o = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn repo(with_artifact: bool) -> (tempfile::TempDir, String) {
        let t = tempfile::tempdir().unwrap();
        let add = if with_artifact {
            "mkdir output && echo stale > output/repro.tar.zst && "
        } else {
            ""
        };
        sh(
            t.path(),
            &format!(
                "git init -q && echo x > Makefile && {add}git add -A && git -c user.name=t -c user.email=t@t commit -qm c"
            ),
        );
        let head = git(t.path(), &["rev-parse", "HEAD"])
            .unwrap()
            .trim()
            .to_string();
        (t, head)
    }

    fn plan() -> Plan {
        super::super::test_plan()
    }

    #[test]
    fn a_clean_checkout_of_the_revision_passes_as_it_is() {
        let (t, head) = repo(false);
        let r = verify(&plan(), t.path(), &head).unwrap();
        assert_eq!(r.revision, head);
        assert!(r.clean_checkout);
        assert!(r.removed_before_build.is_empty());
        assert!(notes(&r).is_empty());
    }

    #[test]
    fn a_committed_artifact_is_removed_and_named() {
        let (t, head) = repo(true);
        let r = verify(&plan(), t.path(), &head).unwrap();
        assert_eq!(
            r.removed_before_build,
            vec!["output/repro.tar.zst".to_string()]
        );
        assert!(!t.path().join("output/repro.tar.zst").exists());
        assert!(
            notes(&r)[0].contains("output/repro.tar.zst"),
            "{:?}",
            notes(&r)
        );
    }

    #[test]
    fn a_stray_file_or_another_revision_is_seen() {
        let (t, head) = repo(false);
        std::fs::write(t.path().join("stray"), "x").unwrap();
        assert!(!verify(&plan(), t.path(), &head).unwrap().clean_checkout);
        let e = verify(&plan(), t.path(), &"0".repeat(40)).unwrap_err();
        assert!(
            e.to_string()
                .contains("not at the release's source revision"),
            "{e}"
        );
    }
}
