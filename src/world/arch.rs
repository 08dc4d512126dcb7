//! The Arch side of the new test world (issue 13): an archive shaped like
//! `https://archive.archlinux.org` in which upstream's UNMODIFIED archlinux-docker sources
//! (`make ARCHIVE_SNAPSHOT=2026/05/19 SOURCE_DATE_EPOCH=1779235200 $PWD/output/Dockerfile.repro`,
//! `BUILD_VERSION=20260520.0.1` in the environment) build a deterministic rootfs, with pacman
//! downloading from `https://archive.archlinux.org/repos/2026/05/19/$repo/os/$arch` (the line
//! make-rootfs.sh prepends) and checking signatures like Arch's (`SigLevel = Required
//! DatabaseOptional` of devtools' real extra.conf).
//!
//! [`build_archive`] writes `DIR/archive/`:
//! ```text
//! repos/2026/05/19/{core,extra}/os/x86_64/   the snapshot day: packages, .sig, repo-add dbs
//! repos/2026/05/20/{core,extra}/os/x86_64/   the build day (the environment's day)
//! repos/2026/06/02/{core,extra}/os/x86_64/   a later day (environment drift)
//! repos/last -> 2026/06/02
//! packages/<l>/<name>/<file>{,.sig}           every version
//! iso/2026.05.01/archlinux-bootstrap-2026.05.01-x86_64.tar.zst + sha256sums.txt
//! iso/2026.06.01/archlinux-bootstrap-2026.06.01-x86_64.tar.zst + sha256sums.txt
//! ```
//! and keeps the world's package signing key in `DIR/pki/gpg/` (GnuPG home; test data, made
//! once per world, like the CA in `DIR/pki/`).
//!
//! Signing: every package has a detached `.sig` (ed25519, made by the host's gpg with the
//! clock faked to the package's build date, so the bytes are deterministic) and `repo-add`
//! embeds it as `%PGPSIG%`. The key ships in `archlinux-keyring` as the files Debian's
//! `pacman-key --populate archlinux` reads, listed in `archlinux-trusted`, so the real
//! profile's `pacman-key --init; pacman-key --populate archlinux` trusts it.
//!
//! The build environment (the bootstraps): the Debian root of `scripts/debian-rootfs.sh` with
//! Debian's `pacman`/`pacman-key` moved to `/usr/lib/reprobox-world/pacman-6.0.2/` and
//! `podman` to `/usr/lib/reprobox-world/podman-4.3.1/`, Debian's archlinux-keyring files
//! removed, then `pacman`, `archlinux-keyring` and `devtools` of the bootstrap installed by
//! pacman (so `pacman -Syyuu` manages them); an Arch-like `/etc/pacman.conf`
//! ([`ENV_PACMAN_CONF`]); the mirrorlist on `https://archive.archlinux.org/repos/last/…`;
//! the world CA appended to `/etc/ssl/certs/ca-certificates.crt` (the public roots' stand-in);
//! no keyring (`/etc/pacman.d/gnupg` absent, as in Arch's bootstrap). `podman`, `git`,
//! `make`, `fakechroot`, `fakeroot` are not installed by pacman: the profile's install step
//! does that (`git`… are empty meta packages: Debian's binaries are there already; `podman`
//! is the 5.6 stand-in wrapper).
//!
//! The drift ([`ArchRecord::drifts`]): the rootfs packages are the same on every day but
//! systemd (258.1-1 on the snapshot day, a synthetic 258.2-1 from the build day on: the
//! next-day release's difference, docs/world.md); the environment differs. devtools 1.4.0-1 (iso/2026.05.01; real tag v1.4.0: `#DisableSandbox`,
//! so make-rootfs.sh takes its other sed branch and writes `DisableSandbox`), 1.5.0-1 (days
//! 05/19 and 05/20; real tag v1.5.0: `#DisableSandboxFilesystem` → `DisableSandboxFilesystem`),
//! 1.5.1-1 (day 06/02 and iso/2026.06.01; SYNTHETIC, v1.5.0's files with extra.conf's
//! `ParallelDownloads = 5` made `ParallelDownloads = 10`: no real devtools release after
//! v1.5.0 changes extra.conf). make-rootfs.sh installs extra.conf as the image's
//! /etc/pacman.conf, so each devtools gives another rootfs.
//!
//! HTTPS: [`archive_services`] gives the bwrap runner's services for a build: the archive
//! (busybox httpd on 127.0.0.1:7878) behind a TLS front `archive.archlinux.org` on
//! 127.0.0.2:443 (socat, a world CA leaf), `/etc/hosts` mapping the name.

