//! The job's network: a fresh network namespace starts with loopback DOWN; bring it up
//! (SIOCSIFFLAGS) and nothing else exists, so nothing outside is reachable — not even the
//! host's own 127.0.0.1, which lives in another namespace. Listening sockets for
//! `Job::listen` are made here, inside the namespace, and handed to the host.

use std::io;
use std::net::{TcpListener, UdpSocket};

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

/// A listening socket on 127.0.0.1:`port` (every local address with `any`) in the current
/// network namespace.
pub(crate) fn listen(port: u16, any: bool) -> io::Result<TcpListener> {
    TcpListener::bind((if any { "0.0.0.0" } else { "127.0.0.1" }, port))
}

/// A UDP socket bound to 127.0.0.1:`port` in the current network namespace. Never every
/// address, even with the catch-all route: a reply from a socket on 0.0.0.0 leaves from
/// 127.0.0.1, which a client that asked another address drops (and waits); bound to
/// 127.0.0.1 alone, a datagram to another address is refused by the kernel at once.
pub(crate) fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    UdpSocket::bind(("127.0.0.1", port))
}

/// `ip route add local 0.0.0.0/0 dev lo table local`: every IPv4 address becomes local to
/// the current network namespace (which has nothing but `lo`), so a connect to any address
/// reaches a listener on 0.0.0.0 or is refused at once (`Job::loopback_catch_all`).
pub(crate) fn route_all_ipv4_to_loopback() -> io::Result<()> {
    #[repr(C)]
    struct Req {
        nh: libc::nlmsghdr,
        // struct rtmsg
        family: u8,
        dst_len: u8,
        src_len: u8,
        tos: u8,
        table: u8,
        protocol: u8,
        scope: u8,
        kind: u8,
        flags: u32,
        // RTA_OIF
        attr_len: u16,
        attr_type: u16,
        oif: u32,
    }
    // SAFETY: plain netlink calls on a fully initialised request and a sized buffer.
    unsafe {
        let oif = libc::if_nametoindex(c"lo".as_ptr());
        if oif == 0 {
            return Err(io::Error::last_os_error());
        }
        let s = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let req = Req {
            nh: libc::nlmsghdr {
                nlmsg_len: std::mem::size_of::<Req>() as u32,
                nlmsg_type: libc::RTM_NEWROUTE,
                nlmsg_flags: (libc::NLM_F_REQUEST
                    | libc::NLM_F_ACK
                    | libc::NLM_F_CREATE
                    | libc::NLM_F_EXCL) as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            family: libc::AF_INET as u8,
            dst_len: 0,
            src_len: 0,
            tos: 0,
            table: libc::RT_TABLE_LOCAL,
            protocol: libc::RTPROT_BOOT,
            scope: libc::RT_SCOPE_HOST,
            kind: libc::RTN_LOCAL,
            flags: 0,
            attr_len: 8,
            attr_type: libc::RTA_OIF,
            oif,
        };
        let n = libc::send(
            s,
            &req as *const Req as *const libc::c_void,
            std::mem::size_of::<Req>(),
            0,
        );
        if n < 0 {
            let e = io::Error::last_os_error();
            libc::close(s);
            return Err(e);
        }
        let mut buf = [0u8; 512];
        let n = libc::recv(s, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
        let e = io::Error::last_os_error();
        libc::close(s);
        if n < 0 {
            return Err(e);
        }
        let hdr = std::mem::size_of::<libc::nlmsghdr>();
        if (n as usize) < hdr + 4 {
            return Err(io::Error::other("short netlink answer"));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let code = i32::from_ne_bytes([buf[hdr], buf[hdr + 1], buf[hdr + 2], buf[hdr + 3]]);
        if ty == libc::NLMSG_ERROR as u16 && code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}
