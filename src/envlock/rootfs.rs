//! A package lock from a rootfs tarball (`reprobox lock from-rootfs`): what a published
//! rootfs holds, read from its own pacman database (`var/lib/pacman/local/*/desc`).
//!
//! Why: upstream's releases 20260420 to 20260423 were built from the live mirrors, not from
//! their snapshot day, so the snapshot's databases do not say what they contain; their
//! rootfs does. The lock is the same [`EnvLock`] format `reprobox drift` compares (name,
//! version and `%ARCH%`, which names the package file in the archive's `packages/` tree);
//! the tarball is streamed, only the `desc` entries are read.

use std::io::Read;
use std::path::Path;

use crate::envlock::installed::parse_desc;
use crate::envlock::{ENVLOCK_SCHEMA, EnvLock, LockedPackage};
use crate::error::{Error, Result};

/// The local database's `desc` entries: `var/lib/pacman/local/<name>-<version>/desc`, with
/// or without a leading `./` or `/`. Returns the entry's directory name.
fn desc_dir(path: &str) -> Option<&str> {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let rest = p.strip_prefix("var/lib/pacman/local/")?;
    let dir = rest.strip_suffix("/desc")?;
    (!dir.is_empty() && !dir.contains('/')).then_some(dir)
}

/// The lock of the rootfs tarball at `path` (`.tar`, `.tar.gz`, `.tar.zst`: found by its
/// magic bytes). A tarball that holds no pacman database is bad input: it is not a rootfs
/// reprobox can read a package set from.
pub fn lock_from_tarball(path: &Path) -> Result<EnvLock> {
    let reader = crate::inputs::unpack::open_decompressed(path)?;
    lock_from_reader(reader, &path.display().to_string())
}

/// The lock of the tar stream `reader`; `what` names it in errors.
pub fn lock_from_reader(reader: impl Read, what: &str) -> Result<EnvLock> {
    let bad = |e: std::io::Error| {
        Error::bad_input(
            format!("rootfs tarball {what}"),
            format!(
                "not a readable tar archive ({e}); expected a rootfs .tar, .tar.gz or .tar.zst"
            ),
        )
    };
    let mut archive = tar::Archive::new(reader);
    let mut packages = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(dir) = desc_dir(&path) else {
            continue;
        };
        let dir = dir.to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text).map_err(bad)?;
        let p = parse_desc(&text, &path).map_err(|e| {
            let msg = match e {
                Error::Environment(m) => m,
                e => e.to_string(),
            };
            Error::bad_input(format!("rootfs tarball {what}"), msg)
        })?;
        if dir != format!("{}-{}", p.name, p.version) {
            return Err(Error::bad_input(
                format!("rootfs tarball {what}"),
                format!(
                    "{path} describes {} {}; expected its directory to be named {}-{}",
                    p.name, p.version, p.name, p.version
                ),
            ));
        }
        packages.push(LockedPackage {
            name: p.name,
            version: p.version,
            arch: Some(p.arch),
            sha256: None,
            repo: None,
            day: None,
        });
    }
    if packages.is_empty() {
        return Err(Error::bad_input(
            format!("rootfs tarball {what}"),
            "holds no pacman database (var/lib/pacman/local/*/desc); expected an Arch Linux rootfs",
        ));
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = packages.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::bad_input(
            format!("rootfs tarball {what}"),
            format!(
                "its pacman database lists {} twice ({} and {}); expected one entry per package",
                w[0].name, w[0].version, w[1].version
            ),
        ));
    }
    Ok(EnvLock {
        schema: ENVLOCK_SCHEMA,
        snapshot: None,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, version: &str, arch: &str) -> String {
        format!(
            "%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%BASE%\n{name}\n\n%DESC%\nx\n\n\
%URL%\nhttps://example.org/\n\n%ARCH%\n{arch}\n\n%BUILDDATE%\n1774828800\n\n%INSTALLDATE%\n1774915200\n\n\
%PACKAGER%\nreprobox test world <world@reprobox.invalid>\n\n%SIZE%\n1024\n\n%REASON%\n1\n\n%LICENSE%\nMIT\n\n%VALIDATION%\nnone\n\n"
        )
    }

    /// A tarball with `files` (path, bytes), in the layout make-rootfs.sh's `tar -C DIR -c .`
    /// writes (`./` prefixes).
    fn tarball(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_name_version_and_arch_from_every_desc_and_round_trips() {
        let tar = tarball(&[
            ("./etc/os-release", b"ID=arch\n".to_vec()),
            (
                "./var/lib/pacman/local/systemd-258.2-1/desc",
                desc("systemd", "258.2-1", "x86_64").into_bytes(),
            ),
            (
                "./var/lib/pacman/local/systemd-258.2-1/files",
                b"%FILES%\n".to_vec(),
            ),
            (
                "./var/lib/pacman/local/base-3-2/desc",
                desc("base", "3-2", "any").into_bytes(),
            ),
            ("./var/lib/pacman/local/ALPM_DB_VERSION", b"9\n".to_vec()),
        ]);
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("repro.tar.zst");
        std::fs::write(&f, &zst).unwrap();
        let lock = lock_from_tarball(&f).unwrap();
        let got: Vec<(&str, &str, Option<&str>)> = lock
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("base", "3-2", Some("any")),
                ("systemd", "258.2-1", Some("x86_64"))
            ]
        );
        assert_eq!(lock.snapshot, None);
        // The lock is the format `reprobox drift` reads.
        let text = lock.to_text();
        assert_eq!(EnvLock::parse(&text, "t").unwrap(), lock);
        // The plain tar gives the same lock.
        assert_eq!(lock_from_reader(tar.as_slice(), "t").unwrap(), lock);
    }

    #[test]
    fn bad_tarballs_are_bad_input_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.tar");
        std::fs::write(&f, tarball(&[("./etc/hostname", b"x\n".to_vec())])).unwrap();
        let e = lock_from_tarball(&f).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("empty.tar") && e.to_string().contains("no pacman database"),
            "{e}"
        );

        let wrong = tarball(&[(
            "var/lib/pacman/local/base-3-1/desc",
            desc("base", "3-2", "any").into_bytes(),
        )]);
        let e = lock_from_reader(wrong.as_slice(), "w.tar").unwrap_err();
        assert!(e.to_string().contains("base-3-2"), "{e}");

        let broken = tarball(&[("var/lib/pacman/local/base-3-2/desc", b"%NAME%\n".to_vec())]);
        let e = lock_from_reader(broken.as_slice(), "b.tar").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("b.tar"), "{e}");

        let e = lock_from_reader(&b"not a tar at all, just some text"[..], "n.tar").unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn only_local_database_descs_count() {
        assert_eq!(desc_dir("./var/lib/pacman/local/a-1-1/desc"), Some("a-1-1"));
        assert_eq!(desc_dir("var/lib/pacman/local/a-1-1/desc"), Some("a-1-1"));
        assert_eq!(desc_dir("/var/lib/pacman/local/a-1-1/desc"), Some("a-1-1"));
        assert_eq!(desc_dir("./var/lib/pacman/local/a-1-1/files"), None);
        assert_eq!(desc_dir("./var/lib/pacman/sync/a/desc"), None);
        assert_eq!(desc_dir("./var/lib/pacman/local/x/y/desc"), None);
    }
}
