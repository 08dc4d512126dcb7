//! What the container sandbox needs from this host, found by trying it (for `reprobox
//! doctor` and the checks `reproduce` and `demo` make before any work): namespaces are
//! unshared in a forked child, an idmapped mount is made (and its owner read back through
//! it), an overlay is mounted over an idmapped layer, the Landlock ABI is asked of the
//! kernel, a per-job cgroup is created and removed, the id map a job would get is decided.
//! Every probe returns `Ok(detail)` or `Err(reason)`; nothing is cached across calls and
//! nothing is left behind (temporary directories and mounts go before returning).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::job::IdRange;

/// The namespaces the sandbox enters, as `unshare(2)` flags, named as in the run record.
pub const NAMESPACES: [(&str, libc::c_int); 5] = [
    ("user", libc::CLONE_NEWUSER),
    ("mount", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("net", libc::CLONE_NEWNET),
    ("time", libc::CLONE_NEWTIME),
];

/// Unshare each of [`NAMESPACES`] in a forked child (the user namespace first, the others
/// inside it, as a job's init does; when the user namespace cannot be made, the others are
/// tried as the caller is). One result per namespace, in order: `Err` carries the error
/// (`EINVAL`: the kernel lacks the namespace; `EPERM`/`ENOSPC`: not allowed here). `names` limits the probe (an empty slice: all).
pub fn namespaces(names: &[&str]) -> Vec<(&'static str, Result<(), std::io::Error>)> {
    let wanted: Vec<(&'static str, libc::c_int)> = NAMESPACES
        .iter()
        .copied()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .collect();
    let fail_all = |why: String| {
        wanted
            .iter()
            .map(|(n, _)| (*n, Err(std::io::Error::other(why.clone()))))
            .collect()
    };
    let (r, w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return fail_all(format!("pipe: {e}")),
    };
    let flags: Vec<libc::c_int> = wanted.iter().map(|(_, f)| *f).collect();
    // SAFETY: the child makes only async-signal-safe calls (unshare, write, _exit) on
    // memory allocated before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return fail_all(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let mut errs = [0i32; NAMESPACES.len()];
        // SAFETY: async-signal-safe calls only; `flags` and `errs` exist in the child's copy.
        unsafe {
            for (i, f) in flags.iter().enumerate() {
                if libc::unshare(*f) != 0 {
                    errs[i] = *libc::__errno_location();
                }
            }
            libc::write(
                w.as_raw_fd(),
                errs.as_ptr().cast(),
                std::mem::size_of_val(&errs),
            );
            libc::_exit(0);
        }
    }
    drop(w);
    let mut buf = [0u8; 4 * NAMESPACES.len()];
    let n = read_full(&r, &mut buf);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n < 4 * wanted.len() {
        return fail_all("the probe child ended without a result".into());
    }
    wanted
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let errno = i32::from_ne_bytes(buf[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            let r = if errno == 0 {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(errno))
            };
            (*name, r)
        })
        .collect()
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    n
}

fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("reprobox-probe-")
        .tempdir()
        .map_err(|e| format!("create a temporary directory: {e}"))
}

