//! The world's Alpine side (issue 13): Docker Hub's `library/alpine:3.23` and Alpine's
//! `dl-cdn.alpinelinux.org/alpine/v3.23/main` repository, made from Debian's binaries, so the
//! release's verify stage (`FROM alpine:3.23`, `RUN apk add --no-cache curl tar zstd`, curl of
//! the rootfs, `sha256sum -c`, GNU tar with zstd) runs unmodified.
//!
//! - The image, written natively into the registry storage (one layer, deterministic bytes:
//!   its digest depends only on the Debian root and the world CA): Debian's static busybox
//!   (`/bin/*` applets; `/bin/sh` is Debian's dash), glibc's loader and libraries, the world CA as the root of trust in
//!   `/etc/ssl/certs/ca-certificates.crt`, `/etc/apk/repositories` naming the real URL, and
//!   `/sbin/apk`, the stand-in of `world/standins/apk` with its private transport (Debian's
//!   curl and its libraries under `/usr/lib/reprobox-world/apk/`).
//! - The repository, `DIR/alpine/alpine/v3.23/main/x86_64/`: `APKINDEX.tar.gz` (unsigned) and
//!   one `.apk` (gzip'd control tar with `.PKGINFO`, then the data tar, concatenated) per
//!   package: `curl`, `tar`, `zstd` (Debian's binaries) and one package per shared library
//!   they need beyond glibc (named after the soname, e.g. `libcurl`), listed in `D:`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::error::{Error, IoContext, Result};
use crate::world::alpm::Entry;
use crate::world::pki::WorldCa;
use crate::world::registry::{self, ImageRecord};

/// The image's repository and tag in the registry (Docker Hub's `alpine:3.23`).
pub const IMAGE_REPO: &str = "library/alpine";
pub const IMAGE_TAG: &str = "3.23";
/// The repository URL in the image's `/etc/apk/repositories` (the real one).
pub const REPOSITORY_URL: &str = "https://dl-cdn.alpinelinux.org/alpine/v3.23/main";
/// The repository's place under the world's `alpine/` location (`DIR/alpine/` is served as
/// `https://dl-cdn.alpinelinux.org/`).
pub const REPOSITORY_PATH: &str = "alpine/v3.23/main/x86_64";
/// The packages the verify stage adds.
pub const TOOLS: [&str; 3] = ["curl", "tar", "zstd"];
/// The image's and the packages' date: 2026-05-01T00:00:00Z.
pub const CREATED_EPOCH: u64 = 1_777_593_600;
pub const CREATED: &str = "2026-05-01T00:00:00Z";
/// Where the apk stand-in's private transport lives in the image.
pub const APK_PRIVATE: &str = "usr/lib/reprobox-world/apk";

const APK_SCRIPT: &str = include_str!("../../world/standins/apk");

/// glibc's libraries, in the base image (every dynamic binary needs some of them).
const GLIBC: [&str; 7] = [
    "libc.so.6",
    "libm.so.6",
    "libresolv.so.2",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libanl.so.1",
];

/// Busybox applets linked in `/bin` (a subset of Alpine's; `tar` stays busybox's until
/// `apk add tar` puts GNU tar first on PATH, as on Alpine). `/bin/sh` is Debian's dash, not
/// busybox: Debian's static busybox prefers its own applets to PATH (standalone shell), so
/// its `sh` would run busybox tar even after `apk add tar`, unlike Alpine's.
const APPLETS: [&str; 39] = [
    "ash",
    "sha256sum",
    "sha1sum",
    "md5sum",
    "mkdir",
    "echo",
    "cat",
    "ls",
    "rm",
    "true",
    "false",
    "cp",
    "mv",
    "ln",
    "chmod",
    "chown",
    "sed",
    "grep",
    "awk",
    "head",
    "tail",
    "wc",
    "env",
    "id",
    "tr",
    "cut",
    "sleep",
    "test",
    "printf",
    "basename",
    "dirname",
    "find",
    "xargs",
    "tar",
    "gzip",
    "gunzip",
    "zcat",
    "mktemp",
    "touch",
];

