//! The test world's registry server: its configuration and its storage. The server itself is
//! Debian's `docker-registry` (distribution 2.8) over a storage directory `DIR/registry/`
//! (started by `world::serve`); this module runs no server and holds no client (reprobox's
//! registry client is `inputs::registry`). Docker Hub's `library/alpine` is written straight
//! into that storage in the registry's own layout (deterministic bytes: `world::alpine`); the
//! published image is pushed there by podman (upstream's publish job, `world::ci`).

use std::path::{Path, PathBuf};

use crate::digest::sha256_digest as digest;
use serde_json::json;

use crate::error::{Error, IoContext, Result};
use crate::world::alpm::Entry;

/// Repository of the published image.
pub const IMAGE_REPO: &str = "archlinux/archlinux";

/// An image as stored in the registry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ImageRecord {
    pub repository: String,
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub diff_ids: Vec<String>,
}

/// The registry configuration for `storage`, listening on `addr`.
pub fn config_text(storage: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {addr}\n",
        storage.display()
    )
}

/// Writes the config for `storage` at `addr` into `path`.
pub fn write_config(path: &Path, storage: &Path, addr: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(storage).ctx("create directory", storage)?;
    std::fs::write(path, config_text(storage, addr)).ctx("write", path)?;
    Ok(path.to_path_buf())
}

fn v2(storage: &Path) -> PathBuf {
    storage.join("docker/registry/v2")
}

fn put_blob(storage: &Path, repo: &str, data: &[u8]) -> Result<String> {
    let d = digest(data);
    let h = &d[7..];
    let blob = v2(storage).join("blobs/sha256").join(&h[..2]).join(h);
    write_once(&blob.join("data"), data)?;
    let link = v2(storage)
        .join("repositories")
        .join(repo)
        .join("_layers/sha256")
        .join(h);
    write_once(&link.join("link"), d.as_bytes())?;
    Ok(d)
}

/// Writes `data` to `p` unless it already holds exactly that, atomically (temp + rename), so
/// a registry serving the storage meanwhile never reads a half-written file.
fn write_once(p: &Path, data: &[u8]) -> Result<()> {
    if std::fs::read(p).map(|b| b == data).unwrap_or(false) {
        return Ok(());
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, data).ctx("write", &tmp)?;
    std::fs::rename(&tmp, p).ctx("rename", p)
}

/// Make manifest `md` (`sha256:…`, its blob already stored) a revision of `repo` and the
/// current manifest of `tag`, as the registry's own push leaves its link files.
fn link_manifest(storage: &Path, repo: &str, tag: &str, md: &str) -> Result<()> {
    let mh = &md[7..];
    let mroot = v2(storage)
        .join("repositories")
        .join(repo)
        .join("_manifests");
    for d in [
        mroot.join("revisions/sha256").join(mh),
        mroot.join("tags").join(tag).join("current"),
        mroot.join("tags").join(tag).join("index/sha256").join(mh),
    ] {
        write_once(&d.join("link"), md.as_bytes())?;
    }
    Ok(())
}

/// Stores an image made of one layer (`entries`) under `repo:tag` in registry storage.
pub fn put_single_layer_image(
    storage: &Path,
    repo: &str,
    tag: &str,
    entries: &[Entry],
    created: &str,
) -> Result<ImageRecord> {
    let layer = layer_tar(entries)?;
    let diff_id = digest(&layer);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &layer).ctx("gzip layer", storage)?;
    let layer_gz = gz.finish().ctx("gzip layer", storage)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "reprobox world: Debian busybox-static and zstd with its libraries"}],
    });
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| Error::Environment(format!("world: config json: {e}")))?;
    let layer_d = put_blob(storage, repo, &layer_gz)?;
    let config_d = put_blob(storage, repo, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_gz.len()}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Environment(format!("world: manifest json: {e}")))?;
    let md = put_blob(storage, repo, &manifest_bytes)?;
    link_manifest(storage, repo, tag, &md)?;
    Ok(ImageRecord {
        repository: repo.into(),
        tag: tag.into(),
        manifest_digest: md,
        config_digest: config_d,
        diff_ids: vec![diff_id],
    })
}

