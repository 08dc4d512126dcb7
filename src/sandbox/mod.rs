//! The container backend: a job sealed in user, mount, pid, net, uts, ipc, cgroup and
//! time namespaces, with a pivoted root, loopback-only network, a narrowed capability
//! set, NO_NEW_PRIVS, Landlock where the kernel has it, and limits.
//!
//! `spawn` starts a job and returns once its root is built and its listening sockets (if
//! any) are in the host's hands, before the job's command is exec'd; `Running::wait`
//! streams nothing itself (the job writes straight to reprobox's stdout/stderr) and
//! returns the outcome with the list of what was enforced, once every process of the job
//! is gone (the job's init kills and reaps what the command left before it reports).
//! Timeout, SIGINT and SIGTERM kill the job's pid namespace init, which takes every
//! process of the job with it; the job's mounts live only in its own mount namespace;
//! temporary directories and cgroups are removed before returning.

mod caps;
mod child;
mod ctl;
mod environ;
mod idmap;
mod landlock_rules;
mod limits;
mod mounts;
mod net;
pub mod overlay;
pub mod probe;
mod sys;
mod timens;
mod unanswered;

/// The environment's libfaketime for a `clock.faketime` job, as the microVM backend applies
/// it too: one rule for both backends.
pub(crate) use environ::faketime;

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, IoContext, Result};
use crate::job::{Enforcement, Job, JobOutcome, RootfsSource, UnansweredSink};

/// Everything the helper processes need, computed before forking.
pub(crate) struct ChildSetup {
    pub job: Job,
    pub rootfs: PathBuf,
    pub cgroups: limits::Cgroups,
    pub host_fuse: bool,
    pub keep_caps: ::caps::CapsHashSet,
    pub landlock: Option<landlock_rules::Request>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_dirs: Vec<String>,
    /// Empty the unpacked root from inside the user namespace when the job ends (a
    /// non-root user could not remove files owned by its subordinate ids).
    pub empty_root_after: bool,
}

/// A job that has been started.
pub struct Running {
    /// For each port of `Job::listen`: a socket listening on the job's 127.0.0.1:port,
    /// created inside its network namespace. Serve on it from the host.
    pub listeners: Vec<(u16, TcpListener)>,
    /// For each port of `Job::listen_udp`: a UDP socket bound the same way.
    pub udp_sockets: Vec<(u16, std::net::UdpSocket)>,
    /// Our child: B itself, or A when B was created through it.
    child: i32,
    /// The job's init (pid 1 of its namespace), once known.
    pid_b: Option<i32>,
    sock: OwnedFd,
    started: Instant,
    deadline: Option<Instant>,
    enforcement: Vec<Enforcement>,
    status: Option<i32>,
    error: Option<String>,
    cleanup: Cleanup,
    guard: crate::interrupt::Guard,
    done: bool,
    /// `Job::loopback_catch_all`, for the watch of unanswered connects.
    catch_all: bool,
    unanswered_sink: Option<UnansweredSink>,
    /// Started when C hands over its seccomp listener (`Job::watch_unanswered`).
    watcher: Option<unanswered::Watcher>,
}

struct Cleanup {
    temp_root: Option<tempfile::TempDir>,
    cgroups: limits::Cgroups,
}

impl Cleanup {
    fn is_empty(&self) -> bool {
        self.temp_root.is_none() && self.cgroups.dirs.is_empty()
    }

    fn run(&mut self) {
        self.cgroups.remove();
        if let Some(t) = self.temp_root.take() {
            let p = t.path().to_path_buf();
            if let Err(e) = t.close() {
                tracing::warn!("could not remove {}: {e}", p.display());
            }
        }
    }
}

/// Run `job` to its end: its output goes straight to our stdout/stderr; returns its
/// status (128+N when killed by signal N).
pub fn run(job: &Job) -> Result<JobOutcome> {
    spawn(job)?.wait()
}

fn validate(job: &Job) -> Result<()> {
    if job.argv.is_empty() {
        return Err(Error::bad_input("command", "expected a command after `--`"));
    }
    for b in &job.binds {
        if !b.src.exists() {
            return Err(Error::bad_input(
                format!("--bind {}", b.src.display()),
                "bind source does not exist (expected SRC:DST[:ro] with an existing SRC)",
            ));
        }
        if !b.dst.is_absolute() || !b.src.is_absolute() {
            return Err(Error::bad_input(
                format!("--bind {}:{}", b.src.display(), b.dst.display()),
                "expected absolute paths SRC:DST[:ro]",
            ));
        }
    }
    if !job.workdir.is_absolute() {
        return Err(Error::bad_input(
            format!("--workdir {}", job.workdir.display()),
            "expected an absolute path inside the job",
        ));
    }
    for (k, _) in &job.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::bad_input(format!("--env {k}"), "expected K=V"));
        }
    }
    Ok(())
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| Error::bad_input(what.to_string(), "contains a NUL byte; expected none"))
}

