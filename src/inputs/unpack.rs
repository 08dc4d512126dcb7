//! Safe, streaming unpacker for root filesystem archives (tar, tar.gz, tar.zst).
//!
//! A root filesystem tarball is untrusted input: an entry must never land outside the
//! destination, whether it tries through `..`, an absolute path, a symlink planted by an
//! earlier entry, or a hard link pointing outside. Every such entry is refused with an
//! error naming it, and the destination is left clean (removed if we created it, emptied
//! otherwise). Device nodes cannot be created in a user namespace and are never needed by a
//! build root, so they are skipped and listed in the report.
//!
//! Modes, numeric ownership (when running as root), xattrs, hard links and mtimes are
//! preserved. The compression is detected from the magic bytes, never from the name.
//!
//! The decompressing reader here is the one every tarball reader uses, on disk
//! ([`open_decompressed`]) or in memory ([`decompressed_bytes`]); [`decompressing`] wraps any
//! buffered stream when the compression is known otherwise.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};

/// How the archive was compressed (detected from its magic bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpackReport {
    pub compression: Compression,
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device nodes (and FIFOs) that were skipped, as paths relative to the destination.
    pub skipped_devices: Vec<PathBuf>,
}

const BUF: usize = 1 << 20;

/// The compression of a stream that starts with `magic` (its first 4 bytes, or all of it
/// when shorter): zstd and gzip by their magic numbers, anything else is taken as plain.
pub fn compression_of(magic: &[u8]) -> Compression {
    match magic {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0x1f, 0x8b, ..] => Compression::Gzip,
        _ => Compression::None,
    }
}

fn detect(archive: &Path) -> Result<Compression> {
    let mut f = File::open(archive).ctx("open", archive)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut f, &mut magic).ctx("read", archive)?;
    Ok(compression_of(&magic[..n]))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Unpack `archive` into `dest` (created if missing; must be empty if present).
/// [`unpack`] of an archive a job is to run in (`--rootfs FILE`): one that does not read as
/// a tar (truncated, corrupt, not an archive) is the caller's bad input (exit 2), naming
/// the archive; entries it refuses are bad input already. Both backends take a root
/// filesystem archive through here.
pub fn unpack_root(archive: &Path, dest: &Path) -> Result<UnpackReport> {
    match unpack(archive, dest) {
        Err(Error::Io {
            op: "read tar" | "read tar entry" | "unpack",
            source,
            ..
        }) => Err(Error::bad_input(
            format!("archive {}", archive.display()),
            format!(
                "truncated or corrupt: cannot unpack as a root filesystem tar (tar, tar.gz, tar.zst): {source}"
            ),
        )),
        r => r,
    }
}

pub fn unpack(archive: &Path, dest: &Path) -> Result<UnpackReport> {
    let compression = detect(archive)?;
    let created = match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut it = fs::read_dir(dest).ctx("read directory", dest)?;
            if it.next().is_some() {
                return Err(Error::bad_input(
                    format!("unpack destination {}", dest.display()),
                    "expected an empty directory or nothing yet",
                ));
            }
            false
        }
        Ok(_) => {
            return Err(Error::bad_input(
                format!("unpack destination {}", dest.display()),
                "expected a directory",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).ctx("create directory", dest)?;
            true
        }
        Err(e) => return Err(Error::io("stat", dest, e)),
    };
    let res = unpack_into(archive, dest, compression);
    if res.is_err() {
        // Leave nothing half-written.
        if created {
            let _ = fs::remove_dir_all(dest);
        } else if let Ok(rd) = fs::read_dir(dest) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
    res
}

/// The archive's decompressed byte stream (compression found by magic bytes); shared with
/// everything else that reads tarballs (the rootfs diff and the timestamp audit).
pub fn open_decompressed(archive: &Path) -> Result<Box<dyn Read>> {
    let compression = detect(archive)?;
    decompressed(archive, compression)
}

