//! Reading a published image from an OCI registry (the Distribution API), without podman.
//!
//! The verdict compares the image's config digest and diffIDs (reference/oci.md); the
//! manifest digest is kept as compression-dependent evidence. Every body is checked against
//! the digest that names it, so a registry cannot hand back other bytes unnoticed.

use serde::Serialize;

use crate::error::{Error, Result};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

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
    /// `org.opencontainers.image.*` labels of the config.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One HTTP answer: status, Docker-Content-Digest, WWW-Authenticate, body.
struct Answer {
    status: u16,
    digest: Option<String>,
    auth: Option<String>,
    body: Vec<u8>,
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> Client {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(120)))
                .build(),
        );
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    fn get(&self, url: &str, accept: &str) -> Result<Answer> {
        let mut req = self.agent.get(url).header("Accept", accept);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| Error::network(url, e.to_string()))?;
        let status = resp.status().as_u16();
        let h = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let digest = h("Docker-Content-Digest");
        let auth = h("WWW-Authenticate");
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_vec()
            .map_err(|e| Error::network(url, format!("reading the body: {e}")))?;
        Ok(Answer {
            status,
            digest,
            auth,
            body,
        })
    }

    /// `GET` with a bearer token fetched on the first 401, as Docker Hub requires.
    fn get_authed(
        &mut self,
        url: &str,
        accept: &str,
        scope: &str,
    ) -> Result<(Option<String>, Vec<u8>)> {
        let mut a = self.get(url, accept)?;
        if a.status == 401 && self.token.is_none() {
            let challenge = a
                .auth
                .clone()
                .ok_or_else(|| Error::network(url, "401 without WWW-Authenticate"))?;
            self.token = Some(self.fetch_token(&challenge, scope)?);
            a = self.get(url, accept)?;
        }
        let Answer {
            status,
            digest,
            body,
            ..
        } = a;
        if status != 200 {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Error::network(url, format!("HTTP {status}: {snippet}")));
        }
        Ok((digest, body))
    }

    fn fetch_token(&self, challenge: &str, scope: &str) -> Result<String> {
        let param = |k: &str| {
            challenge.split([',', ' ']).find_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                (a.trim() == k).then(|| b.trim().trim_matches('"').to_string())
            })
        };
        let realm = param("realm")
            .ok_or_else(|| Error::network(&self.base, format!("no realm in {challenge:?}")))?;
        let service = param("service").unwrap_or_default();
        let url = format!("{realm}?service={service}&scope={scope}");
        let Answer { status, body, .. } = self.get(&url, "application/json")?;
        if status != 200 {
            return Err(Error::network(
                &url,
                format!("token request: HTTP {status}"),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::network(&url, format!("token response: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::network(&url, "token response without a token"))
    }
}

/// Fetch one manifest's exact bytes by digest (checked) and its media type.
pub fn fetch_manifest(base: &str, repository: &str, digest: &str) -> Result<(Vec<u8>, String)> {
    let mut c = Client::new(base);
    let scope = format!("repository:{repository}:pull");
    let url = format!("{}/v2/{repository}/manifests/{digest}", c.base);
    let (_, body) = c.get_authed(&url, ACCEPT, &scope)?;
    check_digest(&url, digest, &body)?;
    let media = manifest_media_type(&body);
    Ok((body, media))
}

/// The media type a manifest declares (or the Docker v2 type, which omits nothing else).
pub fn manifest_media_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string())
}

fn check_digest(url: &str, expected: &str, body: &[u8]) -> Result<()> {
    let actual = crate::digest::sha256_digest(body);
    if actual != expected {
        return Err(Error::Tampered {
            what: url.to_string(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// The raw bytes behind a [`PublishedImage`]: the platform manifest and the config, so a
/// later offline run can rebuild the record from the store.
#[derive(Debug, Clone)]
pub struct PublishedBytes {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
}

/// Rebuild the record from stored bytes (offline). `manifest_digest` is the platform
/// manifest's digest; the config is checked against the manifest's `config.digest`.
pub fn published_from_bytes(
    reference: &str,
    index_digest: Option<String>,
    b: &PublishedBytes,
) -> Result<PublishedImage> {
    let manifest: serde_json::Value = serde_json::from_slice(&b.manifest).map_err(|e| {
        Error::Environment(format!("{reference}: stored manifest is not JSON: {e}"))
    })?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::Environment(format!("{reference}: manifest without config.digest")))?
        .to_string();
    check_digest(reference, &config_digest, &b.config)?;
    image_record(
        reference,
        crate::digest::sha256_digest(&b.manifest),
        index_digest,
        &manifest,
        config_digest,
        &b.config,
    )
}

fn image_record(
    reference: &str,
    manifest_digest: String,
    index_digest: Option<String>,
    manifest: &serde_json::Value,
    config_digest: String,
    config_bytes: &[u8],
) -> Result<PublishedImage> {
    let layers = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect();
    let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| {
            Error::network(
                reference,
                format!("config is not an OCI image configuration: {e}"),
            )
        })?;
    let diff_ids = config.rootfs().diff_ids().to_vec();
    let labels = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(PublishedImage {
        reference: reference.to_string(),
        manifest_digest,
        index_digest,
        config_digest,
        diff_ids,
        layers,
        labels,
    })
}

/// Fetch the published image `repository:tag` from the registry at `base` (for example
/// `https://registry-1.docker.io` or `http://127.0.0.1:5000`), for linux/amd64.
pub fn fetch_published(base: &str, repository: &str, tag: &str) -> Result<PublishedImage> {
    fetch_published_bytes(base, repository, tag).map(|(p, _)| p)
}

/// [`fetch_published`], also returning the bytes it read.
pub fn fetch_published_bytes(
    base: &str,
    repository: &str,
    tag: &str,
) -> Result<(PublishedImage, PublishedBytes)> {
    let mut c = Client::new(base);
    let scope = format!("repository:{repository}:pull");
    let url = format!("{}/v2/{repository}/manifests/{tag}", c.base);
    let (digest, body) = c.get_authed(&url, ACCEPT, &scope)?;
    let top_digest = crate::digest::sha256_digest(&body);
    if let Some(d) = &digest {
        check_digest(&url, d, &body)?;
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::network(&url, format!("manifest is not JSON: {e}")))?;
    let (manifest_digest, manifest, index_digest, raw_manifest) = if v.get("manifests").is_some() {
        let pick = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .ok_or_else(|| Error::network(&url, "the index has no linux/amd64 manifest"))?;
        let d = pick["digest"].as_str().unwrap_or_default().to_string();
        let murl = format!("{}/v2/{repository}/manifests/{d}", c.base);
        let (_, mbody) = c.get_authed(&murl, ACCEPT, &scope)?;
        check_digest(&murl, &d, &mbody)?;
        let m: serde_json::Value = serde_json::from_slice(&mbody)
            .map_err(|e| Error::network(&murl, format!("manifest is not JSON: {e}")))?;
        (d, m, Some(top_digest), mbody)
    } else {
        (top_digest, v, None, body)
    };
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::network(&url, "manifest without config.digest"))?
        .to_string();
    let curl = format!("{}/v2/{repository}/blobs/{config_digest}", c.base);
    let (_, cbody) = c.get_authed(&curl, "*/*", &scope)?;
    check_digest(&curl, &config_digest, &cbody)?;
    let host = base
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(base)
        .trim_end_matches('/');
    let reference = format!("{host}/{repository}:{tag}");
    let rec = image_record(
        &reference,
        manifest_digest,
        index_digest,
        &manifest,
        config_digest,
        &cbody,
    )?;
    Ok((
        rec,
        PublishedBytes {
            manifest: raw_manifest,
            config: cbody,
        },
    ))
}
