//! Native image diff (`reprobox image diff`): two container images compared piece by piece,
//! config, annotations, layers and each layer's files, without diffoci or a daemon.
//!
//! An image is read from a `docker save`/`podman save` archive (docker-archive), an
//! oci-archive, an OCI image layout directory, or a registry (through
//! `inputs::registry::RegistryClient`, every body checked against its digest and kept in the
//! store). What is compared, in this order:
//! - the image names a docker-archive carries (`RepoTags`);
//! - the index annotations (the index document's and the chosen manifest descriptor's, where
//!   `org.opencontainers.image.ref.name` and `io.containerd.image.name` live) and the
//!   manifest's media type and annotations;
//! - the config, every field as a JSON path (labels, env by variable, cmd, entrypoint,
//!   working dir, user, history entries, created, rootfs type and diff_ids, architecture, os…);
//! - the layer count, and layer by layer in order: media type, size, digest (when the format
//!   names it), the digest of the uncompressed stream (computed here), and every file through
//!   `verify::tardiff` (type, mode, owner, mtime, size, content sha256, link target, xattrs).
//!
//! Every difference is found in one pass; the ones `--semantic` hides carry the reason
//! ([`Ignored`]), so the semantic view is a filter of the full one and can say what it hid:
//! - **names**: `RepoTags`, and the annotations `org.opencontainers.image.ref.name`,
//!   `io.containerd.image.name` and `io.cri-containerd.image.name` (how an image was called
//!   when it was saved, not what it is);
//! - **timestamps that are not content**: the config's `created`, each history entry's
//!   `created`, and the `org.opencontainers.image.created` *annotation* (labels are never
//!   ignored: a label is what the Dockerfile wrote). File mtimes inside layers are content
//!   (they are in the layer's bytes and its diffID) and are always compared;
//! - **compression**: a layer's media type when only its compression (or its docker/OCI
//!   spelling) differs, its compressed size and compressed digest, and the manifest media
//!   type's docker/OCI spelling; the uncompressed digest and every file are still compared;
//! - **empty versus absent**: a config field that is `null`, `[]` or `{}` on one side and
//!   missing on the other;
//! - **encoding**: the config's bytes when every field is equal (key order, spacing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::InputsLock;
use crate::inputs::registry::RegistryClient;
use crate::inputs::unpack::{Compression, compression_of, decompressing, open_decompressed};
use crate::verify::tardiff::{self, Change, Side};
use crate::verify::tarindex::{self, TarIndex};

/// What the input was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    DockerArchive,
    OciArchive,
    OciLayout,
    Registry,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::DockerArchive => "docker-archive",
            Format::OciArchive => "oci-archive",
            Format::OciLayout => "oci-layout",
            Format::Registry => "registry",
        }
    }
}

/// One layer as the manifest (or `manifest.json`) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerDesc {
    pub media_type: String,
    /// Bytes of the blob as stored (compressed or not).
    pub size: u64,
    /// The blob's digest, when the format names it (OCI descriptors, `blobs/sha256/…` paths).
    pub digest: Option<String>,
    /// Where the blob is in its source (a path in the archive or layout, or a digest).
    #[serde(skip)]
    key: String,
}

/// Where the blobs of an image are read from.
#[derive(Debug)]
enum Blobs {
    /// An OCI layout directory (or an unpacked archive): paths relative to it.
    Dir(PathBuf),
    /// An uncompressed tar: member path → (offset of its data, size).
    Tar {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
        /// The decompressed copy of a compressed archive, removed on drop.
        _tmp: Option<tempfile::NamedTempFile>,
    },
    /// A registry's blobs in the store: digest → stored file.
    Store(BTreeMap<String, PathBuf>),
}

impl Blobs {
    fn open(&self, key: &str) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Blobs::Dir(d) => Ok(Box::new(File::open(d.join(key))?)),
            Blobs::Tar { file, members, .. } => {
                let (off, size) = members.get(key).copied().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, format!("no member {key}"))
                })?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(off))?;
                Ok(Box::new(f.take(size)))
            }
            Blobs::Store(m) => {
                let p = m.get(key).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, format!("no blob {key}"))
                })?;
                Ok(Box::new(File::open(p)?))
            }
        }
    }

    fn size(&self, key: &str) -> std::io::Result<u64> {
        match self {
            Blobs::Dir(d) => Ok(std::fs::metadata(d.join(key))?.len()),
            Blobs::Tar { members, .. } => members.get(key).map(|m| m.1).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("no member {key}"))
            }),
            Blobs::Store(m) => Ok(std::fs::metadata(m.get(key).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("no blob {key}"))
            })?)?
            .len()),
        }
    }

    fn exists(&self, key: &str) -> bool {
        match self {
            Blobs::Dir(d) => d.join(key).is_file(),
            Blobs::Tar { members, .. } => members.contains_key(key),
            Blobs::Store(m) => m.contains_key(key),
        }
    }

    fn read(&self, key: &str) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(key)?.read_to_end(&mut v)?;
        Ok(v)
    }
}

/// An image read for comparison: its documents parsed, its layers still where they are.
#[derive(Debug)]
pub struct Image {
    /// The input as given (a path or a reference): names the image in errors and output.
    pub input: String,
    pub format: Format,
    /// `RepoTags` of a docker-archive.
    pub names: Vec<String>,
    /// The index document's annotations and the chosen manifest descriptor's.
    pub index_annotations: BTreeMap<String, String>,
    /// The manifest's media type, when there is a manifest document (not in a docker-archive).
    pub manifest_media_type: Option<String>,
    pub manifest_annotations: BTreeMap<String, String>,
    /// The config document as JSON.
    pub config: Value,
    /// sha256 of the config's bytes (the image ID).
    pub config_digest: String,
    pub layers: Vec<LayerDesc>,
    blobs: Blobs,
}

/// A bad-input error naming the image input and what was expected of it.
fn bad(input: &str, message: impl Into<String>) -> Error {
    Error::bad_input(format!("image {input}"), message)
}

const EXPECTED: &str = "expected a docker-archive or oci-archive tar, an OCI image layout directory, or a registry reference REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:…";

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect()
}

fn is_index(media_type: &str, doc: Option<&Value>) -> bool {
    media_type.ends_with("image.index.v1+json")
        || media_type.ends_with("manifest.list.v2+json")
        || doc.is_some_and(|d| d.get("manifests").is_some())
}