pub mod content;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::world::alpm;
use crate::world::env_rootfs::{self, EnvRun, Services, TlsFront, remove_tree};
use crate::world::pki::WorldCa;
use crate::world::tools;
use content::ArchPkg;

/// One package file in the archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PkgRecord {
    pub name: String,
    pub version: String,
    pub repo: String,
    pub file: String,
    pub sha256: String,
    pub env: bool,
}

/// The snapshot day (ARCHIVE_SNAPSHOT).
pub const SNAPSHOT_DAY: &str = "2026/05/19";
/// The build day (the environment's day).
pub const BUILD_DAY: &str = "2026/05/20";
/// A later day: the environment drifts (devtools 1.5.1-1).
pub const LATER_DAY: &str = "2026/06/02";
/// The archive's days, in order.
pub const DAYS: [&str; 3] = [SNAPSHOT_DAY, BUILD_DAY, LATER_DAY];
/// The bootstraps: (iso directory, date of its environment packages).
pub const ISOS: [(&str, i64); 2] = [("2026.05.01", 1_777_593_600), ("2026.06.01", 1_780_272_000)];
/// The release's SOURCE_DATE_EPOCH (2026-05-20T00:00:00Z).
pub const SOURCE_DATE_EPOCH: i64 = 1_779_235_200;
/// The real archive's host name.
pub const ARCHIVE_HOST: &str = "archive.archlinux.org";
/// The loopback address of its TLS front inside a build's network namespace.
pub const ARCHIVE_TLS_IP: &str = "127.0.0.2";
/// The devtools tag of each devtools version (1.5.1-1 is synthetic, from v1.5.0).
pub const DEVTOOLS: [(&str, &str); 3] = [
    ("1.4.0-1", "v1.4.0"),
    ("1.5.0-1", "v1.5.0"),
    ("1.5.1-1", "v1.5.0"),
];

/// devtools of each day and bootstrap.
fn devtools_of_day(day: &str) -> &'static str {
    if day == LATER_DAY {
        "1.5.1-1"
    } else {
        "1.5.0-1"
    }
}
fn devtools_of_iso(iso: &str) -> &'static str {
    if iso == "2026.05.01" {
        "1.4.0-1"
    } else {
        "1.5.1-1"
    }
}

/// The synthetic devtools 1.5.1-1's change to v1.5.0's extra.conf.
fn devtools_151_edit(s: &str) -> String {
    s.replace("ParallelDownloads = 5", "ParallelDownloads = 10")
}

/// `/etc/pacman.conf` of the build environment: Arch's pacman 7.1 defaults (signatures
/// required, databases optional) with `[core]` and `[extra]` through the mirrorlist.
pub const ENV_PACMAN_CONF: &str = "#\n# /etc/pacman.conf (reprobox test world build environment, like Arch's)\n#\n[options]\nHoldPkg     = pacman glibc\nArchitecture = auto\nCheckSpace\nDownloadUser = alpm\n#DisableSandbox\nSigLevel    = Required DatabaseOptional\nLocalFileSigLevel = Optional\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\n[extra]\nInclude = /etc/pacman.d/mirrorlist\n";

/// The bootstrap's mirrorlist: the world archive under the real host name (the reprobox
/// profile rewrites it to a day of its mirror when rolling back).
pub const ENV_MIRRORLIST: &str = "##\n## Arch Linux repository mirrorlist (reprobox test world)\n##\nServer = https://archive.archlinux.org/repos/last/$repo/os/$arch\n";

/// What [`build_archive`] made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchRecord {
    pub days: Vec<String>,
    /// day → name → package on that day.
    pub packages: BTreeMap<String, BTreeMap<String, PkgRecord>>,
    /// Every package file in `packages/`.
    pub all_packages: Vec<PkgRecord>,
    pub bootstraps: Vec<BootstrapRecord>,
    /// day → environment package → version (the packages of the profile's install step).
    pub env_per_day: BTreeMap<String, BTreeMap<String, String>>,
    pub drifts: Vec<Drift>,
    /// The signing key's fingerprint (in archlinux-keyring's archlinux-trusted).
    pub signing_key: String,
}

