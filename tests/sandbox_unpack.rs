//! The shared root filesystem unpacker: formats detected by magic bytes, metadata kept,
//! device nodes skipped and listed, escapes refused with the destination left clean.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use reprobox::inputs::unpack::{Compression, unpack};

fn set_xattr(p: &Path, k: &str, v: &[u8]) {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let k = CString::new(k).unwrap();
    let r = unsafe { libc::setxattr(c.as_ptr(), k.as_ptr(), v.as_ptr() as *const _, v.len(), 0) };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr(p: &Path, k: &str) -> Vec<u8> {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    let k = CString::new(k).unwrap();
    let mut buf = vec![0u8; 256];
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            k.as_ptr(),
            buf.as_mut_ptr() as *mut _,
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "getxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf
}

fn set_mtime(p: &Path, t: i64) {
    let s = Command::new("touch")
        .args(["-h", "-d", &format!("@{t}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(s.success());
}

/// A source tree with every kind of metadata, and a tar of it made by GNU tar.
fn source_tar(dir: &Path) -> Vec<u8> {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the unpack tests run as root (ownership, device nodes)"
    );
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d/sub")).unwrap();
    std::fs::write(src.join("d/f"), b"hello").unwrap();
    std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(src.join("d/f"), Some(1234), Some(5678)).unwrap();
    std::fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    set_xattr(&src.join("d/f"), "user.reprobox", b"xattr-value");
    std::fs::hard_link(src.join("d/f"), src.join("d/hard")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", src.join("d/abs-ish")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("d/absolute-link")).unwrap();
    let dev = CString::new(src.join("d/null").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    set_mtime(&src.join("d/f"), 1_000_000);
    set_mtime(&src.join("d/sub"), 2_000_000);
    set_mtime(&src.join("d"), 3_000_000);
    let out = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=user.*",
            "--numeric-owner",
            "-C",
        ])
        .arg(&src)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_tree(dest: &Path) {
    let f = dest.join("d/f");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(get_xattr(&f, "user.reprobox"), b"xattr-value");
    assert_eq!(
        std::fs::metadata(dest.join("d/hard")).unwrap().ino(),
        m.ino(),
        "hard link kept"
    );
    assert_eq!(
        std::fs::metadata(dest.join("suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(dest.join("d/absolute-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::metadata(dest.join("d/sub")).unwrap().mtime(),
        2_000_000
    );
    assert_eq!(
        std::fs::metadata(dest.join("d")).unwrap().mtime(),
        3_000_000
    );
    assert!(!dest.join("d/null").exists(), "device node created");
}

#[test]
fn formats_by_magic_and_metadata_kept() {
    let t = tempfile::tempdir().unwrap();
    let raw = source_tar(t.path());
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&raw[..], 3).unwrap();
    // Names lie on purpose: detection is by magic bytes.
    for (name, bytes, want) in [
        ("plain.tar.zst", &raw, Compression::None),
        ("gz.tar", &gz, Compression::Gzip),
        ("zst.tar.gz", &zst, Compression::Zstd),
    ] {
        let a = t.path().join(name);
        std::fs::write(&a, bytes).unwrap();
        let dest = t.path().join(format!("out-{name}"));
        let rep = unpack(&a, &dest).unwrap();
        assert_eq!(rep.compression, want, "{name}");
        assert_eq!(
            rep.skipped_devices,
            vec![Path::new("d/null").to_path_buf()],
            "{name}"
        );
        assert_eq!(rep.bytes, 5 + 10, "{name}");
        check_tree(&dest);
    }
}

#[test]
fn escape_leaves_existing_destination_empty_and_names_the_entry() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("ok/file", tar::EntryType::Regular, "", b"fine");
    add("ok/esc", tar::EntryType::Symlink, "/", b"");
    add("ok/esc/etc/x", tar::EntryType::Regular, "", b"evil");
    let a = t.path().join("evil.tar");
    std::fs::write(&a, b.into_inner().unwrap()).unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let e = unpack(&a, &dest).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("ok/esc/etc/x") && msg.contains("symlink"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "destination not cleaned"
    );
    assert!(!Path::new("/etc/x").exists());
    // A destination that did not exist is removed again.
    let fresh = t.path().join("fresh");
    unpack(&a, &fresh).unwrap_err();
    assert!(!fresh.exists());
}
