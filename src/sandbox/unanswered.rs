//! The job's connects that nothing answers (`Job::watch_unanswered`).
//!
//! A job's network namespace has loopback alone (with the egress, every IPv4 address routed
//! to it): a TCP connect to a port no socket of the job listens on, or a datagram to a port
//! nothing is bound to, is refused by the kernel at once, and nobody sees it. The egress's
//! listeners record what reaches them; this records the rest.
//!
//! C (the job) loads a seccomp filter that stops `connect(2)`, and `sendto(2)` with an
//! address, for reprobox to look at (user notification; [`install`]). [`Watcher`], a thread
//! in reprobox, reads the address from the job's memory, the socket's protocol from a copy
//! of its descriptor (`pidfd_getfd`), and the job's own sockets from `/proc/PID/net`, then
//! lets the call go on unchanged (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). The kernel still
//! decides every call: the watch only looks, so nothing a job does to it (racing the
//! address it passed, closing the socket) reaches anything; at worst an attempt goes
//! unrecorded.
//!
//! Why seccomp: the alternatives record by listening on every port (an nftables redirect
//! in the job's namespace, which needs nf_tables in the kernel and a netlink client, or a
//! BPF `sk_lookup` program, which needs CAP_BPF on the host); a seccomp filter needs
//! neither and works for an unprivileged user too, and the job sees the same immediate
//! refusal it would without it.
//!
//! Not watched: `sendmsg(2)`/`sendmmsg(2)` with an address (a filter cannot tell an
//! address from none there without stopping every call, and they carry most of a
//! program's traffic), and a job that loads its own user-notification filter is refused
//! one (the kernel allows one listener per filter chain; docs/egress.md).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use libseccomp::{
    ScmpAction, ScmpFilterContext, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall,
    scmp_cmp,
};

use crate::inputs::wake::Waker;
use crate::job::{Enforcement, Unanswered, UnansweredSink};

/// In C, after Landlock and before exec: load the filter and return its listener (close
/// it once sent: the job must not answer its own notifications; the kernel made it
/// close-on-exec as well).
pub(crate) fn install() -> Result<OwnedFd, String> {
    let err = |what: &str, e: libseccomp::error::SeccompError| {
        format!("seccomp (watching connects that nothing answers): {what}: {e}")
    };
    let mut f = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| err("new filter", e))?;
    // Another architecture's calls (a 32-bit program) go through untouched rather than
    // killed (libseccomp's default for them).
    f.set_act_badarch(ScmpAction::Allow)
        .map_err(|e| err("other architectures", e))?;
    let connect = ScmpSyscall::from_name("connect").map_err(|e| err("connect", e))?;
    let sendto = ScmpSyscall::from_name("sendto").map_err(|e| err("sendto", e))?;
    f.add_rule(ScmpAction::Notify, connect)
        .map_err(|e| err("rule for connect", e))?;
    // sendto's fifth argument is its address: a send on a connected socket passes none.
    f.add_rule_conditional(ScmpAction::Notify, sendto, &[scmp_cmp!($arg4 != 0)])
        .map_err(|e| err("rule for sendto", e))?;
    f.load().map_err(|e| err("load", e))?;
    let fd = f.get_notify_fd().map_err(|e| err("listener", e))?;
    // SAFETY: the listener the kernel just gave this process; owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The thread that answers the job's filter, until the job is gone or [`Watcher::stop`].
pub(crate) struct Watcher {
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why reprobox could not look into the job (the first such failure), if it could not.
    blind: Arc<Mutex<Option<String>>>,
}

impl Watcher {
    /// Answer `listener`'s notifications, handing what nothing answers to `sink`.
    /// `catch_all`: every IPv4 address is the job's own (`Job::loopback_catch_all`).
    /// `init`: a process in the job's own network namespace (the job's init): only calls
    /// made there are judged; a nested container's own network (its traffic leaves through
    /// a forwarder in the job's, which is judged there) is not.
    /// `NotFound` when the job's init is already gone (and with it every process under the
    /// filter).
    pub(crate) fn start(
        listener: OwnedFd,
        catch_all: bool,
        init: i32,
        sink: Option<UnansweredSink>,
    ) -> std::io::Result<Watcher> {
        let net = std::fs::read_link(format!("/proc/{init}/ns/net"))?;
        let connect = ScmpSyscall::from_name("connect").map_err(std::io::Error::other)?;
        let waker = Arc::new(Waker::new()?);
        let blind = Arc::new(Mutex::new(None));
        let w = Watching {
            fd: listener,
            catch_all,
            net,
            connect,
            sink,
            blind: blind.clone(),
        };
        let wk = waker.clone();
        let thread = std::thread::Builder::new()
            .name("unanswered".into())
            .spawn(move || w.serve(&wk))?;
        Ok(Watcher {
            waker,
            thread: Some(thread),
            blind,
        })
    }

