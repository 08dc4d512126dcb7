//! Downloads into the store: `file://`, `http://` and `https://`.
//!
//! Why it looks like this:
//! - a download goes to `partial/<sha256 of the URL>` under a per-URL lock, so an interrupted
//!   or cut download resumes with `Range: bytes=N-` (on the next attempt or the next run), and
//!   two processes wanting the same URL download it once;
//! - transport errors and 5xx/429 are retried with exponential backoff; the final error names
//!   the URL and the last reason;
//! - the bytes are hashed before they enter the store: if they do not match the expected
//!   sha256 the partial file is deleted and the result is `Error::Tampered`; nothing is stored;
//! - offline, nothing leaves the machine: only what the store holds can be returned;
//! - an API that needs more than a plain GET (the OCI registry client, `inputs::registry`)
//!   says so with a [`Request`] (an `Accept` header, a bearer token asked for on a 401, the
//!   `Docker-Content-Digest` check) and still goes through this one agent, these retries and
//!   this store, rather than a second HTTP client of its own.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::inputs::store::{self, Store};

pub use crate::inputs::store::Blob;

/// The most [`Fetcher::get_document`] reads into memory: token answers are a few KiB.
const DOCUMENT_LIMIT: u64 = 1 << 20;

/// How a fetch was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The store had it; no network.
    Hit,
    /// It was downloaded (or copied from a file:// URL) and stored.
    Fetched,
}

/// Turns a `WWW-Authenticate` challenge into an `Authorization` header value.
pub type Challenge<'a> = dyn Fn(&str) -> Result<String> + 'a;

/// What a download needs beyond a plain `GET` (the OCI registry client's needs).
#[derive(Default, Clone, Copy)]
pub struct Request<'a> {
    /// The `Accept` header (a registry picks the manifest format by it).
    pub accept: Option<&'a str>,
    /// An `Authorization` header value to send from the first attempt (a token already held).
    pub authorization: Option<&'a str>,
    /// Answers a `401` carrying `WWW-Authenticate` with an `Authorization` value; the request
    /// is then repeated once with it (Docker Hub's anonymous bearer tokens). Only called when
    /// the request really goes to the network.
    pub on_challenge: Option<&'a Challenge<'a>>,
    /// When the server sends `Docker-Content-Digest`, the body must hash to it (`Tampered`
    /// otherwise): a manifest asked for by tag has no other digest to be checked against.
    pub content_digest: bool,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("accept", &self.accept)
            .field("authorization", &self.authorization.map(|_| "…"))
            .field("on_challenge", &self.on_challenge.is_some())
            .field("content_digest", &self.content_digest)
            .finish()
    }
}

/// Fetches URLs into a store. Cheap to share by reference across threads.
#[derive(Debug)]
pub struct Fetcher {
    store: Store,
    offline: bool,
    attempts: u32,
    backoff: Duration,
    progress: bool,
    agent: ureq::Agent,
    /// (location, canonical URL) prefixes: what is fetched from under a location is named by
    /// its canonical URL in the store's origin index and the lock, so a store filled from one
    /// location replays against another ([`Fetcher::with_names`]).
    names: Vec<(String, String)>,
}

/// `url` named by its canonical URL: the longest `(location, canonical)` prefix of `names`
/// that `url` starts with (at a `/`, `?` or its end) replaced by its canonical URL; `url`
/// itself when none matches.
pub fn canonical_name<'u>(names: &[(String, String)], url: &'u str) -> std::borrow::Cow<'u, str> {
    let under = |loc: &str| {
        let loc = loc.trim_end_matches('/');
        url.strip_prefix(loc)
            .filter(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
            .map(|rest| (loc.len(), rest))
    };
    names
        .iter()
        .filter_map(|(loc, canon)| under(loc).map(|(n, rest)| (n, canon, rest)))
        .max_by_key(|(n, _, _)| *n)
        .map_or(std::borrow::Cow::Borrowed(url), |(_, canon, rest)| {
            std::borrow::Cow::Owned(format!("{}{rest}", canon.trim_end_matches('/')))
        })
}

impl Fetcher {
    /// A fetcher over `store`; with `offline`, only the store is consulted.
    pub fn new(store: Store, offline: bool) -> Fetcher {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("reprobox/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher {
            store,
            offline,
            attempts: 5,
            backoff: Duration::from_millis(250),
            progress: true,
            agent,
            names: Vec::new(),
        }
    }