/// Start `job`; returns once it is about to exec its command.
pub fn spawn(job: &Job) -> Result<Running> {
    spawn_watched(job, None)
}

/// [`spawn`], handing the job's connects that nothing answers to `unanswered` as they
/// happen (with `Job::watch_unanswered`; without a sink they are only logged).
pub fn spawn_watched(job: &Job, unanswered: Option<UnansweredSink>) -> Result<Running> {
    reap_finished(&mut UNREAPED.lock().unwrap_or_else(|e| e.into_inner()));
    validate(job)?;
    let guard = crate::interrupt::Guard::new();
    let started = Instant::now();
    let keep_caps = caps::resolve(&job.caps)?;
    let mut cleanup = Cleanup {
        temp_root: None,
        cgroups: limits::Cgroups::default(),
    };
    let mut enforcement = Vec::new();
    let rootfs = root_of(job, &mut cleanup, &mut enforcement)?;
    let setup = child_setup(
        job,
        rootfs,
        keep_caps,
        &mut cleanup,
        &mut enforcement,
        started,
    )?;
    let (sock_p, sock_c) = ctl::pair().map_err(|e| Error::Sandbox(format!("socketpair: {e}")))?;
    // B (the job's init) is our own child when we are single-threaded; otherwise a forked
    // helper A creates it (see `child`).
    let direct = single_threaded();
    let me = std::process::id() as i32;
    let pid = if direct {
        // SAFETY: single-threaded; the child only runs stage code and leaves with _exit.
        unsafe { child::clone_b() }
    } else {
        // SAFETY: the child only runs stage code and leaves with _exit.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            pid => Ok(pid),
        }
    };
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            cleanup.cgroups = setup.cgroups;
            cleanup.run();
            return Err(Error::Sandbox(format!("create the job's namespaces: {e}")));
        }
    };
    if pid == 0 {
        drop(sock_p);
        if direct {
            child::stage_b(&setup, sock_c.as_raw_fd());
        }
        child::stage_a(&setup, sock_c.as_raw_fd(), me);
    }
    drop(sock_c);
    cleanup.cgroups = setup.cgroups;
    let mut r = Running {
        listeners: Vec::new(),
        udp_sockets: Vec::new(),
        child: pid,
        pid_b: direct.then_some(pid),
        sock: sock_p,
        started,
        deadline: job.limits.timeout.map(|t| Instant::now() + t),
        enforcement,
        status: None,
        error: None,
        cleanup,
        guard,
        done: false,
        catch_all: job.loopback_catch_all,
        unanswered_sink: unanswered,
        watcher: None,
    };
    r.handshake(job, &setup.rootfs)?;
    Ok(r)
}

