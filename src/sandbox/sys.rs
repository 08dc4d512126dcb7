//! The seam between the mount logic and the kernel.
//!
//! The child applies a [`MountOp`](super::mounts::MountOp) plan through this trait, so the
//! plan and its order can be checked by unit tests that record calls instead of mounting
//! (no root needed), while the real implementation makes the syscalls.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub(crate) fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The kernel operations the mount plan needs.
pub(crate) trait Sys {
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Flags (MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY…) of the mount holding `path`; a
    /// read-only remount inside a user namespace must keep the locked ones.
    fn mount_flags(&mut self, path: &Path) -> io::Result<libc::c_ulong>;
    fn pivot_root(&mut self, new_root: &Path) -> io::Result<()>;
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    fn touch(&mut self, path: &Path) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;
    /// Whether `path` exists, and if so whether it is a directory; never follows a final
    /// symlink (a symlink is reported as an error by the caller).
    fn lstat_kind(&mut self, path: &Path) -> io::Result<Option<Kind>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
}

/// The real kernel.
pub(crate) struct Real;

impl Sys for Real {
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let src = src.map(cstr).transpose()?;
        let target = cstr(target)?;
        let fstype = fstype.map(|s| CString::new(s).unwrap());
        let data = data.map(|s| CString::new(s).unwrap());
        // SAFETY: all pointers are valid C strings or null.
        check(unsafe {
            libc::mount(
                src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                target.as_ptr(),
                fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
            )
        })
    }

    fn mount_flags(&mut self, path: &Path) -> io::Result<libc::c_ulong> {
        let c = cstr(path)?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
        let mut f = 0;
        for (st_flag, ms) in [
            (libc::ST_RDONLY, libc::MS_RDONLY),
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                f |= ms;
            }
        }
        Ok(f)
    }

    fn pivot_root(&mut self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching "."
        // afterwards removes it without needing a directory for it.
        let c = cstr(new_root)?;
        let dot = CString::new(".").unwrap();
        // SAFETY: valid C strings.
        unsafe {
            check(libc::chdir(c.as_ptr()))?;
            check(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int)?;
            check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))
        }
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        let c = cstr(path)?;
        // SAFETY: valid C string.
        match check(unsafe { libc::mkdir(c.as_ptr(), mode) }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    fn touch(&mut self, path: &Path) -> io::Result<()> {
        let c = cstr(path)?;
        // SAFETY: valid C string; O_NOFOLLOW refuses a planted symlink.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened.
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn lstat_kind(&mut self, path: &Path) -> io::Result<Option<Kind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Ok(Some(Kind::Symlink)),
            Ok(m) if m.is_dir() => Ok(Some(Kind::Dir)),
            Ok(_) => Ok(Some(Kind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Records calls instead of making them (unit tests).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Recorder {
    pub calls: Vec<String>,
    pub existing: std::collections::HashMap<std::path::PathBuf, Kind>,
    /// Every path `lstat_kind` was asked about, in order.
    pub looked: Vec<std::path::PathBuf>,
}

#[cfg(test)]
impl Sys for Recorder {
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        _data: Option<&str>,
    ) -> io::Result<()> {
        self.calls.push(format!(
            "mount {} {} {} {:#x}",
            src.map_or("-".into(), |p| p.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            flags
        ));
        Ok(())
    }
    fn mount_flags(&mut self, _path: &Path) -> io::Result<libc::c_ulong> {
        Ok(libc::MS_NOSUID)
    }
    fn pivot_root(&mut self, new_root: &Path) -> io::Result<()> {
        self.calls
            .push(format!("pivot_root {}", new_root.display()));
        Ok(())
    }
    fn mkdir(&mut self, path: &Path, _mode: u32) -> io::Result<()> {
        self.existing.entry(path.to_path_buf()).or_insert(Kind::Dir);
        self.calls.push(format!("mkdir {}", path.display()));
        Ok(())
    }
    fn touch(&mut self, path: &Path) -> io::Result<()> {
        self.existing.insert(path.to_path_buf(), Kind::File);
        self.calls.push(format!("touch {}", path.display()));
        Ok(())
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.calls
            .push(format!("symlink {} {}", target.display(), link.display()));
        Ok(())
    }
    fn lstat_kind(&mut self, path: &Path) -> io::Result<Option<Kind>> {
        self.looked.push(path.to_path_buf());
        Ok(self.existing.get(path).copied())
    }
}