    /// Name what is fetched from under each location by its canonical URL (`(location,
    /// canonical)` prefixes, e.g. `("http://127.0.0.1:7879", "https://registry-1.docker.io")`):
    /// the store's origin index, offline lookups and lock records use the canonical URL, the
    /// request goes to the location.
    pub fn with_names(mut self, names: Vec<(String, String)>) -> Self {
        self.names = names;
        self
    }

    /// The name `url` is stored and recorded under ([`canonical_name`]).
    pub fn name_of<'u>(&self, url: &'u str) -> std::borrow::Cow<'u, str> {
        canonical_name(&self.names, url)
    }

    /// Change how many attempts a download gets and the first backoff (doubled each time).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// Turn progress output (bars on a terminal, plain lines otherwise; on by default) on or off.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Fetch `url` into the store. With `expected`, a blob already stored under that hash is
    /// returned without network, and downloaded bytes must match it.
    pub fn fetch(&self, url: &str, expected: Option<&str>) -> Result<Blob> {
        self.fetch_outcome(url, expected, false).map(|(b, _)| b)
    }

    /// Like [`Fetcher::fetch`], and records the request (hit or fetched) in `lock`.
    pub fn fetch_recorded(
        &self,
        lock: &mut crate::inputs::lock::InputsLock,
        url: &str,
        expected: Option<&str>,
    ) -> Result<Blob> {
        self.fetch_recorded_with(lock, url, expected, &Request::default())
    }

    /// [`Fetcher::fetch_recorded`] with what the request needs beyond a plain `GET`.
    pub fn fetch_recorded_with(
        &self,
        lock: &mut crate::inputs::lock::InputsLock,
        url: &str,
        expected: Option<&str>,
        req: &Request<'_>,
    ) -> Result<Blob> {
        use crate::inputs::lock::Status;
        let (b, outcome) = self.fetch_outcome_with(url, expected, false, req)?;
        let status = match outcome {
            Outcome::Hit => Status::Hit,
            Outcome::Fetched => Status::Fetched,
        };
        lock.record(status, &self.name_of(url), Some((&b.sha256, b.size)));
        Ok(b)
    }

    /// Like [`Fetcher::fetch`], and says whether it was a hit. With `immutable`, a URL the
    /// store already has an index record for is answered from the store (archive days, ISO
    /// months and `packages/` never change).
    pub fn fetch_outcome(
        &self,
        url: &str,
        expected: Option<&str>,
        immutable: bool,
    ) -> Result<(Blob, Outcome)> {
        self.fetch_outcome_with(url, expected, immutable, &Request::default())
    }

    /// [`Fetcher::fetch_outcome`] with what the request needs beyond a plain `GET`.
    pub fn fetch_outcome_with(
        &self,
        url: &str,
        expected: Option<&str>,
        immutable: bool,
        req: &Request<'_>,
    ) -> Result<(Blob, Outcome)> {
        match self.try_fetch_with(url, expected, immutable, req)? {
            Some(r) => Ok(r),
            None if self.offline => {
                let name = self.name_of(url);
                Err(Error::network(
                    url,
                    if name == url {
                        "offline, and the store does not hold it".to_string()
                    } else {
                        format!("offline, and the store does not hold it (as {name})")
                    },
                ))
            }
            None => Err(Error::network(url, "not found (HTTP 404 or no such file)")),
        }
    }

    /// Like [`Fetcher::fetch_outcome`], but `Ok(None)` when the source says it has no such file
    /// (HTTP 404/410, missing file), or when offline and the store does not have it.
    pub fn try_fetch(
        &self,
        url: &str,
        expected: Option<&str>,
        immutable: bool,
    ) -> Result<Option<(Blob, Outcome)>> {
        self.try_fetch_with(url, expected, immutable, &Request::default())
    }

    /// [`Fetcher::try_fetch`] with what the request needs beyond a plain `GET`.
    pub fn try_fetch_with(
        &self,
        url: &str,
        expected: Option<&str>,
        immutable: bool,
        req: &Request<'_>,
    ) -> Result<Option<(Blob, Outcome)>> {
        if let Some(sha) = expected
            && !store::is_sha256(sha)
        {
            return Err(Error::bad_input(
                format!("expected sha256 for {url}"),
                format!("{sha:?} is not 64 lowercase hex digits"),
            ));
        }
        let name = self.name_of(url);
        if let Some(b) = self.cached(&name, expected, immutable || self.offline)? {
            return Ok(Some((b, Outcome::Hit)));
        }
        if self.offline {
            return Ok(None);
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Ok(None);
            }
            return Ok(Some((
                self.store.put_file(&path, expected, &name)?,
                Outcome::Fetched,
            )));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return self.download(url, &name, expected, immutable, req);
        }
        Err(Error::bad_input(
            format!("URL {url}"),
            "expected file://, http:// or https://",
        ))
    }

    /// A small document that is not an input (a registry's bearer token): read into memory
    /// through the same agent and retries as a download, never stored nor recorded. Offline
    /// it is refused, since nothing may leave the machine.
    pub fn get_document(&self, url: &str, accept: &str) -> Result<Vec<u8>> {
        if self.offline {
            return Err(Error::network(
                url,
                "offline: no request leaves the machine",
            ));
        }
        let mut last_err = String::new();
        let mut delay = self.backoff;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tracing::info!(
                    "{url}: attempt {attempt}/{} after: {last_err}",
                    self.attempts
                );
                std::thread::sleep(delay);
                delay *= 2;
            }
            let mut resp = match self.agent.get(url).header("Accept", accept).call() {
                Ok(r) => r,
                Err(e) => {
                    last_err = e.to_string();
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let body = resp
                .body_mut()
                .with_config()
                .limit(DOCUMENT_LIMIT)
                .read_to_vec();
            match (status, body) {
                (200, Ok(b)) => return Ok(b),
                (200, Err(e)) => last_err = format!("reading the body: {e}"),
                (429 | 500..=599, _) => last_err = format!("HTTP {status}"),
                (_, b) => {
                    let b = b.unwrap_or_default();
                    let snippet = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
                    return Err(Error::network(url, format!("HTTP {status}: {snippet}")));
                }
            }
        }
        Err(Error::network(
            url,
            format!("failed after {} attempts: {last_err}", self.attempts),
        ))
    }

    fn cached(&self, url: &str, expected: Option<&str>, by_url: bool) -> Result<Option<Blob>> {
        if let Some(sha) = expected {
            return Ok(self.store.blob(sha));
        }
        if by_url {
            return self.store.lookup_url(url);
        }
        Ok(None)
    }

    /// Download `url` into the store, named `name` there (its canonical URL).
    fn download(
        &self,
        url: &str,
        name: &str,
        expected: Option<&str>,
        immutable: bool,
        req: &Request<'_>,
    ) -> Result<Option<(Blob, Outcome)>> {
        let key = crate::digest::sha256_hex(name.as_bytes());
        // Serialise downloads of one URL across threads and processes.
        let _url_lock = self.store.lock(&format!("url-{key}"))?;
        // Another thread or process may have stored it while we waited.
        if let Some(b) = self.cached(name, expected, immutable)? {
            return Ok(Some((b, Outcome::Hit)));
        }
        let partial = self.store.partial_dir().join(&key);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .ctx("open", &partial)?;
        fs2::FileExt::lock_exclusive(&file).ctx("lock", &partial)?;

        // Without an expected hash nothing would catch a partial file from an older version of
        // the resource: start fresh, and within this call resume only with `If-Range`.
        if expected.is_none() {
            file.set_len(0).ctx("truncate", &partial)?;
        }
        let mut validator: Option<String> = None;
        let mut last_err = String::new();
        let mut done = false;
        let mut delay = self.backoff;
        let mut authorization = req.authorization.map(str::to_string);
        let mut challenged = false;
        let mut content_digest: Option<String> = None;
        let get = |authorization: &Option<String>| {
            let mut r = self.agent.get(url).header("Accept-Encoding", "identity");
            if let Some(a) = req.accept {
                r = r.header("Accept", a);
            }
            if let Some(a) = authorization {
                r = r.header("Authorization", a.as_str());
            }
            r
        };
        let mut attempt = 0;
        while attempt < self.attempts {
            attempt += 1;
            if attempt > 1 && !last_err.is_empty() {
                tracing::info!(
                    "{url}: attempt {attempt}/{} after: {last_err}",
                    self.attempts
                );
                std::thread::sleep(delay);
                delay *= 2;
            }
            let have = file.metadata().ctx("stat", &partial)?.len();
            let mut call = get(&authorization);
            if have > 0 {
                call = call.header("Range", format!("bytes={have}-"));
                if let Some(v) = &validator {
                    call = call.header("If-Range", v.as_str());
                } else if expected.is_none() {
                    // Nothing to tie the resumed bytes to the first ones: start over.
                    file.set_len(0).ctx("truncate", &partial)?;
                    call = get(&authorization);
                }
            }
            let resp = match call.call() {
                Ok(r) => r,
                Err(e) => {
                    last_err = e.to_string();
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let content_range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let length = resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            // A strong ETag, else Last-Modified, identifies this version of the resource.
            validator = header("etag")
                .filter(|e| !e.starts_with("W/"))
                .or_else(|| header("last-modified"));
            if req.content_digest && matches!(status, 200 | 206) {
                content_digest = header("docker-content-digest");
            }
            let start = match status {
                200 => 0,
                206 if content_range
                    .as_deref()
                    .is_some_and(|c| range_starts_at(c, have)) =>
                {
                    have
                }
                206 => {
                    // A range we did not ask for: start over.
                    file.set_len(0).ctx("truncate", &partial)?;
                    last_err = format!("unexpected Content-Range {content_range:?}");
                    continue;
                }
                401 if !challenged && req.on_challenge.is_some() => {
                    // Ask for a token once, then repeat this request with it (not an attempt).
                    let challenge = header("www-authenticate").ok_or_else(|| {
                        Error::network(url, "HTTP 401 without a WWW-Authenticate challenge")
                    })?;
                    if let Some(answer) = req.on_challenge {
                        authorization = Some(answer(&challenge)?);
                    }
                    challenged = true;
                    attempt -= 1;
                    last_err.clear();
                    continue;
                }
                404 | 410 => {
                    drop(file);
                    let _ = fs::remove_file(&partial);
                    return Ok(None);
                }
                416 => {
                    // Our partial file is longer than the resource (it changed): start over.
                    file.set_len(0).ctx("truncate", &partial)?;
                    last_err = "HTTP 416 (range not satisfiable)".into();
                    continue;
                }
                429 | 500..=599 => {
                    last_err = format!("HTTP {status}");
                    continue;
                }
                _ => return Err(Error::network(url, format!("HTTP {status}"))),
            };
            file.set_len(start).ctx("truncate", &partial)?;
            file.seek(SeekFrom::Start(start)).ctx("seek", &partial)?;
            let total = length.map(|l| l + start);
            let bar = self.progress_start(url, start, total);
            let mut body = resp.into_body().into_reader();
            match copy_body(&mut body, &mut file, &bar) {
                Ok(()) => {
                    if let Some(t) = total {
                        let got = file.metadata().ctx("stat", &partial)?.len();
                        if got != t {
                            last_err = format!("connection closed after {got} of {t} bytes");
                            bar.abandon();
                            continue;
                        }
                    }
                    bar.finish();
                    done = true;
                    break;
                }
                Err(CopyError::Read(e)) => {
                    file.flush().ctx("write", &partial)?;
                    bar.abandon();
                    last_err = format!("download cut: {e}");
                }
                Err(CopyError::Write(e)) => return Err(Error::io("write", &partial, e)),
            }
        }
        if !done {
            return Err(Error::network(
                url,
                format!(
                    "failed after {} attempts: {last_err} (partial download kept for resume)",
                    self.attempts
                ),
            ));
        }
        file.sync_all().ctx("fsync", &partial)?;
        file.seek(SeekFrom::Start(0)).ctx("seek", &partial)?;
        let (actual, size) = store::hash_reader(&mut file).ctx("read", &partial)?;
        if let Some(exp) = expected
            && exp != actual
        {
            drop(file);
            fs::remove_file(&partial).ctx("remove", &partial)?;
            return Err(Error::Tampered {
                what: url.to_string(),
                expected: exp.to_string(),
                actual,
            });
        }
        if let Some(d) = content_digest
            && d.strip_prefix("sha256:") != Some(actual.as_str())
        {
            drop(file);
            fs::remove_file(&partial).ctx("remove", &partial)?;
            return Err(Error::Tampered {
                what: format!("{url} (Docker-Content-Digest)"),
                expected: d.strip_prefix("sha256:").unwrap_or(&d).to_string(),
                actual,
            });
        }
        let blob = self.store.commit(&partial, &actual, size, name)?;
        drop(file);
        if self.progress && !std::io::stderr().is_terminal() {
            eprintln!("fetched {url} ({size} bytes, sha256 {actual})");
        }
        Ok(Some((blob, Outcome::Fetched)))
    }

    fn progress_start(&self, url: &str, start: u64, total: Option<u64>) -> Progress {
        if !self.progress {
            return Progress(None);
        }
        if !std::io::stderr().is_terminal() {
            if start > 0 {
                eprintln!("fetching {url} (resuming at byte {start})");
            } else {
                eprintln!("fetching {url}");
            }
            return Progress(None);
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bytes}/{total_bytes} {bar:30} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar.set_position(start);
        Progress(Some(bar))
    }
}

struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
    fn abandon(&self) {
        if let Some(b) = &self.0 {
            b.abandon();
        }
    }
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn copy_body(
    r: &mut impl Read,
    w: &mut File,
    bar: &Progress,
) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        bar.inc(n as u64);
    }
}

