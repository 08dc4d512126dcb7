//! Test support: a small Arch-archive-shaped tree on the host, for the inputs tests
//! (`tests/inputs_*.rs`): two days of repository databases made by Debian's `repo-add` (run
//! on the host: no build environment, no root) from real ALPM packages written by the
//! world's own package writer ([`alpm::package_bytes`]), a `packages/` tree, and a bootstrap
//! tarball with its `sha256sums.txt`. Serve it with [`super::fileserver::FileServer`].
//! Nothing here reaches the internet; `reprobox world build` does not use it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, IoContext, Result};
use crate::world::alpm::{self, Entry, PkgSpec};
use crate::world::tools;

/// The mini archive's first day.
pub const DAY1: &str = "2026/05/16";
/// Its second day (`hello` changed).
pub const DAY2: &str = "2026/05/17";
/// Its bootstrap month (`iso/<MONTH>/`).
pub const MONTH: &str = "2026.05.01";
/// Build date of its packages (2026-05-16T00:00:00Z).
const BUILDDATE: i64 = 1_778_889_600;

/// sha256 of bytes, hex (the tests' name for [`crate::digest::sha256_hex`]).
pub use crate::digest::sha256_hex as sha256;

/// Deterministic incompressible bytes (xorshift from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An x86_64 package whose one file is `usr/share/NAME/data`, holding `payload`.
pub fn data_package(name: &str, version: &str, payload: &[u8]) -> PkgSpec {
    PkgSpec {
        name: name.into(),
        version: version.into(),
        arch: "x86_64".into(),
        desc: format!("reprobox test package {name}"),
        depends: vec![],
        builddate: BUILDDATE,
        entries: vec![Entry::File {
            path: format!("usr/share/{name}/data"),
            mode: 0o644,
            data: payload.to_vec(),
        }],
    }
}

/// Writes one repository of one day into `dir`: the package files (name, bytes), then
/// `repo-add` (the host's, Debian's pacman) makes `REPO.db.tar.gz` and its `REPO.db` link.
pub fn write_repo(dir: &Path, repo: &str, packages: &[(String, &[u8])]) -> Result<()> {
    let repo_add = tools::require("repo-add", "pacman-package-manager")?;
    tools::require("bsdtar", "libarchive-tools")?;
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let mut cmd = Command::new(repo_add);
    cmd.arg("-q")
        .arg(format!("{repo}.db.tar.gz"))
        .current_dir(dir);
    for (name, bytes) in packages {
        let p = dir.join(name);
        std::fs::write(&p, bytes).ctx("write", &p)?;
        cmd.arg(name);
    }
    tools::run(&format!("repo-add {repo}"), &mut cmd)?;
    let db = dir.join(format!("{repo}.db"));
    if !db.exists() {
        return Err(Error::Environment(format!(
            "world: repo-add made no {}",
            db.display()
        )));
    }
    Ok(())
}

/// Count regular files (anything not a directory) under `dir`, recursively; 0 when it does
/// not exist.
pub fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// One package of the mini archive, with its bytes.
#[derive(Debug, Clone)]
pub struct FixturePkg {
    pub name: &'static str,
    pub version: &'static str,
    pub bytes: Vec<u8>,
}

impl FixturePkg {
    pub fn filename(&self) -> String {
        format!("{}-{}-x86_64.pkg.tar.zst", self.name, self.version)
    }
    pub fn sha256(&self) -> String {
        sha256(&self.bytes)
    }
}

/// The mini archive's packages, written once per process (they are deterministic; the
/// 8 MiB one takes seconds at the package writer's compression level).
fn packages() -> &'static [FixturePkg] {
    static PKGS: OnceLock<Vec<FixturePkg>> = OnceLock::new();
    PKGS.get_or_init(|| {
        let specs: [(&'static str, &'static str, Vec<u8>); 4] = [
            ("hello", "1.0-1", b"hello, day one\n".to_vec()),
            ("hello", "1.1-1", b"hello, day two\n".to_vec()),
            ("tools", "2.0-1", noise(64 * 1024, 7)),
            ("bigdata", "3.0-1", noise(8 << 20, 11)),
        ];
        specs
            .into_iter()
            .map(|(name, version, payload)| FixturePkg {
                name,
                version,
                bytes: alpm::package_bytes(&data_package(name, version, &payload))
                    .expect("write a fixture package in memory"),
            })
            .collect()
    })
}

