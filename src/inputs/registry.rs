//! The OCI registry client (the Distribution API), without podman: manifests and blobs of an
//! image, read into the store through [`Fetcher`] like every other download.
//!
//! Why it looks like this:
//! - every body goes through `Fetcher` (one agent, one set of retries, timeouts and error
//!   rules), is stored under its own URL in the store's origin index and recorded in the
//!   [`InputsLock`] as a hit or a fetch; offline, the store answers or the result is
//!   `Error::Network` naming the URL, and nothing leaves the machine;
//! - every body is checked against the digest that names it (`Error::Tampered` otherwise),
//!   so a registry cannot hand back other bytes unnoticed; a manifest asked for by tag is
//!   checked against `Docker-Content-Digest` when the registry sends one, and is always asked
//!   for again online (a tag moves);
//! - Docker Hub wants an anonymous bearer token: it is asked for on the first 401 and kept for
//!   the client's later requests;
//! - the `/v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>` routes are built
//!   ([`manifest_url`], [`blob_url`]) and parsed ([`route`]) here only, for this client and
//!   for the servers that answer them (`inputs::images::PinnedImageServer`).
//!
//! The verdict compares the published image's config digest and diffIDs (reference/oci.md),
//! and its manifest digest with the rebuilt image's pushed in the same manifest type and
//! layer compression (`media_type`, `layer_media_types`).

use std::cell::RefCell;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::{Blob, Fetcher, Request};
use crate::inputs::lock::InputsLock;
use crate::inputs::store;

/// The manifest formats the client accepts (indexes included: a tag may name one).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `{base}/v2/{repository}/manifests/{reference}`; `reference` is a tag or a digest.
pub fn manifest_url(base: &str, repository: &str, reference: &str) -> String {
    format!(
        "{}/v2/{repository}/manifests/{reference}",
        base.trim_end_matches('/')
    )
}

/// `{base}/v2/{repository}/blobs/{digest}`.
pub fn blob_url(base: &str, repository: &str, digest: &str) -> String {
    format!(
        "{}/v2/{repository}/blobs/{digest}",
        base.trim_end_matches('/')
    )
}

/// A registry's address as an image reference names it: the URL without its scheme
/// (`http://127.0.0.1:5000/` → `127.0.0.1:5000`).
pub fn host_of(base: &str) -> &str {
    base.split_once("://")
        .map_or(base, |(_, h)| h)
        .trim_end_matches('/')
}

/// One Distribution API route, as a server reads a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/` (or `/v2`): the API version check clients start with.
    Base,
    /// `/v2/<repository>/manifests/<reference>`.
    Manifest {
        repository: &'a str,
        reference: &'a str,
    },
    /// `/v2/<repository>/blobs/<digest>`.
    Blob {
        repository: &'a str,
        digest: &'a str,
    },
}

/// The route a request path asks for; `None` for anything else (uploads, catalogs, …).
pub fn route(path: &str) -> Option<Route<'_>> {
    if path == "/v2/" || path == "/v2" {
        return Some(Route::Base);
    }
    let rest = path.strip_prefix("/v2/")?;
    let split = |kind: &str| -> Option<(&str, &str)> {
        let i = rest.rfind(kind)?;
        let (repository, last) = (&rest[..i], &rest[i + kind.len()..]);
        (!repository.is_empty() && !last.is_empty() && !last.contains('/'))
            .then_some((repository, last))
    };
    if let Some((repository, reference)) = split("/manifests/") {
        return Some(Route::Manifest {
            repository,
            reference,
        });
    }
    split("/blobs/").map(|(repository, digest)| Route::Blob { repository, digest })
}

/// The hex of a `sha256:` digest, as the store and `Fetcher` take it; any other digest is an
/// error naming `url` (nothing else can be checked).
pub(crate) fn sha256_hex<'d>(url: &str, digest: &'d str) -> Result<&'d str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| store::is_sha256(h))
        .ok_or_else(|| {
            Error::network(
                url,
                format!("{digest:?} is not a sha256 digest (sha256: and 64 lowercase hex)"),
            )
        })
}

/// The media type a manifest declares (the OCI manifest type when it declares none).
pub fn manifest_media_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string())
}

