//! The world's gitlab.archlinux.org, as files served at the `gitlab` location: the real
//! archlinux-docker repository (a bare mirror of the bundle the world was built from, with
//! every branch and tag, served with git's dumb HTTP protocol at
//! `archlinux/archlinux-docker.git`), the project's generic package registry
//! (`api/v4/projects/10185/packages/generic/rootfs/VERSION/…`, where pre-release uploads the
//! rootfs), and the release commits pre-release makes on branch `releases`.
//!
//! Nothing of the repository is copied into the project: the bundle is read at build time.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::world::tools;

/// The repository's path under the gitlab root (as on gitlab.archlinux.org).
pub const REPO_PATH: &str = "archlinux/archlinux-docker.git";
/// The generic package registry's rootfs package, as `PACKAGE_REGISTRY_URL` names it
/// (`${CI_API_V4_URL}/projects/${CI_PROJECT_ID}/packages/generic/rootfs`).
pub const PACKAGES_PATH: &str = "api/v4/projects/10185/packages/generic/rootfs";
/// Who commits releases upstream (the project token's bot), as the real release commits say.
const BOT_NAME: &str = "GITLAB_PROJECT_TOKEN";
const BOT_EMAIL: &str =
    "project_10185_bot_6f3a8a11922b9008fcb92024361b10b6@noreply.gitlab.archlinux.org";

/// Upstream's package registry cleanup deletes packages older than this many days (so the
/// published rootfs of every real repro release of April and May 2026 answers 404 now).
pub const CLEANUP_DAYS: i64 = 60;

/// Whether the world's package registry answers 404 for `rest` (a path under the gitlab
/// root) on `today`: a file of the rootfs package whose version's day (`YYYYMMDD.…`) is more
/// than [`CLEANUP_DAYS`] before `today`, as upstream's cleanup leaves it. Anything else is
/// served as it is.
pub fn package_expired(rest: &str, today: jiff::civil::Date) -> bool {
    let Some(version) = rest
        .strip_prefix(PACKAGES_PATH)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split('/').next())
    else {
        return false;
    };
    let Some(day) = version
        .get(..8)
        .and_then(|d| jiff::civil::Date::strptime("%Y%m%d", d).ok())
    else {
        return false;
    };
    day.until(today)
        .map(|span| span.get_days() > CLEANUP_DAYS as i32)
        .unwrap_or(false)
}

/// `DIR/gitlab/archlinux/archlinux-docker.git`.
pub fn bare_repo(gitlab_root: &Path) -> PathBuf {
    gitlab_root.join(REPO_PATH)
}

/// `DIR/gitlab/api/v4/…/rootfs/VERSION/`.
pub fn package_dir(gitlab_root: &Path, version: &str) -> PathBuf {
    gitlab_root.join(PACKAGES_PATH).join(version)
}

fn git(dir: &Path, date: &str) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", BOT_NAME)
        .env("GIT_AUTHOR_EMAIL", BOT_EMAIL)
        .env("GIT_COMMITTER_NAME", BOT_NAME)
        .env("GIT_COMMITTER_EMAIL", BOT_EMAIL)
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "advice.detachedHead=false",
        ]);
    c
}