/// The job's root directory: a directory used in place, or an archive unpacked safely into
/// a temporary directory that `cleanup` removes.
fn root_of(
    job: &Job,
    cleanup: &mut Cleanup,
    enforcement: &mut Vec<Enforcement>,
) -> Result<PathBuf> {
    let bad = |p: &std::path::Path| {
        Error::bad_input(
            format!("--rootfs {}", p.display()),
            "expected a directory or a tar/tar.gz/tar.zst archive",
        )
    };
    let a = match &job.rootfs {
        RootfsSource::Dir(d) if d.is_dir() => return Ok(d.clone()),
        RootfsSource::Dir(d) => return Err(bad(d)),
        RootfsSource::Archive(a) if !a.is_file() => return Err(bad(a)),
        RootfsSource::Archive(a) => a,
    };
    let t = tempfile::Builder::new()
        .prefix("reprobox-root-")
        .tempdir()
        .ctx("create temporary directory", std::env::temp_dir())?;
    let dest = t.path().join("root");
    cleanup.temp_root = Some(t);
    let rep = crate::inputs::unpack::unpack_root(a, &dest)?;
    enforcement.push(Enforcement {
        feature: "rootfs-unpack".into(),
        enforced: true,
        detail: format!(
            "{} entries unpacked; device nodes skipped: {}",
            rep.entries,
            if rep.skipped_devices.is_empty() {
                "none".into()
            } else {
                rep.skipped_devices
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    });
    Ok(dest)
}

/// Everything the child processes need, computed before forking: the environment,
/// argv, Landlock request, capabilities and cgroups (which `cleanup` removes), with the
/// enforcement entries they already decide.
fn child_setup(
    job: &Job,
    rootfs: PathBuf,
    keep_caps: ::caps::CapsHashSet,
    cleanup: &mut Cleanup,
    enforcement: &mut Vec<Enforcement>,
    started: Instant,
) -> Result<ChildSetup> {
    let mut env = environ::build(job, std::env::var("TERM").ok().as_deref());
    if job.clock.faketime {
        enforcement.push(environ::faketime(job, &rootfs, &mut env));
    }
    let path_dirs = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.split(':').map(String::from).collect())
        .unwrap_or_default();
    let envp = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), &format!("--env {k}")))
        .collect::<Result<Vec<_>>>()?;
    let argv = job
        .argv
        .iter()
        .map(|a| cstring(a, "command"))
        .collect::<Result<Vec<_>>>()?;
    let landlock = landlock_request(job, &keep_caps);
    cleanup.cgroups = limits::create(
        &job.limits,
        &format!(
            "reprobox-{}-{:x}",
            std::process::id(),
            started.elapsed().as_nanos()
        ),
    );
    enforcement.extend(limits::describe(&job.limits, &cleanup.cgroups));
    enforcement.push(Enforcement {
        feature: "namespaces".into(),
        enforced: true,
        detail: "user, mount, pid, net, uts, ipc, cgroup, time".into(),
    });
    enforcement.push(Enforcement {
        feature: "network".into(),
        enforced: true,
        detail: format!(
            "loopback only{}{}{}",
            if job.listen.is_empty() {
                String::new()
            } else {
                format!("; host serves on job ports {:?}", job.listen)
            },
            if job.listen_udp.is_empty() {
                String::new()
            } else {
                format!(" and UDP {:?}", job.listen_udp)
            },
            if job.loopback_catch_all {
                "; every IPv4 address is the job's own (connects reach those ports or are refused)"
            } else {
                ""
            }
        ),
    });
    Ok(ChildSetup {
        job: job.clone(),
        rootfs,
        cgroups: std::mem::take(&mut cleanup.cgroups),
        host_fuse: std::path::Path::new("/dev/fuse").exists(),
        keep_caps,
        landlock,
        argv,
        envp,
        path_dirs,
        // SAFETY: geteuid has no preconditions.
        empty_root_after: cleanup.temp_root.is_some() && unsafe { libc::geteuid() } != 0,
    })
}

/// The Landlock rules of a job: its own writable paths, its writable binds and the
/// job's own tmpfs mounts; TCP to its listeners. Filesystem rules apply when asked or when
/// the job cannot mount anyway (no CAP_SYS_ADMIN).
fn landlock_request(job: &Job, keep_caps: &::caps::CapsHashSet) -> Option<landlock_rules::Request> {
    job.landlock.enabled.then(|| {
        let mut writable: Vec<PathBuf> = job.landlock.writable.clone();
        writable.extend(
            job.binds
                .iter()
                .filter(|b| !b.read_only)
                .map(|b| b.dst.clone()),
        );
        for p in ["/tmp", "/run", "/dev"] {
            writable.push(p.into());
        }
        let mut tcp_connect = job.landlock.tcp_connect.clone();
        tcp_connect.extend(job.listen.iter().copied());
        landlock_rules::Request {
            restrict_fs: job.landlock.restrict_filesystem
                || !keep_caps.contains(&::caps::Capability::CAP_SYS_ADMIN),
            writable,
            tcp_connect,
            tcp_bind: job.landlock.tcp_bind.clone(),
        }
    })
}

impl Running {
    /// The parent's side of the start: once B (the job's init) is known, put it in its
    /// cgroups, write its id map, hand it the idmapped root, and wait until it is ready.
    fn handshake(&mut self, job: &Job, rootfs: &std::path::Path) -> Result<()> {
        while self.pid_b.is_none() {
            if self.next_message(true)?.is_none() {
                return Err(self.abort());
            }
        }
        let pid_b = self.pid_b.unwrap_or_default();
        // Decided while B starts (it reads /etc/passwd and /etc/subuid), not before.
        let plan = idmap::decide(job.id_map.as_ref());
        self.enforcement.insert(0, idmap::describe(&plan));
        // Handshake: B waits for its cgroups, its map and the idmapped root.
        if let Err(e) = self.cleanup.cgroups.join(pid_b) {
            self.error = Some(e);
            return Err(self.abort());
        }
        if let Err(e) = idmap::apply(&plan, pid_b) {
            self.error = Some(format!("id map: {e}"));
            return Err(self.abort());
        }
        let idmapped = self.idmapped_root_for(job, &plan, rootfs, pid_b);
        let fds: Vec<i32> = idmapped.iter().map(|f| f.as_raw_fd()).collect();
        let go: &[u8] = if idmap::setgroups_allowed(&plan) {
            b"go setgroups"
        } else {
            b"go"
        };
        if ctl::send(self.sock.as_raw_fd(), go, &fds).is_err() {
            return Err(self.abort());
        }
        drop(idmapped);
        loop {
            match self.next_message(true)? {
                Some((m, _)) if m.starts_with("ready") => return Ok(()),
                Some(_) => {}
                None => return Err(self.abort()),
            }
        }
    }