/// The manifest a list of descriptors means: the only one, else the linux/amd64 one.
fn choose<'v>(input: &str, what: &str, manifests: &'v [Value]) -> Result<&'v Value> {
    match manifests {
        [] => Err(bad(input, format!("{what} lists no manifest"))),
        [one] => Ok(one),
        many => many
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .ok_or_else(|| {
                bad(
                    input,
                    format!(
                        "{what} lists {} manifests and none for linux/amd64: expected one image",
                        many.len()
                    ),
                )
            }),
    }
}

fn blob_key(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// A docker-archive layer's media type, from its first bytes (the archive does not say).
fn media_type_of(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
        Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

impl Image {
    /// Read `input`: an existing path is an archive or a layout directory; anything else
    /// must be a registry reference, fetched through `fetcher` (called only then), a token
    /// realm whose host is one of `realms` (host, location) asked at that location.
    pub fn open(
        input: &str,
        fetcher: impl FnOnce() -> Result<Fetcher>,
        realms: &[(String, String)],
    ) -> Result<Image> {
        let path = Path::new(input);
        if path.exists() {
            return Image::open_path(input, path);
        }
        match parse_reference(input) {
            Some(r) => Image::open_registry(input, &fetcher()?, &r, realms),
            None => Err(bad(input, format!("no such file or directory; {EXPECTED}"))),
        }
    }

    /// An archive (tar, any compression) or a directory (OCI layout or unpacked archive).
    pub fn open_path(input: &str, path: &Path) -> Result<Image> {
        let blobs = if path.is_dir() {
            Blobs::Dir(path.to_path_buf())
        } else {
            tar_blobs(input, path)?
        };
        let dir = path.is_dir();
        if blobs.exists("index.json") {
            let mut img = Image::from_oci(input, blobs, dir)?;
            // docker save (25+) writes an OCI layout with manifest.json beside it.
            if img.blobs.exists("manifest.json")
                && let Ok(m) = docker_manifest(input, &img.blobs)
            {
                img.names = repo_tags(&m);
                img.format = Format::DockerArchive;
            }
            return Ok(img);
        }
        if blobs.exists("manifest.json") {
            return Image::from_docker(input, blobs);
        }
        Err(bad(
            input,
            format!(
                "not an image: neither index.json (OCI) nor manifest.json (docker-archive) in it; {EXPECTED}"
            ),
        ))
    }

    fn json(input: &str, blobs: &Blobs, key: &str, what: &str) -> Result<Value> {
        Image::json_and_digest(input, blobs, key, what).map(|(v, _)| v)
    }

    /// A JSON document and the sha256 of its bytes.
    fn json_and_digest(
        input: &str,
        blobs: &Blobs,
        key: &str,
        what: &str,
    ) -> Result<(Value, String)> {
        let bytes = blobs
            .read(key)
            .map_err(|e| bad(input, format!("cannot read {what} {key}: {e}")))?;
        let v = serde_json::from_slice(&bytes)
            .map_err(|e| bad(input, format!("{what} {key} is not JSON: {e}")))?;
        Ok((v, crate::digest::sha256_digest(&bytes)))
    }

    fn from_oci(input: &str, blobs: Blobs, dir: bool) -> Result<Image> {
        let mut doc = Image::json(input, &blobs, "index.json", "the index")?;
        let mut index_annotations = string_map(&doc["annotations"]);
        let mut what = "index.json".to_string();
        let manifest = loop {
            let ms = doc["manifests"].as_array().cloned().unwrap_or_default();
            let d = choose(input, &what, &ms)?;
            index_annotations.extend(string_map(&d["annotations"]));
            let digest = d["digest"].as_str().ok_or_else(|| {
                bad(
                    input,
                    format!("{what}: a manifest descriptor without a digest"),
                )
            })?;
            let key = blob_key(digest);
            let body = Image::json(input, &blobs, &key, "the manifest")?;
            let mt = d["mediaType"].as_str().unwrap_or_default();
            if is_index(mt, Some(&body)) {
                index_annotations.extend(string_map(&body["annotations"]));
                what = key;
                doc = body;
                continue;
            }
            break (body, mt.to_string());
        };
        let (m, desc_type) = manifest;
        let config_digest = m["config"]["digest"]
            .as_str()
            .ok_or_else(|| bad(input, "the manifest has no config.digest"))?;
        let (config, config_digest) =
            Image::json_and_digest(input, &blobs, &blob_key(config_digest), "the config")?;
        let layers = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let digest = l["digest"].as_str().unwrap_or_default().to_string();
                LayerDesc {
                    media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                    size: l["size"].as_u64().unwrap_or(0),
                    key: blob_key(&digest),
                    digest: Some(digest),
                }
            })
            .collect();
        Ok(Image {
            input: input.to_string(),
            format: if dir {
                Format::OciLayout
            } else {
                Format::OciArchive
            },
            names: Vec::new(),
            index_annotations,
            manifest_media_type: Some(m["mediaType"].as_str().map(str::to_string).unwrap_or(
                if desc_type.is_empty() {
                    "application/vnd.oci.image.manifest.v1+json".to_string()
                } else {
                    desc_type
                },
            )),
            manifest_annotations: string_map(&m["annotations"]),
            config,
            config_digest,
            layers,
            blobs,
        })
    }

    fn from_docker(input: &str, blobs: Blobs) -> Result<Image> {
        let m = docker_manifest(input, &blobs)?;
        let config_key = m["Config"]
            .as_str()
            .ok_or_else(|| bad(input, "manifest.json names no Config"))?;
        let (config, config_digest) =
            Image::json_and_digest(input, &blobs, config_key, "the config")?;
        let mut layers = Vec::new();
        for l in m["Layers"].as_array().into_iter().flatten() {
            let key = l
                .as_str()
                .ok_or_else(|| bad(input, "manifest.json: a layer that is not a path"))?
                .to_string();
            let size = blobs
                .size(&key)
                .map_err(|e| bad(input, format!("layer {key}: {e}")))?;
            let digest = key
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"));
            let from_sources = digest
                .as_deref()
                .and_then(|d| m["LayerSources"][d]["mediaType"].as_str());
            let media_type = match from_sources {
                Some(t) => t.to_string(),
                None => {
                    let mut magic = [0u8; 4];
                    let mut r = blobs
                        .open(&key)
                        .map_err(|e| bad(input, format!("layer {key}: {e}")))?;
                    let n = r.read(&mut magic).unwrap_or(0);
                    media_type_of(compression_of(&magic[..n])).to_string()
                }
            };
            layers.push(LayerDesc {
                media_type,
                size,
                digest,
                key,
            });
        }
        Ok(Image {
            input: input.to_string(),
            format: Format::DockerArchive,
            names: repo_tags(&m),
            index_annotations: BTreeMap::new(),
            manifest_media_type: None,
            manifest_annotations: BTreeMap::new(),
            config,
            config_digest,
            layers,
            blobs,
        })
    }

    /// An image from a registry: the manifest (by tag or digest; an index is followed to
    /// its only or its linux/amd64 manifest), the config and every layer through the
    /// registry client into the store.
    pub fn open_registry(
        input: &str,
        fetcher: &Fetcher,
        r: &ImageRef,
        realms: &[(String, String)],
    ) -> Result<Image> {
        let c = RegistryClient::new(fetcher, &r.base, &r.repository).with_realm_locations(realms);
        let mut lock = InputsLock::default();
        let (mut url, mut body) = if r.reference.starts_with("sha256:") {
            c.manifest(&mut lock, &r.reference)?
        } else {
            c.manifest_by_tag(&mut lock, &r.reference)?
        };
        let doc = |url: &str, body: &[u8]| -> Result<Value> {
            serde_json::from_slice(body)
                .map_err(|e| Error::network(url, format!("the manifest is not JSON: {e}")))
        };
        let mut m = doc(&url, &body)?;
        let mut index_annotations = BTreeMap::new();
        while is_index(m["mediaType"].as_str().unwrap_or_default(), Some(&m)) {
            index_annotations.extend(string_map(&m["annotations"]));
            let ms = m["manifests"].as_array().cloned().unwrap_or_default();
            let d = choose(input, &url, &ms)?;
            index_annotations.extend(string_map(&d["annotations"]));
            let digest = d["digest"]
                .as_str()
                .ok_or_else(|| Error::network(&url, "a manifest descriptor without a digest"))?;
            (url, body) = c.manifest(&mut lock, digest)?;
            m = doc(&url, &body)?;
        }
        let config_digest = m["config"]["digest"]
            .as_str()
            .ok_or_else(|| Error::network(&url, "the manifest has no config.digest"))?;
        let (curl, cbytes) = c.blob_bytes(&mut lock, config_digest)?;
        let config: Value = serde_json::from_slice(&cbytes)
            .map_err(|e| Error::network(&curl, format!("the config is not JSON: {e}")))?;
        let config_digest = crate::digest::sha256_digest(&cbytes);
        let mut stored = BTreeMap::new();
        let mut layers = Vec::new();
        for l in m["layers"].as_array().into_iter().flatten() {
            let digest = l["digest"]
                .as_str()
                .ok_or_else(|| Error::network(&url, "a layer without a digest"))?;
            let blob = c.blob(&mut lock, digest)?;
            stored.insert(digest.to_string(), blob.path);
            layers.push(LayerDesc {
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_u64().unwrap_or(blob.size),
                digest: Some(digest.to_string()),
                key: digest.to_string(),
            });
        }
        Ok(Image {
            input: input.to_string(),
            format: Format::Registry,
            names: Vec::new(),
            index_annotations,
            manifest_media_type: Some(crate::inputs::registry::manifest_media_type(&body)),
            manifest_annotations: string_map(&m["annotations"]),
            config,
            config_digest,
            layers,
            blobs: Blobs::Store(stored),
        })
    }

    /// Layer `i`'s files, and the sha256 of its uncompressed stream (its diffID).
    fn layer_files(&self, i: usize) -> Result<(TarIndex, String)> {
        let l = &self.layers[i];
        let what = PathBuf::from(format!("{} layer {} ({})", self.input, i + 1, l.key));
        let raw = self
            .blobs
            .open(&l.key)
            .map_err(|e| bad(&self.input, format!("layer {} ({}): {e}", i + 1, l.key)))?;
        let mut raw = BufReader::with_capacity(1 << 20, raw);
        let magic = raw
            .fill_buf()
            .map_err(|e| bad(&self.input, format!("layer {}: {e}", i + 1)))?;
        let compression = compression_of(&magic[..magic.len().min(4)]);
        let stream = decompressing(raw, compression, &what)?;
        let mut hashing = Hashing {
            inner: stream,
            hasher: Sha256::new(),
        };
        let files = tarindex::index_reader(&mut hashing, &what).map_err(|e| {
            bad(
                &self.input,
                format!("layer {} is not a readable tar: {e}", i + 1),
            )
        })?;
        // The tar's end-of-archive padding, so that the digest covers the whole stream.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| bad(&self.input, format!("layer {}: {e}", i + 1)))?;
        Ok((
            files,
            format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
        ))
    }
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn docker_manifest(input: &str, blobs: &Blobs) -> Result<Value> {
    let m = Image::json(input, blobs, "manifest.json", "the docker-archive manifest")?;
    match m.as_array().map(Vec::as_slice) {
        Some([one]) => Ok(one.clone()),
        Some([]) | None => Err(bad(input, "manifest.json lists no image")),
        Some(many) => Err(bad(
            input,
            format!("manifest.json lists {} images: expected one", many.len()),
        )),
    }
}

fn repo_tags(m: &Value) -> Vec<String> {
    m["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

/// Index an archive's members (decompressing a compressed one to a temporary file first).
fn tar_blobs(input: &str, path: &Path) -> Result<Blobs> {
    let mut f = File::open(path).map_err(|e| bad(input, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(|e| bad(input, format!("cannot read: {e}")))?;
    let (file, tmp) = if compression_of(&magic[..n]) == Compression::None {
        (path.to_path_buf(), None)
    } else {
        let mut t = tempfile::NamedTempFile::new()
            .ctx("create a temporary file in", std::env::temp_dir())?;
        let mut r = open_decompressed(path).map_err(|e| bad(input, e.to_string()))?;
        std::io::copy(&mut r, &mut t).map_err(|e| bad(input, format!("cannot decompress: {e}")))?;
        (t.path().to_path_buf(), Some(t))
    };
    let not_tar = |e: std::io::Error| bad(input, format!("not a tar archive ({e}); {EXPECTED}"));
    let mut ar = tar::Archive::new(File::open(&file).ctx("open", &file)?);
    let mut members = HashMap::new();
    let mut links = Vec::new();
    for e in ar.entries_with_seek().map_err(not_tar)? {
        let e = e.map_err(not_tar)?;
        let name = tarindex::normalise(&String::from_utf8_lossy(&e.path_bytes()));
        let kind = e.header().entry_type();
        if kind.is_file() {
            members.insert(name, (e.raw_file_position(), e.size()));
        } else if (kind.is_symlink() || kind.is_hard_link())
            && let Some(target) = e.link_name_bytes()
        {
            let target = String::from_utf8_lossy(&target).into_owned();
            let resolved = if kind.is_symlink() {
                let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                resolve(&parent.join(&target))
            } else {
                tarindex::normalise(&target)
            };
            links.push((name, resolved));
        }
    }
    for (name, target) in links {
        if let Some(m) = members.get(&target).copied() {
            members.insert(name, m);
        }
    }
    Ok(Blobs::Tar {
        file,
        members,
        _tmp: tmp,
    })
}

/// `a/b/../c` → `a/c`, without the file system.
fn resolve(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// A registry reference split into the registry's base URL, the repository and the tag or
/// digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub base: String,
    pub repository: String,
    /// A tag, or a digest `sha256:…`.
    pub reference: String,
}

/// `[http[s]://]REGISTRY/REPO[:TAG|@sha256:HEX]`; REGISTRY must look like a host (a dot, a
/// port or `localhost`). Without a scheme, loopback registries are plain HTTP, others
/// HTTPS, and `docker.io` is `registry-1.docker.io`. No tag means `latest`.
pub fn parse_reference(s: &str) -> Option<ImageRef> {
    let (scheme, rest) = match s.split_once("://") {
        Some((sc @ ("http" | "https"), rest)) => (Some(sc), rest),
        Some(_) => return None,
        None => (None, s),
    };
    let (host, path) = rest.split_once('/')?;
    if host.is_empty()
        || path.is_empty()
        || !(scheme.is_some() || host.contains('.') || host.contains(':') || host == "localhost")
    {
        return None;
    }
    let (repository, reference) = if let Some((repo, digest)) = path.split_once('@') {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        (repo, digest.to_string())
    } else {
        match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.is_empty() && !tag.contains('/') => (repo, tag.to_string()),
            _ => (path, "latest".to_string()),
        }
    };
    if repository.is_empty()
        || !repository
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
    {
        return None;
    }
    let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let base = match scheme {
        Some(sc) => format!("{sc}://{host}"),
        None if host == "docker.io" || host == "index.docker.io" => {
            "https://registry-1.docker.io".to_string()
        }
        None if hostname == "localhost"
            || hostname.starts_with("127.")
            || host.starts_with("[::1]") =>
        {
            format!("http://{host}")
        }
        None => format!("https://{host}"),
    };
    Some(ImageRef {
        base,
        repository: repository.to_string(),
        reference,
    })
}

/// What kind of thing differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A name the image carries (docker-archive `RepoTags`).
    Name,
    /// An index or manifest annotation.
    Annotation,
    /// The manifest document (its media type).
    Manifest,
    /// A config field.
    Config,
    /// The number of layers.
    LayerCount,
    /// A layer as a blob: present, media type, size, digest, uncompressed digest.
    Layer,
    /// A file inside a layer.
    File,
}

/// Why `--semantic` hides a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ignored {
    /// How the image was named when saved.
    Name,
    /// A timestamp that is not content (config and history `created`, the created annotation).
    Timestamp,
    /// Layer compression (media type suffix, compressed size and digest) or the docker/OCI
    /// spelling of a media type.
    Compression,
    /// `null`, empty and absent config fields.
    Empty,
    /// The config's JSON encoding (key order, spacing) when every field is equal.
    Encoding,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Name => "name",
            Ignored::Timestamp => "timestamp",
            Ignored::Compression => "compression",
            Ignored::Empty => "empty",
            Ignored::Encoding => "encoding",
        }
    }
}

