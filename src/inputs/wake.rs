//! Stopping a server thread that waits in `accept`: it polls its listener together with an
//! eventfd that `stop` signals, so a server stops at once instead of at its next poll
//! timeout (a reproduction stops a mirror after every job; a 200 ms poll cost up to that
//! much per job).

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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
        self.wait_events(fd).is_some()
    }

    /// Block until `fd` has an event (its `revents`: readable, or hung up) or the waker was
    /// woken (`None`).
    pub fn wait_events(&self, fd: RawFd) -> Option<libc::c_short> {
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
                return None;
            }
            if pfds[1].revents != 0 {
                return None;
            }
            if pfds[0].revents != 0 {
                return Some(pfds[0].revents);
            }
        }
    }
}

/// The accept side of a thread-per-connection server (the mirror, the egress): a stop flag
/// its connections look at, the waker that ends the accept loop at once, and the count of
/// connections still being served, so that stopping lets them finish.
pub struct Accepting {
    stop: AtomicBool,
    waker: Waker,
    active: Arc<AtomicUsize>,
}

/// What a server does with one accepted connection (on a thread of its own).
pub type ServeConn = Arc<dyn Fn(TcpStream) + Send + Sync>;

impl Accepting {
    pub fn new() -> std::io::Result<Accepting> {
        Ok(Accepting {
            stop: AtomicBool::new(false),
            waker: Waker::new()?,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Whether the server is stopping: a connection ends at its next request.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Accept until stopped, serving each connection with `serve` on a thread named `name`.
    pub fn run(&self, listener: &TcpListener, name: &str, serve: ServeConn) {
        let fd = listener.as_raw_fd();
        while !self.stopping() {
            if !self.waker.wait(fd) {
                break;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    self.active.fetch_add(1, Ordering::SeqCst);
                    let (active, serve) = (self.active.clone(), serve.clone());
                    let spawned = std::thread::Builder::new()
                        .name(name.into())
                        .spawn(move || {
                            serve(stream);
                            active.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        self.active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) => tracing::warn!("{name}: accept: {e}"),
            }
        }
    }

    /// Stop accepting (the thread in [`Accepting::run`], `accept`, returns at once) and let
    /// open connections finish, a few seconds at most.
    pub fn stop(&self, accept: std::thread::JoinHandle<()>) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        let _ = accept.join();
        for _ in 0..100 {
            if self.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
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

    #[test]
    fn accepting_serves_each_connection_and_stop_waits_for_them() {
        use std::io::{Read, Write};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let acc = Arc::new(Accepting::new().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let s2 = served.clone();
        let serve: ServeConn = Arc::new(move |mut c: TcpStream| {
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c.write_all(&b).unwrap();
            s2.fetch_add(1, Ordering::SeqCst);
        });
        let a2 = acc.clone();
        let t = std::thread::spawn(move || a2.run(&l, "test-conn", serve));
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!acc.stopping());
        acc.stop(t);
        assert!(acc.stopping());
        // The open connection was let finish before stop returned.
        assert_eq!(served.load(Ordering::SeqCst), 1);
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