/// Bytes in memory (a repository database, a package read whole) as their decompressed
/// stream, the compression found by magic bytes; `what` (a path or URL) names them in an error.
pub fn decompressed_bytes<'a>(
    bytes: &'a [u8],
    what: impl AsRef<Path>,
) -> Result<Box<dyn Read + 'a>> {
    let compression = compression_of(bytes.get(..4).unwrap_or(bytes));
    decoder(bytes, compression, "decompress", what.as_ref())
}

/// `raw` decompressed as `compression` says, for a caller that knows the compression
/// otherwise (a `.ko.zst` kernel module is zstd by its packaging rule); `what` names the
/// source in an error. Read errors of the stream itself are the caller's to name.
pub fn decompressing<'a>(
    raw: impl BufRead + 'a,
    compression: Compression,
    what: impl AsRef<Path>,
) -> Result<Box<dyn Read + 'a>> {
    decoder(raw, compression, "decompress", what.as_ref())
}

fn decompressed(archive: &Path, compression: Compression) -> Result<Box<dyn Read>> {
    let file = File::open(archive).ctx("open", archive)?;
    let raw = BufReader::with_capacity(BUF, file);
    decoder(raw, compression, "read zstd frame", archive)
}

/// The one decoder: plain passes through, gzip (every member) and zstd are decompressed,
/// their output buffered so that tar's small reads stay cheap.
fn decoder<'a>(
    raw: impl BufRead + 'a,
    compression: Compression,
    op: &'static str,
    what: &Path,
) -> Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::bufread::MultiGzDecoder::new(raw),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUF,
            zstd::stream::read::Decoder::with_buffer(raw).ctx(op, what)?,
        )),
    })
}

fn unpack_into(archive: &Path, dest: &Path, compression: Compression) -> Result<UnpackReport> {
    let reader = decompressed(archive, compression)?;
    let mut ar = tar::Archive::new(reader);
    let root = unsafe { libc::geteuid() } == 0;
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(root);
    ar.set_unpack_xattrs(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.set_mask(0);

    let mut report = UnpackReport {
        compression,
        entries: 0,
        bytes: 0,
        skipped_devices: Vec::new(),
    };
    // Directory mtimes are set last: writing children changes them.
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    let bad = |entry: &Path, why: &str| {
        Error::bad_input(
            format!("{}: entry {}", archive.display(), entry.display()),
            format!("refused: {why}"),
        )
    };

    for entry in ar.entries().ctx("read tar", archive)? {
        let mut entry = entry.ctx("read tar entry", archive)?;
        let raw_path = PathBuf::from(std::ffi::OsStr::from_bytes(&entry.path_bytes()));
        let rel = match clean_relative(&raw_path) {
            Ok(Some(r)) => r,
            Ok(None) => continue, // "." itself
            Err(why) => return Err(bad(&raw_path, why)),
        };
        if let Err(why) = check_parents(dest, &rel) {
            return Err(bad(&raw_path, why));
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                report.skipped_devices.push(rel);
                continue;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)))
                    .unwrap_or_default();
                let lrel = match clean_relative(&link) {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(bad(&raw_path, "hard link to the root directory")),
                    Err(why) => {
                        return Err(bad(&raw_path, &format!("hard link target {why}")));
                    }
                };
                if let Err(why) = check_parents(dest, &lrel) {
                    return Err(bad(&raw_path, &format!("hard link target {why}")));
                }
                let src = dest.join(&lrel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(bad(&raw_path, "hard link to a symlink"));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(bad(&raw_path, "hard link to a missing entry"));
                    }
                }
                remove_non_dir(&target)?;
                fs::hard_link(&src, &target).ctx("hard link", &target)?;
                report.entries += 1;
                continue;
            }
            _ => {}
        }
        if kind == tar::EntryType::Directory {
            if let Ok(m) = fs::symlink_metadata(&target)
                && !m.is_dir()
            {
                remove_non_dir(&target)?;
            }
            let mtime = entry.header().mtime().unwrap_or(0) as i64;
            dirs.push((target.clone(), mtime));
        } else {
            remove_non_dir(&target)?;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            report.bytes += entry.size();
        }
        entry.unpack(&target).ctx("unpack", &target)?;
        report.entries += 1;
    }
    for (d, mtime) in dirs.iter().rev() {
        set_mtime(d, *mtime)?;
    }
    Ok(report)
}