/// One difference: where it is, and the value on each side (`None`: absent there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub kind: Kind,
    #[serde(rename = "where")]
    pub location: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// Why `--semantic` hides it (in the JSON only in the `ignored` list, as `reason`).
    #[serde(skip)]
    pub ignored: Option<Ignored>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(absent)".into());
        write!(f, "{}: {} -> {}", self.location, v(&self.a), v(&self.b))
    }
}

/// The result of comparing two images: every difference found, each marked with why
/// `--semantic` hides it, when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDiff {
    pub a: String,
    pub b: String,
    pub all: Vec<Difference>,
}

/// The JSON form (`reprobox image diff --json`, `image-diff.json`).
#[derive(Debug, Serialize)]
pub struct JsonReport<'d> {
    pub a: &'d str,
    pub b: &'d str,
    pub semantic: bool,
    /// The differences shown: `{kind, where, a, b}`.
    pub differences: Vec<&'d Difference>,
    /// With `--semantic`, what it hid: `{kind, where, a, b, reason}`.
    pub ignored: Vec<HiddenDifference<'d>>,
}

/// A difference `--semantic` hid, with the reason.
#[derive(Debug, Serialize)]
pub struct HiddenDifference<'d> {
    #[serde(flatten)]
    pub difference: &'d Difference,
    pub reason: Ignored,
}