/// A stored body read back, re-checked against `digest` (`sha256:…`) when there is one: a
/// store hit is not re-hashed by `Fetcher`, and the verdict rests on these bytes.
fn read_body(blob: &Blob, url: &str, digest: Option<&str>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(&blob.path).ctx("read", &blob.path)?;
    if let Some(d) = digest {
        let expected = sha256_hex(url, d)?;
        let actual = crate::digest::sha256_hex(&bytes);
        if actual != expected {
            return Err(Error::Tampered {
                what: url.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(bytes)
}

/// A body that must be JSON (a manifest, an index, a config); the error names `url`.
fn json(url: &str, what: &str, bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::network(url, format!("{what} is not JSON: {e}")))
}

/// The registry client for one repository of one registry. Not shared across threads: the
/// bearer token it may hold is per repository.
pub struct RegistryClient<'f> {
    fetcher: &'f Fetcher,
    base: String,
    repository: String,
    /// `Authorization` value, once a 401 asked for one.
    token: RefCell<Option<String>>,
    /// Where a challenge's realm host is really reached (host, location), as the egress
    /// maps `auth.docker.io` to its `hub_auth` location: a realm naming one of these hosts
    /// is asked at that location, never at the host the registry named.
    realms: Vec<(String, String)>,
}

impl<'f> RegistryClient<'f> {
    /// A client of `repository` at the registry `base` (`https://registry-1.docker.io`,
    /// `http://127.0.0.1:5000`, …).
    pub fn new(fetcher: &'f Fetcher, base: &str, repository: &str) -> RegistryClient<'f> {
        RegistryClient {
            fetcher,
            base: base.trim_end_matches('/').to_string(),
            repository: repository.to_string(),
            token: RefCell::new(None),
            realms: Vec::new(),
        }
    }

    /// The same client, asking a token realm whose host is one of `realms` (host,
    /// location URL) at that location: `https://auth.docker.io/token` with
    /// `("auth.docker.io", "http://127.0.0.1:8")` is asked at `http://127.0.0.1:8/token`.
    pub fn with_realm_locations(mut self, realms: &[(String, String)]) -> RegistryClient<'f> {
        self.realms = realms.to_vec();
        self
    }

    /// `realm` with its scheme and host replaced by the location mapped to that host.
    fn realm_url(&self, realm: &str) -> String {
        let rest = realm
            .strip_prefix("https://")
            .or_else(|| realm.strip_prefix("http://"));
        if let Some(rest) = rest {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.to_ascii_lowercase();
            if let Some((_, loc)) = self.realms.iter().find(|(h, _)| *h == host) {
                return format!("{}{path}", loc.trim_end_matches('/'));
            }
        }
        realm.to_string()
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        manifest_url(&self.base, &self.repository, reference)
    }

    pub fn blob_url(&self, digest: &str) -> String {
        blob_url(&self.base, &self.repository, digest)
    }

    /// The manifest (or index) a tag names now: online always asked for (a tag moves) and
    /// checked against `Docker-Content-Digest` when sent; offline the copy the store holds
    /// under its URL. Returns the URL and the bytes.
    pub fn manifest_by_tag(&self, lock: &mut InputsLock, tag: &str) -> Result<(String, Vec<u8>)> {
        let url = self.manifest_url(tag);
        let blob = self.fetch(lock, &url, None, Some(MANIFEST_ACCEPT))?;
        Ok((url.clone(), read_body(&blob, &url, None)?))
    }

    /// The manifest (or index) named by `digest` (`sha256:…`), checked: from the store
    /// when it holds it, else from the registry (online). Returns the URL and the bytes.
    pub fn manifest(&self, lock: &mut InputsLock, digest: &str) -> Result<(String, Vec<u8>)> {
        let url = self.manifest_url(digest);
        let blob = self.fetch(lock, &url, Some(digest), Some(MANIFEST_ACCEPT))?;
        Ok((url.clone(), read_body(&blob, &url, Some(digest))?))
    }

    /// The blob named by `digest` (a config or a layer) into the store, checked.
    pub fn blob(&self, lock: &mut InputsLock, digest: &str) -> Result<Blob> {
        let url = self.blob_url(digest);
        self.fetch(lock, &url, Some(digest), None)
    }

    /// [`RegistryClient::blob`], read back (a config: small, and parsed).
    pub fn blob_bytes(&self, lock: &mut InputsLock, digest: &str) -> Result<(String, Vec<u8>)> {
        let blob = self.blob(lock, digest)?;
        let url = self.blob_url(digest);
        Ok((url.clone(), read_body(&blob, &url, Some(digest))?))
    }

    /// The one path every request of this client takes: `Fetcher`'s recorded fetch.
    fn fetch(
        &self,
        lock: &mut InputsLock,
        url: &str,
        digest: Option<&str>,
        accept: Option<&str>,
    ) -> Result<Blob> {
        let expected = digest.map(|d| sha256_hex(url, d)).transpose()?;
        let token = self.token.borrow().clone();
        let answer = |challenge: &str| self.authorize(challenge);
        let req = Request {
            accept,
            authorization: token.as_deref(),
            on_challenge: Some(&answer),
            content_digest: accept.is_some(),
        };
        self.fetcher.fetch_recorded_with(lock, url, expected, &req)
    }

    /// Answer a `WWW-Authenticate: Bearer realm=…,service=…` challenge with an anonymous
    /// pull token for this repository (kept for the client's later requests).
    fn authorize(&self, challenge: &str) -> Result<String> {
        let param = |k: &str| {
            challenge.split([',', ' ']).find_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                (a.trim() == k).then(|| b.trim().trim_matches('"').to_string())
            })
        };
        let realm = param("realm").ok_or_else(|| {
            Error::network(
                &self.base,
                format!("no realm in the challenge {challenge:?}"),
            )
        })?;
        let service = param("service").unwrap_or_default();
        let url = format!(
            "{}?service={service}&scope=repository:{}:pull",
            self.realm_url(&realm),
            self.repository
        );
        let body = self.fetcher.get_document(&url, "application/json")?;
        let v = json(&url, "the token answer", &body)?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| Error::network(&url, "token answer without a token"))?;
        let value = format!("Bearer {token}");
        *self.token.borrow_mut() = Some(value.clone());
        Ok(value)
    }
}

