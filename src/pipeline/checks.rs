//! Stage 6, the rootfs check: the rebuilt tarball's sha256 against the release's, its
//! timestamps against SOURCE_DATE_EPOCH, and on a difference the published tarball fetched
//! and diffed file by file (diffoscope too when installed). When the published tarball is
//! gone (upstream's package registry deletes packages older than 60 days), the files are
//! taken from the published image instead: its layer made by `COPY --from=verify /rootfs/ /`.
//!
//! The published tarball itself is checked too (`published-rootfs-sha256`): a rebuilt rootfs
//! that matches the release's hash is not the rootfs users download when the tarball at
//! `[expected] rootfs_url` holds other bytes (the mutation suite, `tests/verdict_mutations.rs`,
//! flips one byte of it; without this check that run was called reproduced).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::Run;
use crate::error::{Error, IoContext, Result};
use crate::inputs::registry::RegistryClient;
use crate::plan::release::Release;
use crate::report::Check;
use crate::verify::audit::LateTimestamp;
use crate::verify::tardiff::FileDiff;
use crate::verify::tarindex::TarIndex;

/// What the rootfs check found.
#[derive(Debug, Default)]
pub struct RootfsEvidence {
    pub check: Option<Check>,
    /// `published-rootfs-sha256`: the tarball at `[expected] rootfs_url` against the
    /// release's hash (decisive when it could be read; gone, it is evidence only).
    pub published: Option<Check>,
    pub late: Vec<LateTimestamp>,
    pub file_diffs: Vec<FileDiff>,
    /// Files kept for external diff tools (names under the output directory).
    pub kept: Vec<String>,
    /// What `file_diffs` compared the rebuilt rootfs with, when not the published tarball.
    pub source: Option<String>,
}