impl ImageDiff {
    /// The differences shown: all of them, or with `semantic` those it does not ignore.
    pub fn shown(&self, semantic: bool) -> Vec<&Difference> {
        self.all
            .iter()
            .filter(|d| !semantic || d.ignored.is_none())
            .collect()
    }

    /// The differences `semantic` hides.
    pub fn hidden(&self, semantic: bool) -> Vec<&Difference> {
        self.all
            .iter()
            .filter(|d| semantic && d.ignored.is_some())
            .collect()
    }

    pub fn json(&self, semantic: bool) -> JsonReport<'_> {
        JsonReport {
            a: &self.a,
            b: &self.b,
            semantic,
            differences: self.shown(semantic),
            ignored: self
                .hidden(semantic)
                .into_iter()
                .map(|d| HiddenDifference {
                    difference: d,
                    reason: d.ignored.expect("hidden"),
                })
                .collect(),
        }
    }

    /// The human text: one line per difference shown; with `semantic`, a last paragraph
    /// counting what it hid, by reason.
    pub fn text(&self, semantic: bool) -> String {
        let mut o = String::new();
        let shown = self.shown(semantic);
        if shown.is_empty() {
            o.push_str(if semantic {
                "no semantic differences\n"
            } else {
                "no differences\n"
            });
        }
        for d in &shown {
            o.push_str(&format!("{d}\n"));
        }
        if let Some(h) = self.hidden_summary(semantic) {
            o.push_str(&format!("({h})\n"));
        }
        o
    }

    /// `N ignored by --semantic: 1 name, 2 compression`, or `None` when nothing was hidden.
    pub fn hidden_summary(&self, semantic: bool) -> Option<String> {
        let hidden = self.hidden(semantic);
        if hidden.is_empty() {
            return None;
        }
        let mut by: BTreeMap<Ignored, usize> = BTreeMap::new();
        for d in &hidden {
            *by.entry(d.ignored.expect("hidden")).or_default() += 1;
        }
        let parts: Vec<String> = by
            .iter()
            .map(|(k, n)| format!("{n} {}", k.as_str()))
            .collect();
        Some(format!(
            "{} ignored by --semantic: {}",
            hidden.len(),
            parts.join(", ")
        ))
    }

    /// A short summary for a report: how many differences, by where they are.
    pub fn summary(&self, semantic: bool) -> String {
        let shown = self.shown(semantic);
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for d in &shown {
            let k = match d.kind {
                Kind::File => {
                    // "layer N PATH aspect" → "layer N files"
                    let n = d.location.split(' ').nth(1).unwrap_or("?");
                    format!("layer {n} files")
                }
                Kind::Layer | Kind::LayerCount => "layers".into(),
                Kind::Config => "config".into(),
                Kind::Annotation => "annotations".into(),
                Kind::Manifest => "manifest".into(),
                Kind::Name => "names".into(),
            };
            *by.entry(k).or_default() += 1;
        }
        let mode = if semantic { "semantic " } else { "" };
        let mut s = if shown.is_empty() {
            format!("no {mode}differences")
        } else {
            let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("{} {mode}differences ({})", shown.len(), parts.join(", "))
        };
        if let Some(first) = shown.first() {
            s.push_str(&format!("; first: {first}"));
        }
        if let Some(h) = self.hidden_summary(semantic) {
            s.push_str(&format!("; {h}"));
        }
        s
    }
}

