//! Checking a rebuild against the published result, and explaining differences.

pub mod audit;
pub mod imagearchive;
pub mod tardiff;
pub mod tarindex;

use std::path::Path;

use crate::error::Result;

/// sha256 of a file, hex (the store's streaming hasher).
pub fn sha256_file(path: &Path) -> Result<String> {
    crate::inputs::store::hash_file(path).map(|(sha, _)| sha)
}

/// The first executable `name` on `$PATH` (external diff tools are optional).
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