impl Run<'_> {
    /// Stage 6 over the rebuilt `rootfs` (which may be missing: the check is then unknown).
    pub fn check_rootfs(&mut self, release: &Release, rootfs: &Path) -> Result<RootfsEvidence> {
        let plan = self.plan;
        self.phase(&format!("checking the rootfs {}", plan.artifacts.rootfs));
        let actual = if rootfs.is_file() {
            Some(crate::digest::sha256_file(rootfs)?)
        } else {
            None
        };
        let mut ev = RootfsEvidence {
            check: Some(Check::compare(
                "rootfs-sha256",
                true,
                Some(release.rootfs_sha256.clone()),
                actual.clone(),
                format!(
                    "expected from {} at {} ({}); actual sha256 of {}/{}",
                    plan.source.release_file,
                    plan.source.tag,
                    release.rootfs_file,
                    plan.artifacts.dir,
                    plan.artifacts.rootfs
                ),
            )),
            ..RootfsEvidence::default()
        };
        let Some(actual) = actual else {
            return Ok(ev);
        };
        ev.late = crate::verify::audit::audit_tarball(rootfs, plan.source_date_epoch)?;
        let url = plan.expected.rootfs_url.clone();
        self.phase(&format!("fetching the published rootfs from {url}"));
        let published = self.fetcher.fetch_recorded(
            &mut self.ledger.inputs,
            &url,
            Some(&release.rootfs_sha256),
        );
        ev.published = Some(published_check(
            &url,
            &release.rootfs_sha256,
            published.as_ref().map(|_| ()),
        ));
        if actual == release.rootfs_sha256 {
            return Ok(ev);
        }
        self.phase("rootfs differs: comparing it with the published one");
        match published {
            Ok(blob) => {
                let a = crate::verify::tarindex::read_index(&blob.path)?;
                let b = crate::verify::tarindex::read_index(rootfs)?;
                ev.file_diffs = crate::verify::tardiff::diff(&a, &b);
                ev.kept = run_diffoscope(&blob.path, rootfs, &self.o.out, &mut self.ledger.notes);
                if let Some(n) =
                    super::published::package_difference_note(&blob.path, "published", rootfs)
                {
                    self.ledger.notes.push(n);
                }
                if ev.file_diffs.is_empty() {
                    self.ledger.notes.push("the two rootfs tarballs hold the same files with the same metadata: the bytes differ in tar layout or compression".into());
                }
            }
            Err(e) => {
                self.ledger.notes.push(format!(
                    "could not fetch the published rootfs to compare files: {e}"
                ));
                match self.diff_against_image_layer(rootfs) {
                    Ok((diffs, source)) => {
                        ev.file_diffs = diffs;
                        ev.source = Some(source);
                    }
                    Err(e) => self.ledger.notes.push(format!(
                        "the published image's rootfs layer could not be read either, so no file was compared: {e}"
                    )),
                }
            }
        }
        Ok(ev)
    }

    /// The published tarball being gone: the rebuilt `rootfs` diffed against the published
    /// image's layer that `COPY --from=verify /rootfs/ /` made from that tarball, fetched
    /// through the registry client (into the store, recorded). Returns the differences and
    /// what they were diffed against.
    fn diff_against_image_layer(&mut self, rootfs: &Path) -> Result<(Vec<FileDiff>, String)> {
        let plan = self.plan;
        let fetcher = self.fetcher;
        self.phase(&format!(
            "the published rootfs is gone: reading its files from the image {}",
            plan.expected_image_ref()
        ));
        let PublishedLayer {
            published,
            pick,
            blob,
            files: layer,
            diff_id,
        } = published_rootfs_layer(plan, fetcher, &mut self.ledger.inputs)?;
        let mut rebuilt = crate::verify::tarindex::read_index(rootfs)?;
        // An image layer never holds the root directory itself; the tarball does.
        if !layer.contains_key(".") {
            rebuilt.remove(".");
        }
        let diffs = crate::verify::tardiff::diff(&layer, &rebuilt);
        if let Some(n) =
            super::published::package_difference_note(&blob.path, "published image layer", rootfs)
        {
            self.ledger.notes.push(n);
        }
        let n = pick.index + 1;
        let source = format!(
            "published image layer {n} ({}), the tarball being gone",
            pick.label()
        );
        self.ledger.notes.push(format!(
            "the published rootfs tarball is gone: the file diff is against the published image {}, layer {n} of {} ({}; history: {:?}; diffID {diff_id}), which holds the files the tarball had as podman copied them; diffoscope was not run",
            published.reference,
            published.layers.len(),
            pick.label(),
            pick.created_by,
        ));
        self.ledger.notes.push(format!(
            "what the image layer cannot show: the image's own RUN step (ldconfig, the os-release sed, the aux-cache rm) changes {} in the next layer, so these paths may differ for that reason; the layer's modes, owners and mtimes are as podman wrote them (with --timestamp / --rewrite-timestamp), not necessarily the tarball's; and the layer has no entry for the root directory",
            RUN_STEP_PATHS.join(", ")
        ));
        if diffs.is_empty() {
            self.ledger.notes.push("the rebuilt rootfs holds the same files with the same metadata as the published image layer: the bytes differ in tar layout or compression, or in what the layer cannot show".into());
        }
        Ok((diffs, source))
    }
}

/// `published-rootfs-sha256`: the tarball published at `url` (the published side, as the
/// check's `expected`) against the release's hash `release` (`actual`: what the rebuilt
/// rootfs is compared with), from how fetching it pinned by that hash went. Bytes that are
/// not the release's make it fail (decisive: users download those bytes); a tarball that
/// could not be read at all (upstream deletes packages older than 60 days; unreachable;
/// offline and not in the store) leaves it unknown and evidence only, the release's hash and
/// the published image's layer then standing for it.
pub fn published_check(
    url: &str,
    release: &str,
    fetched: std::result::Result<(), &Error>,
) -> Check {
    let (decisive, served, evidence) = match fetched {
        Ok(()) => (
            true,
            Some(release.to_string()),
            format!(
                "expected: the tarball at {url}, fetched pinned by the release's hash (or held in the store under it); actual: the release's hash"
            ),
        ),
        Err(Error::Tampered { actual, .. }) => (
            true,
            Some(actual.clone()),
            format!(
                "expected: the sha256 of the bytes {url} serves (refused, not stored); actual: the release's hash"
            ),
        ),
        Err(e) => (
            false,
            None,
            format!(
                "the published tarball could not be read ({e}); only the release's hash remains (evidence only)"
            ),
        ),
    };
    Check::compare(
        "published-rootfs-sha256",
        decisive,
        served,
        Some(release.to_string()),
        evidence,
    )
}