const NAME_ANNOTATIONS: &[&str] = &[
    "org.opencontainers.image.ref.name",
    "io.containerd.image.name",
    "io.cri-containerd.image.name",
];
const TIME_ANNOTATIONS: &[&str] = &["org.opencontainers.image.created"];

fn diff_annotations(
    out: &mut Vec<Difference>,
    place: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (va, vb) = (a.get(k), b.get(k));
        if va != vb {
            let ignored = if NAME_ANNOTATIONS.contains(&k.as_str()) {
                Some(Ignored::Name)
            } else if TIME_ANNOTATIONS.contains(&k.as_str()) {
                Some(Ignored::Timestamp)
            } else {
                None
            };
            out.push(Difference {
                kind: Kind::Annotation,
                location: format!("{place} annotation {k}"),
                a: va.cloned(),
                b: vb.cloned(),
                ignored,
            });
        }
    }
}

/// A media type with its compression and its docker/OCI spelling taken away: what the blob
/// is, not how it is stored.
fn media_kind(t: &str) -> String {
    let t = t
        .trim_end_matches(".gzip")
        .trim_end_matches("+gzip")
        .trim_end_matches("+zstd")
        .trim_end_matches(".zstd");
    match t {
        "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.oci.image.layer.v1.tar" => "layer tar".into(),
        "application/vnd.docker.distribution.manifest.v2+json"
        | "application/vnd.oci.image.manifest.v1+json" => "manifest".into(),
        other => other.into(),
    }
}

/// A JSON path step: `.key`, or `["key"]` when the key is not a plain word.
fn step(path: &str, key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", serde_json::to_string(key).expect("a string"))
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// Config paths `--semantic` ignores as timestamps: `.created`, `.history[N].created`.
fn timestamp_path(path: &str) -> bool {
    path == ".created" || (path.starts_with(".history[") && path.ends_with("].created"))
}

fn diff_json(out: &mut Vec<Difference>, path: &str, a: Option<&Value>, b: Option<&Value>) {
    if a == b {
        return;
    }
    if path == ".config.Env" {
        return diff_env(out, path, a, b);
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff_json(out, &step(path, k), x.get(k), y.get(k));
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                diff_json(out, &format!("{path}[{i}]"), x.get(i), y.get(i));
            }
        }
        _ => {
            let ignored = if timestamp_path(path) {
                Some(Ignored::Timestamp)
            } else if empty(a) && empty(b) {
                Some(Ignored::Empty)
            } else {
                None
            };
            out.push(Difference {
                kind: Kind::Config,
                location: format!("config {}", if path.is_empty() { "." } else { path }),
                a: a.map(show),
                b: b.map(show),
                ignored,
            });
        }
    }
}

/// `Env` by variable (`config .config.Env PATH: … -> …`), and its order when only that
/// differs.
fn diff_env(out: &mut Vec<Difference>, path: &str, a: Option<&Value>, b: Option<&Value>) {
    let vars = |v: Option<&Value>| -> Vec<(String, String)> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                let s = show(e);
                match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (s, String::new()),
                }
            })
            .collect()
    };
    let (va, vb) = (vars(a), vars(b));
    let (ma, mb): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (va.iter().cloned().collect(), vb.iter().cloned().collect());
    if ma == mb {
        let order = |v: &[(String, String)]| {
            v.iter()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
                .join(" ")
        };
        out.push(Difference {
            kind: Kind::Config,
            location: format!("config {path} (order)"),
            a: (!va.is_empty()).then(|| order(&va)),
            b: (!vb.is_empty()).then(|| order(&vb)),
            ignored: (va.is_empty() && vb.is_empty()).then_some(Ignored::Empty),
        });
        return;
    }
    let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    for k in keys {
        if ma.get(k) != mb.get(k) {
            out.push(Difference {
                kind: Kind::Config,
                location: format!("config {path} {k}"),
                a: ma.get(k).cloned(),
                b: mb.get(k).cloned(),
                ignored: None,
            });
        }
    }
}

fn file_differences(out: &mut Vec<Difference>, layer: usize, fd: &tardiff::FileDiff) {
    let at = |aspect: &str| format!("layer {layer} {} {aspect}", fd.path);
    for c in &fd.changes {
        let (loc, a, b) = match c {
            Change::Presence { only_in } => (
                format!("layer {layer} {}", fd.path),
                (*only_in == Side::A).then(|| "present".to_string()),
                (*only_in == Side::B).then(|| "present".to_string()),
            ),
            Change::Kind { a, b } => (at("type"), Some(a.clone()), Some(b.clone())),
            Change::Content {
                a,
                b,
                size_a,
                size_b,
            } => {
                let v = |h: &Option<String>, n: u64| {
                    Some(match h {
                        Some(h) => format!("sha256:{h} ({n} bytes)"),
                        None => format!("{n} bytes"),
                    })
                };
                (at("content"), v(a, *size_a), v(b, *size_b))
            }
            Change::Mode { a, b } => (at("mode"), Some(a.clone()), Some(b.clone())),
            Change::Owner { a, b } => (at("owner"), Some(a.clone()), Some(b.clone())),
            Change::Mtime { a, b } => (at("mtime"), Some(a.to_string()), Some(b.to_string())),
            Change::Link { a, b } => (at("link"), a.clone(), b.clone()),
            Change::Xattrs { a, b } => (
                at("xattrs"),
                Some(a.join(" ")).filter(|s| !s.is_empty()),
                Some(b.join(" ")).filter(|s| !s.is_empty()),
            ),
        };
        out.push(Difference {
            kind: Kind::File,
            location: loc,
            a,
            b,
            ignored: None,
        });
    }
}

