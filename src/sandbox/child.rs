//! Code that runs in the job's helper processes (crate-private; never called by users).
//!
//! Two processes, each with one job:
//! - **B** (`stage_b`), created by reprobox with clone(2) straight into new user and pid
//!   namespaces, so it is pid 1 of the job: unshares the mount, net, uts, ipc and cgroup
//!   namespaces (while reprobox writes its ID map), becomes root of the namespace,
//!   unshares the time namespace (with its offsets) for its children, builds the mount
//!   table and pivots into the root, sets the hostname, brings loopback up, hands the
//!   listening sockets to reprobox, starts C, reaps everything, and reports C's wait
//!   status. When B exits the kernel kills whatever the job left behind, and reprobox's
//!   wait for B returns only once all of it is gone.
//! - **C** (`stage_c`): the job itself, in the new time namespace: new session, working
//!   directory, limits, NO_NEW_PRIVS, bounding set, Landlock, the seccomp watch of
//!   unanswered connects (`unanswered`, its listener handed to reprobox), then execve.
//!
//! A raw clone runs no fork handlers, so it is only safe from a single-threaded process
//! (`reprobox run`). A multi-threaded caller (the pipeline, with its servers) forks **A**
//! first (`stage_a`, a plain glibc fork), which creates B the same way and waits for it.
//!
//! Every failure is sent to reprobox as one `error …` message naming the resource.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::ctl;
use super::mounts;
use super::sys::{self, Real};
use super::{ChildSetup, caps, landlock_rules, limits, net, timens, unanswered};
use crate::job::Enforcement;

fn fail(sock: RawFd, msg: &str) -> ! {
    let _ = ctl::send_str(sock, &format!("error {msg}"));
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(121) }
}

fn die_with_parent(expected_parent: i32) {
    // SAFETY: plain prctl; if the parent already went, leave.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != expected_parent {
            libc::_exit(121);
        }
    }
}

fn open_path(p: &Path) -> std::io::Result<OwnedFd> {
    let c = sys::cstr(p)?;
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// The namespaces B is created in: its user namespace (so reprobox can write the ID map
/// at once) and its pid namespace (so B is pid 1). B unshares the others itself
/// ([`unshare_flags`]) while reprobox writes the map: creating them, the network namespace
/// above all, is the slowest part of the start.
const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER | libc::CLONE_NEWPID;

/// The namespaces B unshares first thing. The cgroup namespace waits, when the job has
/// cgroups, until reprobox has moved B into them (its root is then the job's cgroup).
fn unshare_flags(p: &ChildSetup) -> libc::c_int {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if p.cgroups.dirs.is_empty() {
        flags | libc::CLONE_NEWCGROUP
    } else {
        flags
    }
}

/// Create B: a child in new user and pid namespaces (pid 1 of the new pid namespace),
/// fork-like (it returns 0 in the child, on a copy of the caller's stack).
///
/// # Safety
/// The raw clone runs no `pthread_atfork` handlers: the caller must be single-threaded
/// (no lock another thread holds is copied into the child), and the child must only run
/// stage code and leave with `_exit`.
pub(crate) unsafe fn clone_b() -> std::io::Result<i32> {
    // SAFETY: clone(2) without a new stack or CLONE_VM behaves like fork(2).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(pid as i32)
    }
}

/// A, only when reprobox has other threads: a plain fork of reprobox (glibc makes malloc
/// safe to use in it) that creates B, says B's pid, and waits for it.
pub(crate) fn stage_a(p: &ChildSetup, sock: RawFd, parent: i32) -> ! {
    die_with_parent(parent);
    ignore_interrupts();
    // SAFETY: A is single-threaded; B runs stage code only.
    match unsafe { clone_b() } {
        Err(e) => fail(sock, &format!("create the job's namespaces: {e}")),
        Ok(0) => stage_b(p, sock),
        Ok(b) => {
            let _ = ctl::send_str(sock, &format!("pid {b}"));
            // SAFETY: closing our copy so reprobox sees EOF once B and C are done.
            unsafe { libc::close(sock) };
            let mut st = 0;
            // SAFETY: waiting for our only child.
            unsafe {
                while libc::waitpid(b, &mut st, 0) < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                }
                libc::_exit(0)
            }
        }
    }
}