/// One bootstrap tarball (path relative to `archive/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BootstrapRecord {
    pub iso: String,
    pub path: String,
    pub sha256: String,
    /// pacman-managed packages in it: name → version.
    pub packages: BTreeMap<String, String>,
}

/// One environment change between days or bootstraps, and what it does to the rootfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Drift {
    pub package: String,
    pub from: String,
    pub to: String,
    /// Where `to` is found (a day or a bootstrap).
    pub where_: String,
    pub effect: String,
}

/// The world's package signing key: a GnuPG home in `DIR/pki/gpg/`.
pub struct SigningKey {
    pub home: PathBuf,
    pub fingerprint: String,
}

/// The key's creation time (faked): 2026-01-01T00:00:00Z, before every signature.
const KEY_CREATED: &str = "20260101T000000!";
const KEY_UID: &str = "reprobox test world packager <packager@world.reprobox.invalid>";

impl SigningKey {
    fn gpg(&self) -> Result<Command> {
        let gpg = tools::require("gpg", "gnupg")?;
        let mut c = Command::new(gpg);
        c.arg("--homedir").arg(&self.home).args([
            "--batch",
            "--yes",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        Ok(c)
    }

    /// Loads `world_dir/pki/gpg`, or makes the key (once).
    pub fn load_or_create(world_dir: &Path) -> Result<SigningKey> {
        let home = world_dir.join("pki/gpg");
        let mut k = SigningKey {
            home: home.clone(),
            fingerprint: String::new(),
        };
        if !home.join(".complete").exists() {
            remove_tree(&home)?;
            std::fs::create_dir_all(&home).ctx("create directory", &home)?;
            std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .ctx("chmod", &home)?;
            tools::run(
                "make the world's package signing key",
                k.gpg()?.args([
                    "--faked-system-time",
                    KEY_CREATED,
                    "--quick-generate-key",
                    KEY_UID,
                    "ed25519",
                    "sign",
                    "never",
                ]),
            )?;
            std::fs::write(home.join(".complete"), "").ctx("write", &home)?;
        }
        let out = tools::output(
            "read the signing key",
            k.gpg()?.args(["--with-colons", "--list-secret-keys"]),
        )?;
        k.fingerprint = String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .ok_or_else(|| {
                Error::Environment("world: the signing key has no fingerprint".into())
            })?;
        Ok(k)
    }

    /// The public key (binary OpenPGP).
    pub fn public_key(&self) -> Result<Vec<u8>> {
        tools::output(
            "export the signing key",
            self.gpg()?.args(["--export", &self.fingerprint]),
        )
    }

    /// Writes `<file>.sig` (detached, binary), dated `time` (deterministic bytes).
    pub fn sign(&self, file: &Path, time: i64) -> Result<PathBuf> {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        tools::run(
            "sign a package",
            self.gpg()?
                .args([
                    "--faked-system-time",
                    &format!("{time}!"),
                    "--digest-algo",
                    "SHA256",
                    "-u",
                    &self.fingerprint,
                    "--detach-sign",
                    "--no-armor",
                    "-o",
                ])
                .arg(&sig)
                .arg(file),
        )?;
        Ok(sig)
    }

    /// Stops the GnuPG agent of this home.
    pub fn stop_agent(&self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "all"])
            .output();
    }
}

/// One package of the archive: the spec, where it is, on which days, in which bootstraps.
struct Planned {
    pkg: ArchPkg,
    days: Vec<&'static str>,
    isos: Vec<&'static str>,
}