fn layer_summary(l: &LayerDesc) -> String {
    format!(
        "{} {} bytes{}",
        l.media_type,
        l.size,
        l.digest
            .as_deref()
            .map(|d| format!(" {d}"))
            .unwrap_or_default()
    )
}

/// Compare two images. Errors: a layer that cannot be read (bad input, naming the image).
pub fn diff(a: &Image, b: &Image) -> Result<ImageDiff> {
    let mut out = Vec::new();
    if a.names != b.names {
        let v = |n: &[String]| (!n.is_empty()).then(|| n.join(", "));
        out.push(Difference {
            kind: Kind::Name,
            location: "image name".into(),
            a: v(&a.names),
            b: v(&b.names),
            ignored: Some(Ignored::Name),
        });
    }
    diff_annotations(
        &mut out,
        "index",
        &a.index_annotations,
        &b.index_annotations,
    );
    if let (Some(x), Some(y)) = (&a.manifest_media_type, &b.manifest_media_type)
        && x != y
    {
        out.push(Difference {
            kind: Kind::Manifest,
            location: "manifest mediaType".into(),
            a: Some(x.clone()),
            b: Some(y.clone()),
            ignored: (media_kind(x) == media_kind(y)).then_some(Ignored::Compression),
        });
    }
    diff_annotations(
        &mut out,
        "manifest",
        &a.manifest_annotations,
        &b.manifest_annotations,
    );
    let before = out.len();
    diff_json(&mut out, "", Some(&a.config), Some(&b.config));
    // The same fields in other bytes: say so (the digest is what a registry compares).
    if out.len() == before && a.config_digest != b.config_digest {
        out.push(Difference {
            kind: Kind::Config,
            location: "config digest (same fields, other JSON bytes)".into(),
            a: Some(a.config_digest.clone()),
            b: Some(b.config_digest.clone()),
            ignored: Some(Ignored::Encoding),
        });
    }

    if a.layers.len() != b.layers.len() {
        out.push(Difference {
            kind: Kind::LayerCount,
            location: "layers".into(),
            a: Some(a.layers.len().to_string()),
            b: Some(b.layers.len().to_string()),
            ignored: None,
        });
    }
    for i in 0..a.layers.len().max(b.layers.len()) {
        let n = i + 1;
        let (la, lb) = match (a.layers.get(i), b.layers.get(i)) {
            (Some(la), Some(lb)) => (la, lb),
            (la, lb) => {
                out.push(Difference {
                    kind: Kind::Layer,
                    location: format!("layer {n}"),
                    a: la.map(layer_summary),
                    b: lb.map(layer_summary),
                    ignored: None,
                });
                continue;
            }
        };
        let same_kind = media_kind(&la.media_type) == media_kind(&lb.media_type);
        if la.media_type != lb.media_type {
            out.push(Difference {
                kind: Kind::Layer,
                location: format!("layer {n} mediaType"),
                a: Some(la.media_type.clone()),
                b: Some(lb.media_type.clone()),
                ignored: same_kind.then_some(Ignored::Compression),
            });
        }
        if la.size != lb.size {
            out.push(Difference {
                kind: Kind::Layer,
                location: format!("layer {n} size"),
                a: Some(la.size.to_string()),
                b: Some(lb.size.to_string()),
                ignored: same_kind.then_some(Ignored::Compression),
            });
        }
        if let (Some(x), Some(y)) = (&la.digest, &lb.digest)
            && x != y
        {
            out.push(Difference {
                kind: Kind::Layer,
                location: format!("layer {n} digest"),
                a: Some(x.clone()),
                b: Some(y.clone()),
                ignored: same_kind.then_some(Ignored::Compression),
            });
        }
        let (fa, da) = a.layer_files(i)?;
        let (fb, db) = b.layer_files(i)?;
        if da != db {
            out.push(Difference {
                kind: Kind::Layer,
                location: format!("layer {n} uncompressed digest"),
                a: Some(da),
                b: Some(db),
                ignored: None,
            });
        }
        for fd in tardiff::diff(&fa, &fb) {
            file_differences(&mut out, n, &fd);
        }
    }
    Ok(ImageDiff {
        a: a.input.clone(),
        b: b.input.clone(),
        all: out,
    })
}

/// Write `image-diff.txt` and `image-diff.json` (the semantic view when `semantic`) into
/// `dir`; the text lists what `--semantic` hid after what it shows. Returns their names.
pub fn write_files(dir: &Path, d: &ImageDiff, semantic: bool) -> Result<Vec<String>> {
    let txt = dir.join("image-diff.txt");
    let mut text = format!(
        "reprobox image diff{} {} {}\n",
        if semantic { " --semantic" } else { "" },
        d.a,
        d.b
    );
    text.push_str(&d.text(semantic));
    for h in d.hidden(semantic) {
        let why = h.ignored.expect("hidden").as_str();
        text.push_str(&format!("  ignored ({why}): {h}\n"));
    }
    std::fs::write(&txt, text).ctx("write", &txt)?;
    let json = dir.join("image-diff.json");
    let body = serde_json::to_string_pretty(&d.json(semantic)).expect("plain JSON");
    std::fs::write(&json, body + "\n").ctx("write", &json)?;
    Ok(vec!["image-diff.txt".into(), "image-diff.json".into()])
}

