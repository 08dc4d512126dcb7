//! The published artifacts, made the way upstream's CI makes them and outside reprobox:
//! unpack the environment's bootstrap tarball, roll it to a day with its own pacman, check out
//! the upstream source, `make` the rootfs and Dockerfile, `podman build` the image — all in
//! the environment (bwrap), with the archive (and registry) served on its own loopback.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::plan::WORKSPACE;
use crate::world::env_rootfs::{self, EnvRun, Services};
use crate::world::{SDE, SNAPSHOT, VERSION, tools};

/// A rootfs built by the upstream flow.
#[derive(Debug, Clone)]
pub struct RootfsBuild {
    /// The environment root (kept for the image step).
    pub root: PathBuf,
    /// `output/` of the workspace: repro.tar.zst, repro.tar.zst.SHA256, Dockerfile.repro.
    pub output: PathBuf,
    pub sha256: String,
    /// `name version` of every package pacman lists in the environment after the rollback.
    pub env_packages: Vec<String>,
}

/// Unpacks `iso`'s environment into `work`, rolls it to `env_day`, checks out `commit` of
/// `upstream.git` and runs upstream's make for ARCHIVE_SNAPSHOT = the sample's snapshot.
pub fn build_rootfs(
    world: &Path,
    iso: &str,
    env_day: &str,
    commit: &str,
    work: &Path,
) -> Result<RootfsBuild> {
    let archive = world.join("archive");
    let tarball = archive
        .join("iso")
        .join(iso)
        .join(format!("archlinux-bootstrap-{iso}-x86_64.tar.zst"));
    let root = env_rootfs::unpack_bootstrap(&tarball, work)?;
    // The workspace at the path reprobox checks upstream out to (`plan::WORKSPACE`).
    let ws = root.join(WORKSPACE.trim_start_matches('/'));
    std::fs::create_dir_all(&ws).ctx("create directory", &ws)?;
    tools::run(
        "check out the upstream source",
        std::process::Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .arg("clone")
            .arg("-q")
            .arg("--no-checkout")
            .arg(world.join("upstream.git"))
            .arg(&ws),
    )?;
    tools::run(
        "check out the source revision",
        std::process::Command::new("git").current_dir(&ws).args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            commit,
        ]),
    )?;
    let mut run = EnvRun::new(&root, true);
    run.services = Services {
        archive: Some(archive.clone()),
        registry: None,
        ..Default::default()
    };
    run.faketime = Some(SDE);
    let listing = run.sh(
        &format!("roll the environment of iso/{iso} to {env_day}"),
        &format!(
            "printf 'Server = http://{}/repos/{env_day}/$repo/os/$arch\\n' > /etc/pacman.d/mirrorlist && pacman -Syyuu --noconfirm --logfile /dev/null >&2 && rm -rf /var/cache/pacman/pkg/* && pacman -Q",
            env_rootfs::archive_addr()
        ),
    )?;
    let env_packages = String::from_utf8_lossy(&listing)
        .lines()
        .map(String::from)
        .collect();
    let mut make = EnvRun::new(&root, true);
    make.services = Services {
        archive: Some(archive),
        registry: None,
        ..Default::default()
    };
    make.cwd = WORKSPACE.into();
    make.sh(
        "make the rootfs (upstream's Makefile)",
        &format!(
            "git config --global --add safe.directory {WORKSPACE} && make ARCHIVE_SNAPSHOT={SNAPSHOT} SOURCE_DATE_EPOCH={SDE} BUILD_VERSION={VERSION} {WORKSPACE}/output/Dockerfile.repro >&2"
        ),
    )?;
    let output = ws.join("output");
    let sha_file = output.join("repro.tar.zst.SHA256");
    let text = std::fs::read_to_string(&sha_file).ctx("read", &sha_file)?;
    let sha256 = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let actual = crate::world::sha256_file(&output.join("repro.tar.zst"))?;
    if sha256 != actual {
        return Err(Error::Environment(format!(
            "world: {} says {sha256} but the file hashes to {actual}",
            sha_file.display()
        )));
    }
    Ok(RootfsBuild {
        root,
        output,
        sha256,
        env_packages,
    })
}

/// Runs the podman build of upstream's CI in the environment of `b`, with the verify base
/// pulled by digest from the world's registry (served in the build's own network namespace
/// from the storage `registry_config` names). With `push`, the image goes to that registry as
/// `archlinux/archlinux:repro-<version>`. Returns the image's config digest (`sha256:…`).
pub fn build_image(
    b: &RootfsBuild,
    registry_config: &Path,
    verify_ref: &str,
    push: bool,
) -> Result<String> {
    let mut run = EnvRun::new(&b.root, true);
    run.services = Services {
        archive: None,
        registry: Some(registry_config.to_path_buf()),
        ..Default::default()
    };
    run.cwd = WORKSPACE.into();
    let flags = "--storage-driver vfs --cgroup-manager cgroupfs --events-backend file";
    let tag = format!("reprobox.local/archlinux/archlinux:repro-{VERSION}");
    let dest = format!(
        "{}/{}:repro-{VERSION}",
        env_rootfs::REGISTRY_ADDR,
        crate::world::registry::IMAGE_REPO
    );
    let push_cmd = if push {
        format!("podman {flags} push -q --tls-verify=false {tag} {dest} >&2;")
    } else {
        String::new()
    };
    // podman 4.3.1 has no --source-date-epoch/--rewrite-timestamp; --timestamp pins the
    // created times and the layer file times. RUN steps use chroot isolation in this sandbox.
    let out = run.sh(
        "podman build of the published image",
        &format!(
            "set -e; podman {flags} pull -q --tls-verify=false {verify_ref} >&2; \
             podman {flags} build --no-cache --pull=never --timestamp {SDE} --isolation chroot -f output/Dockerfile.repro -t {tag} output/ >&2; \
             {push_cmd} podman {flags} image inspect --format '{{{{.Id}}}}' {tag}"
        ),
    )?;
    let id = String::from_utf8_lossy(&out).trim().to_string();
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Environment(format!(
            "world: podman printed {id:?} as the image id"
        )));
    }
    Ok(format!("sha256:{id}"))
}