/// Make an idmapped mount of a temporary directory (root-owned) through a user namespace
/// mapping 0 → `range`, exactly as the sandbox mounts a job's root and as a prepared
/// environment's lower layer is mounted, and read the owner back through it: it must be
/// `range.host_uid`. Needs root.
pub fn idmapped_mount(range: IdRange) -> Result<String, String> {
    let t = temp_dir()?;
    let tree = super::overlay::idmapped_clone(t.path(), range).map_err(|e| e.to_string())?;
    // SAFETY: fstat into a zeroed struct on a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(tree.as_raw_fd(), &mut st) } != 0 {
        return Err(format!(
            "stat the idmapped mount: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(tree);
    if st.st_uid != range.host_uid || st.st_gid != range.host_gid {
        return Err(format!(
            "the idmapped mount shows owner {}:{}, expected {}:{}",
            st.st_uid, st.st_gid, range.host_uid, range.host_gid
        ));
    }
    Ok(format!(
        "open_tree + mount_setattr(MOUNT_ATTR_IDMAP): host 0 shows as {}",
        range.host_uid
    ))
}

/// Mount an overlay over an idmapped lower layer (a prepared environment's view) on a
/// temporary directory with [`super::overlay::Overlay::mount`], check that the base's
/// root-owned file shows as `range`'s ids and that a write lands in the upper layer, then
/// unmount. Needs root.
pub fn overlay_over_idmapped(range: IdRange) -> Result<String, String> {
    let t = temp_dir()?;
    let base = t.path().join("base");
    std::fs::create_dir(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    std::fs::write(base.join("f"), b"base").map_err(|e| format!("write: {e}"))?;
    let ov = super::overlay::Overlay::mount(&base, &t.path().join("env"), range)
        .map_err(|e| e.to_string())?;
    let check = || -> Result<(), String> {
        let md = std::fs::metadata(ov.root().join("f")).map_err(|e| format!("stat: {e}"))?;
        if (md.uid(), md.gid()) != (range.host_uid, range.host_gid) {
            return Err(format!(
                "the overlay shows owner {}:{}, expected {}:{}",
                md.uid(),
                md.gid(),
                range.host_uid,
                range.host_gid
            ));
        }
        std::fs::write(ov.root().join("f"), b"upper")
            .map_err(|e| format!("write through the overlay: {e}"))?;
        Ok(())
    };
    let r = check();
    drop(ov);
    r?;
    if std::fs::read(base.join("f")).ok().as_deref() != Some(b"base".as_slice()) {
        return Err("a write through the overlay reached its lower layer".into());
    }
    Ok("overlayfs (volatile) over an idmapped lower layer: mounted, written, unmounted".into())
}

/// Whether a process may load a seccomp filter with a user-notification listener, as an
/// egress job's process does (`sandbox::unanswered`), on a kernel that lets the call go on
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`, Linux 5.5). In a forked child: NO_NEW_PRIVS, then a
/// one-instruction filter that allows everything, loaded with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` (the listener is made whatever the program says).
pub fn seccomp_notify() -> Result<String, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .map_err(|e| format!("read /proc/sys/kernel/osrelease: {e}"))?;
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) < (5, 5) {
        return Err(format!(
            "Linux {release}: letting a watched call go on needs 5.5"
        ));
    }
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut allow = libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    };
    let prog = libc::sock_fprog {
        len: 1,
        filter: &mut allow,
    };
    // SAFETY: the child makes only async-signal-safe calls (prctl, syscall, write, _exit)
    // on memory set up before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let mut errno: i32 = 0;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    &prog as *const libc::sock_fprog,
                ) < 0
            {
                errno = *libc::__errno_location();
            }
            libc::write(w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut buf = [0u8; 4];
    let n = read_full(&r, &mut buf);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n < 4 {
        return Err("the probe child ended without a result".into());
    }
    match i32::from_ne_bytes(buf) {
        0 => Ok(format!(
            "a filter with a user-notification listener loads (Linux {release})"
        )),
        e => Err(format!(
            "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): {}",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset(NULL, 0, VERSION)`, the
/// query the `landlock` crate makes), and the ABI the crate uses for it.
pub fn landlock_abi() -> Result<(i32, String), String> {
    // SAFETY: the documented version query: no ruleset, no pointer read.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => "Landlock is built in but disabled (lsm= boot option)".into(),
            _ => format!("the kernel has no Landlock ({e})"),
        });
    }
    let v = v as i32;
    Ok((v, format!("{:?}", ::landlock::ABI::from(v))))
}

/// Create (and remove) a per-job memory cgroup as the sandbox does for `--memory`.
pub fn cgroup() -> Result<String, String> {
    let limits = crate::job::Limits {
        memory: Some(1 << 40),
        ..Default::default()
    };
    let cg = super::limits::create(&limits, &format!("reprobox-probe-{}", std::process::id()));
    let dir = cg.dirs.first().map(|d| d.display().to_string());
    cg.remove();
    match dir {
        Some(d) => Ok(format!("created and removed {d}")),
        None if !is_root() => Err("only root creates per-job cgroups".into()),
        None => Err(
            "no writable cgroup v1 memory hierarchy under /sys/fs/cgroup/memory for this process"
                .into(),
        ),
    }
}

/// Whether a cgroup v2 (unified) hierarchy is mounted and this process may manage its own
/// subtree there: its cgroup (`0::/…` in /proc/self/cgroup) lists controllers and its
/// `cgroup.subtree_control` is writable by us.
pub fn cgroup_v2_delegation() -> Result<String, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mount = mounts
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next() == Some("cgroup2")).then(|| pre.split(' ').nth(4))?
        })
        .ok_or("no cgroup2 (unified) hierarchy is mounted: this host uses cgroup v1")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup v2 membership")?;
    let dir = std::path::Path::new(mount).join(path.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", dir.join("cgroup.controllers").display()))?;
    let ctl = dir.join("cgroup.subtree_control");
    let writable = std::fs::OpenOptions::new().append(true).open(&ctl).is_ok();
    if controllers.trim().is_empty() || !writable {
        return Err(format!(
            "{} is not delegated to this process (controllers: [{}], subtree_control writable: {writable})",
            dir.display(),
            controllers.trim()
        ));
    }
    Ok(format!(
        "{} delegated (controllers: {})",
        dir.display(),
        controllers.trim()
    ))
}

/// The id map a job of the caller would get: root maps directly; another user needs
/// /etc/subuid and /etc/subgid ranges and newuidmap/newgidmap for 65536 ids. As root, also
/// says whether any other user has ranges.
pub fn subids() -> Result<String, String> {
    match super::idmap::decide(None) {
        super::idmap::Plan::Root { .. } => {
            let users = |f: &str| {
                std::fs::read_to_string(f)
                    .map(|t| {
                        t.lines()
                            .filter_map(|l| l.split(':').next())
                            .filter(|u| !u.is_empty() && *u != "root" && *u != "0")
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            let (su, sg) = (users("/etc/subuid"), users("/etc/subgid"));
            let helpers = super::idmap::on_path("newuidmap") && super::idmap::on_path("newgidmap");
            let with_both: Vec<&String> = su.iter().filter(|u| sg.contains(u)).collect();
            if !helpers {
                Err("newuidmap/newgidmap are not installed (root maps directly; other users cannot get 65536 ids)".into())
            } else if with_both.is_empty() {
                Err("no user has both /etc/subuid and /etc/subgid ranges (root maps directly; other users get one id)".into())
            } else {
                Ok(format!(
                    "newuidmap/newgidmap installed; ranges for {}",
                    with_both
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
        plan @ super::idmap::Plan::Helper { .. } => Ok(super::idmap::describe(&plan).detail),
        super::idmap::Plan::Single { why, .. } => Err(why),
    }
}

fn is_root() -> bool {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() == 0 }
}
