//! The test world (issue 5, part 1): a miniature but faithful copy of everything a real
//! reproduction of the Arch Linux repro image touches, built offline from this machine's
//! package registries and served on loopback. See docs/world.md for the layout contract.
//!
//! `build(dir)` makes (or completes) the world; `serve(dir, ports)` serves it.

pub mod alpine;
pub mod alpm;
pub mod arch;
pub mod archive_tree;
pub mod ci;
pub mod content;
pub mod env_rootfs;
pub mod fileserver;
pub mod fixtures;
pub mod from_upstream;
pub mod gitlab;
pub mod pki;
pub mod publish;
pub mod registry;
pub mod serve;
pub mod tools;
pub mod upstream;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub use serve::{Ports, WorldServers, serve};

/// The world's sample release.
pub const VERSION: &str = "20260331.0.1";
/// Its snapshot day (the day before the build day).
pub const SNAPSHOT: &str = "2026/03/30";
/// Its SOURCE_DATE_EPOCH (2026-03-31T00:00:00Z).
pub const SDE: i64 = 1_774_915_200;
/// Bootstrap tarballs: (iso directory, date of its environment packages).
pub const ISOS: [(&str, i64); 2] = [("2026.03.01", 1_772_323_200), ("2026.04.01", 1_775_001_600)];
/// Schema of world.json.
pub const SCHEMA: &str = "reprobox.world/v1";

/// `DIR/world.json`: what the world holds, for the tests and the reproduction pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorldManifest {
    pub schema: String,
    /// Sample release version, its snapshot day and SOURCE_DATE_EPOCH.
    pub version: String,
    pub snapshot: String,
    pub source_date_epoch: i64,
    /// Archive days, in order.
    pub days: Vec<String>,
    /// Per day, per repo-listed package: name → version, sha256, repo, file.
    pub packages: BTreeMap<String, BTreeMap<String, PackageRef>>,
    /// The drifting package of the build environment.
    pub env_package: EnvPackage,
    /// Bootstrap tarballs of the environment.
    pub bootstraps: Vec<Bootstrap>,
    /// The published rootfs.
    pub rootfs: Published,
    /// The published image in the world's registry.
    pub image: registry::ImageRecord,
    /// The verify stage's base image: registry record and the pinned reference.
    pub verify_image: registry::ImageRecord,
    pub verify_image_ref: String,
    /// The upstream git repository.
    pub git: GitInfo,
    /// Free-form notes on what each piece is.
    pub notes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageRef {
    pub version: String,
    pub sha256: String,
    pub repo: String,
    pub file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvPackage {
    pub name: String,
    /// day → version listed in the archive that day.
    pub per_day: BTreeMap<String, String>,
    /// bootstrap (iso directory) → version installed in it.
    pub per_bootstrap: BTreeMap<String, String>,
    /// Which files of the rootfs differ when the environment has the later version.
    pub drift_effect: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bootstrap {
    /// `YYYY.MM.DD`.
    pub iso: String,
    /// Path relative to `archive/`.
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub sha256: String,
    /// Path relative to `published/` (= the profile's `rootfs` location).
    pub path: String,
    /// The environment's packages after the rollback, as `pacman -Q` printed them.
    pub env_packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GitInfo {
    pub tag: String,
    pub tag_commit: String,
    /// The main commit; also the Dockerfile's org.opencontainers.image.revision.
    pub source_revision: String,
    pub release_branch: String,
}

pub use crate::digest::sha256_file;

/// Reads `DIR/world.json`.
pub fn load(dir: &Path) -> Result<WorldManifest> {
    let p = dir.join("world.json");
    let text = std::fs::read_to_string(&p).ctx("read", &p)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            format!("world manifest {}", p.display()),
            format!("expected a {SCHEMA} manifest (written by `reprobox world build`): {e}"),
        )
    })
}

