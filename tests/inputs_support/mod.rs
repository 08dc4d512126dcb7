//! Test support for the inputs tests: a local Arch-archive-shaped tree (two days of
//! repository databases made by Debian's `repo-add` from real ALPM packages built here, a
//! `packages/` tree, a bootstrap tarball with its `sha256sums.txt`), served by real HTTP
//! servers on 127.0.0.1. Nothing here reaches the internet.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub const DAY1: &str = "2026/05/16";
pub const DAY2: &str = "2026/05/17";
pub const MONTH: &str = "2026.05.01";

/// Fail loudly (never skip) when a tool the tests need is missing.
pub fn need(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs `{tool}` (Debian package {package}, listed in scripts/apt/inputs.txt); install it"
    );
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic incompressible bytes.
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

/// A real ALPM package: a zstd tar with `.PKGINFO` first, then the files.
pub fn make_package(name: &str, version: &str, payload: &[u8]) -> Vec<u8> {
    let pkginfo = format!(
        "pkgname = {name}\npkgbase = {name}\npkgver = {version}\npkgdesc = reprobox test package {name}\nurl = https://example.org/{name}\nbuilddate = 1778889600\npackager = reprobox tests <tests@example.org>\nsize = {}\narch = x86_64\nlicense = MIT\n",
        payload.len()
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1778889600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add(".PKGINFO", pkginfo.as_bytes(), 0o644);
    add(&format!("usr/share/{name}/data"), payload, 0o644);
    let raw = tar.into_inner().unwrap();
    zstd::encode_all(&raw[..], 3).unwrap()
}

pub struct Pkg {
    pub name: &'static str,
    pub version: &'static str,
    pub bytes: Vec<u8>,
}

impl Pkg {
    pub fn filename(&self) -> String {
        format!("{}-{}-x86_64.pkg.tar.zst", self.name, self.version)
    }
    pub fn sha256(&self) -> String {
        sha256(&self.bytes)
    }
}

/// A day's repositories: (repo, indexes into `World::pkgs`).
pub type DayRepos = Vec<(&'static str, Vec<usize>)>;

/// The archive-shaped tree.
pub struct World {
    pub dir: tempfile::TempDir,
    /// day → repo → packages
    pub days: Vec<(&'static str, DayRepos)>,
    pub pkgs: Vec<Pkg>,
    pub bootstrap: Vec<u8>,
}

impl World {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn pkg(&self, name: &str, version: &str) -> &Pkg {
        self.pkgs
            .iter()
            .find(|p| p.name == name && p.version == version)
            .expect("package in world")
    }

    pub fn day_dir(&self, day: &str, repo: &str) -> PathBuf {
        self.root()
            .join("repos")
            .join(day)
            .join(repo)
            .join("os/x86_64")
    }

    pub fn bootstrap_name() -> String {
        format!("archlinux-bootstrap-{MONTH}-x86_64.tar.zst")
    }

    /// Build it: `hello` changes between the two days, `tools` does not, `bigdata` (8 MiB,
    /// incompressible) is in extra.
    pub fn build() -> World {
        need("repo-add", "pacman-package-manager");
        need("bsdtar", "libarchive-tools");
        let dir = tempfile::tempdir().unwrap();
        let pkgs = vec![
            Pkg {
                name: "hello",
                version: "1.0-1",
                bytes: make_package("hello", "1.0-1", b"hello, day one\n"),
            },
            Pkg {
                name: "hello",
                version: "1.1-1",
                bytes: make_package("hello", "1.1-1", b"hello, day two\n"),
            },
            Pkg {
                name: "tools",
                version: "2.0-1",
                bytes: make_package("tools", "2.0-1", &noise(64 * 1024, 7)),
            },
            Pkg {
                name: "bigdata",
                version: "3.0-1",
                bytes: make_package("bigdata", "3.0-1", &noise(8 << 20, 11)),
            },
        ];
        let days = vec![
            (DAY1, vec![("core", vec![0, 2]), ("extra", vec![3])]),
            (DAY2, vec![("core", vec![1, 2]), ("extra", vec![3])]),
        ];
        let w = World {
            dir,
            days,
            pkgs,
            bootstrap: vec![],
        };
        for (day, repos) in &w.days {
            for (repo, idx) in repos {
                let d = w.day_dir(day, repo);
                std::fs::create_dir_all(&d).unwrap();
                let mut cmd = Command::new("repo-add");
                cmd.arg("-q")
                    .arg(format!("{repo}.db.tar.gz"))
                    .current_dir(&d);
                for &i in idx {
                    let p = &w.pkgs[i];
                    std::fs::write(d.join(p.filename()), &p.bytes).unwrap();
                    cmd.arg(p.filename());
                }
                let out = cmd.output().unwrap();
                assert!(
                    out.status.success(),
                    "repo-add failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    d.join(format!("{repo}.db")).exists(),
                    "repo-add made no {repo}.db"
                );
            }
        }
        for p in &w.pkgs {
            let d = w.root().join("packages").join(&p.name[..1]).join(p.name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(p.filename()), &p.bytes).unwrap();
        }
        // Bootstrap tarball: root.x86_64/ with a tiny userland marker.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let osr = b"NAME=\"Arch Linux\"\nID=arch\n";
        h.set_size(osr.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1777593600);
        tar.append_data(&mut h, "root.x86_64/etc/os-release", &osr[..])
            .unwrap();
        let boot = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
        let iso = w.root().join("iso").join(MONTH);
        std::fs::create_dir_all(&iso).unwrap();
        std::fs::write(iso.join(Self::bootstrap_name()), &boot).unwrap();
        std::fs::write(
            iso.join("sha256sums.txt"),
            format!(
                "{}  archlinux-bootstrap-x86_64.tar.zst\n{}  {}\n",
                sha256(&boot),
                sha256(&boot),
                Self::bootstrap_name()
            ),
        )
        .unwrap();
        World {
            bootstrap: boot,
            ..w
        }
    }
}

/// `python3 -m http.server` serving a directory on 127.0.0.1 (killed on drop).
pub struct PyServer {
    child: Child,
    pub port: u16,
}

impl PyServer {
    pub fn start(dir: &Path) -> PyServer {
        need("python3", "python3");
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"));
        PyServer { child, port }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP server serving one body: the first `cuts` responses announce the full length
/// but close the connection after `cut_at` bytes; every response honours `Range: bytes=N-`.
/// Records the Range header of every request.
pub struct CutServer {
    pub port: u16,
    pub ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl CutServer {
    pub fn start(body: Vec<u8>, cuts: usize, cut_at: usize) -> CutServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ranges = Arc::new(Mutex::new(vec![]));
        let r2 = ranges.clone();
        let served = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line
                        .strip_prefix("Range: ")
                        .or_else(|| line.strip_prefix("range: "))
                    {
                        range = Some(v.to_string());
                    }
                }
                r2.lock().unwrap().push(range.clone());
                let start: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let rest = &body[start..];
                let head = if start > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                        rest.len(),
                        body.len() - 1,
                        body.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        rest.len()
                    )
                };
                let _ = s.write_all(head.as_bytes());
                let n = served.fetch_add(1, Ordering::SeqCst);
                if n < cuts {
                    let _ = s.write_all(&rest[..cut_at.min(rest.len())]);
                } else {
                    let _ = s.write_all(rest);
                }
                let _ = s.flush();
                drop(s);
            }
        });
        CutServer { port, ranges }
    }
}

