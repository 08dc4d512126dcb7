//! The archive-shaped tree: `packages/<l>/<name>/<file>` holds every version;
//! `repos/YYYY/MM/DD/<repo>/os/x86_64/` holds each day's packages (hard links) and the repo
//! databases `repo-add` (Debian's pacman, run inside the build environment) makes of them;
//! `repos/last` points at the latest day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::world::alpm;
use crate::world::content::Placed;
use crate::world::env_rootfs::EnvRun;

/// One package file in the archive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PkgRecord {
    pub name: String,
    pub version: String,
    pub repo: String,
    pub file: String,
    pub sha256: String,
    pub env: bool,
}

/// The days of the archive, in order.
pub const DAYS: [&str; 2] = ["2026/03/30", "2026/04/15"];

/// Builds every package into `packages/` (reusing existing files) and returns them.
pub fn build_packages(archive: &Path, placed: &[Placed]) -> Result<Vec<(PkgRecord, PathBuf)>> {
    let mut out = Vec::new();
    for p in placed {
        let first = &p.spec.name[..1];
        let dir = archive.join("packages").join(first).join(&p.spec.name);
        let path = dir.join(p.spec.file_name());
        // Packages are deterministic: rebuilding gives the same bytes, so a present file is
        // only trusted when it equals what we would write.
        let bytes = alpm::package_bytes(&p.spec)?;
        let sha = crate::digest::sha256_hex(&bytes);
        let ok = std::fs::read(&path).map(|b| b == bytes).unwrap_or(false);
        if !ok {
            eprintln!("world: building package {}", p.spec.file_name());
            alpm::build_package(&p.spec, &dir)?;
        }
        out.push((
            PkgRecord {
                name: p.spec.name.clone(),
                version: p.spec.version.clone(),
                repo: p.repo.to_string(),
                file: p.spec.file_name(),
                sha256: sha,
                env: p.env,
            },
            path,
        ));
    }
    Ok(out)
}

/// Lays out `repos/<day>/<repo>/os/x86_64/` for every day and runs `repo-add` there.
pub fn build_repos(
    archive: &Path,
    placed: &[Placed],
    built: &[(PkgRecord, PathBuf)],
    debian: &Path,
) -> Result<()> {
    for day in DAYS {
        let mut by_repo: BTreeMap<&str, Vec<&PathBuf>> = BTreeMap::new();
        by_repo.insert("core", vec![]);
        by_repo.insert("extra", vec![]);
        for (p, (_, path)) in placed.iter().zip(built) {
            if p.days.contains(&day) {
                by_repo.entry(p.repo).or_default().push(path);
            }
        }
        for (repo, pkgs) in by_repo {
            let dir = archive.join("repos").join(day).join(repo).join("os/x86_64");
            // The marker lists the packages the databases were made of: a world whose
            // package set changed (a new kernel, a new package) remakes them.
            let marker = dir.join(".complete");
            let listing: String = pkgs
                .iter()
                .map(|p| format!("{}\n", p.file_name().unwrap().to_string_lossy()))
                .collect();
            if std::fs::read_to_string(&marker).is_ok_and(|m| m == listing) {
                continue;
            }
            eprintln!("world: building repos/{day}/{repo}");
            crate::world::env_rootfs::remove_tree(&dir)?;
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            let mut names = Vec::new();
            for src in pkgs {
                let name = src.file_name().unwrap().to_string_lossy().into_owned();
                let dst = dir.join(&name);
                if std::fs::hard_link(src, &dst).is_err() {
                    std::fs::copy(src, &dst).ctx("copy", src)?;
                }
                names.push(name);
            }
            let script = format!(
                "cd /mnt && repo-add -q {repo}.db.tar.gz {}",
                names.join(" ")
            );
            EnvRun::new(debian, false)
                .bind(&dir, "/mnt")
                .sh(&format!("repo-add repos/{day}/{repo}"), &script)?;
            std::fs::write(&marker, &listing).ctx("write", &marker)?;
        }
    }
    let last = archive.join("repos/last");
    if std::fs::symlink_metadata(&last).is_err() {
        std::os::unix::fs::symlink(DAYS[DAYS.len() - 1], &last).ctx("symlink", &last)?;
    }
    Ok(())
}
