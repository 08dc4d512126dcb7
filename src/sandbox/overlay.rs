//! A reproduction's private, writable view of a prepared environment: an overlay whose lower
//! layer is the cached root mounted idmapped (0 → the job's host range) and whose upper layer
//! lives in the reproduction's work directory. The cached root is never written; the job
//! sees its files as its own root's, and what it writes lands in the upper layer, owned by
//! the job's host ids. Unmounted when dropped (root only).
//!
//! The overlay itself cannot be idmapped (overlayfs refuses `MOUNT_ATTR_IDMAP` on this
//! kernel line), but it takes an idmapped lower layer; the sandbox is told the root is
//! already mapped (`Job::root_premapped`) rather than trying.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::job::IdRange;

/// A mounted overlay; unmounted (with its lower layer) on drop.
pub struct Overlay {
    merged: PathBuf,
    lower: PathBuf,
    base: PathBuf,
    range: IdRange,
}

impl Overlay {
    /// The merged root the jobs run in.
    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// The host ids the lower layer maps the prepared root's 0 to: what a file the host
    /// adds must be owned by for the job to see it as its root's.
    pub fn range(&self) -> IdRange {
        self.range
    }

    /// The prepared root the lower layer shows.
    pub fn lower_source(&self) -> &Path {
        &self.base
    }