/// The paths the release image's own RUN step changes (in the layer after the rootfs's).
pub const RUN_STEP_PATHS: [&str; 3] = ["etc/ld.so.cache", "etc/os-release", "var/cache/ldconfig"];

/// The published image's layer that holds the rootfs, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsLayer {
    /// 0-based, in the manifest's (and the diffIDs') order.
    pub index: usize,
    /// The history entry's `created_by` (empty when the history does not name the layer).
    pub created_by: String,
    /// The history says a COPY made it (else it is the first layer, by default).
    pub by_copy: bool,
}

impl RootfsLayer {
    /// How the layer was chosen, for the report.
    pub fn label(&self) -> &'static str {
        if self.by_copy {
            "COPY --from=verify"
        } else {
            "the first layer: no history entry names the COPY"
        }
    }
}

/// The published image's rootfs layer, fetched and checked against its diffID.
pub struct PublishedLayer {
    pub published: crate::inputs::registry::PublishedImage,
    /// Which layer, and how it was chosen.
    pub pick: RootfsLayer,
    /// The layer as stored (compressed as published).
    pub blob: crate::inputs::store::Blob,
    /// Its files.
    pub files: TarIndex,
    /// Its diffID (the sha256 of its uncompressed tar), equal to the config's.
    pub diff_id: String,
}

/// The layer of the published image that holds the rootfs ([`rootfs_layer`]), fetched
/// through the registry client (into the store, recorded in `inputs`) and checked against
/// the config's diffID for it: other bytes are [`Error::Tampered`], naming the blob's URL.
/// What the rootfs evidence and `--packages-from published` read when the tarball is gone.
pub fn published_rootfs_layer(
    plan: &crate::plan::Plan,
    fetcher: &crate::inputs::fetch::Fetcher,
    inputs: &mut crate::inputs::lock::InputsLock,
) -> Result<PublishedLayer> {
    let e = &plan.expected;
    let realms = plan.host_locations();
    let published = crate::inputs::registry::published_image(
        fetcher,
        inputs,
        &e.registry,
        &e.image,
        &e.image_tag,
        &realms,
    )?;
    let c = RegistryClient::new(fetcher, &e.registry, &e.image).with_realm_locations(&realms);
    let (curl, config) = c.blob_bytes(inputs, &published.config_digest)?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::network(&curl, format!("the config is not JSON: {e}")))?;
    let pick = rootfs_layer(&config, published.layers.len())
        .ok_or_else(|| Error::network(&curl, "the published image has no layer"))?;
    let digest = &published.layers[pick.index];
    let blob = c.blob(inputs, digest)?;
    let (files, diff_id) = layer_index(&blob.path)?;
    if published.diff_ids.get(pick.index) != Some(&diff_id) {
        return Err(Error::Tampered {
            what: format!(
                "{} (layer {} uncompressed)",
                c.blob_url(digest),
                pick.index + 1
            ),
            expected: published
                .diff_ids
                .get(pick.index)
                .cloned()
                .unwrap_or_else(|| "no diffID in the config".into()),
            actual: diff_id,
        });
    }
    Ok(PublishedLayer {
        published,
        pick,
        blob,
        files,
        diff_id,
    })
}

