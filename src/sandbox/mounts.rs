//! The job's mount table, as a plan of plain operations applied through [`Sys`].
//!
//! Order matters and is fixed here: make every mount private (nothing propagates back to
//! the host), bind the root on itself (pivot_root needs a mount point), fresh /proc (not
//! masked: nested podman mounts its own), a minimal /dev, tmpfs on /tmp and /run, the
//! declared binds, an optional read-only root, then pivot_root and detach the old root.

use std::path::{Component, Path, PathBuf};

use super::sys::{Kind, Sys};
use crate::job::Job;

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// Device nodes bound from the host's /dev into the job's /dev.
pub(crate) const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountOp {
    /// `mount --make-rprivate /`.
    MakeRprivate,
    /// Bind the root directory on itself so that it is a mount point.
    BindSelf,
    /// A fresh filesystem at `dst` (relative to the root).
    Fs {
        fstype: &'static str,
        dst: PathBuf,
        flags: libc::c_ulong,
        data: Option<String>,
        /// Failure is recorded, not fatal (sysfs).
        optional: bool,
    },
    /// Bind a host path onto `dst` (relative to the root).
    Bind {
        src: PathBuf,
        dst: PathBuf,
        read_only: bool,
        dir: bool,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    RemountRootReadOnly,
    PivotRoot,
}

/// The mount plan for `job`. `host_fuse` says whether the host has /dev/fuse.
pub(crate) fn plan(job: &Job, host_fuse: bool) -> Vec<MountOp> {
    use MountOp::*;
    let fs = |fstype, dst: &str, flags, data: Option<&str>| Fs {
        fstype,
        dst: dst.into(),
        flags,
        data: data.map(Into::into),
        optional: false,
    };
    let mut ops = vec![
        MakeRprivate,
        BindSelf,
        fs("proc", "proc", NOSUID | NODEV | NOEXEC, None),
        fs("tmpfs", "dev", NOSUID, Some("mode=755,size=64k")),
    ];
    let mut nodes: Vec<&str> = DEV_NODES.to_vec();
    if host_fuse {
        nodes.push("fuse");
    }
    for n in nodes {
        ops.push(Bind {
            src: Path::new("/dev").join(n),
            dst: Path::new("dev").join(n),
            read_only: false,
            dir: false,
        });
    }
    ops.push(fs(
        "devpts",
        "dev/pts",
        NOSUID | NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    ));
    ops.push(fs("tmpfs", "dev/shm", NOSUID | NODEV, Some("mode=1777")));
    for (t, l) in [
        ("pts/ptmx", "dev/ptmx"),
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        ops.push(Symlink {
            target: t.into(),
            link: l.into(),
        });
    }
    ops.push(Fs {
        fstype: "sysfs",
        dst: "sys".into(),
        flags: libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
        data: None,
        optional: true,
    });
    ops.push(fs("tmpfs", "tmp", NOSUID | NODEV, Some("mode=1777")));
    ops.push(fs("tmpfs", "run", NOSUID | NODEV, Some("mode=755")));
    for b in &job.binds {
        ops.push(Bind {
            src: b.src.clone(),
            dst: strip_root(&b.dst),
            read_only: b.read_only,
            dir: b.src.is_dir(),
        });
    }
    if job.read_only_root {
        ops.push(RemountRootReadOnly);
    }
    ops.push(PivotRoot);
    ops
}

fn strip_root(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Apply `ops` with `root` as the new root. Returns notes on optional steps that failed.
/// An error names the resource and the operation.
pub(crate) fn apply(
    sys: &mut impl Sys,
    root: &Path,
    ops: &[MountOp],
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let err = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    for op in ops {
        match op {
            MountOp::MakeRprivate => sys
                .mount(
                    None,
                    Path::new("/"),
                    None,
                    libc::MS_REC | libc::MS_PRIVATE,
                    None,
                )
                .map_err(|e| err("make private", Path::new("/"), e))?,
            MountOp::BindSelf => sys
                .mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| err("bind root", root, e))?,
            MountOp::Fs {
                fstype,
                dst,
                flags,
                data,
                optional,
            } => {
                let target = ensure(sys, root, dst, true)?;
                match sys.mount(
                    Some(Path::new(fstype)),
                    &target,
                    Some(fstype),
                    *flags,
                    data.as_deref(),
                ) {
                    Ok(()) => {}
                    Err(e) if *optional => {
                        notes.push(format!("{fstype} on /{}: {e}", dst.display()))
                    }
                    Err(e) => return Err(err(&format!("mount {fstype} on"), &target, e)),
                }
            }
            MountOp::Bind {
                src,
                dst,
                read_only,
                dir,
            } => {
                let target = ensure(sys, root, dst, *dir)?;
                sys.mount(Some(src), &target, None, libc::MS_BIND | libc::MS_REC, None)
                    .map_err(|e| err(&format!("bind {} on", src.display()), &target, e))?;
                if *read_only {
                    remount_ro(sys, &target)?;
                }
            }
            MountOp::Symlink { target, link } => {
                let l = root.join(link);
                sys.symlink(target, &l).map_err(|e| err("symlink", &l, e))?;
            }
            MountOp::RemountRootReadOnly => remount_ro(sys, root)?,
            MountOp::PivotRoot => sys
                .pivot_root(root)
                .map_err(|e| err("pivot_root into", root, e))?,
        }
    }
    Ok(notes)
}

fn remount_ro(sys: &mut impl Sys, target: &Path) -> Result<(), String> {
    // Locked flags (nosuid, nodev, noexec…) must be kept or the kernel refuses the remount.
    let flags = sys
        .mount_flags(target)
        .map_err(|e| format!("statvfs {}: {e}", target.display()))?;
    sys.mount(
        None,
        target,
        None,
        flags | libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        None,
    )
    .map_err(|e| format!("remount read-only {}: {e}", target.display()))
}

/// Create the mount point `rel` under `root` (a directory or an empty file), refusing to
/// go through a symlink: the root filesystem is untrusted and a planted link would put a
/// host path under the job's control.
fn ensure(sys: &mut impl Sys, root: &Path, rel: &Path, dir: bool) -> Result<PathBuf, String> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == comps.len();
        match sys
            .lstat_kind(&cur)
            .map_err(|e| format!("stat {}: {e}", cur.display()))?
        {
            Some(Kind::Symlink) => {
                return Err(format!(
                    "mount point /{} goes through a symlink in the root filesystem ({})",
                    rel.display(),
                    cur.display()
                ));
            }
            Some(Kind::Dir) if !last || dir => {}
            Some(Kind::File) if last && !dir => {}
            Some(_) => {
                return Err(format!(
                    "mount point /{}: {} has the wrong type",
                    rel.display(),
                    cur.display()
                ));
            }
            None if last && !dir => sys
                .touch(&cur)
                .map_err(|e| format!("create {}: {e}", cur.display()))?,
            None => sys
                .mkdir(&cur, 0o755)
                .map_err(|e| format!("create {}: {e}", cur.display()))?,
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Bind, Job, RootfsSource};
    use crate::sandbox::sys::Recorder;

    fn job() -> Job {
        let mut j = Job::new(RootfsSource::Dir("/r".into()), vec!["true".into()]);
        j.binds.push(Bind {
            src: "/nonexistent-src".into(),
            dst: "/out/x".into(),
            read_only: true,
        });
        j.read_only_root = true;
        j
    }

    #[test]
    fn order_is_private_first_pivot_last_ro_before_pivot() {
        let ops = plan(&job(), false);
        assert_eq!(ops[0], MountOp::MakeRprivate);
        assert_eq!(ops[1], MountOp::BindSelf);
        assert_eq!(*ops.last().unwrap(), MountOp::PivotRoot);
        assert_eq!(ops[ops.len() - 2], MountOp::RemountRootReadOnly);
        let proc_at = ops
            .iter()
            .position(|o| matches!(o, MountOp::Fs { fstype: "proc", .. }));
        assert_eq!(proc_at, Some(2));
        assert!(
            !ops.iter()
                .any(|o| matches!(o, MountOp::Bind { src, .. } if src.ends_with("fuse")))
        );
        assert!(
            plan(&job(), true)
                .iter()
                .any(|o| matches!(o, MountOp::Bind { src, .. } if src.ends_with("fuse")))
        );
    }

    #[test]
    fn apply_records_read_only_bind_remount() {
        let mut r = Recorder::default();
        r.existing.insert("/r".into(), Kind::Dir);
        apply(&mut r, Path::new("/r"), &plan(&job(), false)).unwrap();
        let i = r
            .calls
            .iter()
            .position(|c| c.starts_with("mount /nonexistent-src /r/out/x"))
            .unwrap();
        assert!(
            r.calls[i + 1].starts_with("mount - /r/out/x"),
            "{:?}",
            &r.calls[i..]
        );
        assert!(r.calls.contains(&"touch /r/out/x".to_string()));
        assert_eq!(r.calls.last().unwrap(), "pivot_root /r");
    }

    #[test]
    fn symlinked_mount_point_is_refused() {
        let mut r = Recorder::default();
        r.existing.insert("/r/out".into(), Kind::Symlink);
        let e = apply(&mut r, Path::new("/r"), &plan(&job(), false)).unwrap_err();
        assert!(e.contains("symlink") && e.contains("/r/out"), "{e}");
        assert!(!r.calls.iter().any(|c| c.contains("pivot_root")));
    }
}
