//! The mirror the sandbox talks to: a small HTTP/1.1 server serving the archive layout from
//! the store, on a listener the caller already bound (possibly inside the job's own network
//! namespace, so a `--network none` job reaches it on its loopback).
//!
//! - Online: a miss is fetched from upstream (`base URL + request path`), checked against the
//!   day's repository database `%SHA256SUM%` where one lists the file, stored, served.
//! - Offline: a miss is a 404; nothing leaves the machine.
//! - Every request is recorded in the [`InputsLock`] that [`MirrorHandle::stop`] returns.
//!
//! Serving is one thread per connection, keep-alive, and `sendfile(2)` from the blob, so a hot
//! set costs no copies through user space. Only GET and HEAD are served; a single
//! `Range: bytes=A-[B]` is honoured (pacman/curl resume with it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::{self, RepoDb};
use crate::inputs::fetch::{Fetcher, Outcome};
use crate::inputs::lock::{InputsLock, Status};
use crate::inputs::store::{Blob, Store};
use crate::inputs::wake::Accepting;

/// The mirror's port on a job's own loopback. Fixed: the job's network namespace holds
/// nothing else, and the commands a plan renders name it (`plan::MIRROR_URL`); the one
/// definition every other use of 7878 derives from.
pub const MIRROR_PORT: u16 = 7878;

/// What the mirror serves and from where.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub store: Store,
    /// The archive root misses are fetched from (`https://archive.archlinux.org`, or a local
    /// tree).
    pub upstream: String,
    /// The archive root the bytes are named under in the store and the lock, when
    /// `upstream` is a location standing for another (`https://archive.archlinux.org` for a
    /// loopback mirror of it), so a store filled through one location replays through
    /// another; `None`: `upstream` itself.
    pub canonical: Option<String>,
    pub offline: bool,
}

/// The running mirror.
pub struct MirrorHandle {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    rules: ArchiveRules,
    accepting: Accepting,
    lock: Mutex<InputsLock>,
}

/// The archive mirror's rules for answering a request path, shared by the mirror and the
/// egress's `archive` policy: a package under `repos/<day>/<repo>/os/<arch>/` is checked
/// against that day's database `%SHA256SUM%` (one under `packages/` against any database
/// loaded), and immutable paths (day databases included) are pinned when first fetched:
/// later answers come from the store without asking upstream.
pub struct ArchiveRules {
    fetcher: Fetcher,
    /// Where misses are fetched from (`upstream + path`).
    upstream: String,
    /// The prefix the bytes are named under (`canonical + path`: the store's origin index,
    /// the caches): `upstream` for the mirror, `https://HOST` for the egress, so that a
    /// store filled from one location replays against another.
    canonical: String,
    /// URL → blob for immutable paths already resolved (the hot path skips the index).
    cache: Mutex<HashMap<String, Blob>>,
    /// Database URL → parsed database, to check packages against `%SHA256SUM%`.
    dbs: Mutex<HashMap<String, Arc<RepoDb>>>,
    /// A day answered from a made set instead of the archive (`--packages-from published`).
    overlay: Option<Arc<ArchiveOverlay>>,
}

/// One archive day answered from a package set made elsewhere (`reproduce --packages-from
/// published`, `pipeline::published`): its repository databases are made from that set, its
/// package files are the archive's `packages/` files already fetched and checked, and every
/// other path of that day is absent (no database signature, no `.files`), so nothing of the
/// real day's contents can reach the build.
#[derive(Debug, Default)]
pub struct ArchiveOverlay {
    /// `/repos/YYYY/MM/DD/`: the day answered.
    pub prefix: String,
    /// Request path (decoded) → what answers it.
    pub files: HashMap<String, OverlayFile>,
}

/// What answers one path of an [`ArchiveOverlay`].
#[derive(Debug, Clone)]
pub enum OverlayFile {
    /// Bytes already in the store (a made database, a package fetched and checked).
    Blob(Blob),
    /// Another archive path, fetched (pinned) on demand: a package's `.sig` in `packages/`.
    Path(String),
}

pub struct Mirror;