/// Which of `layers` layers holds the rootfs, from the image config's history: the layer
/// whose `created_by` says `COPY --from=verify` (BuildKit and Docker's spelling), else the
/// first layer a COPY made (buildah and podman write `/bin/sh -c #(nop) COPY dir:<hash> in /`),
/// else the first layer. History entries with `empty_layer` make no layer; a history that does
/// not account for every layer names none. `None` without layers.
pub fn rootfs_layer(config: &serde_json::Value, layers: usize) -> Option<RootfsLayer> {
    if layers == 0 {
        return None;
    }
    let made: Vec<&str> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .map(|h| h["created_by"].as_str().unwrap_or_default())
        .collect();
    if made.len() == layers {
        let is_copy = |c: &&str| {
            let c = c.trim_start();
            c.starts_with("COPY ") || c.contains("#(nop) COPY ")
        };
        let pick = made
            .iter()
            .position(|c| c.contains("COPY --from=verify"))
            .or_else(|| made.iter().position(is_copy));
        if let Some(index) = pick {
            return Some(RootfsLayer {
                index,
                created_by: made[index].to_string(),
                by_copy: true,
            });
        }
    }
    Some(RootfsLayer {
        index: 0,
        created_by: made.first().map(|c| c.to_string()).unwrap_or_default(),
        by_copy: false,
    })
}

/// An image layer blob (any compression) as an index of its files, and the sha256 of its
/// uncompressed stream (its diffID, to check against the config's).
pub fn layer_index(path: &Path) -> Result<(TarIndex, String)> {
    struct Hashing<R> {
        inner: R,
        hasher: Sha256,
    }
    impl<R: std::io::Read> std::io::Read for Hashing<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
    }
    let mut r = Hashing {
        inner: crate::verify::tarindex::open_decompressed(path)?,
        hasher: Sha256::new(),
    };
    let index = crate::verify::tarindex::index_reader(&mut r, path)?;
    // The end-of-archive padding too, so that the digest covers the whole stream.
    std::io::copy(&mut r, &mut std::io::sink()).ctx("read", path)?;
    Ok((
        index,
        format!("sha256:{}", hex::encode(r.hasher.finalize())),
    ))
}

