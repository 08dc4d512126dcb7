//! The upstream-shaped git repository (`upstream.git`, bare): branch `main` with the
//! Makefile, scripts and Dockerfile.template of `world/upstream/`; branch `releases` with one
//! commit per release holding only the generated Dockerfile.repro, tagged `v<version>` — the
//! shape of archlinux-docker, where the build scripts are not at the tag.

use std::path::Path;
use std::process::Command;

use crate::error::{IoContext, Result};
use crate::world::tools;

const FILES: &[(&str, &str, u32)] = &[
    (
        "Makefile",
        include_str!("../../world/upstream/Makefile"),
        0o644,
    ),
    (
        "README.md",
        include_str!("../../world/upstream/README.md"),
        0o644,
    ),
    (
        "exclude",
        include_str!("../../world/upstream/exclude"),
        0o644,
    ),
    (
        "scripts/make-rootfs.sh",
        include_str!("../../world/upstream/scripts/make-rootfs.sh"),
        0o755,
    ),
    (
        "scripts/make-dockerfile.sh",
        include_str!("../../world/upstream/scripts/make-dockerfile.sh"),
        0o755,
    ),
    (
        "rootfs/etc/pacman.d/mirrorlist",
        include_str!("../../world/upstream/rootfs/etc/pacman.d/mirrorlist"),
        0o644,
    ),
];
const TEMPLATE: &str = include_str!("../../world/upstream/Dockerfile.template");

/// Author/committer dates of the main commit and of the release commit (fixed, so the
/// commit ids are the same on every machine).
const MAIN_DATE: &str = "2026-03-27T12:00:00Z";
const RELEASE_DATE: &str = "2026-03-31T02:00:00Z";

fn git(what: &str, dir: &Path, date: &str) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Arch Linux Docker (test world)")
        .env("GIT_AUTHOR_EMAIL", "world@reprobox.invalid")
        .env("GIT_COMMITTER_NAME", "Arch Linux Docker (test world)")
        .env("GIT_COMMITTER_EMAIL", "world@reprobox.invalid")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ]);
    let _ = what;
    c
}

fn git_out(dir: &Path, date: &str, args: &[&str]) -> Result<String> {
    let what = format!("git {}", args.join(" "));
    let out = tools::output(&what, git(&what, dir, date).args(args))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// sha256 of everything branch main is made from: a world whose repository was made from
/// other files is rebuilt (`world::build`).
pub fn fingerprint(verify_image: &str) -> String {
    let mut all = Vec::new();
    for (name, text, mode) in FILES {
        all.extend_from_slice(format!("{name}\0{mode}\0{}\0", text.len()).as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    all.extend_from_slice(
        TEMPLATE
            .replace("TEMPLATE_VERIFY_IMAGE", verify_image)
            .as_bytes(),
    );
    crate::digest::sha256_hex(&all)
}

/// Creates `bare` with branch main (the template pinned to `verify_image`) unless present;
/// returns the main commit.
pub fn create_main(bare: &Path, verify_image: &str, work: &Path) -> Result<String> {
    tools::require("git", "git")?;
    if bare.join("refs/heads/main").exists() || bare.join("packed-refs").exists() {
        return git_out(bare, MAIN_DATE, &["rev-parse", "refs/heads/main"]);
    }
    eprintln!("world: creating the upstream git repository");
    let wt = work.join("upstream-main");
    crate::world::env_rootfs::remove_tree(&wt)?;
    std::fs::create_dir_all(&wt).ctx("create directory", &wt)?;
    for (name, text, mode) in FILES {
        write_file(&wt.join(name), text, *mode)?;
    }
    write_file(
        &wt.join("Dockerfile.template"),
        &TEMPLATE.replace("TEMPLATE_VERIFY_IMAGE", verify_image),
        0o644,
    )?;
    git_out(&wt, MAIN_DATE, &["init", "-q"])?;
    git_out(&wt, MAIN_DATE, &["add", "-A"])?;
    git_out(
        &wt,
        MAIN_DATE,
        &[
            "commit",
            "-q",
            "-m",
            "Build the repro image from an archive snapshot",
        ],
    )?;
    let tmp = bare.with_extension("git.tmp");
    crate::world::env_rootfs::remove_tree(&tmp)?;
    git_out(
        work,
        MAIN_DATE,
        &[
            "clone",
            "-q",
            "--bare",
            &wt.display().to_string(),
            &tmp.display().to_string(),
        ],
    )?;
    std::fs::rename(&tmp, bare).ctx("rename", bare)?;
    crate::world::env_rootfs::remove_tree(&wt)?;
    git_out(bare, MAIN_DATE, &["rev-parse", "refs/heads/main"])
}

/// Adds the release commit (only `Dockerfile.repro`) on branch `releases`, tagged
/// `v<version>`, unless the tag exists; returns the tag's commit.
pub fn add_release(bare: &Path, version: &str, dockerfile: &Path, work: &Path) -> Result<String> {
    let tag = format!("v{version}");
    if let Ok(c) = git_out(
        bare,
        RELEASE_DATE,
        &[
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/tags/{tag}^{{commit}}"),
        ],
    ) {
        return Ok(c);
    }
    eprintln!("world: tagging release {tag}");
    let wt = work.join("upstream-release");
    crate::world::env_rootfs::remove_tree(&wt)?;
    std::fs::create_dir_all(&wt).ctx("create directory", &wt)?;
    git_out(&wt, RELEASE_DATE, &["init", "-q"])?;
    git_out(
        &wt,
        RELEASE_DATE,
        &["checkout", "-q", "--orphan", "releases"],
    )?;
    std::fs::copy(dockerfile, wt.join("Dockerfile.repro")).ctx("copy", dockerfile)?;
    git_out(&wt, RELEASE_DATE, &["add", "Dockerfile.repro"])?;
    git_out(
        &wt,
        RELEASE_DATE,
        &["commit", "-q", "-m", &format!("Release {version}")],
    )?;
    git_out(
        &wt,
        RELEASE_DATE,
        &["tag", "-a", &tag, "-m", &format!("Release {version}")],
    )?;
    git_out(
        &wt,
        RELEASE_DATE,
        &["push", "-q", &bare.display().to_string(), "releases", &tag],
    )?;
    crate::world::env_rootfs::remove_tree(&wt)?;
    git_out(
        bare,
        RELEASE_DATE,
        &["rev-parse", &format!("refs/tags/{tag}^{{commit}}")],
    )
}

fn write_file(p: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).ctx("create directory", d)?;
    }
    std::fs::write(p, text).ctx("write", p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).ctx("chmod", p)
}
