//! Checking a rebuild against the published result, and explaining differences.

pub mod audit;
pub mod registry;
pub mod tardiff;
pub mod tarindex;

use std::path::Path;

use crate::error::Result;

/// sha256 of a file, hex (the store's streaming hasher).
pub fn sha256_file(path: &Path) -> Result<String> {
    crate::inputs::store::hash_file(path).map(|(sha, _)| sha)
}