fn plan(
    debian: &Path,
    ca: &WorldCa,
    key: &SigningKey,
    devtools_git: &Path,
) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    let all_days = DAYS.to_vec();
    let all_isos: Vec<&str> = ISOS.iter().map(|(i, _)| *i).collect();
    for p in content::rootfs_packages(debian, &ca.cert_pem)? {
        // systemd changes on the build day (the world's next-day release): its first
        // version is the snapshot day's only.
        let days = if p.spec.name == "systemd" {
            vec![SNAPSHOT_DAY]
        } else {
            all_days.clone()
        };
        out.push(Planned {
            pkg: p,
            days,
            isos: vec![],
        });
    }
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::systemd(content::SYSTEMD_VERSIONS[1]),
            repo: "core",
            env: false,
        },
        days: vec![BUILD_DAY, LATER_DAY],
        isos: vec![],
    });
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::pacman(),
            repo: "core",
            env: true,
        },
        days: all_days.clone(),
        isos: all_isos.clone(),
    });
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::keyring(&key.public_key()?, &key.fingerprint),
            repo: "core",
            env: true,
        },
        days: all_days.clone(),
        isos: all_isos.clone(),
    });
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::podman(),
            repo: "extra",
            env: true,
        },
        days: all_days.clone(),
        isos: vec![],
    });
    for p in content::meta_packages(debian)? {
        out.push(Planned {
            pkg: p,
            days: all_days.clone(),
            isos: vec![],
        });
    }
    // The microVM backend's default guest kernel: the archive's `linux` of the day.
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::linux()?,
            repo: "core",
            env: false,
        },
        days: all_days.clone(),
        isos: vec![],
    });
    // The real profile's optional step installs diffoscope from [extra], as a user of
    // REPRO.md does; reprobox itself runs the host's diffoscope on the two tarballs. An
    // empty package, so that the step succeeds as it does against Arch's archive.
    out.push(Planned {
        pkg: ArchPkg {
            spec: content::spec(
                "diffoscope",
                "303-1",
                "any",
                "diffoscope (reprobox test world: empty; the real profile's optional install step asks for it, reprobox runs the host's)",
                &[],
                vec![],
            ),
            repo: "extra",
            env: true,
        },
        days: all_days.clone(),
        isos: vec![],
    });
    for (ver, tag) in DEVTOOLS {
        let edit: Option<&dyn Fn(&str) -> String> = if ver == "1.5.1-1" {
            Some(&devtools_151_edit)
        } else {
            None
        };
        let spec = content::devtools(devtools_git, tag, ver, edit)?;
        out.push(Planned {
            pkg: ArchPkg {
                spec,
                repo: "extra",
                env: true,
            },
            days: DAYS
                .iter()
                .copied()
                .filter(|d| devtools_of_day(d) == ver)
                .collect(),
            isos: all_isos
                .iter()
                .copied()
                .filter(|i| devtools_of_iso(i) == ver)
                .collect(),
        });
    }
    Ok(out)
}

/// A bare clone of the devtools bundle in `DIR/work/devtools.git` (made once).
fn devtools_repo(world_dir: &Path, bundle: &Path) -> Result<PathBuf> {
    let git_dir = world_dir.join("work/devtools.git");
    if git_dir.join(".complete").exists() {
        return Ok(git_dir);
    }
    remove_tree(&git_dir)?;
    tools::run(
        "clone the devtools bundle",
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg("--bare")
            .arg(bundle)
            .arg(&git_dir),
    )?;
    std::fs::write(git_dir.join(".complete"), "").ctx("write", &git_dir)?;
    Ok(git_dir)
}

