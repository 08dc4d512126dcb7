//! The world made from the real upstream repository (`reprobox world build DIR --upstream
//! BUNDLE`): the archive and build environment of [`crate::world::arch`], the Alpine CDN and
//! Docker Hub's `alpine:3.23` of [`crate::world::alpine`], gitlab.archlinux.org with the real
//! repository ([`crate::world::gitlab`]), and two new releases made from a real source
//! revision by upstream's own CI jobs ([`crate::world::ci`]): [`Release::world`], and
//! [`Release::next_day`], whose rootfs was made from the build day's repositories.
//!
//! Layout (served by `world serve`, see docs/world.md):
//! `archive/` (archive.archlinux.org), `gitlab/` (gitlab.archlinux.org: the repository at
//! `archlinux/archlinux-docker.git`, the package registry under `api/v4/…`), `alpine/`
//! (dl-cdn.alpinelinux.org), `registry/` (registry-1.docker.io), `pki/` (the world CA),
//! `work/` (scratch), `world.json` (schema [`SCHEMA`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::world::pki::WorldCa;
use crate::world::{ci, env_rootfs, gitlab, registry, tools};

/// Schema of the manifest of a world made from the real upstream.
pub const SCHEMA: &str = "reprobox.world/v2";

/// The world's release: a version that is not among the real tags, made from the source
/// revision of the real releases 20260511 to 20260518.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    /// BUILD_VERSION.
    pub version: String,
    /// The day of the build (`YYYY/MM/DD`): the CI's live mirrors are this day's repositories.
    pub build_day: String,
    /// ARCHIVE_SNAPSHOT: the day before.
    pub snapshot: String,
    /// SOURCE_DATE_EPOCH: 00:00 UTC of the build day.
    pub source_date_epoch: i64,
    /// The revision of master the release is made from.
    pub source_revision: String,
    /// When pre-release commits the release (ISO 8601).
    pub release_time: String,
}

impl Release {
    /// The world's release.
    pub fn world() -> Release {
        Release {
            version: "20260520.0.1".into(),
            build_day: "2026/05/20".into(),
            snapshot: "2026/05/19".into(),
            source_date_epoch: 1_779_235_200,
            source_revision: "34b87485162b028c8d957bdcd2674359d883cd21".into(),
            release_time: "2026-05-20T09:10:00Z".into(),
        }
    }

    /// The world's second release, of the same build day and source revision, whose
    /// rootfs job ran make-rootfs.sh against the build day's repositories
    /// ([`NEXT_DAY_REPOS`]) instead of the snapshot day's, as upstream's 20260420–20260423
    /// releases were built from the live mirrors: rolling back to its snapshot cannot
    /// reproduce it (systemd differs), its published package set can.
    pub fn next_day() -> Release {
        Release {
            version: "20260520.0.2".into(),
            release_time: "2026-05-20T15:10:00Z".into(),
            ..Release::world()
        }
    }
}

/// The day whose repositories the next-day release's rootfs was made from.
pub const NEXT_DAY_REPOS: &str = crate::world::arch::BUILD_DAY;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_consistent_with_the_plan() {
        let r = Release::world();
        let p = crate::plan::version::BuildVersion::parse(&r.version).unwrap();
        assert_eq!(p.snapshot_path(), r.snapshot);
        assert_eq!(p.source_date_epoch(), r.source_date_epoch);
    }
}

/// `DIR/world.json` of a world made from the real upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamWorld {
    pub schema: String,
    pub release: Release,
    /// The release's tag and its commit on `releases`.
    pub tag: String,
    pub tag_commit: String,
    /// The published rootfs: its sha256, its URL at the real host, and the packages of the
    /// rootfs job's environment.
    pub rootfs: PublishedRootfs,
    /// `archlinux/archlinux:repro-VERSION` as pushed to the world's Docker Hub.
    pub image: crate::world::registry::ImageRecord,
    /// The archive, its days, packages, bootstraps and drifts (world::arch).
    pub arch: serde_json::Value,
    /// Docker Hub's `library/alpine:3.23` and the Alpine repository (world::alpine).
    pub alpine: serde_json::Value,
    /// Real host → the world's directory that stands in for it.
    pub hosts: BTreeMap<String, String>,
    pub notes: BTreeMap<String, String>,
    /// The second release, made from the next day's repositories ([`Release::next_day`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_day: Option<NextDayRelease>,
}

