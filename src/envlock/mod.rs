//! The environment lock: which packages the build environment held, exactly.
//!
//! Recorded after the rollback from the environment's own pacman database
//! (`var/lib/pacman/local/*/desc`), joined with the package files the mirror served (their
//! URL names the day and repository, their sha256 the bytes). Two locks can be compared
//! ([`drift`]), which is how a report names the environment package that changed.

pub mod installed;
pub mod rootfs;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use installed::{InstalledPackage, read_installed};

/// The lock file format version.
pub const ENVLOCK_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvLock {
    pub schema: u32,
    /// The archive snapshot the environment was rolled back to (`YYYY/MM/DD`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Sorted by name.
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// `%ARCH%` of the package (`x86_64`, `any`), when read from a rootfs
    /// ([`rootfs::lock_from_tarball`]): it names the package file in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// sha256 of the package file, when reprobox saw it served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The repository it came from (`core`, `extra`…), from the URL it was served at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The archive day it came from (`YYYY/MM/DD`), from the URL it was served at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
}

/// A package file the mirror served: its URL path and sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedPackage {
    pub url_path: String,
    pub sha256: String,
}

/// `repos/YYYY/MM/DD/<repo>/os/<arch>/<file>` → (day, repo, file).
fn parse_repo_path(path: &str) -> Option<(String, String, String)> {
    let p = path.trim_start_matches('/');
    let i = p.find("repos/")?;
    let parts: Vec<&str> = p[i + "repos/".len()..].split('/').collect();
    match parts.as_slice() {
        [y, m, d, repo, "os", _arch, file] => {
            Some((format!("{y}/{m}/{d}"), repo.to_string(), file.to_string()))
        }
        _ => None,
    }
}

impl EnvLock {
    /// Record the lock of the root filesystem at `root`, joining each installed package with
    /// the package file served for it (matched by the `<name>-<version>-` file name prefix).
    pub fn record(
        root: &Path,
        snapshot: Option<&str>,
        served: &[ServedPackage],
    ) -> Result<EnvLock> {
        let installed = read_installed(root)?;
        let mut packages = Vec::with_capacity(installed.len());
        for p in installed {
            let prefix = format!("{}-{}-", p.name, p.version);
            // The last served file wins: a rollback may fetch several versions.
            let hit = served.iter().rev().find_map(|s| {
                let (day, repo, file) = parse_repo_path(&s.url_path).or_else(|| {
                    let file = s.url_path.rsplit('/').next()?.to_string();
                    Some((String::new(), String::new(), file))
                })?;
                (file.starts_with(&prefix) && file.contains(".pkg.tar"))
                    .then(|| (day, repo, s.sha256.clone()))
            });
            let (day, repo, sha256) = match hit {
                Some((d, r, s)) => (
                    (!d.is_empty()).then_some(d),
                    (!r.is_empty()).then_some(r),
                    Some(s),
                ),
                None => (None, None, None),
            };
            packages.push(LockedPackage {
                name: p.name,
                version: p.version,
                arch: None,
                sha256,
                repo,
                day,
            });
        }
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(EnvLock {
            schema: ENVLOCK_SCHEMA,
            snapshot: snapshot.map(str::to_string),
            packages,
        })
    }

    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("an EnvLock always serialises");
        format!("# reprobox environment lock: the build environment's packages, exactly\n{body}")
    }

    pub fn parse(text: &str, name: &str) -> Result<EnvLock> {
        let lock: EnvLock = toml::from_str(text).map_err(|e| {
            Error::bad_input(
                format!("environment lock {name}"),
                format!("invalid lock: {}", e.message()),
            )
        })?;
        if lock.schema != ENVLOCK_SCHEMA {
            return Err(Error::bad_input(
                format!("environment lock {name}"),
                format!(
                    "schema {} is not supported; expected {ENVLOCK_SCHEMA}",
                    lock.schema
                ),
            ));
        }
        Ok(lock)
    }

    pub fn load(path: &Path) -> Result<EnvLock> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_input(
                format!("environment lock {name}"),
                format!("cannot read: {e}"),
            )
        })?;
        Self::parse(&text, &name)
    }
}

