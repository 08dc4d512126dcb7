//! Base images pinned by digest, kept in the store, and served to a job that has no network.
//!
//! A build's `FROM host/repo@sha256:…` must not reach a registry from inside the sandbox.
//! Before the image step reprobox fetches the manifest, config and layers by digest into
//! the store with the registry client (`inputs::registry`; each checked against its
//! digest), then [`PinnedImageServer`] serves exactly those bytes on the job's own loopback
//! as a read-only registry: nothing else can be pulled, and a warm store needs no network
//! at all.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::{InputsLock, Status};
use crate::inputs::registry::{self, RegistryClient, Route};
use crate::inputs::store::Store;

/// An image reference with a digest: `host[:port]/repo@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestRef {
    pub host: String,
    pub repository: String,
    pub digest: String,
}

impl DigestRef {
    /// Parse `host/repo@sha256:hex`; anything else (a tag) is `None`: it cannot be pinned.
    pub fn parse(s: &str) -> Option<DigestRef> {
        let (name, digest) = s.split_once('@')?;
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (host, repository) = name.split_once('/')?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return None;
        }
        Some(DigestRef {
            host: host.into(),
            repository: repository.into(),
            digest: digest.into(),
        })
    }

    pub fn port(&self) -> Option<u16> {
        self.host.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }
}

impl std::fmt::Display for DigestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.host, self.repository, self.digest)
    }
}

/// An image held in the store: manifest bytes by digest and every blob it names.
#[derive(Debug, Clone, Serialize)]
pub struct PinnedImage {
    pub reference: DigestRef,
    pub media_type: String,
    /// Blob digests (config first, then layers).
    pub blobs: Vec<String>,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Fetch `r` from the registry at `registry_base` (online) or find it in the store
/// (offline), every piece checked against its digest and recorded in `lock`, through the
/// registry client (`inputs::registry`); a token realm whose host is one of `realms` is
/// asked at its location.
pub fn pin(
    fetcher: &Fetcher,
    lock: &mut InputsLock,
    registry_base: &str,
    r: &DigestRef,
    realms: &[(String, String)],
) -> Result<PinnedImage> {
    let client =
        RegistryClient::new(fetcher, registry_base, &r.repository).with_realm_locations(realms);
    let (murl, body) = client.manifest(lock, &r.digest)?;
    let media_type = registry::manifest_media_type(&body);
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::network(&murl, format!("manifest is not JSON: {e}")))?;
    if v.get("manifests").is_some() {
        return Err(Error::network(
            &murl,
            "an index; pin the platform manifest's digest instead",
        ));
    }
    let mut blobs = Vec::new();
    if let Some(d) = v["config"]["digest"].as_str() {
        blobs.push(d.to_string());
    }
    for l in v["layers"].as_array().into_iter().flatten() {
        if let Some(d) = l["digest"].as_str() {
            blobs.push(d.to_string());
        }
    }
    for d in &blobs {
        client.blob(lock, d)?;
    }
    Ok(PinnedImage {
        reference: r.clone(),
        media_type,
        blobs,
    })
}

/// The server of pinned base images to a job: a read-only registry on the job's loopback
/// answering only for the images [`pin`] put in the store (anything else is a 404, recorded
/// as a miss), so a `FROM …@sha256:` resolves without a network.
pub struct PinnedImageServer {
    /// Woken by `stop`, and stays woken: the accept loop's only way out.
    waker: Arc<crate::inputs::wake::Waker>,
    lock: Arc<Mutex<InputsLock>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Served {
    store: Store,
    /// digest → (media type or None for a blob)
    items: BTreeMap<String, Option<String>>,
}

impl PinnedImageServer {
    pub fn serve(
        listener: TcpListener,
        store: Store,
        images: &[PinnedImage],
    ) -> Result<PinnedImageServer> {
        Self::serve_as(listener, store, images, None)
    }

    /// [`PinnedImageServer::serve`], recording requests under the address the job uses
    /// (`shown`) rather than the listener's own (the microVM reaches a host listener on
    /// another port through its forwarder).
    pub fn serve_as(
        listener: TcpListener,
        store: Store,
        images: &[PinnedImage],
        shown: Option<std::net::SocketAddr>,
    ) -> Result<PinnedImageServer> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Sandbox(format!("registry listener: {e}")))?;
        let addr = shown.unwrap_or(addr);
        listener
            .set_nonblocking(false)
            .map_err(|e| Error::Sandbox(format!("registry listener {addr}: {e}")))?;
        let waker = Arc::new(
            crate::inputs::wake::Waker::new()
                .map_err(|e| Error::Sandbox(format!("registry listener {addr}: eventfd: {e}")))?,
        );
        let mut items = BTreeMap::new();
        for i in images {
            items.insert(i.reference.digest.clone(), Some(i.media_type.clone()));
            for b in &i.blobs {
                items.insert(b.clone(), None);
            }
        }
        let served = Arc::new(Served { store, items });
        let lock = Arc::new(Mutex::new(InputsLock::default()));
        let (l2, w2) = (lock.clone(), waker.clone());
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            while w2.wait(listener.as_raw_fd()) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (sv, lk) = (served.clone(), l2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(conn, &sv, &lk, addr);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(PinnedImageServer {
            waker,
            lock,
            thread: Some(thread),
        })
    }