impl Mirror {
    /// Serve on `listener` until [`MirrorHandle::stop`].
    pub fn serve(listener: TcpListener, config: MirrorConfig) -> Result<MirrorHandle> {
        let addr = listener
            .local_addr()
            .ctx("query listener", "mirror listener")?;
        listener
            .set_nonblocking(false)
            .ctx("configure listener", "mirror listener")?;
        // Many connections fetch at once: log misses as lines, no progress bars.
        let fetcher = Fetcher::new(config.store, config.offline).with_progress(false);
        let canonical = config.canonical.as_deref().unwrap_or(&config.upstream);
        let rules = ArchiveRules::new(fetcher, &config.upstream, canonical)?;
        let state = Arc::new(State {
            rules,
            accepting: Accepting::new()
                .map_err(|e| Error::io("create an eventfd for", "the mirror", e))?,
            lock: Mutex::new(InputsLock::default()),
        });
        let st = state.clone();
        let accept = std::thread::Builder::new()
            .name("mirror-accept".into())
            .spawn(move || accept_loop(listener, st))
            .map_err(|e| Error::io("spawn thread", "mirror", e))?;
        Ok(MirrorHandle {
            addr,
            state,
            accept,
        })
    }
}

impl MirrorHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The lock so far (the mirror keeps running).
    pub fn snapshot(&self) -> InputsLock {
        self.state.lock.lock().expect("not poisoned").clone()
    }

    /// Stop accepting, let open connections finish (up to a few seconds), and return the
    /// record of every request.
    pub fn stop(self) -> InputsLock {
        self.state.accepting.stop(self.accept);
        self.state.lock.lock().expect("not poisoned").clone()
    }
}

fn accept_loop(listener: TcpListener, st: Arc<State>) {
    let st2 = st.clone();
    st.accepting.run(
        &listener,
        "mirror-conn",
        Arc::new(move |stream| {
            let _ = serve_conn(stream, &st2);
        }),
    );
}

struct Request {
    head: bool,
    path: String,
    range: Option<String>,
    close: bool,
}

