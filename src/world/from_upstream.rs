//! The world made from the real upstream repository (`reprobox world build DIR --upstream
//! BUNDLE`): the archive and build environment of [`crate::world::arch`], the Alpine CDN and
//! Docker Hub's `alpine:3.23` of [`crate::world::alpine`], gitlab.archlinux.org with the real
//! repository ([`crate::world::gitlab`]), and one new release made from a real source
//! revision by upstream's own CI jobs ([`crate::world::ci`]).
//!
//! Layout (served by `world serve`, see docs/world.md):
//! `archive/` (archive.archlinux.org), `gitlab/` (gitlab.archlinux.org: the repository at
//! `archlinux/archlinux-docker.git`, the package registry under `api/v4/…`), `alpine/`
//! (dl-cdn.alpinelinux.org), `registry/` (registry-1.docker.io), `pki/` (the world CA),
//! `work/` (scratch), `world.json` (schema [`SCHEMA`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Schema of the manifest of a world made from the real upstream.
pub const SCHEMA: &str = "reprobox.world/v2";

/// The world's release: a version that is not among the real tags, made from the source
/// revision of the real releases 20260511 to 20260518.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    /// BUILD_VERSION.
    pub version: String,
    /// The day of the build (`YYYY/MM/DD`): the CI's live mirrors are this day's repositories.
    pub build_day: String,
    /// ARCHIVE_SNAPSHOT: the day before.
    pub snapshot: String,
    /// SOURCE_DATE_EPOCH: 00:00 UTC of the build day.
    pub source_date_epoch: i64,
    /// The revision of master the release is made from.
    pub source_revision: String,
    /// When pre-release commits the release (ISO 8601).
    pub release_time: String,
}

impl Release {
    /// The world's release.
    pub fn world() -> Release {
        Release {
            version: "20260520.0.1".into(),
            build_day: "2026/05/20".into(),
            snapshot: "2026/05/19".into(),
            source_date_epoch: 1_779_235_200,
            source_revision: "34b87485162b028c8d957bdcd2674359d883cd21".into(),
            release_time: "2026-05-20T09:10:00Z".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_consistent_with_the_plan() {
        let r = Release::world();
        let p = crate::plan::version::BuildVersion::parse(&r.version).unwrap();
        assert_eq!(p.snapshot_path(), r.snapshot);
        assert_eq!(p.source_date_epoch(), r.source_date_epoch);
    }
}

/// `DIR/world.json` of a world made from the real upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamWorld {
    pub schema: String,
    pub release: Release,
    /// The release's tag and its commit on `releases`.
    pub tag: String,
    pub tag_commit: String,
    /// The published rootfs: its sha256, its URL at the real host, and the packages of the
    /// rootfs job's environment.
    pub rootfs: PublishedRootfs,
    /// `archlinux/archlinux:repro-VERSION` as pushed to the world's Docker Hub.
    pub image: crate::world::registry::ImageRecord,
    /// The archive, its days, packages, bootstraps and drifts (world::arch).
    pub arch: serde_json::Value,
    /// Docker Hub's `library/alpine:3.23` and the Alpine repository (world::alpine).
    pub alpine: serde_json::Value,
    /// Real host → the world's directory that stands in for it.
    pub hosts: BTreeMap<String, String>,
    pub notes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishedRootfs {
    pub sha256: String,
    pub url: String,
    pub env_packages: Vec<String>,
}

/// Reads `DIR/world.json` of a world made from the real upstream.
pub fn load(dir: &Path) -> Result<UpstreamWorld> {
    let p = dir.join("world.json");
    let text = std::fs::read_to_string(&p).ctx("read", &p)?;
    serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            format!("world manifest {}", p.display()),
            format!(
                "expected a {SCHEMA} manifest (written by `reprobox world build DIR --upstream BUNDLE`): {e}"
            ),
        )
    })
}
