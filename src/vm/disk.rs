//! Disk images for the guest, made and read without root privileges and without mounting:
//! `mke2fs -d DIR` copies a directory tree into a fresh ext4 image, `debugfs -R rdump`
//! copies one back out. Images are sparse files, so their headroom costs nothing until
//! the guest writes to it.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::job::RootfsSource;

/// Size of the status disk (guest_protocol.rs): the status and up to 2000 trace lines of
/// the unanswered-connect watch (sparse: costs nothing unused).
pub const STATUS_DISK_BYTES: u64 = 1 << 20;

/// Bytes and inodes a tree uses (allocated blocks, not apparent sizes), not crossing
/// into other filesystems.
fn usage(dir: &Path) -> Result<(u64, u64)> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).ctx("stat", &d)?;
        bytes += md.blocks() * 512;
        inodes += 1;
        if !md.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&d).ctx("read directory", &d)? {
            let entry = entry.ctx("read directory", &d)?;
            stack.push(entry.path());
        }
    }
    Ok((bytes, inodes))
}

/// Make an ext4 image at `image` holding a copy of `src` (a directory) with `headroom_mib`
/// of free space. No journal: the image lives for one run and is never recovered.
pub fn make_ext4(src: &Path, image: &Path, headroom_mib: u64) -> Result<()> {
    let (bytes, inodes) = usage(src)?;
    // ext4 metadata (inode tables, bitmaps, directories) on top of the data, generously.
    let size_mib = bytes.div_ceil(1 << 20) * 5 / 4 + inodes / 64 + headroom_mib + 16;
    let inode_count = (inodes * 2 + 4096).max(size_mib * 16);
    let file = fs::File::create(image).ctx("create", image)?;
    file.set_len(size_mib << 20).ctx("resize", image)?;
    drop(file);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0"])
        .args(["-E", "lazy_itable_init=1,nodiscard"])
        .arg("-N")
        .arg(inode_count.to_string())
        .arg("-d")
        .arg(src)
        .arg(image)
        .env("E2FSPROGS_FAKE_TIME", "0");
    run_tool(cmd, "mke2fs", "e2fsprogs")?;
    Ok(())
}

/// `debugfs rdump` of `guest_path` (absolute) in `image` into the existing directory `dest`;
/// `what` names the copy in the error.
fn rdump(image: &Path, guest_path: &str, dest: &Path, what: &str) -> Result<()> {
    let mut req = OsString::from(format!("rdump {} ", debugfs_quote(guest_path)));
    req.push(dest.as_os_str());
    let mut cmd = Command::new("debugfs");
    cmd.arg("-R").arg(req).arg(image);
    let out = run_tool(cmd, "debugfs", "e2fsprogs")?;
    // debugfs reports per-file failures on stderr but still exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        return Err(Error::Sandbox(format!(
            "copying {what} out of {}: {line}",
            image.display()
        )));
    }
    Ok(())
}

/// Copy the whole tree of an ext4 image into `dest` (an existing directory), dropping the
/// `lost+found` mke2fs made unless the tree should keep one.
pub fn extract_ext4(image: &Path, dest: &Path, keep_lost_found: bool) -> Result<()> {
    rdump(image, "/", dest, "the guest's outputs")?;
    if !keep_lost_found {
        let lf = dest.join("lost+found");
        if lf.is_dir() {
            fs::remove_dir(&lf).ctx("remove", &lf)?;
        }
    }
    Ok(())
}