/// A day's repositories: (repo, indexes into [`MiniArchive::pkgs`]).
pub type DayRepos = Vec<(&'static str, Vec<usize>)>;

/// The mini archive in a temporary directory (removed on drop): `hello` changes between the
/// two days, `tools` does not, `bigdata` (8 MiB, incompressible) is in `extra`.
#[derive(Debug)]
pub struct MiniArchive {
    dir: tempfile::TempDir,
    /// day → repo → packages
    pub days: Vec<(&'static str, DayRepos)>,
    pub pkgs: &'static [FixturePkg],
    /// The bootstrap tarball's bytes (`iso/<MONTH>/`).
    pub bootstrap: Vec<u8>,
}

impl MiniArchive {
    /// Builds it; fails (never skips) when `repo-add` or `bsdtar` is missing.
    pub fn build() -> Result<MiniArchive> {
        let dir = tempfile::tempdir().ctx("create temporary directory", "/tmp")?;
        let days = vec![
            (DAY1, vec![("core", vec![0, 2]), ("extra", vec![3])]),
            (DAY2, vec![("core", vec![1, 2]), ("extra", vec![3])]),
        ];
        let pkgs = packages();
        let mut w = MiniArchive {
            dir,
            days,
            pkgs,
            bootstrap: vec![],
        };
        for (day, repos) in &w.days {
            for (repo, idx) in repos {
                let files: Vec<(String, &[u8])> = idx
                    .iter()
                    .map(|&i| (pkgs[i].filename(), &pkgs[i].bytes[..]))
                    .collect();
                write_repo(&w.day_dir(day, repo), repo, &files)?;
            }
        }
        for p in pkgs {
            let d = w.root().join("packages").join(&p.name[..1]).join(p.name);
            std::fs::create_dir_all(&d).ctx("create directory", &d)?;
            std::fs::write(d.join(p.filename()), &p.bytes).ctx("write", &d)?;
        }
        // Bootstrap tarball: root.x86_64/ with a tiny userland marker.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let osr = b"NAME=\"Arch Linux\"\nID=arch\n";
        h.set_size(osr.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_777_593_600);
        tar.append_data(&mut h, "root.x86_64/etc/os-release", &osr[..])
            .ctx("write", "bootstrap tarball")?;
        let raw = tar.into_inner().ctx("write", "bootstrap tarball")?;
        let boot = zstd::encode_all(&raw[..], 3).ctx("zstd", "bootstrap tarball")?;
        let iso = w.root().join("iso").join(MONTH);
        std::fs::create_dir_all(&iso).ctx("create directory", &iso)?;
        std::fs::write(iso.join(Self::bootstrap_name()), &boot).ctx("write", &iso)?;
        let sums = iso.join("sha256sums.txt");
        std::fs::write(
            &sums,
            format!(
                "{}  archlinux-bootstrap-x86_64.tar.zst\n{}  {}\n",
                sha256(&boot),
                sha256(&boot),
                Self::bootstrap_name()
            ),
        )
        .ctx("write", &sums)?;
        w.bootstrap = boot;
        Ok(w)
    }

    /// The tree's root (`repos/`, `packages/`, `iso/`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The package `name` at `version`; panics when the archive has none.
    pub fn pkg(&self, name: &str, version: &str) -> &FixturePkg {
        self.pkgs
            .iter()
            .find(|p| p.name == name && p.version == version)
            .expect("package in the mini archive")
    }

    /// `repos/<day>/<repo>/os/x86_64`.
    pub fn day_dir(&self, day: &str, repo: &str) -> PathBuf {
        self.root()
            .join("repos")
            .join(day)
            .join(repo)
            .join("os/x86_64")
    }

    /// The bootstrap tarball's file name.
    pub fn bootstrap_name() -> String {
        format!("archlinux-bootstrap-{MONTH}-x86_64.tar.zst")
    }
}