/// diffoscope on the two rootfs tarballs, when it is installed: its text and JSON output
/// are kept in the output directory (file names returned).
fn run_diffoscope(
    published: &Path,
    rebuilt: &Path,
    out: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let Some(bin) = crate::verify::on_path("diffoscope") else {
        notes.push("diffoscope is not installed: only reprobox's native file diff was made".into());
        return Vec::new();
    };
    let status = std::process::Command::new(bin)
        .arg("--text")
        .arg(out.join("diffoscope.txt"))
        .arg("--json")
        .arg(out.join("diffoscope.json"))
        .arg(published)
        .arg(rebuilt)
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        // diffoscope: 0 same, 1 different, 2 error.
        Ok(s) if matches!(s.code(), Some(0 | 1)) => {
            vec!["diffoscope.txt".into(), "diffoscope.json".into()]
        }
        Ok(s) => {
            notes.push(format!("diffoscope failed ({s})"));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("diffoscope could not run: {e}"));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_published_tarball_decides_when_read_and_is_evidence_when_gone() {
        use crate::report::Status;
        let rel = "ab".repeat(32);
        let ok = published_check("u", &rel, Ok(()));
        assert_eq!((ok.status, ok.decisive), (Status::Pass, true));
        let other = "cd".repeat(32);
        let tampered = Error::Tampered {
            what: "u".into(),
            expected: rel.clone(),
            actual: other.clone(),
        };
        let bad = published_check("u", &rel, Err(&tampered));
        assert_eq!((bad.status, bad.decisive), (Status::Fail, true));
        assert_eq!(bad.expected.as_deref(), Some(other.as_str()));
        let gone = Error::network("u", "404 Not Found");
        let unknown = published_check("u", &rel, Err(&gone));
        assert_eq!((unknown.status, unknown.decisive), (Status::Unknown, false));
        assert!(
            unknown
                .outcome()
                .contains("the published value could not be read"),
            "{}",
            unknown.outcome()
        );
    }

    fn made(entries: &[(&str, bool)]) -> serde_json::Value {
        let h: Vec<_> = entries
            .iter()
            .map(|(c, empty)| json!({"created_by": c, "empty_layer": empty}))
            .collect();
        json!({ "history": h })
    }

    #[test]
    fn the_rootfs_layer_is_the_one_the_copy_from_verify_made() {
        // What podman (buildah) writes for the release Dockerfile: LABELs make no layer,
        // the COPY is spelt `COPY dir:<hash> in /`, the RUN makes the second layer.
        let podman = made(&[
            (
                "/bin/sh -c #(nop) LABEL org.opencontainers.image.title=\"x\"",
                true,
            ),
            ("/bin/sh -c #(nop) COPY dir:db5fb4f5 in / ", false),
            (
                "/bin/sh -c ldconfig &&     sed -i '/BUILD_ID/a VERSION_ID=1' /etc/os-release",
                false,
            ),
            ("/bin/sh -c #(nop) ENV LANG=C.UTF-8", true),
        ]);
        let l = rootfs_layer(&podman, 2).unwrap();
        assert_eq!((l.index, l.by_copy), (0, true));
        assert!(l.created_by.contains("COPY dir:"), "{l:?}");
        assert_eq!(l.label(), "COPY --from=verify");

        // Docker's spelling, after a layer the history says an ADD made: the COPY's layer,
        // not the first one.
        let docker = made(&[
            ("ADD file:abc in / ", false),
            ("COPY --from=verify /rootfs/ / # buildkit", false),
            ("RUN /bin/sh -c ldconfig # buildkit", false),
        ]);
        assert_eq!(rootfs_layer(&docker, 3).unwrap().index, 1);
        // `COPY --from=verify` wins over an earlier COPY.
        let two = made(&[
            ("COPY a.txt / # buildkit", false),
            ("COPY --from=verify /rootfs/ / # buildkit", false),
        ]);
        assert_eq!(rootfs_layer(&two, 2).unwrap().index, 1);
    }

    #[test]
    fn without_a_history_naming_the_copy_the_first_layer_is_taken() {
        // No history at all.
        let l = rootfs_layer(&json!({}), 2).unwrap();
        assert_eq!((l.index, l.by_copy, l.created_by.as_str()), (0, false, ""));
        assert!(l.label().starts_with("the first layer"));
        // A history that does not account for every layer names none, even a COPY.
        let short = made(&[("/bin/sh -c #(nop) COPY dir:x in / ", false)]);
        let l = rootfs_layer(&short, 2).unwrap();
        assert_eq!((l.index, l.by_copy), (0, false));
        // A history without a COPY.
        let runs = made(&[("RUN a", false), ("RUN b", false)]);
        assert_eq!(rootfs_layer(&runs, 2).unwrap().index, 0);
        assert!(!rootfs_layer(&runs, 2).unwrap().by_copy);
        // No layer, no choice.
        assert_eq!(rootfs_layer(&runs, 0), None);
    }

    #[test]
    fn a_layer_is_read_into_its_files_and_its_diff_id() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("layer.tar.zst");
        crate::verify::tardiff::tests::make_tar(
            &p,
            &[("etc/pacman.conf", "NoExtract = a", 0o644, 100, None)],
        );
        let (index, diff_id) = layer_index(&p).unwrap();
        assert_eq!(index.keys().collect::<Vec<_>>(), ["etc/pacman.conf"]);
        let plain = zstd::decode_all(std::fs::File::open(&p).unwrap()).unwrap();
        assert_eq!(diff_id, crate::digest::sha256_digest(&plain));
    }
}