/// Builds (or completes) the Arch side of the new world in `world_dir/archive/` (see the
/// module doc) and returns what it holds. Needs root, bwrap, gpg, git, the Debian root.
/// `devtools_bundle` is the devtools git bundle (e.g. `/work/shared/upstream/devtools.bundle`).
/// Idempotent: packages are compared byte for byte with what would be written, days and
/// bootstraps carry markers listing the packages (and sha256s) they were made of.
pub fn build_archive(world_dir: &Path, ca: &WorldCa, devtools_bundle: &Path) -> Result<ArchRecord> {
    let debian = env_rootfs::debian_root()?;
    let archive = world_dir.join("archive");
    let work = world_dir.join("work");
    std::fs::create_dir_all(&work).ctx("create directory", &work)?;
    let key = SigningKey::load_or_create(world_dir)?;
    let devtools_git = devtools_repo(world_dir, devtools_bundle)?;
    let planned = plan(&debian, ca, &key, &devtools_git)?;

    // packages/ (+ .sig)
    let mut built: Vec<(PkgRecord, PathBuf)> = Vec::new();
    for p in &planned {
        let s = &p.pkg.spec;
        let dir = archive.join("packages").join(&s.name[..1]).join(&s.name);
        let path = dir.join(s.file_name());
        let bytes = alpm::package_bytes(s)?;
        let sha = crate::digest::sha256_hex(&bytes);
        let sig = PathBuf::from(format!("{}.sig", path.display()));
        let same = std::fs::read(&path).map(|b| b == bytes).unwrap_or(false);
        if !same {
            eprintln!("world: building package {}", s.file_name());
            let _ = std::fs::remove_file(&sig);
            alpm::build_package(s, &dir)?;
        }
        if !sig.exists() {
            key.sign(&path, s.builddate)?;
        }
        built.push((
            PkgRecord {
                name: s.name.clone(),
                version: s.version.clone(),
                repo: p.pkg.repo.to_string(),
                file: s.file_name(),
                sha256: sha,
                env: p.pkg.env,
            },
            path,
        ));
    }
    key.stop_agent();

    // repos/<day>/<repo>/os/x86_64
    let mut per_day: BTreeMap<String, BTreeMap<String, PkgRecord>> = BTreeMap::new();
    for day in DAYS {
        for repo in ["core", "extra"] {
            let dir = archive.join("repos").join(day).join(repo).join("os/x86_64");
            let mine: Vec<&(PkgRecord, PathBuf)> = planned
                .iter()
                .zip(&built)
                .filter(|(p, (r, _))| p.days.contains(&day) && r.repo == repo)
                .map(|(_, b)| b)
                .collect();
            for (r, _) in &mine {
                per_day
                    .entry(day.to_string())
                    .or_default()
                    .insert(r.name.clone(), r.clone());
            }
            let listing: String = mine
                .iter()
                .map(|(r, _)| format!("{} {}\n", r.file, r.sha256))
                .collect();
            let marker = dir.join(".complete");
            if std::fs::read_to_string(&marker).is_ok_and(|m| m == listing) {
                continue;
            }
            eprintln!("world: building repos/{day}/{repo}");
            remove_tree(&dir)?;
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            let mut names = Vec::new();
            for (r, src) in &mine {
                for (from, name) in [
                    (src.clone(), r.file.clone()),
                    (
                        PathBuf::from(format!("{}.sig", src.display())),
                        format!("{}.sig", r.file),
                    ),
                ] {
                    let dst = dir.join(&name);
                    if std::fs::hard_link(&from, &dst).is_err() {
                        std::fs::copy(&from, &dst).ctx("copy", &from)?;
                    }
                }
                names.push(r.file.clone());
            }
            EnvRun::new(&debian, false).bind(&dir, "/mnt").sh(
                &format!("repo-add repos/{day}/{repo}"),
                &format!(
                    "cd /mnt && repo-add -q {repo}.db.tar.gz {}",
                    names.join(" ")
                ),
            )?;
            std::fs::write(&marker, &listing).ctx("write", &marker)?;
        }
    }
    let last = archive.join("repos/last");
    if std::fs::symlink_metadata(&last).is_err() {
        std::os::unix::fs::symlink(LATER_DAY, &last).ctx("symlink", &last)?;
    }

    // iso/<iso>/
    let mut bootstraps = Vec::new();
    for (iso, date) in ISOS {
        let pkgs: Vec<&(PkgRecord, PathBuf)> = planned
            .iter()
            .zip(&built)
            .filter(|(p, _)| p.isos.contains(&iso))
            .map(|(_, b)| b)
            .collect();
        let (path, sha) = bootstrap(&archive, iso, date, &debian, ca, &pkgs, &work)?;
        bootstraps.push(BootstrapRecord {
            iso: iso.into(),
            path: path
                .strip_prefix(&archive)
                .unwrap_or(&path)
                .display()
                .to_string(),
            sha256: sha,
            packages: pkgs
                .iter()
                .map(|(r, _)| (r.name.clone(), r.version.clone()))
                .collect(),
        });
    }

    let env_per_day = per_day
        .iter()
        .map(|(d, m)| {
            (
                d.clone(),
                m.values()
                    .filter(|r| r.env)
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect(),
            )
        })
        .collect();
    let drifts = vec![
        Drift {
            package: "devtools".into(),
            from: "1.4.0-1".into(),
            to: "1.5.0-1".into(),
            where_: format!("iso/2026.05.01 has 1.4.0-1; days {SNAPSHOT_DAY} and {BUILD_DAY} have 1.5.0-1 (rolling back upgrades it)"),
            effect: "devtools v1.4.0's extra.conf has `#DisableSandbox` (no `#DisableSandboxFilesystem`): make-rootfs.sh's else branch writes `DisableSandbox` into the image's /etc/pacman.conf; v1.5.0's gives `DisableSandboxFilesystem` and keeps `#DisableSandboxSyscalls`".into(),
        },
        Drift {
            package: "devtools".into(),
            from: "1.5.0-1".into(),
            to: "1.5.1-1".into(),
            where_: format!("day {LATER_DAY} and iso/2026.06.01 (rolling iso/2026.06.01 back to {BUILD_DAY} downgrades it)"),
            effect: "SYNTHETIC version (no devtools release after v1.5.0 changes extra.conf): v1.5.0's files with `ParallelDownloads = 10` instead of 5 in extra.conf, which becomes the image's /etc/pacman.conf".into(),
        },
    ];
    Ok(ArchRecord {
        days: DAYS.iter().map(|d| d.to_string()).collect(),
        packages: per_day,
        all_packages: built.into_iter().map(|(r, _)| r).collect(),
        bootstraps,
        env_per_day,
        drifts,
        signing_key: key.fingerprint,
    })
}