/// The world's next-day release: published like the first, its rootfs made from the
/// repositories of `repos_day` rather than of its snapshot day.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NextDayRelease {
    pub release: Release,
    /// The ARCHIVE_SNAPSHOT its rootfs job gave make (the build day).
    pub repos_day: String,
    pub tag: String,
    pub tag_commit: String,
    pub rootfs: PublishedRootfs,
    pub image: crate::world::registry::ImageRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishedRootfs {
    pub sha256: String,
    pub url: String,
    pub env_packages: Vec<String>,
    /// `name version` of every package the rootfs holds, as the real pacman (`pacman -Q
    /// --dbpath`, Debian's) reads the published tarball's local database: the world's record
    /// of what make-rootfs.sh installed.
    #[serde(default)]
    pub installed: Vec<String>,
}

/// Reads `DIR/world.json` of a world made from the real upstream.
pub fn load(dir: &Path) -> Result<UpstreamWorld> {
    let p = dir.join("world.json");
    let text = std::fs::read_to_string(&p).ctx("read", &p)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            format!("world manifest {}", p.display()),
            format!(
                "expected a {SCHEMA} manifest (written by `reprobox world build DIR --upstream BUNDLE`): {e}"
            ),
        )
    })
}

/// Builds (or completes) the world made from the real upstream in `dir`, from `bundle` (a git
/// bundle or repository of archlinux-docker) and `devtools` (one of devtools). Every part
/// that is complete is reused; the release is made once.
pub fn build(dir: &Path, bundle: &Path, devtools: &Path) -> Result<UpstreamWorld> {
    crate::error::dir_or_absent(dir, "world directory")?;
    // Absolute: git reads them from other directories.
    let (bundle, devtools) = (
        &std::path::absolute(bundle).ctx("resolve", bundle)?,
        &std::path::absolute(devtools).ctx("resolve", devtools)?,
    );
    for (what, p) in [("upstream bundle", bundle), ("devtools bundle", devtools)] {
        if !p.exists() {
            return Err(Error::bad_input(
                format!("{what} {}", p.display()),
                "an existing git bundle or repository (see ../shared/upstream/README.md)",
            ));
        }
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Environment(
            "world: building the test world needs root (bwrap with full capabilities, podman, bind mounts)".into(),
        ));
    }
    tools::require_host_tools()?;
    gitlab::check_bundle(bundle)?;
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let dir = &std::fs::canonicalize(dir).ctx("resolve", dir)?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).ctx("create", &lock_path)?;
    fs2::FileExt::lock_exclusive(&lock).ctx("lock", &lock_path)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).ctx("create directory", &work)?;

    let r = Release::world();
    let gitlab_root = dir.join("gitlab");
    let bare = gitlab::mirror_bundle(bundle, &gitlab_root)?;
    if gitlab::rev_parse(&bare, &r.source_revision).is_err() {
        return Err(Error::bad_input(
            bundle.display().to_string(),
            format!(
                "a repository holding archlinux-docker's revision {}",
                r.source_revision
            ),
        ));
    }
    let ca = WorldCa::load_or_create(dir)?;
    let debian = env_rootfs::debian_root()?;
    let arch = crate::world::arch::build_archive(dir, &ca, devtools)?;
    let storage = dir.join("registry");
    let alpine = crate::world::alpine::build(dir, &ca, &storage, &debian)?;

    let env_list = make_release(
        dir,
        &r,
        &r.snapshot,
        ".release",
        &ca,
        &arch,
        &gitlab_root,
        &storage,
    )?;
    let tag = format!("v{}", r.version);
    let tag_commit = gitlab::rev_parse(&bare, &format!("refs/tags/{tag}"))?;
    let rootfs = published_rootfs(&gitlab_root, &r, &env_list, &debian)?;
    let next = Release::next_day();
    let next_env = make_release(
        dir,
        &next,
        NEXT_DAY_REPOS,
        ".release-next-day",
        &ca,
        &arch,
        &gitlab_root,
        &storage,
    )?;
    let next_tag = format!("v{}", next.version);
    let next_day = NextDayRelease {
        repos_day: NEXT_DAY_REPOS.into(),
        tag_commit: gitlab::rev_parse(&bare, &format!("refs/tags/{next_tag}"))?,
        tag: next_tag,
        rootfs: published_rootfs(&gitlab_root, &next, &next_env, &debian)?,
        image: registry::read_image(
            &storage,
            registry::IMAGE_REPO,
            &format!("repro-{}", next.version),
        )?,
        release: next,
    };
    let manifest = UpstreamWorld {
        schema: SCHEMA.into(),
        tag,
        tag_commit,
        rootfs,
        image: registry::read_image(
            &storage,
            registry::IMAGE_REPO,
            &format!("repro-{}", r.version),
        )?,
        arch: serde_json::to_value(&arch).map_err(|e| Error::Environment(format!("world: {e}")))?,
        alpine: serde_json::to_value(&alpine)
            .map_err(|e| Error::Environment(format!("world: {e}")))?,
        hosts: [
            ("archive.archlinux.org", "archive/"),
            ("gitlab.archlinux.org", "gitlab/"),
            ("dl-cdn.alpinelinux.org", "alpine/"),
            (
                "registry-1.docker.io",
                "registry/ (Debian's docker-registry)",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        notes: BTreeMap::new(),
        next_day: Some(next_day),
        release: r,
    };
    let p = dir.join("world.json");
    let tmp = dir.join(".world.json.tmp");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Environment(format!("world: world.json: {e}")))?;
    std::fs::write(&tmp, text + "\n").ctx("write", &tmp)?;
    std::fs::rename(&tmp, &p).ctx("rename", &p)?;
    eprintln!("world: ready in {}", dir.display());
    Ok(manifest)
}