/// Reads `repo:tag` back from registry storage (what the registry will serve).
pub fn read_image(storage: &Path, repo: &str, tag: &str) -> Result<ImageRecord> {
    let link = v2(storage)
        .join("repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    let md = std::fs::read_to_string(&link).ctx("read", &link)?;
    let manifest: serde_json::Value = read_blob_json(storage, &md)?;
    let config_d = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = read_blob_json(storage, &config_d)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageRecord {
        repository: repo.into(),
        tag: tag.into(),
        manifest_digest: md,
        config_digest: config_d,
        diff_ids,
    })
}

fn read_blob_json(storage: &Path, d: &str) -> Result<serde_json::Value> {
    let h = d.strip_prefix("sha256:").unwrap_or(d);
    if h.len() < 2 {
        return Err(Error::Environment(format!(
            "world: bad digest {d:?} in registry storage"
        )));
    }
    let p = v2(storage)
        .join("blobs/sha256")
        .join(&h[..2])
        .join(h)
        .join("data");
    let b = std::fs::read(&p).ctx("read", &p)?;
    serde_json::from_slice(&b)
        .map_err(|e| Error::Environment(format!("world: {}: not JSON: {e}", p.display())))
}

/// A layer tar of `entries` (root-owned, mtime 0, sorted as given).
fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mk = |mode: u32, kind: tar::EntryType, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h.set_size(size);
        h
    };
    for e in entries {
        match e {
            Entry::Dir { path, mode } => b.append_data(
                &mut mk(*mode, tar::EntryType::Directory, 0),
                format!("{path}/"),
                std::io::empty(),
            ),
            Entry::File { path, mode, data } => b.append_data(
                &mut mk(*mode, tar::EntryType::Regular, data.len() as u64),
                path,
                &data[..],
            ),
            Entry::Symlink { path, target } => {
                b.append_link(&mut mk(0o777, tar::EntryType::Symlink, 0), path, target)
            }
        }
        .ctx("write layer", path_of(e))?;
    }
    b.into_inner().ctx("write layer", "layer")
}

fn path_of(e: &Entry) -> &str {
    match e {
        Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
    }
}

/// Re-publishes `repo:tag` in registry storage with its config's bytes changed by `edit`, as
/// a publisher pushing another config would: the new config blob, a manifest naming it (the
/// old manifest's bytes with the config digest and size replaced), and the tag moved to that
/// manifest. The layers stay. What the verdict mutation suite (`tests/verdict_mutations.rs`)
/// uses to flip one label or one diffID of the published image; returns the new record.
pub fn republish_config(
    storage: &Path,
    repo: &str,
    tag: &str,
    edit: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<ImageRecord> {
    let old = read_image(storage, repo, tag)?;
    let blob_path = |d: &str| {
        let h = d.strip_prefix("sha256:").unwrap_or(d);
        v2(storage)
            .join("blobs/sha256")
            .join(&h[..2.min(h.len())])
            .join(h)
            .join("data")
    };
    let read = |d: &str| {
        let p = blob_path(d);
        std::fs::read(&p).ctx("read", &p)
    };
    let config = read(&old.config_digest)?;
    let manifest = read(&old.manifest_digest)?;
    let new_config = edit(&config);
    let config_d = put_blob(storage, repo, &new_config)?;
    let descriptor = |d: &str, n: usize| format!("\"digest\":\"{d}\",\"size\":{n}");
    let manifest_text = String::from_utf8_lossy(&manifest).into_owned();
    let was = descriptor(&old.config_digest, config.len());
    if !manifest_text.contains(&was) {
        return Err(Error::Environment(format!(
            "world: the manifest of {repo}:{tag} does not spell its config as {was}"
        )));
    }
    let manifest_text = manifest_text.replace(&was, &descriptor(&config_d, new_config.len()));
    let md = put_blob(storage, repo, manifest_text.as_bytes())?;
    link_manifest(storage, repo, tag, &md)?;
    read_image(storage, repo, tag)
}