/// True when a `Content-Range: bytes START-END/TOTAL` header starts at `at`.
fn range_starts_at(content_range: &str, at: u64) -> bool {
    content_range
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        == Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert!(range_starts_at("bytes 100-199/200", 100));
        assert!(!range_starts_at("bytes 0-199/200", 100));
        assert!(!range_starts_at("garbage", 0));
    }

    #[test]
    fn file_urls_and_offline() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.txt");
        fs::write(&src, b"hello").unwrap();
        let url = format!("file://{}", src.display());
        let online =
            Fetcher::new(Store::open(d.path().join("s")).unwrap(), false).with_progress(false);
        let (b, o) = online.fetch_outcome(&url, None, false).unwrap();
        assert_eq!(o, Outcome::Fetched);
        assert_eq!(fs::read(&b.path).unwrap(), b"hello");
        let offline =
            Fetcher::new(Store::open(d.path().join("s")).unwrap(), true).with_progress(false);
        assert_eq!(
            offline.fetch_outcome(&url, None, false).unwrap().1,
            Outcome::Hit
        );
        let other = format!("file://{}/nope", d.path().display());
        assert!(offline.try_fetch(&other, None, false).unwrap().is_none());
        let e = online.fetch(&url, Some(&"1".repeat(64))).unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }));
    }

    #[test]
    fn a_location_is_named_by_its_canonical_url_and_replays_from_another() {
        let names = |loc: &str| {
            vec![
                (
                    format!("{loc}/gitlab/"),
                    "https://gitlab.example".to_string(),
                ),
                (loc.to_string(), "https://archive.example".to_string()),
            ]
        };
        let n = names("file:///w");
        assert_eq!(
            canonical_name(&n, "file:///w/iso/x"),
            "https://archive.example/iso/x"
        );
        assert_eq!(
            canonical_name(&n, "file:///w/gitlab/a?b"),
            "https://gitlab.example/a?b"
        );
        assert_eq!(canonical_name(&n, "file:///w"), "https://archive.example");
        // Only at a path boundary, and nothing else is renamed.
        assert_eq!(canonical_name(&n, "file:///wx/iso"), "file:///wx/iso");
        assert_eq!(canonical_name(&n, "http://h/iso"), "http://h/iso");

        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(a.join("iso")).unwrap();
        fs::write(a.join("iso/sums.txt"), b"sums").unwrap();
        let store = || Store::open(d.path().join("s")).unwrap();
        let loc_a = format!("file://{}", a.display());
        let online = Fetcher::new(store(), false)
            .with_progress(false)
            .with_names(names(&loc_a));
        let mut lock = crate::inputs::lock::InputsLock::default();
        let blob = online
            .fetch_recorded(&mut lock, &format!("{loc_a}/iso/sums.txt"), None)
            .unwrap();
        assert_eq!(lock.entries[0].url, "https://archive.example/iso/sums.txt");
        // Offline, at another location (where nothing is), the same name answers.
        let loc_b = format!("file://{}", b.display());
        let offline = Fetcher::new(store(), true)
            .with_progress(false)
            .with_names(names(&loc_b));
        let (again, o) = offline
            .fetch_outcome(&format!("{loc_b}/iso/sums.txt"), None, false)
            .unwrap();
        assert_eq!((again.sha256, o), (blob.sha256, Outcome::Hit));
        // A miss names the location asked and the name looked up.
        let e = offline
            .fetch(&format!("{loc_b}/iso/nope"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{loc_b}/iso/nope")), "{e}");
        assert!(e.contains("(as https://archive.example/iso/nope)"), "{e}");
        // Without names it is a miss: the name is what replays.
        let plain = Fetcher::new(store(), true).with_progress(false);
        assert!(
            plain
                .try_fetch(&format!("{loc_b}/iso/sums.txt"), None, false)
                .unwrap()
                .is_none()
        );
    }
}
