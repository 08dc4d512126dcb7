//! Client for the Arch Linux Archive layout (see the project's reference/archive.md):
//! a day's repository databases, packages by day or by name+version, and a month's bootstrap
//! tarball checked against that month's `sha256sums.txt`. Everything goes through a
//! [`Fetcher`], so it is pinned, stored and replayable offline.
//!
//! Repository `desc` entries are parsed with `alpm-repo-db` when they follow one of its
//! schemas; databases written by older `repo-add` (pacman 6.0, as in Debian) carry `%MD5SUM%`
//! without `%PGPSIG%`, which neither schema accepts, so those fall back to a small reader of
//! the `%KEY%` blocks that only needs `%FILENAME% %NAME% %VERSION%` (and uses `%SHA256SUM%`).

use std::collections::HashMap;
use std::io::Read;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::{Blob, Fetcher};

/// The real archive; every command lets the user point elsewhere.
pub const DEFAULT_ARCHIVE: &str = "https://archive.archlinux.org";
/// Repositories searched, in pacman's order.
pub const DEFAULT_REPOS: &[&str] = &["core", "extra"];
pub const ARCH: &str = "x86_64";

/// One package entry of a repository database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEntry {
    pub name: String,
    pub version: String,
    pub filename: String,
    /// `%SHA256SUM%`, when the entry has one.
    pub sha256: Option<String>,
}

/// A parsed repository database.
#[derive(Debug, Clone, Default)]
pub struct RepoDb {
    pub entries: Vec<DbEntry>,
}

impl RepoDb {
    pub fn by_name(&self, name: &str) -> Option<&DbEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
    pub fn by_filename(&self, filename: &str) -> Option<&DbEntry> {
        self.entries.iter().find(|e| e.filename == filename)
    }
}

/// A package name resolved for one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
    pub repo: String,
    /// `YYYY/MM/DD`
    pub day: String,
    pub url: String,
}

/// A month's bootstrap tarball, checked and stored.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// `YYYY.MM.DD`
    pub month: String,
    pub filename: String,
    pub url: String,
    pub blob: Blob,
}

/// Check a day argument: `YYYY/MM/DD`, a real date.
pub fn parse_day(s: &str) -> Result<String> {
    let ok = s.len() == 10
        && s.as_bytes()[4] == b'/'
        && s.as_bytes()[7] == b'/'
        && jiff::civil::Date::from_str(&s.replace('/', "-")).is_ok();
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::bad_input(
            format!("day {s:?}"),
            "expected a date as YYYY/MM/DD",
        ))
    }
}

/// Check a month argument: `YYYY.MM.DD` (the ISO directory name, normally the 1st).
pub fn parse_month(s: &str) -> Result<String> {
    let ok = s.len() == 10
        && s.as_bytes()[4] == b'.'
        && s.as_bytes()[7] == b'.'
        && jiff::civil::Date::from_str(&s.replace('.', "-")).is_ok();
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::bad_input(
            format!("month {s:?}"),
            "expected the release directory as YYYY.MM.01",
        ))
    }
}

/// Check an archive base URL and drop a trailing slash.
pub fn parse_base(s: &str) -> Result<String> {
    if ["file://", "http://", "https://"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(Error::bad_input(
            format!("archive URL {s:?}"),
            "expected file://, http:// or https://",
        ))
    }
}

/// Parse a repository database (tar, optionally gzip or zstd compressed).
pub fn parse_repo_db(bytes: &[u8], what: &str) -> Result<RepoDb> {
    let mut ar = tar::Archive::new(crate::inputs::unpack::decompressed_bytes(bytes, what)?);
    let mut db = RepoDb::default();
    let bad = |m: String| Error::Network {
        url: what.to_string(),
        message: format!("not a repository database: {m}"),
    };
    for e in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        let path = e
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !path.ends_with("/desc") {
            continue;
        }
        let mut text = String::new();
        e.read_to_string(&mut text)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        db.entries
            .push(parse_desc(&text).map_err(|m| bad(format!("{path}: {m}")))?);
    }
    Ok(db)
}

