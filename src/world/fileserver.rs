//! Test support: a static HTTP/1.1 server on 127.0.0.1 (a free port) serving one directory
//! tree, or one body at every path, for the inputs tests (`tests/inputs_*.rs`) and anything
//! else that needs an upstream to download from. Unlike the world's own server (`serve.rs`,
//! what `reprobox world serve` runs, which none of this changes) it
//! - honours `Range: bytes=N-` (206 with `Content-Range`; 416 past the end);
//! - logs every request (method, path, `Range` header), in the order they arrived;
//! - can inject a fault, [`Faults::cut_responses`]: the first N GET responses (200 or 206)
//!   announce the full length but the connection is closed after [`Faults::cut_after`] bytes
//!   of the body, as a dropped connection cuts a download.
//!
//! Every file under the directory is served (hidden ones too), symlinks followed as long as
//! they stay inside it; anything else is 404; methods other than GET and HEAD are 405. One
//! thread per connection, `Connection: close`. Dropping the server (or [`FileServer::stop`])
//! closes its listener: later connections are refused.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{IoContext, Result};

/// What the server serves.
#[derive(Debug, Clone)]
pub enum Content {
    /// The files under this directory, at their relative paths.
    Dir(PathBuf),
    /// These bytes, at every path.
    Body(Arc<Vec<u8>>),
}

/// Faults to inject (test support); the default injects none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// How many GET responses with a body (200 or 206; the first ones, counted over every
    /// path) are cut.
    pub cut_responses: usize,
    /// After how many bytes of its body a cut response closes the connection.
    pub cut_after: usize,
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target, as sent (query included).
    pub path: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct FileServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    content: Content,
    faults: Faults,
    cut_so_far: AtomicUsize,
    log: Arc<Mutex<Vec<Request>>>,
}

impl FileServer {
    /// Serves `dir` without faults.
    pub fn dir(dir: &Path) -> Result<FileServer> {
        let dir = std::fs::canonicalize(dir).ctx("resolve", dir)?;
        FileServer::start(Content::Dir(dir), Faults::default())
    }

    /// Serves `body` at every path, with `faults`.
    pub fn body(body: Vec<u8>, faults: Faults) -> Result<FileServer> {
        FileServer::start(Content::Body(Arc::new(body)), faults)
    }

    /// Starts serving on 127.0.0.1 on a free port.
    pub fn start(content: Content, faults: Faults) -> Result<FileServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).ctx("listen", "127.0.0.1:0")?;
        let addr = listener.local_addr().ctx("listen", "127.0.0.1:0")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            content,
            faults,
            cut_so_far: AtomicUsize::new(0),
            log: log.clone(),
        });
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = handle(c, &shared);
                    });
                }
            }
        });
        Ok(FileServer {
            addr,
            log,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `Range` header of every request so far, in arrival order.
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.requests().into_iter().map(|r| r.range).collect()
    }

    /// Stops the server (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and closes the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The file under `root` a request target names, if it stays inside `root`.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = super::serve::percent_decode(path)?;
    let canon = std::fs::canonicalize(root.join(path.trim_start_matches('/'))).ok()?;
    (canon.starts_with(root) && canon.is_file()).then_some(canon)
}

fn handle(c: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (method, target) = (
        parts.first().copied().unwrap_or(""),
        parts.get(1).copied().unwrap_or(""),
    );
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Request {
            method: method.to_string(),
            path: target.to_string(),
            range: range.clone(),
        });
    let mut w = c;
    if !(method == "GET" || method == "HEAD") {
        return w.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let body: Arc<Vec<u8>> = match &shared.content {
        Content::Body(b) => b.clone(),
        Content::Dir(root) => match resolve(root, target) {
            Some(p) => Arc::new(std::fs::read(p)?),
            None => {
                return w.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        },
    };
    let len = body.len();
    let start: Option<usize> = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok());
    let (head, rest) = match start {
        Some(s) if s >= len => {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return w.write_all(h.as_bytes());
        }
        Some(s) if s > 0 => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                len - s,
                len - 1
            ),
            &body[s..],
        ),
        _ => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            ),
            &body[..],
        ),
    };
    w.write_all(head.as_bytes())?;
    if method == "GET" {
        let cut = shared.faults.cut_responses > 0
            && shared.cut_so_far.fetch_add(1, Ordering::SeqCst) < shared.faults.cut_responses;
        if cut {
            w.write_all(&rest[..shared.faults.cut_after.min(rest.len())])?;
        } else {
            w.write_all(rest)?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn raw(addr: &str, req: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_files_inside_the_root_ranges_and_logs_requests() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/a")).unwrap();
        std::fs::write(t.path().join("root/a/f"), "0123456789").unwrap();
        std::fs::write(t.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("root/a/l")).unwrap();
        std::os::unix::fs::symlink("../../secret", t.path().join("root/a/out")).unwrap();
        let srv = FileServer::dir(&t.path().join("root")).unwrap();
        let a = srv.url().trim_start_matches("http://").to_string();
        let ok = raw(&a, "GET /a/f HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\n0123456789"));
        assert!(raw(&a, "GET /a/l?x=1 HTTP/1.1\r\n\r\n").ends_with("0123456789"));
        let part = raw(&a, "GET /a/f HTTP/1.1\r\nrange: bytes=7-\r\n\r\n");
        assert!(part.starts_with("HTTP/1.1 206 "), "{part}");
        assert!(part.contains("Content-Range: bytes 7-9/10\r\n"), "{part}");
        assert!(part.ends_with("\r\n\r\n789"), "{part}");
        assert!(
            raw(&a, "GET /a/f HTTP/1.1\r\nRange: bytes=10-\r\n\r\n").starts_with("HTTP/1.1 416")
        );
        let head = raw(&a, "HEAD /a/f HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 10\r\n") && head.ends_with("\r\n\r\n"));
        for bad in ["/a/out", "/../secret", "/%2e%2e/secret", "/a", "/nope"] {
            let r = raw(&a, &format!("GET {bad} HTTP/1.1\r\n\r\n"));
            assert!(r.starts_with("HTTP/1.1 404"), "{bad}: {r}");
        }
        assert!(raw(&a, "PUT /a/f HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let log = srv.requests();
        assert_eq!(log.len(), 11);
        assert_eq!(
            log[2],
            Request {
                method: "GET".into(),
                path: "/a/f".into(),
                range: Some("bytes=7-".into())
            }
        );
        srv.stop();
        assert!(
            TcpStream::connect(&a).is_err(),
            "stopped: connections refused"
        );
    }

    #[test]
    fn cut_responses_close_the_connection_early_then_serve_whole() {
        let srv = FileServer::body(
            b"abcdefghij".to_vec(),
            Faults {
                cut_responses: 2,
                cut_after: 3,
            },
        )
        .unwrap();
        let a = srv.url().trim_start_matches("http://").to_string();
        let first = raw(&a, "GET /x HTTP/1.1\r\n\r\n");
        assert!(first.contains("Content-Length: 10\r\n") && first.ends_with("\r\n\r\nabc"));
        assert!(raw(&a, "GET /y HTTP/1.1\r\nRange: bytes=3-\r\n\r\n").ends_with("\r\n\r\ndef"));
        assert!(raw(&a, "GET /z HTTP/1.1\r\nRange: bytes=6-\r\n\r\n").ends_with("\r\n\r\nghij"));
        assert_eq!(
            srv.ranges(),
            vec![None, Some("bytes=3-".into()), Some("bytes=6-".into())]
        );
    }
}