pub fn reprobox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reprobox"))
}

/// Run reprobox with a store; returns (exit code, stdout, stderr).
pub fn run(store: &Path, args: &[&str]) -> (i32, String, String) {
    let out = reprobox()
        .arg(args[0])
        .arg("--store")
        .arg(store)
        .args(&args[1..])
        .env_remove("REPROBOX_STORE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `reprobox mirror` process; `stop` sends SIGTERM and waits.
pub struct MirrorProc {
    child: Child,
    pub url: String,
}

impl MirrorProc {
    pub fn start(store: &Path, upstream: &str, offline: bool, lock_out: &Path) -> MirrorProc {
        let mut cmd = reprobox();
        cmd.args([
            "mirror",
            "--listen",
            "127.0.0.1:0",
            "--archive",
            upstream,
            "--store",
        ])
        .arg(store)
        .arg("--lock-out")
        .arg(lock_out)
        .stdout(Stdio::piped());
        if offline {
            cmd.arg("--offline");
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected mirror banner {line:?}"))
            .to_string();
        MirrorProc { child, url }
    }
    pub fn stop(mut self) -> i32 {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for MirrorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a URL: (status, body).
pub fn get(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let mut body = vec![];
    resp.into_body()
        .into_reader()
        .read_to_end(&mut body)
        .unwrap();
    (status, body)
}

/// Count regular files under a directory (recursively).
pub fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}