/// One `desc` file: `alpm-repo-db` first, the lenient reader for older `repo-add` output.
pub fn parse_desc(text: &str) -> std::result::Result<DbEntry, String> {
    use alpm_repo_db::desc::RepoDescFile;
    if let Ok(d) = RepoDescFile::from_str(text) {
        let (f, n, v, s) = match &d {
            RepoDescFile::V1(d) => (
                d.file_name.to_string(),
                d.name.to_string(),
                d.version.to_string(),
                d.sha256_checksum.to_string(),
            ),
            RepoDescFile::V2(d) => (
                d.file_name.to_string(),
                d.name.to_string(),
                d.version.to_string(),
                d.sha256_checksum.to_string(),
            ),
        };
        return Ok(DbEntry {
            name: n,
            version: v,
            filename: f,
            sha256: Some(s),
        });
    }
    let mut sections: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut key: Option<&str> = None;
    for line in text.lines() {
        if line.len() > 2 && line.starts_with('%') && line.ends_with('%') {
            key = Some(&line[1..line.len() - 1]);
            sections.entry(&line[1..line.len() - 1]).or_default();
        } else if line.is_empty() {
            key = None;
        } else if let Some(k) = key {
            sections.entry(k).or_default().push(line);
        }
    }
    let one = |k: &str| -> std::result::Result<String, String> {
        match sections.get(k).map(|v| v.as_slice()) {
            Some([v]) => Ok(v.to_string()),
            _ => Err(format!("%{k}% missing or not a single line")),
        }
    };
    let name = one("NAME")?;
    alpm_types::Name::from_str(&name).map_err(|e| format!("%NAME% {name:?}: {e}"))?;
    let version = one("VERSION")?;
    alpm_types::FullVersion::from_str(&version)
        .map_err(|e| format!("%VERSION% {version:?}: {e}"))?;
    let filename = one("FILENAME")?;
    if filename.contains('/') {
        return Err(format!("%FILENAME% {filename:?} contains a slash"));
    }
    let sha256 = match sections.get("SHA256SUM") {
        None => None,
        Some(_) => {
            let s = one("SHA256SUM")?;
            if !crate::inputs::store::is_sha256(&s) {
                return Err(format!("%SHA256SUM% {s:?} is not a sha256"));
            }
            Some(s)
        }
    };
    Ok(DbEntry {
        name,
        version,
        filename,
        sha256,
    })
}

/// URL of a repository database for a day.
pub fn repo_db_url(base: &str, day: &str, repo: &str) -> String {
    format!("{base}/repos/{day}/{repo}/os/{ARCH}/{repo}.db")
}

/// Fetch (or take from the store) and parse the database at `url`; `Ok(None)` if the source
/// has no such file.
pub fn load_repo_db(fetcher: &Fetcher, url: &str) -> Result<Option<(Blob, RepoDb)>> {
    let Some((blob, _)) = fetcher.try_fetch(url, None, true)? else {
        return Ok(None);
    };
    let bytes = std::fs::read(&blob.path).ctx("read", &blob.path)?;
    let db = parse_repo_db(&bytes, url)?;
    Ok(Some((blob, db)))
}

/// The archive client. `base` is the archive root (`https://archive.archlinux.org` or a
/// local tree of the same shape).
pub struct Archive<'a> {
    base: String,
    fetcher: &'a Fetcher,
    repos: Vec<String>,
    dbs: Mutex<HashMap<(String, String), Arc<RepoDb>>>,
}

