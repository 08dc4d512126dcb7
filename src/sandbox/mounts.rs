//! The job's mount table, as a plan of plain operations applied through [`Sys`].
//!
//! Order matters and is fixed here. The caller has already made every mount private
//! (nothing propagates back to the host) and attached the root as a mount point of its own
//! (pivot_root needs one); then: fresh /proc (not masked: nested podman mounts its own), a
//! minimal /dev, tmpfs on /tmp and /run, the declared binds, an optional read-only root,
//! then pivot_root and detach the old root.

use std::collections::{HashMap, HashSet};
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
    let mut seen = Seen::default();
    let err = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    for op in ops {
        match op {
            MountOp::Fs {
                fstype,
                dst,
                flags,
                data,
                optional,
            } => {
                let target = ensure(sys, &mut seen, root, dst, true)?;
                match sys.mount(
                    Some(Path::new(fstype)),
                    &target,
                    Some(fstype),
                    *flags,
                    data.as_deref(),
                ) {
                    Ok(()) => seen.mounted(&target, *fstype == "tmpfs"),
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
                let target = ensure(sys, &mut seen, root, dst, *dir)?;
                sys.mount(Some(src), &target, None, libc::MS_BIND | libc::MS_REC, None)
                    .map_err(|e| err(&format!("bind {} on", src.display()), &target, e))?;
                seen.mounted(&target, false);
                if *read_only {
                    remount_ro(sys, &target)?;
                }
            }
            MountOp::Symlink { target, link } => {
                let l = root.join(link);
                sys.symlink(target, &l).map_err(|e| err("symlink", &l, e))?;
                seen.kinds.insert(l, Kind::Symlink);
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

/// What applying the plan has learnt about paths under the root, so that each is looked
/// at once: their kinds, and the empty filesystems (tmpfs) it mounted, whose only entries
/// are those it made. Nothing else writes under the root meanwhile: the job has not
/// started.
#[derive(Default)]
struct Seen {
    kinds: HashMap<PathBuf, Kind>,
    empty: HashSet<PathBuf>,
}

impl Seen {
    fn kind(&self, sys: &mut impl Sys, p: &Path) -> std::io::Result<Option<Kind>> {
        if let Some(k) = self.kinds.get(p) {
            return Ok(Some(*k));
        }
        if p.parent().is_some_and(|d| self.empty.contains(d)) {
            return Ok(None);
        }
        sys.lstat_kind(p)
    }

    /// Something was mounted on `p`: what was known beneath it is gone.
    fn mounted(&mut self, p: &Path, empty_fs: bool) {
        self.kinds.retain(|k, _| k == p || !k.starts_with(p));
        self.empty.retain(|k| !k.starts_with(p));
        if empty_fs {
            self.kinds.insert(p.to_path_buf(), Kind::Dir);
            self.empty.insert(p.to_path_buf());
        }
    }
}

/// Create the mount point `rel` under `root` (a directory or an empty file), refusing to
/// go through a symlink: the root filesystem is untrusted and a planted link would put a
/// host path under the job's control.
fn ensure(
    sys: &mut impl Sys,
    seen: &mut Seen,
    root: &Path,
    rel: &Path,
    dir: bool,
) -> Result<PathBuf, String> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == comps.len();
        let kind = seen
            .kind(sys, &cur)
            .map_err(|e| format!("stat {}: {e}", cur.display()))?;
        match kind {
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
        let k = match kind {
            Some(k) => k,
            None if last && !dir => Kind::File,
            None => Kind::Dir,
        };
        seen.kinds.insert(cur.clone(), k);
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
    fn order_is_proc_first_pivot_last_ro_before_pivot() {
        let ops = plan(&job(), false);
        assert_eq!(*ops.last().unwrap(), MountOp::PivotRoot);
        assert_eq!(ops[ops.len() - 2], MountOp::RemountRootReadOnly);
        let proc_at = ops
            .iter()
            .position(|o| matches!(o, MountOp::Fs { fstype: "proc", .. }));
        assert_eq!(proc_at, Some(0));
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
    fn each_path_is_looked_at_once_and_fresh_tmpfs_contents_not_at_all() {
        let mut r = Recorder::default();
        r.existing.insert("/r".into(), Kind::Dir);
        apply(&mut r, Path::new("/r"), &plan(&job(), true)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for p in &r.looked {
            assert!(seen.insert(p), "{} looked at twice", p.display());
            assert!(
                p == Path::new("/r/dev") || !p.starts_with("/r/dev"),
                "{} is in the fresh /dev",
                p.display()
            );
        }
        assert!(r.calls.contains(&"touch /r/dev/null".to_string()));
        assert!(r.calls.contains(&"mkdir /r/dev/pts".to_string()));
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