    /// Answer what is pending, then stop. Called once the job has ended: every attempt it
    /// made has been handed to the sink when this returns. `Some(why)` when reprobox could
    /// not look into the job (ptrace restrictions: `kernel.yama.ptrace_scope`), so attempts
    /// may have gone unrecorded.
    pub(crate) fn stop(mut self) -> Option<String> {
        self.halt();
        self.blind.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn halt(&mut self) {
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The watcher thread's side.
struct Watching {
    fd: OwnedFd,
    catch_all: bool,
    /// The job's network namespace (`net:[INODE]`).
    net: std::path::PathBuf,
    /// `connect(2)` (the filter's other call is `sendto(2)`), looked up once.
    connect: ScmpSyscall,
    sink: Option<UnansweredSink>,
    blind: Arc<Mutex<Option<String>>>,
}

impl Watching {
    fn serve(&self, waker: &Waker) {
        let fd = self.fd.as_raw_fd();
        loop {
            match waker.wait_events(fd) {
                Some(ev) if ev & libc::POLLIN != 0 => self.answer(),
                // Hung up: every process of the job under the filter is gone.
                Some(_) => return,
                None => break,
            }
        }
        // Stopped: what is pending still gets its answer (and its record).
        while readable_now(fd) {
            self.answer();
        }
    }

    /// Receive one notification, look at it, let the call go on, then record.
    fn answer(&self) {
        let fd = self.fd.as_raw_fd();
        // Fails when the caller died meanwhile (nothing to answer).
        let Ok(req) = ScmpNotifReq::receive(fd) else {
            return;
        };
        // A failure to look (an unreadable address, a panic) never keeps the job waiting.
        // (`look` only reads: a panic in it leaves nothing of `self` half-changed.)
        let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.look(&req)))
            .unwrap_or(Ok(None));
        let _ = ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty()).respond(fd);
        match seen {
            Ok(Some(u)) => {
                tracing::info!(
                    "job: {} to {} by {}: nothing answers",
                    u.proto,
                    u.addr,
                    u.program
                );
                if let Some(sink) = &self.sink {
                    sink(u);
                }
            }
            Ok(None) => {}
            Err(why) => {
                let mut blind = self.blind.lock().unwrap_or_else(|e| e.into_inner());
                if blind.is_none() {
                    tracing::warn!("the watch of unanswered connects is blind: {why}");
                    *blind = Some(why);
                }
            }
        }
    }

    /// The attempt `req` stands for, when nothing in the job's network answers it. `Err` when
    /// reprobox may not read the job's memory or descriptors.
    fn look(&self, req: &ScmpNotifReq) -> Result<Option<Unanswered>, String> {
        let (fd, catch_all, net) = (self.fd.as_raw_fd(), self.catch_all, self.net.as_path());
        let args = req.data.args;
        let (sock, addr_ptr, len) = if req.data.syscall == self.connect {
            (args[0], args[1], args[2])
        } else {
            (args[0], args[4], args[5])
        };
        let pid = req.pid;
        // Judged in the job's own network alone (see `Watcher::start`).
        if std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_deref()
            != Some(net)
        {
            return Ok(None);
        }
        let mut buf = [0u8; 28];
        let n = (len as usize).min(buf.len());
        let path = format!("/proc/{pid}/mem");
        let read =
            std::fs::File::open(&path).and_then(|m| m.read_exact_at(&mut buf[..n], addr_ptr));
        match read {
            Err(e) if denied(&e) => return Err(format!("read {path}: {e}")),
            Err(_) => return Ok(None),
            Ok(()) => {}
        }
        let Some(dest) = parse_sockaddr(&buf[..n]) else {
            return Ok(None);
        };
        let Some(proto) = socket_protocol(pid, sock as RawFd)? else {
            return Ok(None);
        };
        let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        // The pid still names the task that made the call (not one that reused its number).
        if libseccomp::notify_id_valid(fd, req.id).is_err() {
            return Ok(None);
        }
        let tcp = proto == libc::IPPROTO_TCP;
        let table = if tcp { "tcp" } else { "udp" };
        let mut sockets = Vec::new();
        for (file, v6) in [(table.to_string(), false), (format!("{table}6"), true)] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                sockets.extend(parse_proc_net(&text, v6));
            }
        }
        Ok(
            (!answered(dest, tcp, catch_all, &sockets)).then_some(Unanswered {
                proto: if tcp { "tcp" } else { "udp" },
                addr: dest,
                program,
            }),
        )
    }
}

fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

/// Mark the `unanswered-connects` item of a job's enforcement list not enforced, with why.
pub(crate) fn mark_blind(enforcement: &mut [Enforcement], why: &str) {
    for e in enforcement
        .iter_mut()
        .filter(|e| e.feature == crate::job::UNANSWERED_FEATURE)
    {
        e.enforced = false;
        e.detail = format!("not watched: reprobox could not look into the job ({why})");
    }
}

/// A failure that means reprobox may not look into the job at all (not that the process
/// just ended): permission denied.
fn denied(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
}

/// TCP or UDP (`IPPROTO_*`) of the job's descriptor `fd` in process `pid`; `None` for any
/// other socket (or a process gone); `Err` when reprobox may not copy the descriptor.
fn socket_protocol(pid: u32, fd: RawFd) -> Result<Option<i32>, String> {
    // The descriptor table is the process's: a pidfd names a thread group's leader.
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Ok(None);
    };
    let Some(tgid) = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|t| t.trim().parse::<libc::pid_t>().ok())
    else {
        return Ok(None);
    };
    // SAFETY: pidfd_open and pidfd_getfd return new descriptors owned here, or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if pidfd < 0 {
        return Ok(None);
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        let e = std::io::Error::last_os_error();
        return if denied(&e) {
            Err(format!("copy descriptor {fd} of process {tgid}: {e}"))
        } else {
            Ok(None)
        };
    }
    let copy = unsafe { OwnedFd::from_raw_fd(copy as RawFd) };
    let mut proto: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int of the given length.
    let r = unsafe {
        libc::getsockopt(
            copy.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    Ok((r == 0 && (proto == libc::IPPROTO_TCP || proto == libc::IPPROTO_UDP)).then_some(proto))
}

/// An IPv4 or IPv6 `struct sockaddr` as the job passed it; `None` for any other family
/// (a Unix socket) or a short one.
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// The sockets of a `/proc/PID/net/{tcp,udp}[6]` table: local address and state (TCP's
/// `0A` is LISTEN; a bound UDP socket is `07`).
fn parse_proc_net(text: &str, v6: bool) -> Vec<(SocketAddr, u8)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = u8::from_str_radix(f.nth(1)?, 16).ok()?;
            let (a, p) = local.split_once(':')?;
            let port = u16::from_str_radix(p, 16).ok()?;
            // The kernel prints each 32-bit word of the (network order) address as a
            // native integer: its native bytes are the address's.
            let words: Vec<u32> = (0..a.len() / 8)
                .map(|i| u32::from_str_radix(&a[i * 8..i * 8 + 8], 16))
                .collect::<Result<_, _>>()
                .ok()?;
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let ip = match (v6, bytes.len()) {
                (false, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
                (true, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
                _ => return None,
            };
            Some((SocketAddr::new(ip, port), state))
        })
        .collect()
}

const TCP_LISTEN: u8 = 0x0A;