impl<'a> Archive<'a> {
    pub fn new(base_url: &str, fetcher: &'a Fetcher) -> Archive<'a> {
        Archive {
            base: base_url.trim_end_matches('/').to_string(),
            fetcher,
            repos: DEFAULT_REPOS.iter().map(|s| s.to_string()).collect(),
            dbs: Mutex::new(HashMap::new()),
        }
    }

    /// Search these repositories, in this order, instead of core and extra.
    pub fn with_repos(mut self, repos: Vec<String>) -> Self {
        self.repos = repos;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A day's database for one repository.
    pub fn repo_db(&self, day: &str, repo: &str) -> Result<Arc<RepoDb>> {
        let day = parse_day(day)?;
        let key = (day.clone(), repo.to_string());
        if let Some(db) = self.dbs.lock().expect("not poisoned").get(&key) {
            return Ok(db.clone());
        }
        let url = repo_db_url(&self.base, &day, repo);
        let (_, db) = load_repo_db(self.fetcher, &url)?
            .ok_or_else(|| Error::network(&url, "no such repository database (not found)"))?;
        let db = Arc::new(db);
        self.dbs
            .lock()
            .expect("not poisoned")
            .insert(key, db.clone());
        Ok(db)
    }

    /// Resolve `name` as it was on `day` (first repository that has it wins).
    pub fn resolve(&self, day: &str, name: &str) -> Result<ResolvedPackage> {
        let day = parse_day(day)?;
        for repo in &self.repos {
            let db = self.repo_db(&day, repo)?;
            if let Some(e) = db.by_name(name) {
                let url = format!("{}/repos/{day}/{repo}/os/{ARCH}/{}", self.base, e.filename);
                let sha256 = e.sha256.clone().ok_or_else(|| {
                    Error::network(
                        repo_db_url(&self.base, &day, repo),
                        format!("{name} has no %SHA256SUM%"),
                    )
                })?;
                return Ok(ResolvedPackage {
                    name: e.name.clone(),
                    version: e.version.clone(),
                    filename: e.filename.clone(),
                    sha256,
                    repo: repo.clone(),
                    day,
                    url,
                });
            }
        }
        Err(Error::bad_input(
            format!("package {name:?}"),
            format!(
                "is in none of the repositories {} on {day}",
                self.repos.join(", ")
            ),
        ))
    }

    /// Fetch a resolved package, checked against its database sha256.
    pub fn fetch_resolved(&self, p: &ResolvedPackage) -> Result<Blob> {
        self.fetcher
            .fetch_outcome(&p.url, Some(&p.sha256), true)
            .map(|(b, _)| b)
    }

    /// Fetch `name` at `version` (`[epoch:]pkgver-pkgrel`) from `packages/`, trying the
    /// x86_64 then the `any` file; `expected` pins the bytes when the caller knows them.
    pub fn fetch_package(
        &self,
        name: &str,
        version: &str,
        expected: Option<&str>,
    ) -> Result<(String, Blob)> {
        alpm_types::Name::from_str(name).map_err(|e| {
            Error::bad_input(
                format!("package name {name:?}"),
                format!("not an alpm package name: {e}"),
            )
        })?;
        alpm_types::FullVersion::from_str(version).map_err(|e| {
            Error::bad_input(
                format!("version {version:?}"),
                format!("expected [epoch:]pkgver-pkgrel: {e}"),
            )
        })?;
        let first = name.chars().next().expect("validated non-empty");
        let mut tried = vec![];
        for arch in [ARCH, "any"] {
            let url = format!(
                "{}/packages/{first}/{name}/{name}-{version}-{arch}.pkg.tar.zst",
                self.base
            );
            if let Some((b, _)) = self.fetcher.try_fetch(&url, expected, true)? {
                return Ok((url, b));
            }
            tried.push(url);
        }
        Err(Error::network(tried.join(" and "), "not found"))
    }

    /// The bootstrap tarball of a month, checked against that month's `sha256sums.txt`.
    pub fn bootstrap(&self, month: &str) -> Result<Bootstrap> {
        let month = parse_month(month)?;
        let sums_url = format!("{}/iso/{month}/sha256sums.txt", self.base);
        let (sums, _) = self.fetcher.fetch_outcome(&sums_url, None, true)?;
        let text = std::fs::read_to_string(&sums.path).ctx("read", &sums.path)?;
        let sums = parse_sha256sums(&text);
        for ext in ["tar.zst", "tar.gz"] {
            let filename = format!("archlinux-bootstrap-{month}-{ARCH}.{ext}");
            if let Some(sha) = sums.get(filename.as_str()) {
                let url = format!("{}/iso/{month}/{filename}", self.base);
                let (blob, _) = self.fetcher.fetch_outcome(&url, Some(sha), true)?;
                return Ok(Bootstrap {
                    month,
                    filename,
                    url,
                    blob,
                });
            }
        }
        Err(Error::network(
            sums_url,
            format!("lists no archlinux-bootstrap-{month}-{ARCH}.tar.zst or .tar.gz"),
        ))
    }
}

/// `sha256sum` output: `<hex>  <name>` (or `<hex> *<name>`) per line.
pub fn parse_sha256sums(text: &str) -> HashMap<&str, &str> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut it = line.splitn(2, char::is_whitespace);
        let (Some(sha), Some(name)) = (it.next(), it.next()) else {
            continue;
        };
        let name = name.trim_start().trim_start_matches('*').trim_end();
        if crate::inputs::store::is_sha256(sha) && !name.is_empty() {
            out.insert(name, sha);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_checked() {
        assert!(parse_day("2026/05/16").is_ok());
        assert_eq!(parse_day("2026-05-16").unwrap_err().exit_code(), 2);
        assert!(parse_day("2026/02/30").is_err());
        assert!(parse_month("2026.05.01").is_ok());
        assert!(parse_month("2026/05/01").is_err());
        assert!(parse_base("ftp://x").is_err());
        assert_eq!(parse_base("http://x/").unwrap(), "http://x");
    }

    #[test]
    fn old_repo_add_desc_parses() {
        let d = "%FILENAME%\nhello-1.0-1-x86_64.pkg.tar.zst\n\n%NAME%\nhello\n\n%VERSION%\n1.0-1\n\n%MD5SUM%\n1422346fc5436dbfbbaa0de4c313f8ca\n\n%SHA256SUM%\n98660dd38d133a998e11f93680333b1693ca565a85f31afa074376d1ca8ccc29\n\n";
        let e = parse_desc(d).unwrap();
        assert_eq!(e.name, "hello");
        assert_eq!(e.version, "1.0-1");
        assert_eq!(
            e.sha256.as_deref(),
            Some("98660dd38d133a998e11f93680333b1693ca565a85f31afa074376d1ca8ccc29")
        );
        assert!(parse_desc("%NAME%\nhello\n").is_err());
    }

    #[test]
    fn sums() {
        let s = format!(
            "{}  a.tar.zst\n{} *b.tar.gz\nnonsense\n",
            "a".repeat(64),
            "b".repeat(64)
        );
        let m = parse_sha256sums(&s);
        assert_eq!(m.get("a.tar.zst").copied(), Some("a".repeat(64).as_str()));
        assert_eq!(m.get("b.tar.gz").copied(), Some("b".repeat(64).as_str()));
        assert_eq!(m.len(), 2);
    }
}