/// Bumped when [`bootstrap`] changes what it makes (cached bootstraps are then remade).
const BOOTSTRAP_RECIPE: u32 = 2;

/// Makes `iso/<iso>/archlinux-bootstrap-<iso>-x86_64.tar.zst` + `sha256sums.txt` (see the
/// module doc); reused when its marker lists the same packages and Debian root.
fn bootstrap(
    archive: &Path,
    iso: &str,
    date: i64,
    debian: &Path,
    ca: &WorldCa,
    pkgs: &[&(PkgRecord, PathBuf)],
    work: &Path,
) -> Result<(PathBuf, String)> {
    let isodir = archive.join("iso").join(iso);
    let name = format!("archlinux-bootstrap-{iso}-x86_64.tar.zst");
    let out = isodir.join(&name);
    let mut listing = format!(
        "recipe {BOOTSTRAP_RECIPE}\ndebian {}\nca {}\nconf {}\n",
        debian.display(),
        crate::digest::sha256_hex(ca.cert_pem.as_bytes()),
        crate::digest::sha256_hex(format!("{ENV_PACMAN_CONF}{ENV_MIRRORLIST}").as_bytes())
    );
    for (r, _) in pkgs {
        listing.push_str(&format!("{} {}\n", r.file, r.sha256));
    }
    let marker = isodir.join(".complete");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == listing) && out.exists() {
        let sha = crate::world::sha256_file(&out)?;
        return Ok((out, sha));
    }
    eprintln!("world: building the environment bootstrap iso/{iso}");
    let stage = work.join(format!("arch-bootstrap-{iso}"));
    remove_tree(&stage)?;
    std::fs::create_dir_all(&stage).ctx("create directory", &stage)?;
    let root = stage.join("root.x86_64");
    tools::run(
        "copy the Debian root",
        Command::new("cp")
            .arg("-a")
            .arg("--reflink=auto")
            .arg(debian)
            .arg(&root),
    )?;
    let _ = std::fs::remove_file(root.join(".complete"));
    // Debian's pacman and podman move aside; the world's stand-ins take their names.
    for (from, dir) in [
        ("usr/bin/pacman", content::REAL_PACMAN_DIR),
        ("usr/bin/pacman-key", content::REAL_PACMAN_DIR),
        ("usr/bin/podman", content::REAL_PODMAN_DIR),
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).ctx("create directory", &d)?;
        let f = root.join(from);
        std::fs::rename(&f, d.join(f.file_name().unwrap())).ctx("move", &f)?;
    }
    for f in ["archlinux.gpg", "archlinux-trusted", "archlinux-revoked"] {
        let _ = std::fs::remove_file(root.join("usr/share/keyrings").join(f));
    }
    // As Arch's filesystem package has it (pacman's CheckSpace reads the mount table).
    if std::fs::symlink_metadata(root.join("etc/mtab")).is_err() {
        std::os::unix::fs::symlink("../proc/self/mounts", root.join("etc/mtab"))
            .ctx("symlink", &root)?;
    }
    std::fs::create_dir_all(root.join("etc/pacman.d")).ctx("create directory", &root)?;
    std::fs::write(root.join("etc/pacman.conf"), ENV_PACMAN_CONF).ctx("write", &root)?;
    std::fs::write(root.join("etc/pacman.d/mirrorlist"), ENV_MIRRORLIST).ctx("write", &root)?;
    let bundle = root.join("etc/ssl/certs/ca-certificates.crt");
    let old = std::fs::read(&bundle).ctx("read", &bundle)?;
    std::fs::write(&bundle, ca.append_to_bundle(&old)).ctx("write", &bundle)?;
    std::fs::create_dir_all(root.join("var/lib/pacman")).ctx("create directory", &root)?;

    let pkgdir = stage.join("pkgs");
    std::fs::create_dir_all(&pkgdir).ctx("create directory", &pkgdir)?;
    let mut names = Vec::new();
    for (r, p) in pkgs {
        std::fs::copy(p, pkgdir.join(&r.file)).ctx("copy", p)?;
        names.push(format!("/mnt/{}", r.file));
    }
    std::fs::write(
        pkgdir.join("pacman.conf"),
        "[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n",
    )
    .ctx("write", &pkgdir)?;
    let mut run = EnvRun::new(&root, true).bind(&pkgdir, "/mnt");
    run.faketime = Some(date);
    run.sh(
        &format!("install the environment packages into iso/{iso}"),
        &format!(
            "/{}/pacman -U --noconfirm --config /mnt/pacman.conf --logfile /dev/null {} && rm -rf /var/cache/pacman/pkg/* /var/cache/ldconfig/aux-cache /etc/pacman.d/gnupg",
            content::REAL_PACMAN_DIR,
            names.join(" ")
        ),
    )?;
    std::fs::create_dir_all(&isodir).ctx("create directory", &isodir)?;
    let tmp = isodir.join(format!(".{name}.tmp"));
    tools::run(
        &format!("pack iso/{iso}"),
        Command::new("bash").arg("-c").arg(
            "set -o pipefail; tar --numeric-owner --xattrs --acls --sort=name --mtime=@\"$3\" --clamp-mtime --pax-option=delete=atime,delete=ctime -C \"$1\" -c root.x86_64 | zstd -q -T0 -3 > \"$2\"",
        ).arg("sh").arg(&stage).arg(&tmp).arg(date.to_string()),
    )?;
    let sha = crate::world::sha256_file(&tmp)?;
    std::fs::rename(&tmp, &out).ctx("rename", &out)?;
    std::fs::write(isodir.join("sha256sums.txt"), format!("{sha}  {name}\n"))
        .ctx("write", &isodir)?;
    std::fs::write(&marker, &listing).ctx("write", &marker)?;
    remove_tree(&stage)?;
    Ok((out, sha))
}

