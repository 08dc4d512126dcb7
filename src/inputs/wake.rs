//! Stopping a server thread that waits in `accept`: it polls its listener together with an
//! eventfd that `stop` signals, so a server stops at once instead of at its next poll
//! timeout (a reproduction stops a mirror after every job; a 200 ms poll cost up to that
//! much per job).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd to wake the thread waiting in [`Waker::wait`].
pub struct Waker {
    efd: OwnedFd,
}

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd(2) with valid flags; the returned descriptor is owned here.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Waker {
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wake the waiter, now and for every later [`Waker::wait`].
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our own eventfd.
        unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Block until `fd` is readable (`true`) or the waker was woken (`false`).
    pub fn wait(&self, fd: RawFd) -> bool {
        loop {
            let mut pfds = [
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.efd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            if pfds[1].revents != 0 {
                return false;
            }
            if pfds[0].revents != 0 {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_returns_on_a_connection_and_at_once_on_wake() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let w = std::sync::Arc::new(Waker::new().unwrap());
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(w.wait(l.as_raw_fd()));
        let _ = l.accept().unwrap();
        let w2 = w.clone();
        let fd = l.as_raw_fd();
        let t = std::thread::spawn(move || w2.wait(fd));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let started = std::time::Instant::now();
        w.wake();
        assert!(!t.join().unwrap());
        // Woken, not timed out: a poll timeout would be the only other way back.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(!w.wait(fd), "a woken waker stays woken");
    }
}
