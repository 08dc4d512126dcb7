//! The job's network: a fresh network namespace starts with loopback DOWN; bring it up
//! (SIOCSIFFLAGS) and nothing else exists, so nothing outside is reachable — not even the
//! host's own 127.0.0.1, which lives in another namespace. Listening sockets for
//! `Job::listen` are made here, inside the namespace, and handed to the host.

use std::io;
use std::net::TcpListener;

/// Bring `lo` up in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
        if r < 0 {
            let e = io::Error::last_os_error();
            libc::close(s);
            return Err(e);
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        let e = io::Error::last_os_error();
        libc::close(s);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// A listening socket on 127.0.0.1:`port` in the current network namespace.
pub(crate) fn listen(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
}