/// Whether something in the job's network takes a TCP connect (`tcp`) or a UDP datagram to
/// `dest`: the address is the job's own (loopback; any IPv4 address with `catch_all`), and
/// a socket of the job's namespace listens (TCP) or is bound (UDP) on that port, on that
/// address or on every address.
fn answered(dest: SocketAddr, tcp: bool, catch_all: bool, sockets: &[(SocketAddr, u8)]) -> bool {
    let ip = match dest.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
        a => a,
    };
    let local = match ip {
        IpAddr::V4(a) => catch_all || a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    };
    local
        && sockets.iter().any(|(s, state)| {
            (!tcp || *state == TCP_LISTEN)
                && s.port() == dest.port()
                && match (s.ip(), ip) {
                    (IpAddr::V4(l), IpAddr::V4(_)) => l.is_unspecified() || s.ip() == ip,
                    // A socket on [::] takes IPv4 too (unless IPV6_V6ONLY, which the table
                    // does not show).
                    (IpAddr::V6(l), _) if l.is_unspecified() => true,
                    (IpAddr::V6(_), IpAddr::V6(_)) => s.ip() == ip,
                    _ => false,
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str) -> SocketAddr {
        a.parse().unwrap()
    }

    #[test]
    fn sockaddrs_of_both_families_and_nothing_else() {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&25u16.to_be_bytes());
        b[4..8].copy_from_slice(&[1, 1, 1, 1]);
        assert_eq!(parse_sockaddr(&b), Some(v4("1.1.1.1:25")));
        assert_eq!(parse_sockaddr(&b[..6]), None, "short");
        let mut b6 = [0u8; 28];
        b6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b6[2..4].copy_from_slice(&443u16.to_be_bytes());
        b6[8..24].copy_from_slice(&"2606:4700::1111".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            parse_sockaddr(&b6),
            Some("[2606:4700::1111]:443".parse().unwrap())
        );
        let mut unix = [0u8; 16];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_sockaddr(&unix), None);
    }

    #[test]
    fn proc_net_tables_read_as_the_kernel_writes_them() {
        // Lines as /proc/net/tcp and tcp6 print them on a little-endian machine.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:8AE2 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        let got = parse_proc_net(tcp, false);
        let want = vec![
            (v4("0.0.0.0:443"), 0x0A),
            (v4("127.0.0.1:53"), 0x0A),
            (v4("127.0.0.1:35554"), 0x01),
        ];
        if cfg!(target_endian = "little") {
            assert_eq!(got, want);
        }
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_net(tcp6, true),
                vec![("[::1]:8080".parse().unwrap(), 0x0A)]
            );
        }
    }

    #[test]
    fn a_blind_watch_is_not_enforced_in_the_list() {
        let item = |f: &str| Enforcement {
            feature: f.into(),
            enforced: true,
            detail: "x".into(),
        };
        let mut list = vec![item("landlock"), item("unanswered-connects")];
        mark_blind(&mut list, "read /proc/9/mem: Permission denied");
        assert!(list[0].enforced);
        assert!(!list[1].enforced);
        assert!(list[1].detail.contains("/proc/9/mem"), "{}", list[1].detail);
    }

    #[test]
    fn answered_only_where_a_socket_of_the_job_takes_it() {
        let sockets = [
            (v4("0.0.0.0:443"), TCP_LISTEN),
            (v4("127.0.0.1:7878"), TCP_LISTEN),
            (v4("127.0.0.1:40000"), 0x01),
            (v4("127.0.0.1:53"), 0x07),
            ("[::]:9000".parse().unwrap(), TCP_LISTEN),
        ];
        let tcp = |d: &str, all: bool| answered(d.parse().unwrap(), true, all, &sockets);
        let udp = |d: &str, all: bool| answered(d.parse().unwrap(), false, all, &sockets);
        // A listener on every address takes any address the catch-all makes local.
        assert!(tcp("1.1.1.1:443", true));
        assert!(
            !tcp("1.1.1.1:443", false),
            "not local without the catch-all"
        );
        assert!(tcp("127.0.0.1:443", false));
        // Another port, or a listener on 127.0.0.1 alone asked at another address.
        assert!(!tcp("1.1.1.1:25", true));
        assert!(!tcp("1.1.1.1:7878", true));
        assert!(tcp("127.0.0.1:7878", true));
        // An established socket's port is not a listener.
        assert!(!tcp("127.0.0.1:40000", true));
        // [::] takes IPv4 (mapped or not) and IPv6 loopback; another IPv6 address is
        // unreachable (no route), whatever listens.
        assert!(tcp("127.0.0.1:9000", true));
        assert!(tcp("[::ffff:127.0.0.1]:9000", true));
        assert!(tcp("[::1]:9000", false));
        assert!(!tcp("[2606:4700::1111]:9000", true));
        assert!(!tcp("[2606:4700::1111]:443", true));
        // UDP: a bound socket, in any state, on that address.
        assert!(udp("127.0.0.1:53", true));
        assert!(!udp("8.8.8.8:53", true), "bound to 127.0.0.1 alone");
        assert!(!udp("127.0.0.1:5353", true));
    }
}