/// The published rootfs of `r` in the world's package registry: its sha256, URL, the rootfs
/// job's environment (listed in `env_list`) and the packages it holds, read by Debian's
/// pacman from the tarball's local database.
fn published_rootfs(
    gitlab_root: &Path,
    r: &Release,
    env_list: &Path,
    debian: &Path,
) -> Result<PublishedRootfs> {
    let rootfs_file = format!("repro-{}.tar.zst", r.version);
    let pkg_dir = gitlab::package_dir(gitlab_root, &r.version);
    let installed = env_rootfs::EnvRun::new(debian, false)
        .bind(&pkg_dir, "/mnt")
        .sh(
            &format!("pacman -Q over the local database of {rootfs_file}"),
            &format!(
                "set -e; mkdir /tmp/r; tar -C /tmp/r --zstd -xf /mnt/{rootfs_file} ./var/lib/pacman/local; \
                 pacman -Q --dbpath /tmp/r/var/lib/pacman"
            ),
        )?;
    Ok(PublishedRootfs {
        sha256: crate::digest::sha256_file(&pkg_dir.join(&rootfs_file))?,
        url: format!(
            "https://gitlab.archlinux.org/{}/{}/{rootfs_file}",
            gitlab::PACKAGES_PATH,
            r.version
        ),
        env_packages: std::fs::read_to_string(env_list)
            .ctx("read", env_list)?
            .lines()
            .map(String::from)
            .collect(),
        installed: String::from_utf8_lossy(&installed)
            .lines()
            .map(String::from)
            .collect(),
    })
}

/// A release, made once by upstream's CI jobs ([`ci`]) outside reprobox, its rootfs from
/// the repositories of `repos_day`; `marker` names its completion files in `dir`
/// (`<marker>-complete`, `<marker>-env-packages`). Returns the file listing the rootfs
/// job's environment packages.
#[allow(clippy::too_many_arguments)]
fn make_release(
    dir: &Path,
    r: &Release,
    repos_day: &str,
    marker: &str,
    ca: &WorldCa,
    arch: &crate::world::arch::ArchRecord,
    gitlab_root: &Path,
    storage: &Path,
) -> Result<std::path::PathBuf> {
    let work = dir.join("work");
    let done = dir.join(format!("{marker}-complete"));
    let env_list = dir.join(format!("{marker}-env-packages"));
    if !done.exists() {
        eprintln!(
            "world: making release {} from {} with upstream's CI jobs (outside reprobox), its rootfs from repos/{repos_day}",
            r.version, r.source_revision
        );
        let iso = arch
            .bootstraps
            .first()
            .ok_or_else(|| Error::Environment("world: the archive has no bootstrap".into()))?;
        let iso = dir.join("archive").join(&iso.path);
        let net = ci::PublisherNet::new(dir, ca, storage)?;
        let rootfs_work = work.join("rootfs-job");
        let job = ci::rootfs_job(r, repos_day, &net, &iso, &rootfs_work)?;
        ci::pre_release(
            r,
            &job,
            &rootfs_work.join("root.x86_64"),
            gitlab_root,
            &work,
        )?;
        let publish_work = work.join("publish-job");
        let pushed = ci::publish_job(r, &net, &iso, &publish_work)?;
        let image = registry::read_image(
            storage,
            registry::IMAGE_REPO,
            &format!("repro-{}", r.version),
        )?;
        if image.config_digest != pushed.config_digest {
            return Err(Error::Environment(format!(
                "world: the registry holds config {} but podman built {}",
                image.config_digest, pushed.config_digest
            )));
        }
        std::fs::write(&env_list, job.env_packages.join("\n")).ctx("write", &env_list)?;
        std::fs::write(&done, "").ctx("write", &done)?;
        env_rootfs::remove_tree(&rootfs_work)?;
        env_rootfs::remove_tree(&publish_work)?;
    }
    Ok(env_list)
}