/// One package of the repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApkRecord {
    pub name: String,
    pub version: String,
    /// File name under [`REPOSITORY_PATH`].
    pub file: String,
    pub sha256: String,
    pub depends: Vec<String>,
}

/// What [`build`] made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlpineRecord {
    pub image: ImageRecord,
    /// The repository directory (`DIR/alpine/alpine/v3.23/main/x86_64`).
    pub repository_dir: PathBuf,
    pub index_sha256: String,
    pub packages: Vec<ApkRecord>,
}

/// Writes `library/alpine:3.23` into registry `storage` and the repository under
/// `world_dir/alpine/`, from the Debian root `debian` (its busybox is the host's static one,
/// `env_rootfs::busybox()`, as for the other world images). Idempotent: the same inputs give
/// the same bytes, written only when they differ.
pub fn build(
    world_dir: &Path,
    ca: &WorldCa,
    storage: &Path,
    debian: &Path,
) -> Result<AlpineRecord> {
    let busybox = crate::world::env_rootfs::busybox()?;
    let image = registry::put_single_layer_image(
        storage,
        IMAGE_REPO,
        IMAGE_TAG,
        &image_entries(&busybox, debian, ca)?,
        CREATED,
    )?;
    let repo = world_dir.join("alpine").join(REPOSITORY_PATH);
    std::fs::create_dir_all(&repo).ctx("create directory", &repo)?;
    let mut packages = Vec::new();
    let mut index = String::new();
    for p in repository_packages(debian)? {
        let bytes = apk_bytes(&p)?;
        let file = format!("{}-{}.apk", p.name, p.version);
        write_if_changed(&repo.join(&file), &bytes)?;
        let sha = sha256_hex(&bytes);
        index.push_str(&index_stanza(&p, &bytes, &sha));
        packages.push(ApkRecord {
            name: p.name.clone(),
            version: p.version.clone(),
            file,
            sha256: sha,
            depends: p.depends.clone(),
        });
    }
    let apkindex = tar_gz(
        &[
            file_entry("DESCRIPTION", 0o644, b"v3.23-reprobox-world\n".to_vec()),
            file_entry("APKINDEX", 0o644, index.into_bytes()),
        ],
        true,
    )?;
    write_if_changed(&repo.join("APKINDEX.tar.gz"), &apkindex)?;
    Ok(AlpineRecord {
        image,
        repository_dir: repo,
        index_sha256: sha256_hex(&apkindex),
        packages,
    })
}

fn write_if_changed(p: &Path, data: &[u8]) -> Result<()> {
    if std::fs::read(p).map(|b| b == data).unwrap_or(false) {
        return Ok(());
    }
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, data).ctx("write", &tmp)?;
    std::fs::rename(&tmp, p).ctx("rename", p)
}

fn file_entry(path: &str, mode: u32, data: Vec<u8>) -> Entry {
    Entry::File {
        path: path.into(),
        mode,
        data,
    }
}

fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}