/// The services of a build that reaches the archive as `https://archive.archlinux.org`:
/// the archive on 127.0.0.1:7878 and its TLS front on 127.0.0.2:443 (leaf from the world
/// CA, kept in `DIR/work/tls/`).
pub fn archive_services(world_dir: &Path, ca: &WorldCa) -> Result<Services> {
    let front = TlsFront::issue(
        ca,
        &world_dir.join("work/tls"),
        ARCHIVE_HOST,
        ARCHIVE_TLS_IP,
        &env_rootfs::archive_addr(),
    )?;
    Ok(Services {
        archive: Some(world_dir.join("archive")),
        registry: None,
        tls: vec![front],
        files: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_bootstraps_and_devtools() {
        assert_eq!(DAYS, ["2026/05/19", "2026/05/20", "2026/06/02"]);
        assert_eq!(devtools_of_iso("2026.05.01"), "1.4.0-1");
        assert_eq!(devtools_of_day(BUILD_DAY), "1.5.0-1");
        assert_eq!(devtools_of_day(LATER_DAY), "1.5.1-1");
        assert_eq!(
            devtools_151_edit("ParallelDownloads = 5\n"),
            "ParallelDownloads = 10\n"
        );
        // 2026-05-01 and 2026-06-01, 00:00 UTC.
        assert_eq!(ISOS[0].1, SOURCE_DATE_EPOCH - 19 * 86400);
        assert_eq!(ISOS[1].1, SOURCE_DATE_EPOCH + 12 * 86400);
    }
}