/// Read one request head; `Ok(None)` at a clean end of the connection or on stop.
fn read_request(
    r: &mut BufReader<TcpStream>,
    st: &State,
) -> std::io::Result<Option<std::result::Result<Request, u16>>> {
    let mut lines: Vec<String> = vec![];
    let mut buf = Vec::new();
    let mut total = 0usize;
    loop {
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if st.accepting.stopping() {
                    return Ok(None);
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if !buf.ends_with(b"\n") {
            continue; // partial line, keep reading
        }
        total += buf.len();
        if total > 32 * 1024 {
            return Ok(Some(Err(431)));
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        buf.clear();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err(400)));
    };
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Ok(Some(Err(405))),
    };
    let mut close = version == "HTTP/1.0";
    let mut range = None;
    for h in &lines[1..] {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("connection") {
            if v.eq_ignore_ascii_case("close") {
                close = true;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if k.eq_ignore_ascii_case("range") {
            range = Some(v.to_string());
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    Ok(Some(Ok(Request {
        head,
        path,
        range,
        close,
    })))
}

fn serve_conn(stream: TcpStream, st: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    loop {
        let req = match read_request(&mut reader, st)? {
            None => return Ok(()),
            Some(Err(code)) => {
                respond_error(&mut out, code, false, "bad request")?;
                return Ok(());
            }
            Some(Ok(r)) => r,
        };
        if !path_is_safe(&req.path) {
            respond_error(
                &mut out,
                400,
                req.head,
                "path must be absolute, without . or .. segments",
            )?;
            if req.close {
                return Ok(());
            }
            continue;
        }
        let url = format!("{}{}", st.rules.canonical, req.path);
        match st.rules.resolve(&req.path) {
            Ok(Some((blob, outcome))) => {
                let status = if outcome == Outcome::Hit {
                    Status::Hit
                } else {
                    Status::Fetched
                };
                if status == Status::Fetched {
                    tracing::info!(
                        "mirror: fetched {url} ({} bytes, sha256 {})",
                        blob.size,
                        blob.sha256
                    );
                }
                st.record(status, &url, Some((&blob.sha256, blob.size)));
                send_blob(&mut out, &blob, &req)?;
            }
            Ok(None) => {
                st.record(Status::Miss, &url, None);
                respond_error(&mut out, 404, req.head, "not in the store")?;
            }
            Err(e) => {
                tracing::warn!("mirror: {e}");
                st.record(Status::Miss, &url, None);
                respond_error(&mut out, 502, req.head, &e.to_string())?;
            }
        }
        if req.close {
            return Ok(());
        }
    }
}

fn path_is_safe(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// Paths whose bytes never change once published.
fn is_immutable(path: &str) -> bool {
    !["/repos/last/", "/repos/week/", "/repos/month/"]
        .iter()
        .any(|p| path.starts_with(p))
}

impl State {
    fn record(&self, status: Status, url: &str, blob: Option<(&str, u64)>) {
        self.lock
            .lock()
            .expect("not poisoned")
            .record(status, url, blob);
    }
}

impl ArchiveRules {
    /// The rules over `fetcher`, fetching misses from `upstream` and naming bytes under
    /// `canonical` (both archive roots: `file://`, `http://` or `https://`).
    pub fn new(fetcher: Fetcher, upstream: &str, canonical: &str) -> Result<ArchiveRules> {
        let (upstream, canonical) = (
            archive::parse_base(upstream)?,
            archive::parse_base(canonical)?,
        );
        Ok(ArchiveRules {
            fetcher: fetcher.with_names(vec![(upstream.clone(), canonical.clone())]),
            upstream,
            canonical,
            cache: Mutex::new(HashMap::new()),
            dbs: Mutex::new(HashMap::new()),
            overlay: None,
        })
    }

    /// Answer `overlay`'s day from it (set before the rules serve anything).
    pub fn set_overlay(&mut self, overlay: Arc<ArchiveOverlay>) {
        self.overlay = Some(overlay);
    }

    /// The overlay's answer for `path`, when the overlay covers it: `Some(None)` for a path
    /// of its day that it does not hold.
    fn overlay_answer(&self, path: &str) -> Result<Option<Option<(Blob, Outcome)>>> {
        let Some(o) = &self.overlay else {
            return Ok(None);
        };
        let path = percent_decode(path);
        if !path.starts_with(&o.prefix) {
            return Ok(None);
        }
        Ok(Some(match o.files.get(&path) {
            None => None,
            Some(OverlayFile::Blob(b)) => Some((b.clone(), Outcome::Hit)),
            Some(OverlayFile::Path(p)) => self.fetch(p, None, true)?,
        }))
    }

    /// The bytes for `path` (absolute, safe, without a query): from the store or upstream,
    /// checked against the day's database where one lists the file; `Ok(None)` when
    /// upstream has no such file (or, offline, the store does not hold it);
    /// `Error::Tampered` when the bytes are not the listed ones (nothing is stored).
    pub fn resolve(&self, path: &str) -> Result<Option<(Blob, Outcome)>> {
        if let Some(answer) = self.overlay_answer(path)? {
            return Ok(answer);
        }
        let url = format!("{}{path}", self.canonical);
        let immutable = is_immutable(path);
        if immutable && let Some(b) = self.cache.lock().expect("not poisoned").get(&url) {
            return Ok(Some((b.clone(), Outcome::Hit)));
        }
        let expected = self.expected_sha256(path)?;
        let r = self.fetch(path, expected.as_deref(), immutable)?;
        if immutable && let Some((b, _)) = &r {
            self.cache
                .lock()
                .expect("not poisoned")
                .insert(url, b.clone());
        }
        Ok(r)
    }

    /// `path` through the fetcher, from upstream, named under its canonical URL (the
    /// fetcher's names: looked up, stored and replayed by it).
    fn fetch(
        &self,
        path: &str,
        expected: Option<&str>,
        immutable: bool,
    ) -> Result<Option<(Blob, Outcome)>> {
        self.fetcher
            .try_fetch(&format!("{}{path}", self.upstream), expected, immutable)
    }

    /// The `%SHA256SUM%` a repository database lists for this path, if one does:
    /// `repos/<day>/<repo>/os/<arch>/<file>` is checked against that day's `<repo>.db`;
    /// `packages/…/<file>` against any database loaded so far that lists the file.
    fn expected_sha256(&self, path: &str) -> Result<Option<String>> {
        let segs: Vec<&str> = path[1..].split('/').collect();
        // Clients percent-encode `:` (epochs) and `+`; database file names are plain.
        let decoded = percent_decode(segs.last().expect("non-empty path"));
        let file = decoded.as_str();
        if !file.contains(".pkg.tar.") || file.ends_with(".sig") {
            return Ok(None);
        }
        if segs.len() == 8 && segs[0] == "repos" && segs[5] == "os" {
            let db_path = format!(
                "/repos/{}/{}/{}/{}/os/{}/{}.db",
                segs[1], segs[2], segs[3], segs[4], segs[6], segs[4]
            );
            let db = self.db(&db_path, is_immutable(path))?;
            return Ok(db.and_then(|d| d.by_filename(file).and_then(|e| e.sha256.clone())));
        }
        if segs.first() == Some(&"packages") {
            let dbs = self.dbs.lock().expect("not poisoned");
            return Ok(dbs
                .values()
                .find_map(|d| d.by_filename(file).and_then(|e| e.sha256.clone())));
        }
        Ok(None)
    }

    fn db(&self, db_path: &str, immutable: bool) -> Result<Option<Arc<RepoDb>>> {
        let db_url = format!("{}{db_path}", self.canonical);
        if immutable && let Some(d) = self.dbs.lock().expect("not poisoned").get(&db_url) {
            return Ok(Some(d.clone()));
        }
        let Some((blob, _)) = self.fetch(db_path, None, true)? else {
            return Ok(None);
        };
        let bytes = std::fs::read(&blob.path).ctx("read", &blob.path)?;
        let db = Arc::new(archive::parse_repo_db(&bytes, &db_url)?);
        self.dbs
            .lock()
            .expect("not poisoned")
            .insert(db_url, db.clone());
        Ok(Some(db))
    }
}

/// Decode `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hexval = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
            out.push(hexval(b[i + 1]) * 16 + hexval(b[i + 2]));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond_error(out: &mut TcpStream, code: u16, head: bool, msg: &str) -> std::io::Result<()> {
    out.write_all(error_response(code, head, msg, "reprobox", false).as_bytes())
}

/// A plain-text error answer of the loopback servers (the mirror, the egress): status line,
/// headers naming `server` (and `Connection: close` with `close`), and the body unless the
/// request was HEAD.
pub(crate) fn error_response(
    code: u16,
    head: bool,
    msg: &str,
    server: &str,
    close: bool,
) -> String {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Bad Gateway",
    };
    let body = format!("{code} {reason}: {msg}\n");
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}Server: {server}\r\n\r\n",
        body.len()
    );
    if !head {
        resp.push_str(&body);
    }
    resp
}

/// Parse a single `bytes=A-[B]` or `bytes=-N` range against `size`; `Err` when unsatisfiable.
fn parse_range(r: &str, size: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multi-range: serve the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

fn send_blob(out: &mut TcpStream, blob: &Blob, req: &Request) -> std::io::Result<()> {
    let file = std::fs::File::open(&blob.path)?;
    let size = file.metadata()?.len();
    let (code, start, len, extra) = match req.range.as_deref().and_then(|r| parse_range(r, size)) {
        None => (200, 0, size, String::new()),
        Some(Ok((s, e))) => (
            206,
            s,
            e - s + 1,
            format!("Content-Range: bytes {s}-{e}/{size}\r\n"),
        ),
        Some(Err(())) => {
            let resp = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n"
            );
            return out.write_all(resp.as_bytes());
        }
    };
    let reason = if code == 200 { "OK" } else { "Partial Content" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n{extra}X-Sha256: {}\r\nServer: reprobox\r\n\r\n",
        blob.sha256
    );
    out.write_all(head.as_bytes())?;
    if req.head {
        return Ok(());
    }
    sendfile_range(out, &file, start, len)
}

/// Send `len` bytes of `file` from `start` to `out` with `sendfile(2)`: the page cache
/// straight to the socket, no copy through user space (the mirror's and the egress's
/// plain-HTTP bodies).
pub(crate) fn sendfile_range(
    out: &impl AsRawFd,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut off = start as libc::off_t;
    let end = (start + len) as libc::off_t;
    while off < end {
        let want = ((end - off) as usize).min(1 << 30);
        // SAFETY: valid fds; `off` is a valid off_t the kernel advances.
        let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut off, want) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shrank while serving",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=10-", 100), Some(Ok((10, 99))));
        assert_eq!(parse_range("bytes=10-19", 100), Some(Ok((10, 19))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=1-2,5-6", 100), None);
    }

    #[test]
    fn paths() {
        assert!(path_is_safe("/repos/2026/05/16/core/os/x86_64/core.db"));
        assert!(!path_is_safe("/repos/../etc/passwd"));
        assert!(!path_is_safe("/"));
        assert!(!path_is_safe("/a//b"));
        assert!(!is_immutable("/repos/last/core/os/x86_64/core.db"));
        assert_eq!(
            percent_decode("a-1%3A2.0-1-x86_64.pkg.tar.zst"),
            "a-1:2.0-1-x86_64.pkg.tar.zst"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%2B"), "%zz+");
    }

    #[test]
    fn an_overlay_answers_its_day_alone_and_nothing_else_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let up = dir.path().join("archive");
        for (p, body) in [
            ("repos/2026/05/19/core/os/x86_64/core.db", "real 19"),
            ("repos/2026/05/20/core/os/x86_64/core.db", "real 20"),
            (
                "packages/s/systemd/systemd-2-1-x86_64.pkg.tar.zst.sig",
                "sig",
            ),
        ] {
            std::fs::create_dir_all(up.join(p).parent().unwrap()).unwrap();
            std::fs::write(up.join(p), body).unwrap();
        }
        let upstream = format!("file://{}", up.display());
        let mut rules =
            ArchiveRules::new(Fetcher::new(store.clone(), false), &upstream, &upstream).unwrap();
        let made = store.put_reader(&b"made"[..], None, "test:made").unwrap();
        let mut files = HashMap::new();
        files.insert(
            "/repos/2026/05/19/core/os/x86_64/core.db".to_string(),
            OverlayFile::Blob(made.clone()),
        );
        files.insert(
            "/repos/2026/05/19/core/os/x86_64/systemd-2-1-x86_64.pkg.tar.zst.sig".to_string(),
            OverlayFile::Path("/packages/s/systemd/systemd-2-1-x86_64.pkg.tar.zst.sig".into()),
        );
        let read = |r: Option<(Blob, Outcome)>| std::fs::read_to_string(r.unwrap().0.path).unwrap();
        // Without the overlay: the archive's day.
        assert_eq!(
            read(
                rules
                    .resolve("/repos/2026/05/19/core/os/x86_64/core.db")
                    .unwrap()
            ),
            "real 19"
        );
        rules.set_overlay(Arc::new(ArchiveOverlay {
            prefix: "/repos/2026/05/19/".into(),
            files,
        }));
        assert_eq!(
            read(
                rules
                    .resolve("/repos/2026/05/19/core/os/x86_64/core.db")
                    .unwrap()
            ),
            "made"
        );
        assert_eq!(
            read(
                rules
                    .resolve("/repos/2026/05/19/core/os/x86_64/systemd-2-1-x86_64.pkg.tar.zst.sig")
                    .unwrap()
            ),
            "sig"
        );
        // Another path of that day is absent; another day is the archive's.
        assert!(
            rules
                .resolve("/repos/2026/05/19/core/os/x86_64/core.db.sig")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            read(
                rules
                    .resolve("/repos/2026/05/20/core/os/x86_64/core.db")
                    .unwrap()
            ),
            "real 20"
        );
    }
}