/// A Debian binary's shared libraries beyond glibc, as (soname, path in the Debian root),
/// resolved by the Debian root's own loader (`ld.so --list`, nothing executed).
fn needed_libs(debian: &Path, binary: &str) -> Result<Vec<(String, PathBuf)>> {
    let ld = debian.join("lib64/ld-linux-x86-64.so.2");
    let libpath = format!(
        "{}:{}",
        debian.join("lib/x86_64-linux-gnu").display(),
        debian.join("usr/lib/x86_64-linux-gnu").display()
    );
    let out = Command::new(&ld)
        .arg("--library-path")
        .arg(&libpath)
        .arg("--list")
        .arg(debian.join(binary))
        .output()
        .ctx("run", &ld)?;
    if !out.status.success() {
        return Err(Error::Environment(format!(
            "world: {} --list {binary}: {}",
            ld.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        if name.starts_with("/") || GLIBC.contains(&name) {
            continue;
        }
        let path = rest.split(" (").next().unwrap_or("").trim();
        libs.push((name.to_string(), PathBuf::from(path)));
    }
    Ok(libs)
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).ctx("read", p)
}

/// The base image's files.
fn image_entries(busybox: &Path, debian: &Path, ca: &WorldCa) -> Result<Vec<Entry>> {
    let mut e = vec![
        dir("bin"),
        file_entry("bin/busybox", 0o755, read(busybox)?),
        file_entry("bin/sh", 0o755, read(&debian.join("usr/bin/dash"))?),
    ];
    let mut applets = APPLETS.to_vec();
    applets.sort();
    for a in applets {
        e.push(Entry::Symlink {
            path: format!("bin/{a}"),
            target: "busybox".into(),
        });
    }
    for d in ["dev", "etc", "etc/apk", "etc/ssl", "etc/ssl/certs"] {
        e.push(dir(d));
    }
    e.push(file_entry("etc/apk/arch", 0o644, b"x86_64\n".to_vec()));
    e.push(file_entry(
        "etc/apk/repositories",
        0o644,
        format!("{REPOSITORY_URL}\n").into_bytes(),
    ));
    e.push(file_entry(
        "etc/group",
        0o644,
        b"root:x:0:root\nnobody:x:65534:\n".to_vec(),
    ));
    e.push(file_entry(
        "etc/os-release",
        0o644,
        b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.23.0\nPRETTY_NAME=\"Alpine Linux v3.23 (reprobox test world stand-in: Debian binaries)\"\nHOME_URL=\"https://alpinelinux.org/\"\n".to_vec(),
    ));
    e.push(file_entry(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n".to_vec(),
    ));
    e.push(file_entry(
        "etc/ssl/certs/ca-certificates.crt",
        0o644,
        ca.append_to_bundle(b""),
    ));
    for d in ["home", "lib", "lib/apk", "lib/apk/db"] {
        e.push(dir(d));
    }
    e.push(file_entry("lib/apk/db/installed", 0o644, Vec::new()));
    e.push(dir("lib/x86_64-linux-gnu"));
    for l in GLIBC {
        let p = debian.join("lib/x86_64-linux-gnu").join(l);
        e.push(file_entry(
            &format!("lib/x86_64-linux-gnu/{l}"),
            0o755,
            read(&p)?,
        ));
    }
    e.push(dir("lib64"));
    e.push(file_entry(
        "lib64/ld-linux-x86-64.so.2",
        0o755,
        read(&debian.join("lib64/ld-linux-x86-64.so.2"))?,
    ));
    for d in ["proc", "root", "run", "sbin"] {
        e.push(dir(d));
    }
    e.push(file_entry(
        "sbin/apk",
        0o755,
        APK_SCRIPT.as_bytes().to_vec(),
    ));
    e.push(Entry::Dir {
        path: "tmp".into(),
        mode: 0o1777,
    });
    for d in [
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib/reprobox-world",
        APK_PRIVATE,
    ] {
        e.push(dir(d));
    }
    e.push(file_entry(
        &format!("{APK_PRIVATE}/curl"),
        0o755,
        read(&debian.join("usr/bin/curl"))?,
    ));
    e.push(dir(&format!("{APK_PRIVATE}/lib")));
    let mut libs = needed_libs(debian, "usr/bin/curl")?;
    libs.sort();
    for (soname, p) in libs {
        e.push(file_entry(
            &format!("{APK_PRIVATE}/lib/{soname}"),
            0o644,
            read(&p)?,
        ));
    }
    for d in [
        "usr/local",
        "usr/local/bin",
        "usr/sbin",
        "var",
        "var/cache",
        "var/tmp",
    ] {
        e.push(dir(d));
    }
    Ok(e)
}

/// A package to be written: name, version, description, dependencies, files.
struct Package {
    name: String,
    version: String,
    description: String,
    depends: Vec<String>,
    entries: Vec<Entry>,
}

/// The Debian package's upstream version (`7.88.1-10+deb12u12` → `7.88.1`), from the
/// Debian root's dpkg status.
fn debian_version(debian: &Path, package: &str) -> Result<String> {
    let p = debian.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&p).ctx("read", &p)?;
    for stanza in status.split("\n\n") {
        if stanza.lines().any(|l| l == format!("Package: {package}"))
            && let Some(v) = stanza.lines().find_map(|l| l.strip_prefix("Version: "))
        {
            let v = v.split_once(':').map_or(v, |(_, v)| v);
            let v = v.rsplit_once('-').map_or(v, |(u, _)| u);
            return Ok(v.split('+').next().unwrap_or(v).to_string());
        }
    }
    Err(Error::Environment(format!(
        "world: {} has no package {package}",
        p.display()
    )))
}

/// `libcurl.so.4` → `libcurl`; its version from the real file's name (`libcurl.so.4.8.0` →
/// `4.8.0`), else the soname's number.
fn lib_package(soname: &str, path: &Path) -> (String, String) {
    let name = soname.split(".so").next().unwrap_or(soname).to_string();
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let file = real
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let v = file
        .split_once(".so.")
        .map(|(_, v)| v.to_string())
        .or_else(|| soname.split_once(".so.").map(|(_, v)| v.to_string()))
        .unwrap_or_else(|| "0".into());
    (name, format!("{v}-r0"))
}

/// The repository's packages, sorted by name.
fn repository_packages(debian: &Path) -> Result<Vec<Package>> {
    let mut libs: BTreeMap<String, Package> = BTreeMap::new();
    let mut tools = Vec::new();
    for (tool, deb, what, url) in [
        (
            "curl",
            "curl",
            "URL retrieval utility and library",
            "https://curl.se/",
        ),
        (
            "tar",
            "tar",
            "Utility used to store, backup, and transport files",
            "https://www.gnu.org/software/tar/",
        ),
        (
            "zstd",
            "zstd",
            "Zstandard - Fast real-time compression algorithm",
            "https://www.zstd.net/",
        ),
    ] {
        let bin = format!("usr/bin/{tool}");
        let mut depends = Vec::new();
        for (soname, p) in needed_libs(debian, &bin)? {
            let (name, version) = lib_package(&soname, &p);
            depends.push(name.clone());
            if !libs.contains_key(&name) {
                libs.insert(
                    name.clone(),
                    Package {
                        name: name.clone(),
                        version,
                        description: format!("{soname} (Debian bookworm's, reprobox test world)"),
                        depends: Vec::new(),
                        entries: vec![
                            dir("usr"),
                            dir("usr/lib"),
                            dir("usr/lib/x86_64-linux-gnu"),
                            file_entry(
                                &format!("usr/lib/x86_64-linux-gnu/{soname}"),
                                0o755,
                                read(&p)?,
                            ),
                        ],
                    },
                );
            }
        }
        depends.sort();
        tools.push(Package {
            name: tool.into(),
            version: format!("{}-r0", debian_version(debian, deb)?),
            description: format!("{what} (Debian bookworm's binary, reprobox test world) {url}"),
            depends,
            entries: vec![
                dir("usr"),
                dir("usr/bin"),
                file_entry(&bin, 0o755, read(&debian.join(&bin))?),
            ],
        });
    }
    let mut all: Vec<Package> = libs.into_values().chain(tools).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

fn installed_size(p: &Package) -> usize {
    p.entries
        .iter()
        .map(|e| match e {
            Entry::File { data, .. } => data.len(),
            _ => 0,
        })
        .sum()
}

fn pkginfo(p: &Package) -> String {
    let mut s = format!(
        "# Generated by reprobox world (test world stand-in for abuild)\npkgname = {}\npkgver = {}\npkgdesc = {}\nurl = https://alpinelinux.org/\nbuilddate = {CREATED_EPOCH}\npackager = reprobox test world\nsize = {}\narch = x86_64\norigin = {}\nlicense = custom\n",
        p.name,
        p.version,
        p.description,
        installed_size(p),
        p.name
    );
    for d in &p.depends {
        s.push_str(&format!("depend = {d}\n"));
    }
    s
}

/// An `.apk` (v2): the gzip'd control tar (`.PKGINFO`, without end-of-archive blocks, as
/// abuild cuts them) followed by the gzip'd data tar, so `gzip -dc | tar -x` reads one tar.
fn apk_bytes(p: &Package) -> Result<Vec<u8>> {
    let mut out = tar_gz(
        &[file_entry(".PKGINFO", 0o644, pkginfo(p).into_bytes())],
        false,
    )?;
    out.extend(tar_gz(&p.entries, true)?);
    Ok(out)
}

/// A gzip'd tar of `entries` (root-owned, mtime [`CREATED_EPOCH`]); `end` keeps the
/// end-of-archive blocks.
fn tar_gz(entries: &[Entry], end: bool) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let hdr = |mode: u32, kind: tar::EntryType, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(CREATED_EPOCH);
        h.set_entry_type(kind);
        h.set_size(size);
        h
    };
    for e in entries {
        let r = match e {
            Entry::Dir { path, mode } => b.append_data(
                &mut hdr(*mode, tar::EntryType::Directory, 0),
                format!("{path}/"),
                std::io::empty(),
            ),
            Entry::File { path, mode, data } => b.append_data(
                &mut hdr(*mode, tar::EntryType::Regular, data.len() as u64),
                path,
                &data[..],
            ),
            Entry::Symlink { path, target } => {
                b.append_link(&mut hdr(0o777, tar::EntryType::Symlink, 0), path, target)
            }
        };
        r.ctx("write apk tar", "apk")?;
    }
    let mut tar = b.into_inner().ctx("write apk tar", "apk")?;
    if !end {
        tar.truncate(tar.len().saturating_sub(1024));
        while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|&x| x == 0) {
            tar.truncate(tar.len() - 512);
        }
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).ctx("gzip", "apk")?;
    gz.finish().ctx("gzip", "apk")
}