/// Normalise an entry path: refuse absolute paths and `..`; drop `.`.
fn clean_relative(p: &Path) -> std::result::Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("escapes the root through `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Every parent directory of `rel` under `dest` must be a real directory (or missing):
/// following a symlink planted by an earlier entry would write outside `dest`.
fn check_parents(dest: &Path, rel: &Path) -> std::result::Result<(), &'static str> {
    let mut cur = dest.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err("escapes the root through a symlink");
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err("has a parent that is not a directory"),
            Err(_) => {
                fs::create_dir_all(&cur).map_err(|_| "cannot create its parent directory")?;
            }
        }
    }
    Ok(())
}

fn remove_non_dir(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).ctx("remove", p),
        Ok(m) if m.file_type().is_socket() || !m.is_dir() => fs::remove_file(p).ctx("remove", p),
        _ => Ok(()),
    }
}

fn set_mtime(p: &Path, mtime: i64) -> Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::bad_input(format!("path {}", p.display()), "expected no NUL byte"))?;
    let ts = [
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(Error::io("set mtime", p, io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_relative_refuses_escapes() {
        assert_eq!(
            clean_relative(Path::new("./a/b")).unwrap(),
            Some("a/b".into())
        );
        assert_eq!(clean_relative(Path::new("./")).unwrap(), None);
        assert!(clean_relative(Path::new("a/../../b")).is_err());
        assert!(clean_relative(Path::new("/etc/passwd")).is_err());
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(b).unwrap();
        g.finish().unwrap()
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn compression_by_magic_bytes() {
        assert_eq!(compression_of(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(
            compression_of(&[0x28, 0xb5, 0x2f, 0xfd, 9]),
            Compression::Zstd
        );
        assert_eq!(compression_of(&[0x1f, 0x8b]), Compression::Gzip);
        assert_eq!(compression_of(&[0x28, 0xb5, 0x2f]), Compression::None);
        assert_eq!(compression_of(b"\x7fELF"), Compression::None);
        assert_eq!(compression_of(&[]), Compression::None);
    }

    #[test]
    fn bytes_in_memory_decompress_by_magic() {
        let plain = b"hello, tar world\n".repeat(1000);
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let gz = gzip(&plain);
        for (bytes, what) in [(&plain, "plain"), (&zst, "zstd"), (&gz, "gzip")] {
            let r = decompressed_bytes(bytes, what).unwrap();
            assert_eq!(read_all(r), plain, "{what}");
        }
        // Shorter than any magic: plain.
        assert_eq!(read_all(decompressed_bytes(b"ab", "short").unwrap()), b"ab");
    }

    #[test]
    fn explicit_compression_and_corrupt_input_fails_on_read() {
        let plain = b"module bytes".to_vec();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        let r = decompressing(&zst[..], Compression::Zstd, "m.ko.zst").unwrap();
        assert_eq!(read_all(r), plain);
        let r = decompressing(&plain[..], Compression::None, "m.ko").unwrap();
        assert_eq!(read_all(r), plain);
        let mut r = decompressing(&plain[..], Compression::Zstd, "bad.ko.zst").unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn file_reader_matches_the_bytes_reader() {
        let d = tempfile::tempdir().unwrap();
        let plain = b"x".repeat(5000);
        let p = d.path().join("a.tar.gz-named-anything");
        fs::write(&p, gzip(&plain)).unwrap();
        assert_eq!(read_all(open_decompressed(&p).unwrap()), plain);
        let e = match open_decompressed(&d.path().join("missing")) {
            Err(e) => e,
            Ok(_) => panic!("a missing file opened"),
        };
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