    /// Mount `base` (a prepared root owned as the base has it) under `dir` (which must not
    /// exist yet), idmapped through `range`.
    pub fn mount(base: &Path, dir: &Path, range: IdRange) -> Result<Overlay> {
        for part in [base, dir] {
            let s = part.as_os_str().as_bytes();
            if s.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
                return Err(Error::bad_input(
                    format!("overlay path {}", part.display()),
                    "expected a path without ',', ':' or '\\' (overlayfs mount options cannot carry them)",
                ));
            }
        }
        let lower = dir.join("lower");
        let upper = dir.join("upper");
        let work = dir.join("work");
        let merged = dir.join("root");
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        // The merged root takes the upper directory's owner and mode.
        let md = std::fs::metadata(base).ctx("stat", base)?;
        std::os::unix::fs::chown(
            &upper,
            Some(md.uid() + range.host_uid),
            Some(md.gid() + range.host_gid),
        )
        .ctx("chown", &upper)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .ctx("chmod", &upper)?;
        }

        let tree = idmapped_clone(base, range)?;
        move_mount(&tree, &lower)?;
        let mut ov = Overlay {
            merged: merged.clone(),
            lower: lower.clone(),
            base: base.to_path_buf(),
            range,
        };
        make_private(&lower)?;
        // `volatile`: the upper layer is thrown away with the run, so overlayfs need not
        // sync it — without it, the unmount syncs the whole upper filesystem (every dirty
        // page of the host's disk, not only the build's).
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},volatile",
            lower.display(),
            upper.display(),
            work.display()
        );
        let src = CString::new("overlay").expect("no NUL");
        let target = cstr(&merged)?;
        let data = CString::new(opts).map_err(|_| {
            Error::bad_input(
                format!("overlay path {}", dir.display()),
                "expected a path without NUL bytes",
            )
        })?;
        // SAFETY: valid C strings; mount(2) does not keep the pointers.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // Only the lower layer is mounted: drop must not try the merged one.
            ov.merged = PathBuf::new();
            return Err(Error::io(
                "mount an overlay of the prepared environment on",
                &merged,
                e,
            ));
        }
        make_private(&merged)?;
        Ok(ov)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for p in [&self.merged, &self.lower] {
            if p.as_os_str().is_empty() {
                continue;
            }
            let Ok(c) = cstr(p) else { continue };
            // SAFETY: a valid C string.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                tracing::warn!(
                    "could not unmount {}: {}",
                    p.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

fn cstr(p: &Path) -> Result<CString> {
    super::sys::cstr(p).map_err(|_| {
        Error::bad_input(
            format!("overlay path {}", p.display()),
            "expected a path without NUL bytes",
        )
    })
}

fn make_private(p: &Path) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: a valid C string; no source, type or data for a propagation change.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error::io(
            "make private",
            p,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn move_mount(tree: &OwnedFd, to: &Path) -> Result<()> {
    let c = cstr(to)?;
    // SAFETY: move_mount(2) of a detached tree reprobox owns onto a directory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            4u32, // MOVE_MOUNT_F_EMPTY_PATH
        )
    };
    if r != 0 {
        return Err(Error::io(
            "attach the idmapped prepared environment at",
            to,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A detached, idmapped clone of `base`'s mount tree. The id map comes from a short-lived
/// child in a user namespace of its own with `range` written as its map.
pub(super) fn idmapped_clone(base: &Path, range: IdRange) -> Result<OwnedFd> {
    let holder = UsernsHolder::spawn(range)?;
    let r = super::idmapped_root(base, holder.pid);
    drop(holder);
    r.map_err(|e| Error::io("make an idmapped mount of", base, e))
}

/// A child process parked in a new user namespace until dropped.
struct UsernsHolder {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
}

impl UsernsHolder {
    fn spawn(range: IdRange) -> Result<UsernsHolder> {
        let (ready_r, ready_w) = nix::unistd::pipe()
            .map_err(|e| Error::io("create a pipe for", "a user namespace", e.into()))?;
        let (release_r, release_w) = nix::unistd::pipe()
            .map_err(|e| Error::io("create a pipe for", "a user namespace", e.into()))?;
        // SAFETY: the child only makes async-signal-safe calls (unshare, write, read, _exit).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::io(
                "fork a holder for",
                "a user namespace",
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only.
            unsafe {
                libc::close(ready_r.as_raw_fd());
                libc::close(release_w.as_raw_fd());
                let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
                libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
                let mut b = 0u8;
                libc::read(release_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(ready_w);
        drop(release_r);
        let mut holder = UsernsHolder {
            pid,
            release: Some(release_w),
        };
        let mut b = [0u8; 1];
        let n = nix::unistd::read(&ready_r, &mut b).unwrap_or(0);
        if n != 1 || b[0] != 1 {
            holder.release.take();
            return Err(Error::Environment(
                "could not create a user namespace for the idmapped environment (unshare failed)"
                    .into(),
            ));
        }
        let plan = super::idmap::Plan::Root {
            uid_base: range.host_uid,
            gid_base: range.host_gid,
            count: range.count,
        };
        super::idmap::apply(&plan, pid).map_err(|e| {
            Error::Environment(format!("the idmapped environment's user namespace: {e}"))
        })?;
        Ok(holder)
    }
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        self.release.take();
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mountinfo line of the mount at `p`, if one is there.
    fn mounted_at(p: &Path) -> Option<String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        let want = p.to_str().expect("a UTF-8 temporary path");
        text.lines()
            .find(|l| l.split(' ').nth(4) == Some(want))
            .map(str::to_string)
    }

    #[test]
    fn overlay_is_idmapped_volatile_leaves_the_base_alone_and_is_gone_on_drop() {
        // SAFETY: trivial getter.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test mounts an idmapped overlay, which needs root: run it as root"
        );
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/file"), "prepared").unwrap();
        let range = IdRange {
            host_uid: 200_000,
            host_gid: 210_000,
            count: 65_536,
        };
        let ov = Overlay::mount(&base, &t.path().join("env"), range).unwrap();
        let root = ov.root().to_path_buf();
        let lower = t.path().join("env/lower");

        let line = mounted_at(&root).expect("the overlay is mounted");
        // Never synced: its upper layer goes with the run.
        assert!(line.contains("volatile"), "{line}");
        assert!(mounted_at(&lower).is_some(), "the idmapped lower layer");
        // The base's root-owned files show as the job's host ids.
        let md = std::fs::metadata(root.join("etc/file")).unwrap();
        assert_eq!((md.uid(), md.gid()), (200_000, 210_000));
        // Writes land in the upper layer; the prepared base is not touched.
        std::fs::write(root.join("etc/file"), "changed").unwrap();
        std::fs::write(root.join("new"), "new").unwrap();
        assert_eq!(
            std::fs::read_to_string(base.join("etc/file")).unwrap(),
            "prepared"
        );
        assert!(!base.join("new").exists());
        assert_eq!(
            std::fs::read_to_string(t.path().join("env/upper/etc/file")).unwrap(),
            "changed"
        );

        drop(ov);
        assert!(mounted_at(&root).is_none(), "the overlay is unmounted");
        assert!(mounted_at(&lower).is_none(), "the lower layer is unmounted");
    }
}