    /// The idmapped clone of the root for B to mount, when the map is root's own and the
    /// root is not mapped already; says which in the enforcement list.
    fn idmapped_root_for(
        &mut self,
        job: &Job,
        plan: &idmap::Plan,
        rootfs: &std::path::Path,
        pid_b: i32,
    ) -> Option<OwnedFd> {
        let (fd, enforced, detail) = if job.root_premapped {
            (None, true, "the root's files are already owned by the job's host ids (an overlay over an idmapped prepared environment)".to_string())
        } else if matches!(plan, idmap::Plan::Root { .. }) {
            match idmapped_root(rootfs, pid_b) {
                Ok(fd) => (Some(fd), true, "root filesystem mounted with the job's id map: host root's files are the job root's".to_string()),
                Err(e) => (None, false, format!("idmapped mount failed ({e}); files owned by unmapped host ids appear as nobody")),
            }
        } else {
            return None;
        };
        self.enforcement.push(Enforcement {
            feature: "rootfs-idmapped".into(),
            enforced,
            detail,
        });
        fd
    }
}

/// Whether the calling process has a single thread (`/proc/self/task` links 2 + one per
/// thread); when unsure, no.
fn single_threaded() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/task").is_ok_and(|m| m.nlink() == 3)
}

/// A detached copy of the root filesystem's mount, idmapped with the job's user
/// namespace, so files owned by host root belong to the job's root (root only).
fn idmapped_root(root: &std::path::Path, pid: i32) -> std::io::Result<OwnedFd> {
    let c = sys::cstr(root)?;
    // SAFETY: raw new-mount-API syscalls with valid arguments.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            1u32 | libc::O_CLOEXEC as u32 | 0x8000u32, // OPEN_TREE_CLONE | CLOEXEC | AT_RECURSIVE
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: 0x0010_0000, // MOUNT_ATTR_IDMAP
            attr_clr: 0,
            propagation: 0,
            userns_fd: ns.as_raw_fd() as u64,
        };
        let r = libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | 0x8000) as u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        );
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(tree)
    }
}

/// Helpers (B, or A) whose job is over but whose own exit was not waited for.
static UNREAPED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reap those of `pids` that have exited; keep the others.
fn reap_finished(pids: &mut Vec<i32>) {
    pids.retain(|&pid| {
        let mut st = 0;
        // SAFETY: non-blocking wait for our own child.
        unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) == 0 }
    });
}

fn enforcement_list(json: &str) -> Vec<Enforcement> {
    serde_json::from_str(json).unwrap_or_default()
}

