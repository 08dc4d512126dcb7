//! Resource limits: memory through a per-job cgroup where the host lets us make one (the
//! cgroup v1 `memory` controller, as on this project's machines), else RLIMIT_AS; the
//! process count through RLIMIT_NPROC, which the kernel accounts per user namespace, so
//! it counts the job's processes only. The wall-clock timeout is enforced by the
//! parent (it kills the job's pid namespace init, which takes the whole tree with it).

use std::path::{Path, PathBuf};

use crate::job::{Enforcement, Limits};

/// Per-job cgroups to join (before unsharing the cgroup namespace) and remove afterwards.
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    pub dirs: Vec<PathBuf>,
    pub memory: bool,
    pub pids: bool,
}

fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

fn make(controller: &str, name: &str, file: &str, value: u64) -> Option<PathBuf> {
    let base = Path::new("/sys/fs/cgroup").join(controller);
    if !base.join("tasks").exists() && !base.join("cgroup.procs").exists() {
        return None;
    }
    let rel = own_path(controller)?;
    let dir = base.join(rel.trim_start_matches('/')).join(name);
    std::fs::create_dir(&dir).ok()?;
    if std::fs::write(dir.join(file), value.to_string()).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

/// Create the job's cgroups for the requested limits (root only; others fall back).
pub(crate) fn create(limits: &Limits, name: &str) -> Cgroups {
    let mut cg = Cgroups::default();
    // SAFETY: trivial getter.
    if unsafe { libc::geteuid() } != 0 {
        return cg;
    }
    if let Some(m) = limits.memory
        && let Some(d) = make("memory", name, "memory.limit_in_bytes", m)
    {
        cg.dirs.push(d);
        cg.memory = true;
    }
    // The process count limit is RLIMIT_NPROC (see `apply_rlimits`): joining a cgroup v1
    // hierarchy costs a ~10 ms RCU grace period per hierarchy, which would double the start
    // time of every job; memory has no such cheap alternative, so only it uses a cgroup.
    cg
}

impl Cgroups {
    /// Move process `pid` (the job's init, before it starts the job) into every job
    /// cgroup.
    pub(crate) fn join(&self, pid: i32) -> Result<(), String> {
        let pid = pid.to_string();
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), &pid)
                .map_err(|e| format!("join cgroup {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// Remove the cgroups once every process of the job is gone (retry briefly: the
    /// kernel frees a cgroup shortly after its last task is reaped).
    pub(crate) fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// rlimits for what no cgroup covers (runs in the job's child before exec).
pub(crate) fn apply_rlimits(limits: &Limits, cg: &Cgroups) -> Result<(), String> {
    let set = |res, v: u64, what: &str| {
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: valid rlimit struct.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return Err(format!(
                "setrlimit {what}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    if let Some(m) = limits.memory
        && !cg.memory
    {
        set(libc::RLIMIT_AS, m, "RLIMIT_AS")?;
    }
    if let Some(p) = limits.pids
        && !cg.pids
    {
        set(libc::RLIMIT_NPROC, p, "RLIMIT_NPROC")?;
    }
    Ok(())
}

pub(crate) fn describe(limits: &Limits, cg: &Cgroups) -> Vec<Enforcement> {
    let mut v = Vec::new();
    if let Some(m) = limits.memory {
        v.push(Enforcement {
            feature: "memory-limit".into(),
            enforced: true,
            detail: if cg.memory {
                format!("{m} bytes (cgroup v1 memory.limit_in_bytes)")
            } else {
                format!("{m} bytes (RLIMIT_AS: address space, not resident memory)")
            },
        });
    }
    if let Some(p) = limits.pids {
        v.push(Enforcement {
            feature: "pids-limit".into(),
            enforced: true,
            detail: if cg.pids {
                format!("{p} processes (cgroup pids.max)")
            } else {
                format!(
                    "{p} processes per uid of the job (RLIMIT_NPROC, accounted in the job's own user namespace)"
                )
            },
        });
    }
    if let Some(t) = limits.timeout {
        v.push(Enforcement {
            feature: "timeout".into(),
            enforced: true,
            detail: format!(
                "{}s wall clock, kills the whole pid namespace",
                t.as_secs_f64()
            ),
        });
    }
    v
}