/// What the registry publishes for one image, for one platform (linux/amd64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedImage {
    pub reference: String,
    /// Digest of the platform manifest's exact bytes.
    pub manifest_digest: String,
    /// Digest of the index the tag points at, when it is one.
    pub index_digest: Option<String>,
    /// The config blob's digest (podman's image ID).
    pub config_digest: String,
    /// `rootfs.diff_ids` of the config: sha256 of each uncompressed layer.
    pub diff_ids: Vec<String>,
    /// The layer descriptors' (compressed) digests.
    pub layers: Vec<String>,
    /// The platform manifest's media type (OCI or Docker v2s2).
    pub media_type: String,
    /// The layer descriptors' media types (their compression: `…tar+gzip`, `…diff.tar.gzip`,
    /// `…tar+zstd`, or none) and compressed sizes, in the manifest's order.
    pub layer_media_types: Vec<String>,
    pub layer_sizes: Vec<u64>,
    /// `org.opencontainers.image.*` labels of the config.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The published image `image:tag` at the registry `registry`, for linux/amd64: online
/// from the registry (the tag asked for again, the rest by digest from the store when held),
/// offline from the store alone. Manifest, index and config are stored under their URLs and
/// recorded in `lock`. A token realm whose host is one of `realms` is asked at its location
/// ([`RegistryClient::with_realm_locations`]).
pub fn published_image(
    fetcher: &Fetcher,
    lock: &mut InputsLock,
    registry: &str,
    image: &str,
    tag: &str,
    realms: &[(String, String)],
) -> Result<PublishedImage> {
    let c = RegistryClient::new(fetcher, registry, image).with_realm_locations(realms);
    let (url, body) = c.manifest_by_tag(lock, tag)?;
    let top_digest = crate::digest::sha256_digest(&body);
    let top = json(&url, "the manifest", &body)?;
    let (manifest_digest, manifest, index_digest, murl) = if top.get("manifests").is_some() {
        let digest = top["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| Error::network(&url, "the index has no linux/amd64 manifest"))?
            .to_string();
        let (murl, mbody) = c.manifest(lock, &digest)?;
        let m = json(&murl, "the manifest", &mbody)?;
        (digest, m, Some(top_digest), murl)
    } else {
        (top_digest, top, None, url)
    };
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::network(&murl, "manifest without config.digest"))?
        .to_string();
    let (curl, config) = c.blob_bytes(lock, &config_digest)?;
    let layers = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect();
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
    let layer_media_types = descriptors
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
        .collect();
    let layer_sizes = descriptors
        .iter()
        .map(|l| l["size"].as_u64().unwrap_or_default())
        .collect();
    let parsed: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&config).map_err(|e| {
            Error::network(
                &curl,
                format!("config is not an OCI image configuration: {e}"),
            )
        })?;
    let diff_ids = parsed.rootfs().diff_ids().to_vec();
    let labels = parsed
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(PublishedImage {
        reference: format!("{}/{image}:{tag}", host_of(registry)),
        manifest_digest,
        index_digest,
        config_digest,
        diff_ids,
        layers,
        media_type,
        layer_media_types,
        layer_sizes,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::inputs::lock::Status;
    use crate::inputs::store::Store;

    /// What the test registry answers for one path.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn ok(body: &[u8]) -> Answer {
        Answer {
            status: 200,
            headers: vec![],
            body: body.to_vec(),
        }
    }

    /// A registry on 127.0.0.1 answering `routes` by path (404 otherwise); with `token`,
    /// every path but `/token` wants `Authorization: Bearer <token>` and says where to get
    /// it. Returns its base URL and the request paths it saw.
    fn serve(
        routes: BTreeMap<String, Answer>,
        token: Option<&'static str>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        serve_realm(routes, token, None)
    }

    /// [`serve`], its challenge naming `realm` (Docker Hub's) instead of its own `/token`.
    fn serve_realm(
        routes: BTreeMap<String, Answer>,
        token: Option<&'static str>,
        realm: Option<&'static str>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, base2) = (seen.clone(), base.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                    {
                        auth = Some(v.trim().to_string());
                    }
                }
                seen2.lock().unwrap().push(path.clone());
                let a = match token {
                    Some(t) if path.starts_with("/token?") => {
                        ok(format!(r#"{{"token":"{t}"}}"#).as_bytes())
                    }
                    Some(t) if auth.as_deref() != Some(&format!("Bearer {t}")) => Answer {
                        status: 401,
                        headers: vec![(
                            "WWW-Authenticate".into(),
                            match realm {
                                Some(r) => format!(
                                    r#"Bearer realm="{r}",service="registry.docker.io",scope="repository:x:pull""#
                                ),
                                None => {
                                    format!(r#"Bearer realm="{base2}/token",service="test""#)
                                }
                            },
                        )],
                        body: vec![],
                    },
                    _ => routes.get(&path).cloned().unwrap_or(Answer {
                        status: 404,
                        headers: vec![],
                        body: vec![],
                    }),
                };
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    a.status,
                    a.body.len()
                );
                for (k, v) in &a.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&a.body);
            }
        });
        (base, seen)
    }

    fn digest(b: &[u8]) -> String {
        crate::digest::sha256_digest(b)
    }

    fn fetcher(store: &std::path::Path, offline: bool) -> Fetcher {
        Fetcher::new(Store::open(store).unwrap(), offline)
            .with_retries(1, Duration::from_millis(1))
            .with_progress(false)
    }

    /// A one-layer image: (manifest, config) bytes.
    fn image() -> (Vec<u8>, Vec<u8>) {
        let diff_id = digest(b"layer");
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.version": "1"}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest(b"layer.gz"), "size": 8}],
        }))
        .unwrap();
        (manifest, config)
    }

    fn statuses(lock: &InputsLock) -> Vec<(Status, String)> {
        lock.entries
            .iter()
            .map(|e| (e.status, e.url.clone()))
            .collect()
    }

    #[test]
    fn urls_and_routes() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(
            manifest_url("http://h:5000/", "a/b", "t1"),
            "http://h:5000/v2/a/b/manifests/t1"
        );
        assert_eq!(
            blob_url("https://h", "a/b", &d),
            format!("https://h/v2/a/b/blobs/{d}")
        );
        assert_eq!(host_of("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(
            route("/v2/a/b/manifests/t1"),
            Some(Route::Manifest {
                repository: "a/b",
                reference: "t1"
            })
        );
        assert_eq!(
            route(&format!("/v2/a/blobs/{d}")),
            Some(Route::Blob {
                repository: "a",
                digest: &d
            })
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), None);
        assert_eq!(route("/v2/a/manifests/"), None);
        assert_eq!(route("/v2/_catalog"), None);
        assert_eq!(route("/other"), None);
        // What the client builds, the server reads back.
        let u = manifest_url("http://h", "x/y", &d);
        assert_eq!(
            route(u.strip_prefix("http://h").unwrap()),
            Some(Route::Manifest {
                repository: "x/y",
                reference: &d
            })
        );
        assert!(sha256_hex("u", "sha512:00").is_err());
        assert_eq!(sha256_hex("u", &d).unwrap(), "a".repeat(64));
    }

    #[test]
    fn published_online_then_offline_from_the_store() {
        let (manifest, config) = image();
        let mut routes = BTreeMap::new();
        routes.insert("/v2/arch/img/manifests/v1".to_string(), ok(&manifest));
        routes.insert(
            format!("/v2/arch/img/blobs/{}", digest(&config)),
            ok(&config),
        );
        let (base, seen) = serve(routes, None);
        let d = tempfile::tempdir().unwrap();

        let pull = |offline: bool| {
            let mut lock = InputsLock::default();
            let f = fetcher(d.path(), offline);
            let p = published_image(&f, &mut lock, &base, "arch/img", "v1", &[]).unwrap();
            (p, lock)
        };
        let (online, lock) = pull(false);
        assert_eq!(online.manifest_digest, digest(&manifest));
        assert_eq!(online.config_digest, digest(&config));
        assert_eq!(online.diff_ids, vec![digest(b"layer")]);
        assert_eq!(online.layers, vec![digest(b"layer.gz")]);
        assert_eq!(online.index_digest, None);
        assert_eq!(online.labels["org.opencontainers.image.version"], "1");
        assert_eq!(online.reference, format!("{}/arch/img:v1", host_of(&base)));
        let murl = manifest_url(&base, "arch/img", "v1");
        let curl = blob_url(&base, "arch/img", &digest(&config));
        assert_eq!(
            statuses(&lock),
            vec![
                (Status::Fetched, murl.clone()),
                (Status::Fetched, curl.clone())
            ]
        );

        let asked = seen.lock().unwrap().len();
        let (offline, lock) = pull(true);
        assert_eq!(offline, online);
        assert_eq!(
            statuses(&lock),
            vec![(Status::Hit, murl), (Status::Hit, curl)]
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            asked,
            "offline asked the registry"
        );
    }

    #[test]
    fn an_index_leads_to_the_amd64_manifest_with_a_token() {
        let (manifest, config) = image();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": digest(b"arm"), "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": digest(&manifest), "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }))
        .unwrap();
        let mut routes = BTreeMap::new();
        let mut tag = ok(&index);
        tag.headers
            .push(("Docker-Content-Digest".into(), digest(&index)));
        routes.insert("/v2/lib/a/manifests/latest".to_string(), tag);
        routes.insert(
            format!("/v2/lib/a/manifests/{}", digest(&manifest)),
            ok(&manifest),
        );
        routes.insert(format!("/v2/lib/a/blobs/{}", digest(&config)), ok(&config));
        let (base, seen) = serve(routes, Some("t0k"));
        let d = tempfile::tempdir().unwrap();
        let mut lock = InputsLock::default();
        let p = published_image(
            &fetcher(d.path(), false),
            &mut lock,
            &base,
            "lib/a",
            "latest",
            &[],
        )
        .unwrap();
        assert_eq!(p.index_digest, Some(digest(&index)));
        assert_eq!(p.manifest_digest, digest(&manifest));
        assert_eq!(p.config_digest, digest(&config));
        assert_eq!(lock.entries.len(), 3);
        // One token for the client, asked for on the first 401 only.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().filter(|p| p.starts_with("/token?")).count(), 1);
        assert!(
            seen.iter()
                .any(|p| p.contains("scope=repository:lib/a:pull"))
        );
    }

    #[test]
    fn docker_hubs_realm_is_asked_at_the_location_mapped_to_its_host() {
        let (manifest, _) = image();
        let mut routes = BTreeMap::new();
        routes.insert("/v2/x/manifests/v1".to_string(), ok(&manifest));
        let (base, seen) = serve_realm(routes, Some("t0k"), Some("https://Auth.Docker.io/token"));
        let d = tempfile::tempdir().unwrap();
        let f = fetcher(d.path(), false);
        let realms = [("auth.docker.io".to_string(), format!("{base}/"))];
        let c = RegistryClient::new(&f, &base, "x").with_realm_locations(&realms);
        let (_, bytes) = c.manifest_by_tag(&mut InputsLock::default(), "v1").unwrap();
        assert_eq!(bytes, manifest);
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter()
                .any(|p| p == "/token?service=registry.docker.io&scope=repository:x:pull"),
            "{seen:?}"
        );
        // Unmapped hosts and other shapes are left as they are.
        assert_eq!(
            c.realm_url("https://other.example/t"),
            "https://other.example/t"
        );
        assert_eq!(c.realm_url("auth.docker.io"), "auth.docker.io");
    }

    #[test]
    fn other_bytes_than_the_digest_are_tampered_and_not_stored() {
        let (manifest, config) = image();
        let mut routes = BTreeMap::new();
        // The config's URL serves other bytes.
        routes.insert("/v2/x/manifests/v1".to_string(), ok(&manifest));
        routes.insert(format!("/v2/x/blobs/{}", digest(&config)), ok(b"not it"));
        // A tag whose Docker-Content-Digest does not match its body.
        let mut lying = ok(&manifest);
        lying
            .headers
            .push(("Docker-Content-Digest".into(), digest(b"else")));
        routes.insert("/v2/x/manifests/v2".to_string(), lying);
        let (base, _) = serve(routes, None);
        let d = tempfile::tempdir().unwrap();
        let f = fetcher(d.path(), false);

        let mut lock = InputsLock::default();
        let e = published_image(&f, &mut lock, &base, "x", "v1", &[]).unwrap_err();
        let curl = blob_url(&base, "x", &digest(&config));
        match &e {
            Error::Tampered { what, .. } => assert!(what.contains(&curl), "{e}"),
            _ => panic!("not Tampered: {e}"),
        }
        assert!(
            f.store()
                .get(sha256_hex("", &digest(b"not it")).unwrap())
                .is_none()
        );

        let e = published_image(&f, &mut lock, &base, "x", "v2", &[]).unwrap_err();
        match &e {
            Error::Tampered { what, .. } => {
                assert!(what.contains(&manifest_url(&base, "x", "v2")), "{e}")
            }
            _ => panic!("not Tampered: {e}"),
        }
    }

    #[test]
    fn a_corrupt_store_copy_is_tampered() {
        let (manifest, _) = image();
        let d = tempfile::tempdir().unwrap();
        let f = fetcher(d.path(), true);
        // Other bytes under the manifest's name: what a corrupted store looks like.
        let p = f
            .store()
            .blob_path(sha256_hex("", &digest(&manifest)).unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"garbage").unwrap();
        let c = RegistryClient::new(&f, "http://127.0.0.1:9", "x");
        let e = c
            .manifest(&mut InputsLock::default(), &digest(&manifest))
            .unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
    }

    #[test]
    fn offline_without_a_copy_is_a_network_error_naming_the_url() {
        let d = tempfile::tempdir().unwrap();
        let f = fetcher(d.path(), true);
        let mut lock = InputsLock::default();
        let e = published_image(&f, &mut lock, "http://127.0.0.1:9", "x/y", "v1", &[]).unwrap_err();
        let url = manifest_url("http://127.0.0.1:9", "x/y", "v1");
        match &e {
            Error::Network { url: u, message } => {
                assert_eq!(u, &url);
                assert!(message.contains("offline"), "{e}");
            }
            _ => panic!("not Network: {e}"),
        }
        assert!(e.to_string().contains(&url), "{e}");
        let c = RegistryClient::new(&f, "http://127.0.0.1:9", "x/y");
        let dg = digest(b"x");
        let e = c.blob(&mut lock, &dg).unwrap_err();
        assert!(
            e.to_string()
                .contains(&blob_url("http://127.0.0.1:9", "x/y", &dg)),
            "{e}"
        );
        assert!(lock.entries.is_empty());
    }
}