    /// Stop serving; the requests it answered.
    pub fn stop(mut self) -> InputsLock {
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lock.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn handle(
    conn: TcpStream,
    sv: &Served,
    lock: &Mutex<InputsLock>,
    addr: std::net::SocketAddr,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("").to_string(),
        );
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
        }
        let url = format!("http://{addr}{path}");
        let head = method == "HEAD";
        let reply = |out: &mut TcpStream,
                     code: &str,
                     ctype: &str,
                     digest: Option<&str>,
                     body: &[u8]|
         -> std::io::Result<()> {
            let mut h = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
                body.len()
            );
            if let Some(d) = digest {
                h.push_str(&format!("Docker-Content-Digest: {d}\r\n"));
            }
            h.push_str("\r\n");
            out.write_all(h.as_bytes())?;
            if !head {
                out.write_all(body)?;
            }
            out.flush()
        };
        // Only digests are served: a manifest by tag or anything else is not pinned.
        let (digest, found) = match registry::route(&path) {
            Some(Route::Base) => {
                reply(&mut out, "200 OK", "application/json", None, b"{}")?;
                continue;
            }
            Some(Route::Manifest { reference, .. }) => match sv.items.get(reference) {
                Some(Some(mt)) => (reference.to_string(), Some(mt.clone())),
                _ => (reference.to_string(), None),
            },
            Some(Route::Blob { digest, .. }) => match sv.items.get(digest) {
                Some(None) => (
                    digest.to_string(),
                    Some("application/octet-stream".to_string()),
                ),
                _ => (digest.to_string(), None),
            },
            None => (String::new(), None),
        };
        let bytes = found
            .as_ref()
            .and_then(|_| sv.store.get(hex_of(&digest)))
            .and_then(|p| std::fs::read(p).ok());
        match (found, bytes) {
            (Some(ct), Some(b)) => {
                if let Ok(mut l) = lock.lock() {
                    l.record(Status::Hit, &url, Some((hex_of(&digest), b.len() as u64)));
                }
                reply(&mut out, "200 OK", &ct, Some(&digest), &b)?;
            }
            _ => {
                if let Ok(mut l) = lock.lock() {
                    l.record(Status::Miss, &url, None);
                }
                let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not pinned by reprobox"}]}"#;
                reply(&mut out, "404 Not Found", "application/json", None, body)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digest_references_pin() {
        let h = "a".repeat(64);
        let r =
            DigestRef::parse(&format!("127.0.0.1:7879/reprobox-world/verify@sha256:{h}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:7879");
        assert_eq!(r.repository, "reprobox-world/verify");
        assert_eq!(r.port(), Some(7879));
        assert!(DigestRef::parse("alpine:3.23").is_none());
        assert!(DigestRef::parse("docker.io/library/alpine:3.23").is_none());
        assert!(DigestRef::parse(&format!("alpine@sha256:{h}")).is_none());
    }

    /// The registry client pins from the pinned-image server what the server's store holds,
    /// by the routes both take from `inputs::registry`; anything else is a recorded miss.
    #[test]
    fn the_client_pins_from_the_pinned_image_server() {
        let digest = crate::digest::sha256_digest;
        let d = tempfile::tempdir().unwrap();
        let served = Store::open(d.path().join("served")).unwrap();
        let (config, layer) = (br#"{"rootfs":{}}"#.to_vec(), b"layer".to_vec());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": digest(&config)},
            "layers": [{"digest": digest(&layer)}],
        }))
        .unwrap();
        for b in [&manifest, &config, &layer] {
            served.put_reader(&b[..], None, "test").unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let r = DigestRef {
            host: addr.to_string(),
            repository: "w/base".into(),
            digest: digest(&manifest),
        };
        let image = PinnedImage {
            reference: r.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            blobs: vec![digest(&config), digest(&layer)],
        };
        let server = PinnedImageServer::serve(listener, served, &[image]).unwrap();
        let fetcher = Fetcher::new(Store::open(d.path().join("job")).unwrap(), false)
            .with_retries(1, Duration::from_millis(1))
            .with_progress(false);
        let base = format!("http://{addr}");
        let mut lock = InputsLock::default();
        let pinned = pin(&fetcher, &mut lock, &base, &r, &[]).unwrap();
        assert_eq!(pinned.blobs, vec![digest(&config), digest(&layer)]);
        assert_eq!(lock.entries.len(), 3);
        assert!(lock.entries.iter().all(|e| e.status == Status::Fetched));
        let other = DigestRef {
            digest: digest(b"other"),
            ..r
        };
        let e = pin(&fetcher, &mut lock, &base, &other, &[]).unwrap_err();
        let url = registry::manifest_url(&base, "w/base", &other.digest);
        assert!(e.to_string().contains(&url), "{e}");
        let served = server.stop();
        assert_eq!(
            served
                .entries
                .iter()
                .filter(|e| e.status == Status::Hit)
                .count(),
            3
        );
        assert_eq!(served.misses().count(), 1);
    }
}