/// Copy one directory of an ext4 image (`guest_dir`, absolute) to `dest`, which must not
/// exist yet: the directory's tree, with modes, owners and times.
pub fn extract_dir(image: &Path, guest_dir: &str, dest: &Path) -> Result<()> {
    let name = guest_dir
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if !guest_dir.starts_with('/') || name.is_empty() {
        return Err(Error::bad_input(
            format!("guest directory {guest_dir}"),
            "an absolute path below /",
        ));
    }
    let parent = dest.parent().ok_or_else(|| {
        Error::bad_input(
            format!("destination {}", dest.display()),
            "expected a path inside a directory",
        )
    })?;
    let stage = tempfile::Builder::new()
        .prefix(".reprobox-rdump-")
        .tempdir_in(parent)
        .map_err(|e| Error::io("create temporary directory in", parent, e))?;
    rdump(image, guest_dir, stage.path(), guest_dir)?;
    let got = stage.path().join(name);
    if !got.is_dir() {
        return Err(Error::Sandbox(format!(
            "{} holds no directory {guest_dir}",
            image.display()
        )));
    }
    fs::rename(&got, dest).ctx("rename into", dest)?;
    Ok(())
}

/// Write `bytes` as the file `guest_path` (absolute) of an ext4 image, creating missing
/// parent directories and replacing an existing file; read back to check.
pub fn write_file(image: &Path, guest_path: &str, bytes: &[u8], mode: u32) -> Result<()> {
    if !guest_path.starts_with('/') || guest_path.ends_with('/') {
        return Err(Error::bad_input(
            format!("guest path {guest_path}"),
            "an absolute file path",
        ));
    }
    let stage = tempfile::tempdir()
        .map_err(|e| Error::io("create temporary directory", std::env::temp_dir(), e))?;
    let src = stage.path().join("file");
    fs::write(&src, bytes).ctx("write", &src)?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&src, fs::Permissions::from_mode(mode)).ctx("chmod", &src)?;
    }
    let mut script = String::new();
    let parts: Vec<&str> = guest_path.split('/').filter(|p| !p.is_empty()).collect();
    let mut acc = String::new();
    for p in &parts[..parts.len() - 1] {
        acc.push('/');
        acc.push_str(p);
        // Fails harmlessly when the directory exists.
        script.push_str(&format!("mkdir {}\n", debugfs_quote(&acc)));
    }
    script.push_str(&format!("rm {}\n", debugfs_quote(guest_path)));
    script.push_str(&format!(
        "write {} {}\n",
        debugfs_quote(&src.to_string_lossy()),
        debugfs_quote(guest_path)
    ));
    let cmds = stage.path().join("cmds");
    fs::write(&cmds, script).ctx("write", &cmds)?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-w").arg("-f").arg(&cmds).arg(image);
    run_tool(cmd, "debugfs", "e2fsprogs")?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-R")
        .arg(format!("cat {}", debugfs_quote(guest_path)))
        .arg(image);
    let out = run_tool(cmd, "debugfs", "e2fsprogs")?;
    if out.stdout != bytes {
        return Err(Error::Sandbox(format!(
            "writing {guest_path} into {} failed: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// debugfs splits its commands on blanks; a path with blanks or quotes goes in double
/// quotes.
fn debugfs_quote(s: &str) -> String {
    if s.chars().any(|c| c.is_whitespace() || c == '"') {
        format!("\"{}\"", s.replace('"', "\\\""))
    } else {
        s.to_owned()
    }
}

/// A zero-filled raw image of `bytes`.
pub fn make_raw(image: &Path, bytes: u64) -> Result<()> {
    let file = fs::File::create(image).ctx("create", image)?;
    file.set_len(bytes).ctx("resize", image)?;
    Ok(())
}

fn run_tool(mut cmd: Command, tool: &str, package: &str) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|e| {
        Error::Environment(format!(
            "cannot run {tool}: {e} (the microVM backend needs {package}: apt-get install {package})"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Sandbox(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// The root filesystem as a directory: a `Dir` source is used as is, an `Archive` is
/// unpacked (tar, tar.gz, tar.zst) into a fresh directory under `scratch`.
pub fn rootfs_dir(source: &RootfsSource, scratch: &Path) -> Result<PathBuf> {
    match source {
        RootfsSource::Dir(d) => {
            let md = fs::metadata(d).ctx("stat", d)?;
            if !md.is_dir() {
                return Err(Error::bad_input(
                    format!("root filesystem {}", d.display()),
                    "expected a directory (the job's root filesystem)",
                ));
            }
            Ok(d.clone())
        }
        RootfsSource::Archive(a) => {
            let dest = scratch.join("rootfs");
            fs::create_dir(&dest).ctx("create", &dest)?;
            crate::inputs::unpack::unpack_root(a, &dest)?;
            Ok(dest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_round_trip_without_mounting() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a"), b"hello").unwrap();
        fs::write(src.join("sub/b"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a", src.join("link")).unwrap();
        let img = d.path().join("img");
        make_ext4(&src, &img, 8).unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        extract_ext4(&img, &out, false).unwrap();
        assert_eq!(fs::read(out.join("a")).unwrap(), b"hello");
        assert_eq!(fs::read(out.join("sub/b")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("a"));
        assert!(!out.join("lost+found").exists());
    }

    #[test]
    fn write_a_file_into_an_image_and_extract_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("var/lib/db/x")).unwrap();
        fs::write(src.join("var/lib/db/x/desc"), b"one").unwrap();
        let img = d.path().join("img");
        make_ext4(&src, &img, 8).unwrap();
        write_file(&img, "/etc/a b/conf", b"hello\n", 0o644).unwrap();
        write_file(&img, "/etc/a b/conf", b"again\n", 0o644).unwrap();
        write_file(&img, "/var/lib/db/y/desc", b"two", 0o600).unwrap();
        let out = d.path().join("db");
        extract_dir(&img, "/var/lib/db", &out).unwrap();
        assert_eq!(fs::read(out.join("x/desc")).unwrap(), b"one");
        assert_eq!(fs::read(out.join("y/desc")).unwrap(), b"two");
        let all = d.path().join("all");
        fs::create_dir(&all).unwrap();
        extract_ext4(&img, &all, false).unwrap();
        assert_eq!(fs::read(all.join("etc/a b/conf")).unwrap(), b"again\n");
        assert!(extract_dir(&img, "/nope", &d.path().join("nope")).is_err());
    }

    #[test]
    fn rootfs_archive_must_be_a_tar() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.tar");
        fs::write(&bad, vec![b'x'; 2048]).unwrap();
        let scratch = d.path().join("s");
        fs::create_dir(&scratch).unwrap();
        let err = rootfs_dir(&RootfsSource::Archive(bad), &scratch).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn rootfs_archive_is_unpacked_safely() {
        let d = tempfile::tempdir().unwrap();
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        t.append_data(&mut h, "etc/x", &b"hi"[..]).unwrap();
        let zst = zstd::encode_all(&t.into_inner().unwrap()[..], 3).unwrap();
        let good = d.path().join("root.tar.zst");
        fs::write(&good, zst).unwrap();
        let scratch = d.path().join("s");
        fs::create_dir(&scratch).unwrap();
        let root = rootfs_dir(&RootfsSource::Archive(good), &scratch).unwrap();
        assert_eq!(fs::read(root.join("etc/x")).unwrap(), b"hi");

        // An entry reaching outside the root is refused, naming it, and nothing is left.
        let mut raw = vec![0u8; 512];
        raw[..9].copy_from_slice(b"../escape");
        let mut h = tar::Header::from_byte_slice(&raw).clone();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut t = tar::Builder::new(Vec::new());
        t.append(&h, &b""[..]).unwrap();
        let evil = d.path().join("evil.tar");
        fs::write(&evil, t.into_inner().unwrap()).unwrap();
        let scratch = d.path().join("s2");
        fs::create_dir(&scratch).unwrap();
        let err = rootfs_dir(&RootfsSource::Archive(evil), &scratch).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("../escape"), "{err}");
        assert!(!d.path().join("escape").exists());
        assert_eq!(fs::read_dir(scratch.join("rootfs")).unwrap().count(), 0);
    }
}
