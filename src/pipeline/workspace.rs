//! The source checkout the build runs in, checked before any step sees it: it is the release's
//! source revision, git sees nothing added, changed or ignored in it, and none of the
//! artifacts the build must make is already there. A committed `output/repro.tar.zst` would
//! make upstream's `make` skip the build, and a rootfs that was never rebuilt could then
//! pass; such a file is removed before the build and the report says so.
//!
//! The checkout's *content* is checked against the revision too (`source-checkout`, a
//! decisive check): the commit object must hash to the revision, and the tree git computes
//! from the checked-out files must be the commit's tree. `rev-parse HEAD` and `git status`
//! read the objects without re-hashing them, so a store whose git cache was altered (one
//! blob's bytes changed under its id) gave a checkout that said "revision R, clean" while a
//! file differed, and a verdict of reproduced (found by the mutation suite,
//! `tests/verdict_mutations.rs`).

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
    /// The tree the revision's commit object names, that object having been checked to hash
    /// to the revision (else `None`, and `commit_object` says what it hashed to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_tree: Option<String>,
    /// What the revision's commit object hashed to, when that was not the revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_object: Option<String>,
    /// The tree git computes from the checked-out files (every file, ignored ones too).
    pub checkout_tree: String,
}

fn git(workspace: &Path, args: &[&str]) -> Result<String> {
    git_with(workspace, args, &[])
}

fn git_with(workspace: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    Ok(String::from_utf8_lossy(&git_bytes(workspace, args, env)?).into_owned())
}

fn git_bytes(workspace: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<Vec<u8>> {
    let mut c = Command::new("git");
    c.envs(env.iter().map(|(k, v)| (k, v.as_os_str())));
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("-C")
        .arg(workspace)
        .args(args);
    let what = format!("git {} in {}", args.join(" "), workspace.display());
    crate::inputs::git::run(c, &what)
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
    let (revision_tree, commit_object) = verified_commit_tree(workspace, revision)?;
    let checkout_tree = files_tree(workspace)?;
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
        revision_tree,
        commit_object,
        checkout_tree,
    })
}

/// The tree named by the commit object of `revision`, after checking that the object's bytes
/// hash to `revision`; when they do not, `(None, Some(what they hash to))`.
fn verified_commit_tree(
    workspace: &Path,
    revision: &str,
) -> Result<(Option<String>, Option<String>)> {
    let body = git_bytes(workspace, &["cat-file", "commit", revision], &[])?;
    let tmp =
        tempfile::NamedTempFile::new().ctx("create a temporary file in", std::env::temp_dir())?;
    std::fs::write(tmp.path(), &body).ctx("write", tmp.path())?;
    let path = tmp.path().to_string_lossy().into_owned();
    let hashed = git(
        workspace,
        &["hash-object", "-t", "commit", "--no-filters", &path],
    )?
    .trim()
    .to_string();
    if hashed != revision {
        return Ok((None, Some(hashed)));
    }
    let tree = String::from_utf8_lossy(&body)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("tree "))
        .map(str::to_string);
    Ok((tree, None))
}

/// The tree id of every file in the workspace as it is (git's own hashing, through a
/// throwaway index, ignored files included): equal to the revision's tree only when every
/// file is the revision's, byte for byte, mode for mode.
fn files_tree(workspace: &Path) -> Result<String> {
    let dir = tempfile::tempdir().ctx("create a temporary directory in", std::env::temp_dir())?;
    let index = dir.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_path())];
    git_with(workspace, &["add", "-A", "-f", "."], &env)?;
    Ok(git_with(workspace, &["write-tree"], &env)?
        .trim()
        .to_string())
}

/// `source-checkout`, decisive: the files the build ran on are the revision's. Its commit
/// object must hash to the revision, and the files' tree must be that commit's tree.
pub fn check(r: &WorkspaceRecord) -> crate::report::Check {
    use crate::report::Check;
    match (&r.revision_tree, &r.commit_object) {
        (Some(tree), _) => Check::compare(
            "source-checkout",
            true,
            Some(tree.clone()),
            Some(r.checkout_tree.clone()),
            format!(
                "expected: the tree of commit {} (its object hashes to the revision); actual: the tree of the checked-out files",
                r.revision
            ),
        ),
        (None, object) => Check::compare(
            "source-checkout",
            true,
            Some(r.revision.clone()),
            Some(object.clone().unwrap_or_default()),
            "expected: the revision; actual: what the commit object the repository holds under it hashes to (altered)".into(),
        ),
    }
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
    if r.revision_tree.as_deref() != Some(r.checkout_tree.as_str()) {
        n.push(format!(
            "the checked-out files are not those of {}: the repository's objects were altered (see the source-checkout check)",
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
    fn the_checkout_check_passes_on_the_revisions_files_and_fails_on_an_altered_blob() {
        let (t, head) = repo(false);
        let r = verify(&plan(), t.path(), &head).unwrap();
        assert_eq!(check(&r).status, crate::report::Status::Pass, "{r:?}");
        assert!(check(&r).decisive);
        // The Makefile's blob altered under its own id (git reads loose objects without
        // re-hashing them), then checked out again: HEAD is still the revision.
        let blob = git(t.path(), &["rev-parse", "HEAD:Makefile"]).unwrap();
        let blob = blob.trim();
        let loose = t
            .path()
            .join(".git/objects")
            .join(&blob[..2])
            .join(&blob[2..]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, b"blob 2\0y\n").unwrap();
        std::fs::remove_file(&loose).unwrap();
        std::fs::write(&loose, z.finish().unwrap()).unwrap();
        std::fs::remove_file(t.path().join("Makefile")).unwrap();
        sh(t.path(), "git checkout -- Makefile && grep -qx y Makefile");
        let r = verify(&plan(), t.path(), &head).unwrap();
        assert_eq!(r.revision, head);
        let c = check(&r);
        assert_eq!(c.status, crate::report::Status::Fail, "{r:?}");
        assert!(
            notes(&r).iter().any(|n| n.contains("not those of")),
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
