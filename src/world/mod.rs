//! The test world: the world made from the real upstream repository (issue 13). Everything a
//! reproduction of the Arch Linux repro image touches — archive.archlinux.org, Docker Hub's
//! `alpine:3.23` and the Alpine CDN, gitlab.archlinux.org with archlinux-docker's real
//! repository and package registry, Docker Hub's `archlinux/archlinux` — built offline from
//! the real upstream's git bundles and this machine's package registries, with one release
//! made by upstream's own CI jobs, and served on loopback. See docs/world.md.
//!
//! [`build`] makes (or completes) the world from a bundle ([`default_bundle`] finds the usual
//! one), [`load`] reads its `world.json`, [`serve`] serves it.

pub mod alpine;
pub mod alpm;
pub mod arch;
pub mod ci;
pub mod env_rootfs;
pub mod fileserver;
pub mod fixtures;
pub mod from_upstream;
pub mod gitlab;
pub mod hub_auth;
pub mod pki;
pub mod registry;
pub mod serve;
pub mod tools;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use from_upstream::{PublishedRootfs, Release, SCHEMA, UpstreamWorld, build, load};
pub use serve::{Ports, WorldServers, serve, serve_at};

pub use crate::digest::sha256_file;

/// The file name of archlinux-docker's bundle in an upstream directory.
pub const UPSTREAM_BUNDLE: &str = "archlinux-docker.bundle";
/// The file name of devtools' bundle next to it.
pub const DEVTOOLS_BUNDLE: &str = "devtools.bundle";

/// Where the real upstream's bundles are looked for when `--upstream` is not given, in order:
/// `$REPROBOX_UPSTREAM_DIR` alone when it is set; otherwise `../shared/upstream` beside the
/// current directory, then beside the project reprobox was built from.
pub fn upstream_dir_candidates() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("REPROBOX_UPSTREAM_DIR") {
        return vec![PathBuf::from(d)];
    }
    let mut v = vec![PathBuf::from("../shared/upstream")];
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/upstream");
    if !v.contains(&project) {
        v.push(project);
    }
    v
}

/// archlinux-docker's bundle (`archlinux-docker.bundle`) in the first of
/// [`upstream_dir_candidates`] that has it; none has it: bad input (exit 2) naming every
/// place looked at.
pub fn default_bundle() -> Result<PathBuf> {
    let candidates = upstream_dir_candidates();
    if let Some(d) = candidates
        .iter()
        .find(|d| d.join(UPSTREAM_BUNDLE).is_file())
    {
        let b = d.join(UPSTREAM_BUNDLE);
        return Ok(std::fs::canonicalize(&b).unwrap_or(b));
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|d| d.join(UPSTREAM_BUNDLE).display().to_string())
        .collect();
    Err(Error::bad_input(
        "the real upstream's bundle",
        format!(
            "no {UPSTREAM_BUNDLE} at {}; pass --upstream BUNDLE or set REPROBOX_UPSTREAM_DIR to the directory holding {UPSTREAM_BUNDLE} and {DEVTOOLS_BUNDLE}",
            looked.join(", ")
        ),
    ))
}

/// devtools' bundle for `bundle`: `devtools.bundle` next to it.
pub fn devtools_beside(bundle: &Path) -> PathBuf {
    bundle
        .parent()
        .unwrap_or(Path::new("."))
        .join(DEVTOOLS_BUNDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bundle_names_every_place_looked_at() {
        // SAFETY: this test alone reads or sets REPROBOX_UPSTREAM_DIR in the unit tests.
        unsafe { std::env::set_var("REPROBOX_UPSTREAM_DIR", "/nonexistent/upstream") };
        let e = default_bundle().unwrap_err();
        unsafe { std::env::remove_var("REPROBOX_UPSTREAM_DIR") };
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(
            m.contains("/nonexistent/upstream/archlinux-docker.bundle")
                && m.contains("REPROBOX_UPSTREAM_DIR"),
            "{m}"
        );
        assert_eq!(
            devtools_beside(Path::new("/u/archlinux-docker.bundle")),
            Path::new("/u/devtools.bundle")
        );
    }
}
