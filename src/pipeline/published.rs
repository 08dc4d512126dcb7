//! A release's published package set: the lock of its published rootfs
//! (`envlock::rootfs`), read from the tarball the release's Dockerfile names (fetched into
//! the store, checked against the release's sha256), or, that tarball being gone, from the
//! published image's layer that `COPY --from=verify /rootfs/ /` made of it (checked against
//! the config's diffID), as the rootfs check does (`checks::rootfs_layer`).
//!
//! Used by `reprobox drift --release V1 --release V2` and by the rootfs check, which names
//! the packages a differing rebuild holds in other versions.

use crate::envlock::EnvLock;
use crate::envlock::rootfs::lock_from_tarball;
use crate::error::{Error, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::git::GitSource;
use crate::inputs::lock::InputsLock;
use crate::inputs::registry::RegistryClient;
use crate::inputs::store::Store;
use crate::plan::Plan;

/// The published package set and where it was read.
#[derive(Debug, Clone)]
pub struct PublishedSet {
    pub lock: EnvLock,
    /// The tarball's URL, or the image layer it was read from.
    pub source: String,
}

/// The published package set of `plan`'s release: the release file at its tag gives the
/// rootfs URL and sha256.
pub fn published_set(plan: &Plan, store: &Store, offline: bool) -> Result<PublishedSet> {
    let fetcher = Fetcher::new(store.clone(), offline);
    let git = GitSource::new(store.root(), &plan.source.git);
    let release = super::release::fetch(plan, &git, offline)?.release;
    let mut inputs = InputsLock::default();
    let url = plan.expected.rootfs_url.clone();
    match fetcher.fetch_recorded(&mut inputs, &url, Some(&release.rootfs_sha256)) {
        Ok(blob) => Ok(PublishedSet {
            lock: lock_from_tarball(&blob.path)?,
            source: format!("{url} (sha256 {})", release.rootfs_sha256),
        }),
        // A tampered tarball is never read in place of the published one.
        Err(e @ Error::Tampered { .. }) => Err(e),
        Err(gone) => from_image_layer(plan, &fetcher, &mut inputs).map_err(|e| {
            Error::network(
                &url,
                format!(
                    "the published rootfs could not be fetched ({gone}) and the published image's rootfs layer could not be read either ({e})"
                ),
            )
        }),
    }
}

/// The lock of the published image's rootfs layer (the tarball being gone).
fn from_image_layer(
    plan: &Plan,
    fetcher: &Fetcher,
    inputs: &mut InputsLock,
) -> Result<PublishedSet> {
    let e = &plan.expected;
    let published = crate::inputs::registry::published_image(
        fetcher,
        inputs,
        &e.registry,
        &e.image,
        &e.image_tag,
    )?;
    let c = RegistryClient::new(fetcher, &e.registry, &e.image);
    let (curl, config) = c.blob_bytes(inputs, &published.config_digest)?;
    let config: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::network(&curl, format!("the config is not JSON: {e}")))?;
    let pick = super::checks::rootfs_layer(&config, published.layers.len())
        .ok_or_else(|| Error::network(&curl, "the published image has no layer"))?;
    let digest = &published.layers[pick.index];
    let blob = c.blob(inputs, digest)?;
    let (_, diff_id) = super::checks::layer_index(&blob.path)?;
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
    Ok(PublishedSet {
        lock: lock_from_tarball(&blob.path)?,
        source: format!(
            "published image {}, layer {} ({}), the tarball being gone",
            published.reference,
            pick.index + 1,
            pick.label()
        ),
    })
}

/// The packages two rootfs tarballs hold in other versions (published → rebuilt), as one
/// note for the report: `None` when both hold the same set, or when either cannot be read
/// (then the note says why).
pub fn package_difference_note(
    published: &std::path::Path,
    published_what: &str,
    rebuilt: &std::path::Path,
) -> Option<String> {
    let (a, b) = match (lock_from_tarball(published), lock_from_tarball(rebuilt)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Some(format!(
                "the two rootfs' package sets could not be compared: {e}"
            ));
        }
    };
    let d = crate::envlock::drift(&a, &b);
    (!d.is_empty()).then(|| {
        format!(
            "the rebuilt rootfs holds other packages than the published one ({published_what} → rebuilt; each read from its pacman database): {}",
            d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}