/// One APKINDEX stanza. `C:` is `Q2` + base64(sha256 of the control part) (apk-tools' sha256
/// form); `z:` (lowercase, so real apk ignores it) is the sha256 of the whole file, which
/// the stand-in checks.
fn index_stanza(p: &Package, apk: &[u8], sha: &str) -> String {
    let control = tar_gz(
        &[file_entry(".PKGINFO", 0o644, pkginfo(p).into_bytes())],
        false,
    )
    .unwrap_or_default();
    let c = crate::digest::sha256_hex(&control);
    let mut s = format!(
        "C:Q2{}\nP:{}\nV:{}\nA:x86_64\nS:{}\nI:{}\nT:{}\nU:https://alpinelinux.org/\nL:custom\no:{}\nm:reprobox test world\nt:{CREATED_EPOCH}\n",
        base64(&hex::decode(c).unwrap_or_default()),
        p.name,
        p.version,
        apk.len(),
        installed_size(p),
        p.description,
        p.name
    );
    if !p.depends.is_empty() {
        s.push_str(&format!("D:{}\n", p.depends.join(" ")));
    }
    s.push_str(&format!("z:{sha}\n\n"));
    s
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_versions() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        let (n, v) = lib_package(
            "libldap-2.5.so.0",
            Path::new("/nonexistent/libldap-2.5.so.0"),
        );
        assert_eq!((n.as_str(), v.as_str()), ("libldap-2.5", "0-r0"));
    }

    #[test]
    fn an_apk_is_one_tar_stream_and_its_bytes_are_fixed() {
        let p = Package {
            name: "x".into(),
            version: "1-r0".into(),
            description: "d".into(),
            depends: vec!["liby".into()],
            entries: vec![dir("usr"), file_entry("usr/x", 0o755, b"X".to_vec())],
        };
        let a = apk_bytes(&p).unwrap();
        assert_eq!(a, apk_bytes(&p).unwrap());
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&a[..]), &mut tar)
            .unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [".PKGINFO", "usr/", "usr/x"]);
        let s = index_stanza(&p, &a, &sha256_hex(&a));
        assert!(s.starts_with("C:Q2") && s.contains("\nD:liby\n") && s.ends_with("\n\n"));
    }
}