/// A terminal's Ctrl-C reaches reprobox's whole process group: the job's helpers leave
/// it to reprobox, which kills B (and so the whole job) and waits for it.
fn ignore_interrupts() {
    // SAFETY: plain signal disposition changes in a single-threaded child.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
}

struct SockRef(RawFd);
impl AsRawFd for SockRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
fn sock_ref(fd: RawFd) -> SockRef {
    SockRef(fd)
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub(crate) fn stage_b(p: &ChildSetup, sock: RawFd) -> ! {
    // B's parent is outside its pid namespace and reads as pid 0, so an early death of
    // the parent is seen on the control socket instead: `go` never comes.
    die_with_parent(0);
    ignore_interrupts();
    // SAFETY: plain syscall in a single-threaded process.
    if unsafe { libc::unshare(unshare_flags(p)) } != 0 {
        fail(
            sock,
            &format!(
                "unshare mount/net/uts/ipc/cgroup namespaces: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    // Opened now, in the new mount namespace and still with the host's fsuid, so paths
    // the mapped root could not traverse (a 0700 temp dir) stay usable through the fds.
    let root_fd = open_path(&p.rootfs).unwrap_or_else(|e| {
        fail(
            sock,
            &format!("open root filesystem {}: {e}", p.rootfs.display()),
        )
    });
    let bind_fds: Vec<OwnedFd> = p
        .job
        .binds
        .iter()
        .map(|b| {
            open_path(&b.src).unwrap_or_else(|e| {
                fail(sock, &format!("open bind source {}: {e}", b.src.display()))
            })
        })
        .collect();
    // reprobox writes the ID map, moves B into the job's cgroups and hands over the
    // idmapped root, then says go (and whether setgroups is allowed: not with a
    // single-id map).
    let (idmapped, setgroups) = match ctl::recv(&sock_ref(sock)) {
        Ok(Some((m, mut fds))) if m.starts_with("go") => (fds.pop(), m == "go setgroups"),
        // SAFETY: reprobox is gone or gave up.
        _ => unsafe { libc::_exit(121) },
    };
    become_root(p, sock, setgroups);
    // The time namespace applies to B's children: C and everything it starts.
    let time_note = timens::enter_for_children()
        .unwrap_or_else(|e| fail(sock, &format!("time namespace offsets: {e}")));
    // What B enforced, sent with `ready`; C's list comes with the status.
    let mut enf = vec![Enforcement {
        feature: "time-namespace".into(),
        enforced: true,
        detail: time_note,
    }];
    enf.extend(attach_root(p, sock, &root_fd, &bind_fds, idmapped.as_ref()));
    bring_up_network(p, sock);
    let _ = ctl::send_str(
        sock,
        &format!("ready {}", serde_json::to_string(&enf).unwrap()),
    );
    let mut c_enf = Vec::new();
    let c =
        spawn_c(p, sock, &mut c_enf).unwrap_or_else(|e| fail(sock, &format!("start the job: {e}")));
    init_until(p, sock, c, &c_enf, &root_fd)
}

/// B becomes root of its user namespace (its map written by the parent), stays
/// dumpable, and enters a cgroup namespace when it has cgroups.
fn become_root(p: &ChildSetup, sock: RawFd, setgroups: bool) {
    // SAFETY: plain id syscalls; the map was written by the parent.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 {
            fail(
                sock,
                &format!("setresgid 0: {}", std::io::Error::last_os_error()),
            );
        }
        if setgroups && libc::setgroups(0, std::ptr::null()) != 0 {
            fail(
                sock,
                &format!("setgroups: {}", std::io::Error::last_os_error()),
            );
        }
        if libc::setresuid(0, 0, 0) != 0 {
            fail(
                sock,
                &format!("setresuid 0: {}", std::io::Error::last_os_error()),
            );
        }
        // Changing ids made us non-dumpable, which makes /proc/self owned by host root
        // and timens_offsets unwritable; we are ordinary root of our namespace.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        if !p.cgroups.dirs.is_empty() && libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
            fail(
                sock,
                &format!(
                    "unshare cgroup namespace: {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
    }
}

/// Attach the job's root (the idmapped tree reprobox handed over, else a bind of the
/// root directory) and apply the mount plan under it; returns what could not be done as
/// it was planned.
fn attach_root(
    p: &ChildSetup,
    sock: RawFd,
    root_fd: &OwnedFd,
    bind_fds: &[OwnedFd],
    idmapped: Option<&OwnedFd>,
) -> Vec<Enforcement> {
    let mut real = Real;
    use super::sys::Sys;
    // The root is attached straight onto /mnt (or /tmp) of B's private copy of the host's
    // mount table, hiding what was there, and pivoted into from there.
    let root = Path::new(if Path::new("/mnt").is_dir() {
        "/mnt"
    } else {
        "/tmp"
    });
    let step = |r: std::io::Result<()>, what: &str| {
        if let Err(e) = r {
            fail(sock, &format!("{what}: {e}"));
        }
    };
    step(
        real.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        ),
        "make / private",
    );
    match idmapped {
        Some(fd) => {
            let c = sys::cstr(root).unwrap();
            // SAFETY: move_mount of the detached, idmapped tree reprobox made.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    0x4u32, // MOVE_MOUNT_F_EMPTY_PATH
                )
            };
            step(sys::check(r as i32), "attach the idmapped root filesystem");
        }
        None => step(
            real.mount(
                Some(&fd_path(root_fd)),
                root,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
            &format!("bind root filesystem {}", p.rootfs.display()),
        ),
    }
    let mut job = p.job.clone();
    for (b, fd) in job.binds.iter_mut().zip(bind_fds) {
        b.src = fd_path(fd);
    }
    let ops = mounts::plan(&job, p.host_fuse);
    let notes = match mounts::apply(&mut real, root, &ops) {
        Ok(n) => n,
        Err(e) => fail(sock, &e),
    };
    notes
        .into_iter()
        .map(|detail| Enforcement {
            feature: "mounts".into(),
            enforced: false,
            detail,
        })
        .collect()
}

/// The job's hostname, its loopback up, and a listener on each of its ports handed to
/// the host.
fn bring_up_network(p: &ChildSetup, sock: RawFd) {
    let h = &p.job.hostname;
    // SAFETY: valid buffer and length.
    if unsafe { libc::sethostname(h.as_ptr() as *const libc::c_char, h.len()) } != 0 {
        fail(
            sock,
            &format!("sethostname {h}: {}", std::io::Error::last_os_error()),
        );
    }
    if let Err(e) = net::loopback_up() {
        fail(sock, &format!("bring loopback up: {e}"));
    }
    if p.job.loopback_catch_all
        && let Err(e) = net::route_all_ipv4_to_loopback()
    {
        fail(sock, &format!("route every IPv4 address to loopback: {e}"));
    }
    for port in &p.job.listen {
        match net::listen(*port, p.job.loopback_catch_all) {
            Ok(l) => {
                if let Err(e) =
                    ctl::send(sock, format!("listen {port}").as_bytes(), &[l.as_raw_fd()])
                {
                    fail(sock, &format!("hand listener {port} to the host: {e}"));
                }
            }
            Err(e) => fail(sock, &format!("listen on 127.0.0.1:{port} in the job: {e}")),
        }
    }
    for port in &p.job.listen_udp {
        match net::bind_udp(*port) {
            Ok(s) => {
                if let Err(e) = ctl::send(sock, format!("udp {port}").as_bytes(), &[s.as_raw_fd()])
                {
                    fail(sock, &format!("hand UDP socket {port} to the host: {e}"));
                }
            }
            Err(e) => fail(sock, &format!("bind UDP 127.0.0.1:{port} in the job: {e}")),
        }
    }
}

/// B as the job's init: reap everything until C (the job) ends, then report its status
/// and leave.
fn init_until(p: &ChildSetup, sock: RawFd, c: i32, c_enf: &[Enforcement], root_fd: &OwnedFd) -> ! {
    // Init: reap everything until the job itself ends.
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid.
        let r = unsafe { libc::waitpid(-1, &mut st, 0) };
        if r == c {
            // Whatever the job left running goes before the status is reported: once
            // reprobox has it, nothing of the job runs any more (B's own exit, which
            // tears down the namespaces, may end after reprobox has returned).
            kill_the_rest();
            let _ = ctl::send_str(
                sock,
                &format!("status {st} {}", serde_json::to_string(c_enf).unwrap()),
            );
            // An unprivileged user cannot delete files the job made under its subordinate
            // ids; B, root of the job's user namespace, empties the unpacked root so that
            // reprobox (which waits for B's exit when it has a temporary root to remove)
            // can remove the then empty directory.
            if p.empty_root_after {
                remove_contents(root_fd.as_raw_fd());
            }
            // SAFETY: leaving; nothing of the job is left.
            unsafe { libc::_exit(0) }
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            unsafe { libc::_exit(0) }
        }
    }
}

/// Start C like posix_spawn does: on a stack of its own, sharing B's memory until it execs
/// or exits, while B sleeps (CLONE_VFORK). No copy of B's page tables, no copy-on-write
/// faults, and C runs at once on B's CPU. B is single-threaded and blocked, so nothing
/// else touches the shared memory meanwhile; a panic in C aborts C (it cannot unwind out
/// of its entry function). C leaves what it enforced in `enf` (B's memory) for B to send.
fn spawn_c(p: &ChildSetup, sock: RawFd, enf: &mut Vec<Enforcement>) -> std::io::Result<i32> {
    type Arg<'a> = (&'a ChildSetup, RawFd, *mut Vec<Enforcement>);
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` points at the tuple below, alive until C has exec'd or exited,
        // and B does not touch `enf` meanwhile.
        let (p, sock, enf) = unsafe { *(arg as *const Arg) };
        stage_c(p, sock, unsafe { &mut *enf })
    }
    const STACK: usize = 1 << 20;
    let arg: Arg = (p, sock, enf);
    // SAFETY: a fresh private mapping used only as C's stack, with a guard page at its
    // low end; unmapped once clone returns, when C no longer runs on it.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        libc::mprotect(base, page, libc::PROT_NONE);
        let pid = libc::clone(
            entry,
            base.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &arg as *const Arg as *mut libc::c_void,
        );
        let err = std::io::Error::last_os_error();
        libc::munmap(base, STACK);
        if pid < 0 { Err(err) } else { Ok(pid) }
    }
}

fn stage_c(p: &ChildSetup, sock: RawFd, out: &mut Vec<Enforcement>) -> ! {
    // SAFETY: plain syscalls in the job's own process. Dispositions reprobox (and the Rust
    // runtime: SIGPIPE) set must not leak into the job: ignored signals survive execve.
    unsafe {
        libc::setsid();
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    let wd = sys::cstr(&p.job.workdir).unwrap();
    // SAFETY: valid C string.
    if unsafe { libc::chdir(wd.as_ptr()) } != 0 {
        fail(
            sock,
            &format!(
                "working directory {}: {}",
                p.job.workdir.display(),
                std::io::Error::last_os_error()
            ),
        );
    }
    if let Err(e) = limits::apply_rlimits(&p.job.limits, &p.cgroups) {
        fail(sock, &e);
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(
            sock,
            &format!("no_new_privs: {}", std::io::Error::last_os_error()),
        );
    }
    let mut enf = vec![Enforcement {
        feature: "no-new-privs".into(),
        enforced: true,
        detail: "set: setuid binaries and file capabilities give nothing".into(),
    }];
    if let Err(e) = caps::apply(&p.keep_caps) {
        fail(sock, &e);
    }
    enf.push(Enforcement {
        feature: "capabilities".into(),
        enforced: true,
        detail: caps::describe(&p.keep_caps),
    });
    match &p.landlock {
        Some(req) => match landlock_rules::apply(req) {
            Ok(v) => enf.extend(v),
            Err(e) => fail(sock, &e),
        },
        None => enf.push(Enforcement {
            feature: "landlock".into(),
            enforced: false,
            detail: "disabled (--no-landlock)".into(),
        }),
    }
    if p.job.watch_unanswered {
        // Last before exec: nothing of reprobox's own set-up is stopped by the filter.
        match unanswered::install() {
            Ok(listener) => {
                if let Err(e) = ctl::send(sock, b"unanswered", &[listener.as_raw_fd()]) {
                    fail(sock, &format!("hand the seccomp listener to reprobox: {e}"));
                }
                drop(listener);
            }
            Err(e) => fail(sock, &e),
        }
        enf.push(Enforcement {
            feature: crate::job::UNANSWERED_FEATURE.into(),
            enforced: true,
            detail: "seccomp user notification on connect(2) and sendto(2) with an address: \
                     attempts nothing in the job's network answers are recorded"
                .into(),
        });
    }
    *out = enf;
    let prog = resolve(&p.job.argv[0], &p.path_dirs);
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: null-terminated arrays of valid C strings.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let msg = format!("reprobox: exec {}: {e}\n", p.job.argv[0]);
    // SAFETY: writing to our stderr, then leaving like a shell does.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::_exit(if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        })
    }
}

/// Find `prog` on the job's PATH (inside the new root), like execvp.
fn resolve(prog: &str, dirs: &[String]) -> CString {
    if prog.contains('/') {
        return CString::new(prog).unwrap();
    }
    for d in dirs {
        let cand = CString::new(format!("{d}/{prog}")).unwrap();
        // SAFETY: valid C string.
        if unsafe { libc::access(cand.as_ptr(), libc::X_OK) } == 0 {
            return cand;
        }
    }
    CString::new(prog).unwrap()
}

/// Kill and reap every other process of the job (B is init of its pid namespace:
/// kill(-1) reaches all of them).
fn kill_the_rest() {
    // SAFETY: plain kill and waitpid in B.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        let mut st = 0;
        while libc::waitpid(-1, &mut st, 0) > 0
            || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
    }
}

/// Remove everything beneath the directory `dir` (an O_PATH or directory fd), without
/// following symlinks. Best effort: what cannot be removed is left for the parent.
fn remove_contents(dir: RawFd) {
    // SAFETY: raw directory walking with fds we own and close.
    unsafe {
        let fd = libc::openat(
            dir,
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let d = libc::fdopendir(fd);
        if d.is_null() {
            libc::close(fd);
            return;
        }
        let mut names = Vec::new();
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push((name, (*e).d_type));
            }
        }
        let dfd = libc::dirfd(d);
        for (name, ty) in names {
            if ty == libc::DT_DIR {
                let sub = libc::openat(
                    dfd,
                    name.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                );
                if sub >= 0 {
                    remove_contents(sub);
                    libc::close(sub);
                }
                libc::unlinkat(dfd, name.as_ptr(), libc::AT_REMOVEDIR);
            } else {
                libc::unlinkat(dfd, name.as_ptr(), 0);
            }
        }
        libc::closedir(d);
    }
}