impl Running {
    /// Read one control message, honouring signals and the deadline. `setup` turns a
    /// signal into an immediate abort.
    fn next_message(&mut self, setup: bool) -> Result<Option<(String, Vec<OwnedFd>)>> {
        loop {
            if let Some(_sig) = self.guard.pending() {
                self.kill();
                self.finish();
                return Err(Error::Interrupted);
            }
            if !setup
                && let Some(d) = self.deadline
                && Instant::now() >= d
            {
                return Ok(Some(("timeout".into(), Vec::new())));
            }
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 50) };
            if n <= 0 {
                continue;
            }
            let msg = ctl::recv(&self.sock)
                .map_err(|e| Error::Sandbox(format!("control channel: {e}")))?;
            let Some((m, mut fds)) = msg else {
                return Ok(None);
            };
            let (tag, rest) = m.split_once(' ').unwrap_or((m.as_str(), ""));
            match tag {
                "error" => {
                    self.error = Some(rest.to_string());
                }
                "pid" => self.pid_b = rest.parse().ok(),
                "listen" => {
                    if let (Ok(port), Some(fd)) = (rest.parse::<u16>(), fds.pop()) {
                        self.listeners.push((port, TcpListener::from(fd)));
                    }
                }
                "unanswered" => {
                    if let Some(fd) = fds.pop() {
                        match unanswered::Watcher::start(
                            fd,
                            self.catch_all,
                            self.pid_b.unwrap_or(self.child),
                            self.unanswered_sink.clone(),
                        ) {
                            Ok(w) => self.watcher = Some(w),
                            // The job's init is gone (a job over before its listener was
                            // read): so is every process the filter could stop; nothing
                            // to watch.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            // Without the thread the job's connects would wait forever.
                            Err(e) => {
                                self.error = Some(format!("start the connect watch: {e}"));
                                self.kill();
                            }
                        }
                    }
                }
                "udp" => {
                    if let (Ok(port), Some(fd)) = (rest.parse::<u16>(), fds.pop()) {
                        self.udp_sockets.push((port, std::net::UdpSocket::from(fd)));
                    }
                }
                // `ready` carries what B enforced, `status` C's wait status and what C
                // enforced.
                "ready" => self.enforcement.extend(enforcement_list(rest)),
                "status" => {
                    let (st, list) = rest.split_once(' ').unwrap_or((rest, ""));
                    self.status = st.parse().ok();
                    self.enforcement.extend(enforcement_list(list));
                }
                _ => {}
            }
            return Ok(Some((m, fds)));
        }
    }

    fn kill(&mut self) {
        // Killing B (the pid namespace's init) takes the whole job with it. Before B is
        // known, A is killed and B (if just created) follows through its parent-death
        // signal.
        // SAFETY: signalling our own children.
        unsafe {
            libc::kill(self.pid_b.unwrap_or(self.child), libc::SIGKILL);
        }
    }

    /// Reap our child (B, or A which waits for B): it ends only once every process of
    /// the job is gone. Then remove temp dirs and cgroups.
    fn finish(&mut self) -> Option<i32> {
        if self.done {
            return None;
        }
        self.done = true;
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe {
            while libc::waitpid(self.child, &mut st, 0) < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
        }
        self.cleanup.run();
        Some(st)
    }

    /// The job ended by itself and B reported its status, which it does only once every
    /// other process of the job is gone: with nothing to remove, B's own exit (tearing
    /// down the namespaces) is not waited for. It is reaped now if it is over, else on a
    /// later spawn (or by init once we exit).
    fn finish_without_waiting(&mut self) {
        self.done = true;
        let mut later = UNREAPED.lock().unwrap_or_else(|e| e.into_inner());
        later.push(self.child);
        reap_finished(&mut later);
    }

    /// Kill what started, clean up, and turn the recorded failure into an error.
    fn abort(&mut self) -> Error {
        self.kill();
        self.finish();
        Error::Sandbox(
            self.error
                .clone()
                .unwrap_or_else(|| "the job's helper process ended during setup".into()),
        )
    }

    /// Wait for the job to end and return its outcome.
    pub fn wait(mut self) -> Result<JobOutcome> {
        let mut timed_out = false;
        loop {
            match self.next_message(false)? {
                None => {
                    self.finish();
                    break;
                }
                Some((m, _)) if m == "timeout" => {
                    timed_out = true;
                    self.kill();
                    self.deadline = None;
                }
                Some((m, _))
                    if m.starts_with("status") && !timed_out && self.cleanup.is_empty() =>
                {
                    self.finish_without_waiting();
                    break;
                }
                Some(_) => {}
            }
        }
        // Every attempt the job made is recorded before its outcome is.
        if let Some(why) = self.watcher.take().and_then(unanswered::Watcher::stop) {
            unanswered::mark_blind(&mut self.enforcement, &why);
        }
        if let Some(e) = self.error.take() {
            return Err(Error::Sandbox(e));
        }
        let (exit_code, signal) = match self.status {
            Some(st) if libc::WIFEXITED(st) => (libc::WEXITSTATUS(st), None),
            Some(st) if libc::WIFSIGNALED(st) => {
                (128 + libc::WTERMSIG(st), Some(libc::WTERMSIG(st)))
            }
            _ if timed_out => (128 + libc::SIGKILL, Some(libc::SIGKILL)),
            _ => {
                return Err(Error::Sandbox(
                    "the job's init ended without a status".into(),
                ));
            }
        };
        Ok(JobOutcome {
            exit_code,
            signal,
            timed_out,
            backend: "container".into(),
            enforcement: std::mem::take(&mut self.enforcement),
            wall_time_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
            self.finish();
        }
    }
}
