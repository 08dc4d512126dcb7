//! Checking a rebuild against the published result, and explaining differences.

pub mod audit;
pub mod imagearchive;
pub mod imagediff;
pub mod tardiff;
pub mod tarindex;

/// The first executable `name` on `$PATH` (external diff tools are optional).
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