fn git_out(dir: &Path, date: &str, args: &[&str]) -> Result<String> {
    let what = format!("git {}", args.join(" "));
    let out = tools::output(&what, git(dir, date).args(args))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Bad input (exit 2) unless `bundle` is a git bundle or repository: both answer
/// `git ls-remote`, anything else does not.
pub fn check_bundle(bundle: &Path) -> Result<()> {
    tools::require("git", "git")?;
    // git runs in another directory: a relative path is resolved here first.
    let bundle = &std::path::absolute(bundle).ctx("resolve", bundle)?;
    let verify = Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("ls-remote")
        .arg(bundle)
        .current_dir(std::env::temp_dir())
        .output();
    match verify {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(Error::bad_input(
            bundle.display().to_string(),
            "a git bundle or repository of archlinux-docker (for example ../shared/upstream/archlinux-docker.bundle)",
        )),
    }
}

/// Mirrors `bundle` (every branch and tag) into the bare repository under `gitlab_root`,
/// unless it is there; refreshes the dumb-HTTP index either way.
pub fn mirror_bundle(bundle: &Path, gitlab_root: &Path) -> Result<PathBuf> {
    tools::require("git", "git")?;
    let bare = bare_repo(gitlab_root);
    if !bare.join("HEAD").is_file() {
        check_bundle(bundle)?;
        eprintln!(
            "world: mirroring the upstream repository from {}",
            bundle.display()
        );
        let parent = bare.parent().expect("REPO_PATH has a parent");
        std::fs::create_dir_all(parent).ctx("create directory", parent)?;
        let tmp = parent.join(".archlinux-docker.git.tmp");
        crate::world::env_rootfs::remove_tree(&tmp)?;
        tools::run(
            "git clone --mirror of the upstream bundle",
            Command::new("git")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .arg("clone")
                .arg("-q")
                .arg("--mirror")
                .arg(bundle)
                .arg(&tmp),
        )?;
        // A mirror of a bundle remembers the bundle as its origin; the world's repository is
        // the origin itself.
        let _ = git_out(
            &tmp,
            "2026-01-01T00:00:00Z",
            &["remote", "remove", "origin"],
        );
        std::fs::rename(&tmp, &bare).ctx("rename", &bare)?;
    }
    update_server_info(&bare)?;
    Ok(bare)
}

/// Dumb-HTTP git needs `info/refs` and `objects/info/packs` up to date.
pub fn update_server_info(bare: &Path) -> Result<()> {
    tools::run(
        "git update-server-info",
        Command::new("git")
            .arg("--git-dir")
            .arg(bare)
            .arg("update-server-info"),
    )
}

/// The commit `rev` names in `bare`.
pub fn rev_parse(bare: &Path, rev: &str) -> Result<String> {
    git_out(
        bare,
        "2026-01-01T00:00:00Z",
        &["rev-parse", "-q", "--verify", &format!("{rev}^{{commit}}")],
    )
}

/// What pre-release does on the project's side: one commit on `releases` (parent: the
/// branch's head) updating `files` (name, content), with the bot's identity at `date`, and
/// `release`'s lightweight tag `v<version>` on it. Returns the tag's commit; a tag that
/// exists is kept as it is.
pub fn release_commit(
    bare: &Path,
    version: &str,
    files: &[(&str, Vec<u8>)],
    date: &str,
    work: &Path,
) -> Result<String> {
    let tag = format!("v{version}");
    if let Ok(c) = rev_parse(bare, &format!("refs/tags/{tag}")) {
        return Ok(c);
    }
    eprintln!("world: committing release {version} on branch releases, tagged {tag}");
    let wt = work.join("gitlab-release");
    crate::world::env_rootfs::remove_tree(&wt)?;
    tools::run(
        "git clone of branch releases",
        Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["clone", "-q", "--branch", "releases"])
            .arg(bare)
            .arg(&wt),
    )?;
    for (name, content) in files {
        let p = wt.join(name);
        std::fs::write(&p, content).ctx("write", &p)?;
        git_out(&wt, date, &["add", name])?;
    }
    git_out(
        &wt,
        date,
        &["commit", "-q", "-m", &format!("Release {version}")],
    )?;
    git_out(&wt, date, &["tag", &tag])?;
    git_out(
        &wt,
        date,
        &["push", "-q", &bare.display().to_string(), "releases", &tag],
    )?;
    crate::world::env_rootfs::remove_tree(&wt)?;
    update_server_info(bare)?;
    rev_parse(bare, &format!("refs/tags/{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_gitlabs() {
        let r = Path::new("/w/gitlab");
        assert_eq!(
            bare_repo(r),
            Path::new("/w/gitlab/archlinux/archlinux-docker.git")
        );
        assert_eq!(
            package_dir(r, "1.0"),
            Path::new("/w/gitlab/api/v4/projects/10185/packages/generic/rootfs/1.0")
        );
    }
}