/// One package whose presence or version differs between two locks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub name: String,
    /// Version in the first lock (the expected / snapshot-day environment).
    pub a: Option<String>,
    /// Version in the second lock (the environment actually used).
    pub b: Option<String>,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(absent)".into());
        write!(f, "{}: {} -> {}", self.name, v(&self.a), v(&self.b))
    }
}

/// The packages whose versions (or presence) differ, sorted by name.
pub fn drift(a: &EnvLock, b: &EnvLock) -> Vec<Drift> {
    let ma: BTreeMap<&str, &str> = a
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mb: BTreeMap<&str, &str> = b
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut names: Vec<&str> = ma.keys().chain(mb.keys()).copied().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let (x, y) = (ma.get(n), mb.get(n));
            (x != y).then(|| Drift {
                name: n.to_string(),
                a: x.map(|s| s.to_string()),
                b: y.map(|s| s.to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            arch: None,
            sha256: Some("ab".repeat(32)),
            repo: Some("extra".into()),
            day: Some("2026/03/30".into()),
        }
    }

    #[test]
    fn text_round_trips_exactly() {
        let lock = EnvLock {
            schema: 1,
            snapshot: Some("2026/03/30".into()),
            packages: vec![
                pkg("devtools", "1:1.0-1"),
                LockedPackage {
                    name: "pacman".into(),
                    version: "6.0.2-1".into(),
                    arch: Some("x86_64".into()),
                    sha256: None,
                    repo: None,
                    day: None,
                },
            ],
        };
        let text = lock.to_text();
        let back = EnvLock::parse(&text, "t").unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.to_text(), text);
        let expected = "# reprobox environment lock: the build environment's packages, exactly\n\
schema = 1\nsnapshot = \"2026/03/30\"\n\n[[package]]\nname = \"devtools\"\nversion = \"1:1.0-1\"\n\
sha256 = \"abababababababababababababababababababababababababababababababab\"\nrepo = \"extra\"\nday = \"2026/03/30\"\n\n\
[[package]]\nname = \"pacman\"\nversion = \"6.0.2-1\"\narch = \"x86_64\"\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn unknown_keys_and_schemas_are_rejected() {
        assert!(EnvLock::parse("schema = 1\nextra = 2\n", "x").is_err());
        let e = EnvLock::parse("schema = 9\n", "x.lock").unwrap_err();
        assert!(e.to_string().contains("x.lock") && e.exit_code() == 2);
    }

    #[test]
    fn drift_names_changed_added_and_removed() {
        let a = EnvLock {
            schema: 1,
            snapshot: None,
            packages: vec![
                pkg("a", "1-1"),
                pkg("devtools", "1.0-1"),
                pkg("gone", "1-1"),
            ],
        };
        let b = EnvLock {
            schema: 1,
            snapshot: None,
            packages: vec![pkg("a", "1-1"), pkg("devtools", "2.0-1"), pkg("new", "3-1")],
        };
        let d = drift(&a, &b);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].to_string(), "devtools: 1.0-1 -> 2.0-1");
        assert_eq!(d[1].to_string(), "gone: 1-1 -> (absent)");
        assert_eq!(d[2].to_string(), "new: (absent) -> 3-1");
        assert!(drift(&a, &a).is_empty());
    }

    #[test]
    fn repo_paths_give_day_and_repo() {
        assert_eq!(
            parse_repo_path("/repos/2026/03/30/extra/os/x86_64/devtools-1.0-1-any.pkg.tar.zst"),
            Some((
                "2026/03/30".into(),
                "extra".into(),
                "devtools-1.0-1-any.pkg.tar.zst".into()
            ))
        );
        assert_eq!(parse_repo_path("/packages/d/devtools/x.pkg.tar.zst"), None);
    }
}