/// Builds the world in `dir`, reusing every part that exists and is complete.
pub fn build(dir: &Path) -> Result<WorldManifest> {
    crate::error::dir_or_absent(dir, "world directory")?;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Environment(
            "world: building the test world needs root (bwrap with full capabilities, podman, bind mounts)".into(),
        ));
    }
    tools::require_host_tools()?;
    let busybox = env_rootfs::busybox()?;
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let dir = &std::fs::canonicalize(dir).ctx("resolve", dir)?;
    // Concurrent builds of one world (parallel test binaries, `reprobox demo`) take turns;
    // the later ones then find every part complete and reuse it.
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).ctx("create", &lock_path)?;
    fs2::FileExt::lock_exclusive(&lock).ctx("lock", &lock_path)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).ctx("create directory", &work)?;
    let archive = dir.join("archive");

    let debian = env_rootfs::debian_root()?;
    let placed = content::packages(&busybox)?;
    let built = archive_tree::build_packages(&archive, &placed)?;
    archive_tree::build_repos(&archive, &placed, &built, &debian)?;

    let mut bootstraps = Vec::new();
    for (iso, date) in ISOS {
        let pkgs: Vec<_> = placed
            .iter()
            .zip(&built)
            .filter(|(p, _)| p.isos.contains(&iso))
            .map(|(_, b)| b.1.clone())
            .collect();
        let t = env_rootfs::bootstrap_tarball(&archive, iso, &debian, &pkgs, date, &work)?;
        let sums = t.parent().unwrap().join("sha256sums.txt");
        let sha = std::fs::read_to_string(&sums)
            .ctx("read", &sums)?
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        bootstraps.push(Bootstrap {
            iso: iso.into(),
            path: t.strip_prefix(&archive).unwrap().display().to_string(),
            sha256: sha,
        });
    }

    let storage = dir.join("registry");
    let entries = registry::verify_entries(&busybox, &debian)?;
    let verify = registry::put_single_layer_image(
        &storage,
        registry::VERIFY_REPO,
        "1",
        &entries,
        "2026-03-01T00:00:00Z",
    )?;
    let verify_ref = format!(
        "{}/{}@{}",
        env_rootfs::REGISTRY_ADDR,
        registry::VERIFY_REPO,
        verify.manifest_digest
    );

    let bare = dir.join("upstream.git");
    let pubdir = dir.join("published").join(VERSION);
    // A world made from other upstream files: its repository and its published artifacts
    // (built from them) are made again.
    let fp = upstream::fingerprint(&verify_ref);
    let fp_file = dir.join("upstream.fingerprint");
    if std::fs::read_to_string(&fp_file).ok().as_deref() != Some(fp.as_str()) {
        env_rootfs::remove_tree(&bare)?;
        env_rootfs::remove_tree(&pubdir)?;
    }
    let main = upstream::create_main(&bare, &verify_ref, &work)?;
    std::fs::write(&fp_file, &fp).ctx("write", &fp_file)?;

    let rootfs_name = format!("repro-{VERSION}.tar.zst");
    let env_list = pubdir.join(".env-packages");
    if !pubdir.join(".complete").exists() {
        eprintln!(
            "world: building the published rootfs and image of {VERSION} (upstream's CI flow, outside reprobox)"
        );
        let b = publish::build_rootfs(dir, ISOS[0].0, SNAPSHOT, &main, &work.join("publish"))?;
        let cfg = registry::write_config(
            &work.join("registry-build.yml"),
            &storage,
            env_rootfs::REGISTRY_ADDR,
        )?;
        let id = publish::build_image(&b, &cfg, &verify_ref, true)?;
        let pushed =
            registry::read_image(&storage, registry::IMAGE_REPO, &format!("repro-{VERSION}"))?;
        if pushed.config_digest != id {
            return Err(Error::Environment(format!(
                "world: the registry holds config {} but podman built {id}",
                pushed.config_digest
            )));
        }
        env_rootfs::remove_tree(&pubdir)?;
        std::fs::create_dir_all(&pubdir).ctx("create directory", &pubdir)?;
        std::fs::copy(b.output.join("repro.tar.zst"), pubdir.join(&rootfs_name))
            .ctx("copy", &pubdir)?;
        std::fs::write(
            pubdir.join(format!("{rootfs_name}.SHA256")),
            format!("{}  {rootfs_name}\n", b.sha256),
        )
        .ctx("write", &pubdir)?;
        std::fs::copy(
            b.output.join("Dockerfile.repro"),
            pubdir.join("Dockerfile.repro"),
        )
        .ctx("copy", &pubdir)?;
        std::fs::write(&env_list, b.env_packages.join("\n")).ctx("write", &env_list)?;
        std::fs::write(pubdir.join(".complete"), "").ctx("write", &pubdir)?;
        env_rootfs::remove_tree(&work.join("publish"))?;
    }
    let rootfs_sha = sha256_file(&pubdir.join(&rootfs_name))?;
    let tag_commit =
        upstream::add_release(&bare, VERSION, &pubdir.join("Dockerfile.repro"), &work)?;
    let image = registry::read_image(&storage, registry::IMAGE_REPO, &format!("repro-{VERSION}"))?;

    let mut packages: BTreeMap<String, BTreeMap<String, PackageRef>> = BTreeMap::new();
    let mut per_day = BTreeMap::new();
    let mut per_bootstrap = BTreeMap::new();
    for (p, (rec, _)) in placed.iter().zip(&built) {
        for d in &p.days {
            packages.entry(d.to_string()).or_default().insert(
                rec.name.clone(),
                PackageRef {
                    version: rec.version.clone(),
                    sha256: rec.sha256.clone(),
                    repo: rec.repo.clone(),
                    file: rec.file.clone(),
                },
            );
            if p.env {
                per_day.insert(d.to_string(), rec.version.clone());
            }
        }
        for i in &p.isos {
            per_bootstrap.insert(i.to_string(), rec.version.clone());
        }
    }
    let manifest = WorldManifest {
        schema: SCHEMA.into(),
        version: VERSION.into(),
        snapshot: SNAPSHOT.into(),
        source_date_epoch: SDE,
        days: archive_tree::DAYS.iter().map(|d| d.to_string()).collect(),
        packages,
        env_package: EnvPackage {
            name: "devtools".into(),
            per_day,
            per_bootstrap,
            drift_effect: DRIFT_EFFECT.into(),
        },
        bootstraps,
        rootfs: Published {
            sha256: rootfs_sha,
            path: format!("{VERSION}/{rootfs_name}"),
            env_packages: std::fs::read_to_string(&env_list)
                .ctx("read", &env_list)?
                .lines()
                .map(String::from)
                .collect(),
        },
        image,
        verify_image: verify,
        verify_image_ref: verify_ref,
        git: GitInfo {
            tag: format!("v{VERSION}"),
            tag_commit,
            source_revision: main,
            release_branch: "releases".into(),
        },
        notes: notes(),
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

/// What the drift changes (checked by tests/world_build.rs).
pub const DRIFT_EFFECT: &str = "devtools >= 1.0.1-1 ships extra.conf with `NoExtract = usr/share/man/*`, so a rootfs built in such an environment lacks usr/share/man/man1/busybox.1 (present with devtools 1.0-1)";

fn notes() -> BTreeMap<String, String> {
    [
        ("archive", "archive/: Arch-archive-shaped tree. repos/YYYY/MM/DD/{core,extra}/os/x86_64 with repo-add databases, packages/<l>/<name>/ with every version, iso/YYYY.MM.DD/ bootstrap tarballs of the build environment + sha256sums.txt; repos/last -> the latest day"),
        ("packages", "core: base (meta), filesystem (/etc/os-release, passwd, shadow, usrmerge links), busybox (Debian's static busybox, with a man page and a README), glibc (an ldconfig shim); extra: devtools (only usr/share/devtools/pacman.conf.d/extra.conf), the build environment's drifting package"),
        ("bootstrap", "iso/*/archlinux-bootstrap-*-x86_64.tar.zst unpacks to root.x86_64/: the Debian bookworm root of scripts/debian-rootfs.sh (pacman 6.0.2, makepkg, fakeroot, fakechroot, libfaketime, make, git, podman 4.3.1), with devtools installed by its pacman; /etc/pacman.conf lists [core] and [extra] through /etc/pacman.d/mirrorlist (SigLevel Never: the world's packages are unsigned)"),
        ("upstream", "upstream.git: branch main = Makefile, scripts/make-rootfs.sh, scripts/make-dockerfile.sh, Dockerfile.template, rootfs/etc/pacman.d/mirrorlist, exclude (archlinux-docker's shape); branch releases = one commit per release holding only Dockerfile.repro, tagged v<version>"),
        ("published", "published/<version>/: repro-<version>.tar.zst, .SHA256, Dockerfile.repro, built with iso/2026.03.01 rolled to 2026/03/30, archive on 127.0.0.1:7878 in the build's own network namespace, make then podman build --timestamp SDE"),
        ("registry", "registry/: storage of Debian's docker-registry: archlinux/archlinux:repro-<version> (pushed by podman) and reprobox-world/verify (the verify stage's base: busybox-static + zstd, written natively, pinned by digest in the Dockerfile)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