/// For a reproduction whose image differs: the semantic diff of the two saved archives
/// (`published`, `rebuilt`) kept as `image-diff.txt` and `image-diff.json` in `out`. Returns
/// the file names and a one-line summary for the report, or a note saying why it could not
/// be made.
pub fn for_report(
    out: &Path,
    published: &Path,
    rebuilt: &Path,
) -> std::result::Result<(Vec<String>, String), String> {
    let run = || -> Result<(Vec<String>, String)> {
        let a = Image::open_path(&published.display().to_string(), published)?;
        let b = Image::open_path(&rebuilt.display().to_string(), rebuilt)?;
        let d = diff(&a, &b)?;
        let files = write_files(out, &d, true)?;
        Ok((
            files,
            format!(
                "native image diff (published -> rebuilt, --semantic): {}; the lists are in image-diff.txt and image-diff.json (`reprobox image diff --report {}` shows every difference, without --semantic)",
                d.summary(true),
                out.display()
            ),
        ))
    };
    run().map_err(|e| format!("the native image diff could not be made: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tar in memory: (path, content, mode, mtime).
    fn layer(files: &[(&str, &str, u32, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c, mode, mtime) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(c.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(*mtime);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, p, c.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn add(b: &mut tar::Builder<File>, path: &str, bytes: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes).unwrap();
    }

    fn config(labels: Value, created: &str, diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": {"Env": ["PATH=/usr/bin", "LANG=C"], "Cmd": ["/bin/sh"], "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": created, "created_by": "COPY / /"}],
        }))
        .unwrap()
    }

    /// A docker-archive with `layers` (written as given: compressed or not).
    fn docker_archive(path: &Path, tag: &str, labels: Value, created: &str, layers: &[Vec<u8>]) {
        let ids: Vec<String> = layers
            .iter()
            .map(|l| {
                let mut plain = Vec::new();
                crate::inputs::unpack::decompressed_bytes(l, "t")
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
                crate::digest::sha256_digest(&plain)
            })
            .collect();
        let mut b = tar::Builder::new(File::create(path).unwrap());
        add(&mut b, "config.json", &config(labels, created, &ids));
        let names: Vec<String> = (0..layers.len())
            .map(|i| format!("l{i}/layer.tar"))
            .collect();
        for (n, l) in names.iter().zip(layers) {
            add(&mut b, n, l);
        }
        let m = json!([{"Config": "config.json", "RepoTags": [tag], "Layers": names}]);
        add(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
        b.finish().unwrap();
    }

    #[test]
    fn finds_labels_files_layers_and_hides_names_compression_and_created_when_semantic() {
        let d = tempfile::tempdir().unwrap();
        let l1 = layer(&[("etc/os-release", "ID=arch\n", 0o644, 100)]);
        let l1b = layer(&[("etc/os-release", "ID=arch2\n", 0o644, 100)]);
        let (a, b, c) = (
            d.path().join("a.tar"),
            d.path().join("b.tar"),
            d.path().join("c.tar"),
        );
        docker_archive(
            &a,
            "x/a:1",
            json!({"v": "1"}),
            "2026-01-01T00:00:00Z",
            std::slice::from_ref(&l1),
        );
        // Same content, gzip-compressed, another name and created.
        docker_archive(
            &b,
            "x/b:1",
            json!({"v": "1"}),
            "2026-02-01T00:00:00Z",
            &[gz(&l1)],
        );
        docker_archive(
            &c,
            "x/a:1",
            json!({"v": "2"}),
            "2026-01-01T00:00:00Z",
            &[l1b, layer(&[("extra", "x", 0o644, 1)])],
        );
        let open = |p: &Path| Image::open_path(&p.display().to_string(), p).unwrap();
        let (ia, ib, ic) = (open(&a), open(&b), open(&c));
        assert_eq!(ia.format, Format::DockerArchive);
        assert_eq!(ia.names, ["x/a:1"]);

        let ab = diff(&ia, &ib).unwrap();
        assert!(ab.shown(true).is_empty(), "{:#?}", ab.shown(true));
        let locs: Vec<&str> = ab.all.iter().map(|d| d.location.as_str()).collect();
        assert!(locs.contains(&"image name"), "{locs:?}");
        assert!(locs.contains(&"config .created"), "{locs:?}");
        assert!(locs.contains(&"config .history[0].created"), "{locs:?}");
        assert!(locs.contains(&"layer 1 mediaType"), "{locs:?}");
        assert!(locs.contains(&"layer 1 size"), "{locs:?}");
        assert!(
            ab.text(true).contains("ignored by --semantic"),
            "{}",
            ab.text(true)
        );
        assert!(ab.text(true).starts_with("no semantic differences"));

        let ac = diff(&ia, &ic).unwrap();
        let shown: Vec<String> = ac.shown(true).iter().map(|d| d.to_string()).collect();
        assert!(
            shown.contains(&"config .config.Labels.v: 1 -> 2".to_string()),
            "{shown:?}"
        );
        assert!(shown.contains(&"layers: 1 -> 2".to_string()), "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("layer 1 etc/os-release content: sha256:")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|s| s
                .starts_with("layer 2: (absent) -> application/vnd.docker.image.rootfs.diff.tar")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("config .rootfs.diff_ids[0]")),
            "{shown:?}"
        );
        assert!(
            ac.summary(true)
                .starts_with(&format!("{} semantic differences (", shown.len())),
            "{}",
            ac.summary(true)
        );

        assert!(diff(&ia, &ia).unwrap().all.is_empty());
    }

    #[test]
    fn env_is_compared_by_variable_and_empty_fields_equal_absent_ones_when_semantic() {
        let mut out = Vec::new();
        diff_json(
            &mut out,
            "",
            Some(&json!({"config": {"Env": ["A=1", "B=2"], "Labels": null}})),
            Some(&json!({"config": {"Env": ["A=1", "B=3", "C=4"]}})),
        );
        let got: Vec<(String, Option<Ignored>)> =
            out.iter().map(|d| (d.to_string(), d.ignored)).collect();
        assert_eq!(
            got,
            [
                ("config .config.Env B: 2 -> 3".to_string(), None),
                ("config .config.Env C: (absent) -> 4".to_string(), None),
                (
                    "config .config.Labels: null -> (absent)".to_string(),
                    Some(Ignored::Empty)
                ),
            ]
        );
        let mut out = Vec::new();
        diff_env(
            &mut out,
            ".config.Env",
            Some(&json!(["A=1", "B=2"])),
            Some(&json!(["B=2", "A=1"])),
        );
        assert_eq!(out[0].to_string(), "config .config.Env (order): A B -> B A");
        assert_eq!(
            step(".config.Labels", "org.opencontainers.image.version"),
            ".config.Labels[\"org.opencontainers.image.version\"]"
        );
    }

    #[test]
    fn an_oci_layout_with_an_index_and_name_annotations() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("layout");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let put = |bytes: &[u8]| -> (String, u64) {
            let dg = crate::digest::sha256_digest(bytes);
            std::fs::write(dir.join(blob_key(&dg)), bytes).unwrap();
            (dg, bytes.len() as u64)
        };
        let l = layer(&[("f", "x", 0o644, 1)]);
        let id = crate::digest::sha256_digest(&l);
        let (ld, ls) = put(&gz(&l));
        let (cd, cs) = put(&config(json!({}), "2026-01-01T00:00:00Z", &[id]));
        let (md, ms) = put(&serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
        })).unwrap());
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                "annotations": {"org.opencontainers.image.ref.name": "1"}}],
        })).unwrap()).unwrap();
        let img = Image::open_path("layout", &dir).unwrap();
        assert_eq!(img.format, Format::OciLayout);
        assert_eq!(
            img.index_annotations["org.opencontainers.image.ref.name"],
            "1"
        );
        assert_eq!(img.layers[0].digest.as_deref(), Some(ld.as_str()));
        let (files, diff_id) = img.layer_files(0).unwrap();
        assert!(files.contains_key("f"));
        assert_eq!(diff_id, crate::digest::sha256_digest(&l));

        let mut renamed = Image::open_path("layout", &dir).unwrap();
        renamed
            .index_annotations
            .insert("org.opencontainers.image.ref.name".into(), "2".into());
        let dd = diff(&img, &renamed).unwrap();
        assert_eq!(dd.all.len(), 1);
        assert_eq!(dd.all[0].kind, Kind::Annotation);
        assert_eq!(dd.all[0].ignored, Some(Ignored::Name));
        assert!(dd.shown(true).is_empty());
    }

    #[test]
    fn inputs_that_are_not_images_are_bad_input_naming_them() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("notes.txt");
        std::fs::write(&f, "hello, not a tar").unwrap();
        let e = Image::open_path("notes.txt", &f).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().starts_with("image notes.txt: "), "{e}");
        let e = Image::open_path("empty", d.path()).unwrap_err();
        assert!(e.to_string().contains("neither index.json"), "{e}");
        let e = Image::open("/nonexistent/x.tar", || unreachable!(), &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no such file"), "{e}");
    }

    #[test]
    fn the_report_files_for_a_reproduction_s_two_saved_archives() {
        use crate::inputs::images::{DigestRef, PinnedImage};
        use crate::verify::imagearchive::{PUBLISHED_NAME, REBUILT_NAME, write_docker_archive};
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        // The published image as the pipeline writes it: from store blobs, gzip layers.
        let l = layer(&[("etc/os-release", "ID=arch\n", 0o644, 100)]);
        let ids = [crate::digest::sha256_digest(&l)];
        let store = crate::inputs::store::Store::open(d.path().join("store")).unwrap();
        let cfg = store
            .put_reader(
                &config(json!({"v": "1"}), "2026-01-01T00:00:00Z", &ids)[..],
                None,
                "test:config",
            )
            .unwrap();
        let gl = store.put_reader(&gz(&l)[..], None, "test:layer").unwrap();
        let pinned = PinnedImage {
            reference: DigestRef::parse(&format!("127.0.0.1:1/x@sha256:{}", "0".repeat(64)))
                .unwrap(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            blobs: vec![
                format!("sha256:{}", cfg.sha256),
                format!("sha256:{}", gl.sha256),
            ],
        };
        let published = images.join("published.tar");
        write_docker_archive(&store, &pinned, PUBLISHED_NAME, &published).unwrap();
        // The rebuilt one as podman saves it: plain layers, another name, a later created,
        // one file changed.
        let rebuilt = images.join("rebuilt.tar");
        let l2 = layer(&[("etc/os-release", "ID=arch2\n", 0o644, 100)]);
        docker_archive(
            &rebuilt,
            REBUILT_NAME,
            json!({"v": "1"}),
            "2026-03-01T00:00:00Z",
            &[l2],
        );

        let (files, summary) = for_report(d.path(), &published, &rebuilt).unwrap();
        assert_eq!(files, ["image-diff.txt", "image-diff.json"]);
        assert!(
            summary.starts_with("native image diff (published -> rebuilt, --semantic): 3 semantic differences (config 1, layer 1 files 1, layers 1); first: "),
            "{summary}"
        );
        assert!(
            summary.contains("; 5 ignored by --semantic: 1 name, 2 timestamp, 2 compression; "),
            "{summary}"
        );
        let text = std::fs::read_to_string(d.path().join("image-diff.txt")).unwrap();
        assert!(text.contains("layer 1 etc/os-release content: "), "{text}");
        assert!(text.contains("  ignored (name): image name: "), "{text}");
        assert!(
            text.contains("  ignored (timestamp): config .created: "),
            "{text}"
        );
        assert!(
            text.contains("  ignored (compression): layer 1 mediaType: "),
            "{text}"
        );
        let v: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("image-diff.json")).unwrap())
                .unwrap();
        assert_eq!(v["semantic"], true);
        assert_eq!(v["differences"].as_array().unwrap().len(), 3, "{v}");
        assert_eq!(v["ignored"].as_array().unwrap().len(), 5, "{v}");

        // An archive that is not there: a note, not an error.
        let note = for_report(d.path(), &images.join("absent.tar"), &rebuilt).unwrap_err();
        assert!(
            note.starts_with("the native image diff could not be made: "),
            "{note}"
        );
    }

    #[test]
    fn the_same_config_fields_in_other_bytes_are_an_encoding_difference() {
        let image = |bytes: &[u8]| Image {
            input: "x".into(),
            format: Format::OciLayout,
            names: Vec::new(),
            index_annotations: BTreeMap::new(),
            manifest_media_type: None,
            manifest_annotations: BTreeMap::new(),
            config: serde_json::from_slice(bytes).unwrap(),
            config_digest: crate::digest::sha256_digest(bytes),
            layers: Vec::new(),
            blobs: Blobs::Store(BTreeMap::new()),
        };
        let a = image(br#"{"os":"linux","architecture":"amd64"}"#);
        let b = image(br#"{"architecture":"amd64", "os":"linux"}"#);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.all.len(), 1);
        assert_eq!(d.all[0].ignored, Some(Ignored::Encoding));
        assert!(d.shown(true).is_empty());
        let c = image(br#"{"os":"linux","architecture":"arm64"}"#);
        let d = diff(&a, &c).unwrap();
        assert_eq!(
            d.all.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["config .architecture: amd64 -> arm64"]
        );
    }

    #[test]
    fn registry_references() {
        let r = parse_reference("127.0.0.1:5000/archlinux/archlinux:repro").unwrap();
        assert_eq!(
            (r.base.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("http://127.0.0.1:5000", "archlinux/archlinux", "repro")
        );
        let h = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("docker.io/archlinux/archlinux@{h}")).unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference.as_str()),
            ("https://registry-1.docker.io", h.as_str())
        );
        let r = parse_reference("http://reg.example/x").unwrap();
        assert_eq!(
            (r.base.as_str(), r.reference.as_str()),
            ("http://reg.example", "latest")
        );
        assert_eq!(
            parse_reference("ghcr.io/o/r:1").unwrap().base,
            "https://ghcr.io"
        );
        for bad in [
            "alpine:3",
            "image.tar",
            "ftp://h/x",
            "h.io/X:1",
            "h.io/x@sha256:12",
        ] {
            assert_eq!(parse_reference(bad), None, "{bad}");
        }
    }
}
