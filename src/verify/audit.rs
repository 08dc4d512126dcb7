//! After every build: timestamps newer than SOURCE_DATE_EPOCH in the outputs.
//!
//! Two kinds: member mtimes in a tarball, and `%INSTALLDATE%` in a pacman local database
//! inside it (pacman < 7.1 writes the wall clock there — the drift upstream hit).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::verify::tarindex::{normalise, open_decompressed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateTimestamp {
    /// The tarball (or file) that holds it.
    pub artifact: String,
    pub path: String,
    /// `mtime` or `%INSTALLDATE%`.
    pub field: String,
    pub value: i64,
}

/// Every member of the tarball whose mtime, or whose pacman `%INSTALLDATE%`, is newer than
/// `epoch`.
pub fn audit_tarball(path: &Path, epoch: i64) -> Result<Vec<LateTimestamp>> {
    let mut ar = tar::Archive::new(open_decompressed(path)?);
    let bad = |e: std::io::Error| Error::io("read tar entry in", path, e);
    let artifact = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in ar.entries().map_err(bad)? {
        let mut e = entry.map_err(bad)?;
        let name = normalise(&String::from_utf8_lossy(&e.path_bytes()));
        let mtime = e.header().mtime().unwrap_or(0) as i64;
        if mtime > epoch {
            out.push(LateTimestamp {
                artifact: artifact.clone(),
                path: name.clone(),
                field: "mtime".into(),
                value: mtime,
            });
        }
        if name.starts_with("var/lib/pacman/local/") && name.ends_with("/desc") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).map_err(bad)?;
            let mut lines = text.lines();
            while let Some(l) = lines.next() {
                if l == "%INSTALLDATE%"
                    && let Some(v) = lines.next().and_then(|v| v.trim().parse::<i64>().ok())
                    && v > epoch
                {
                    out.push(LateTimestamp {
                        artifact: artifact.clone(),
                        path: name.clone(),
                        field: "%INSTALLDATE%".into(),
                        value: v,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tardiff::tests::make_tar;

    #[test]
    fn finds_late_mtimes_and_install_dates() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("r.tar.zst");
        make_tar(
            &t,
            &[
                ("./ok", "x", 0o644, 1000, None),
                ("./late", "x", 0o644, 1001, None),
                (
                    "./var/lib/pacman/local/a-1-1/desc",
                    "%NAME%\na\n\n%INSTALLDATE%\n5000\n\n",
                    0o644,
                    1000,
                    None,
                ),
                (
                    "./var/lib/pacman/local/b-1-1/desc",
                    "%NAME%\nb\n\n%INSTALLDATE%\n1000\n\n",
                    0o644,
                    1000,
                    None,
                ),
            ],
        );
        let late = audit_tarball(&t, 1000).unwrap();
        assert_eq!(late.len(), 2, "{late:?}");
        assert_eq!(
            (late[0].path.as_str(), late[0].field.as_str()),
            ("late", "mtime")
        );
        assert_eq!(
            (late[1].path.as_str(), late[1].value),
            ("var/lib/pacman/local/a-1-1/desc", 5000)
        );
    }
}
