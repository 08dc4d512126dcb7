//! The content-addressed store: every input reprobox ever used, kept by its sha256.
//!
//! Layout under the store root (one filesystem, so every rename is atomic):
//! - `blobs/<aa>/<sha256>` — the bytes, read-only; a blob's name is its content's hash.
//! - `index.jsonl` — one JSON line per stored origin: `{sha256, size, url, at}`. It answers
//!   "which blob did this URL give last time", which is what offline replay needs.
//! - `tmp/` — files being written; `partial/` — resumable downloads (see `fetch`).
//! - `locks/` — one lock file per blob (and per URL for downloads), held with `flock`, so
//!   several reprobox processes can share one store.
//! - `quarantine/` — blobs `store verify` found corrupt, moved aside, never deleted silently.
//!
//! Writes go temp file → fsync → rename → fsync of the directory, so a crash or an interrupt
//! leaves either the whole blob or none of it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub path: PathBuf,
    pub size: u64,
}

/// One line of the index: where a blob came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    pub sha256: String,
    pub size: u64,
    /// The URL (or `file:`/`import:` origin) the bytes came from.
    pub url: String,
    /// When it was stored (RFC 3339, UTC).
    pub at: String,
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    /// (sha256 the blob was stored under, sha256 of its bytes, where it was moved)
    pub corrupt: Vec<(String, String, PathBuf)>,
}

/// What `gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed_temp: usize,
    pub removed_blobs: usize,
    pub freed_bytes: u64,
    pub index_records_dropped: usize,
}

/// Handle on a store directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Read buffer for hashing and copying: large enough that syscalls do not dominate.
const BUF: usize = 1 << 20;

/// True when `s` is 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// sha256 and length of everything `r` yields ([`crate::digest::sha256_reader`]).
pub fn hash_reader(r: impl Read) -> std::io::Result<(String, u64)> {
    crate::digest::sha256_reader(r)
}

/// sha256 and length of a file ([`crate::digest::sha256_file_len`]).
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    crate::digest::sha256_file_len(path)
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .ctx("open", dir)?
        .sync_all()
        .ctx("fsync", dir)
}

impl Store {
    /// The default store directory: `$REPROBOX_STORE`, else `$XDG_CACHE_HOME/reprobox`, else
    /// `~/.cache/reprobox`.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(d) = std::env::var_os("REPROBOX_STORE").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d).join("reprobox"));
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".cache").join("reprobox")),
            None => Err(Error::bad_input(
                "store directory",
                "none of --store, REPROBOX_STORE, XDG_CACHE_HOME or HOME is set",
            )),
        }
    }

    /// Open (creating if needed) the store at `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let root = dir.as_ref().to_path_buf();
        for sub in ["blobs", "tmp", "partial", "locks", "quarantine"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).ctx("create directory", &d)?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.jsonl")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// Where the blob `sha` lives (whether or not it exists).
    pub fn blob_path(&self, sha: &str) -> PathBuf {
        let prefix = sha.get(..2).unwrap_or("xx");
        self.root.join("blobs").join(prefix).join(sha)
    }

    /// The blob's path if the store holds `sha`. Not verified: see [`Store::get_verified`].
    pub fn get(&self, sha: &str) -> Option<PathBuf> {
        if !is_sha256(sha) {
            return None;
        }
        let p = self.blob_path(sha);
        p.is_file().then_some(p)
    }

    /// Like [`Store::get`], but re-hashes the bytes; a corrupt blob is quarantined and
    /// reported as `Tampered`.
    pub fn get_verified(&self, sha: &str) -> Result<Option<Blob>> {
        let Some(p) = self.get(sha) else {
            return Ok(None);
        };
        let (actual, size) = hash_file(&p)?;
        if actual != sha {
            self.quarantine(sha)?;
            return Err(Error::Tampered {
                what: format!("store blob {}", p.display()),
                expected: sha.to_string(),
                actual,
            });
        }
        Ok(Some(Blob {
            sha256: sha.to_string(),
            path: p,
            size,
        }))
    }

    /// Blob metadata for a blob known to be present.
    pub fn blob(&self, sha: &str) -> Option<Blob> {
        let p = self.get(sha)?;
        let size = fs::metadata(&p).ok()?.len();
        Some(Blob {
            sha256: sha.to_string(),
            path: p,
            size,
        })
    }

    /// Take the exclusive cross-process lock named `name` (blocks until it is free).
    pub(crate) fn lock(&self, name: &str) -> Result<File> {
        let p = self.root.join("locks").join(format!("{name}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx("open", &p)?;
        f.lock_exclusive().ctx("lock", &p)?;
        Ok(f)
    }

    /// Store a copy of the file at `path`. With `expected`, bytes hashing to anything else are
    /// refused (`Tampered`) and nothing is stored.
    pub fn put_file(&self, path: &Path, expected: Option<&str>, origin: &str) -> Result<Blob> {
        if let Some(sha) = expected
            && let Some(b) = self.blob(sha)
        {
            // Already present; still prove the source is what the caller claims.
            let (actual, _) = hash_file(path)?;
            if actual != sha {
                return Err(Error::Tampered {
                    what: path.display().to_string(),
                    expected: sha.into(),
                    actual,
                });
            }
            self.record(&b, origin)?;
            return Ok(b);
        }
        let f = File::open(path).ctx("open", path)?;
        self.put_reader_named(f, expected, origin, &path.display().to_string())
    }

    /// Store everything `reader` yields. See [`Store::put_file`].
    pub fn put_reader(
        &self,
        reader: impl Read,
        expected: Option<&str>,
        origin: &str,
    ) -> Result<Blob> {
        self.put_reader_named(reader, expected, origin, origin)
    }

    fn put_reader_named(
        &self,
        mut reader: impl Read,
        expected: Option<&str>,
        origin: &str,
        what: &str,
    ) -> Result<Blob> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&tmp_dir)
            .ctx("create temp file in", &tmp_dir)?;
        tmp.as_file().lock_exclusive().ctx("lock", tmp.path())?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; BUF];
        let mut size = 0u64;
        loop {
            let k = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", what, e)),
            };
            h.update(&buf[..k]);
            tmp.write_all(&buf[..k]).ctx("write", tmp.path())?;
            size += k as u64;
        }
        let actual = hex::encode(h.finalize());
        if let Some(exp) = expected
            && exp != actual
        {
            // `tmp` is deleted on drop: nothing is stored under either hash.
            return Err(Error::Tampered {
                what: what.to_string(),
                expected: exp.to_string(),
                actual,
            });
        }
        self.commit(tmp.into_temp_path(), &actual, size, origin)
    }

    /// Move a fully written file whose sha256 is `sha` into the store (atomically), and record
    /// its origin. The caller has already checked the hash.
    pub(crate) fn commit(
        &self,
        tmp: impl AsRef<Path>,
        sha: &str,
        size: u64,
        origin: &str,
    ) -> Result<Blob> {
        let tmp = tmp.as_ref();
        File::open(tmp)
            .ctx("open", tmp)?
            .sync_all()
            .ctx("fsync", tmp)?;
        let _guard = self.lock(sha)?;
        let dest = self.blob_path(sha);
        if dest.is_file() {
            fs::remove_file(tmp).ctx("remove", tmp)?;
        } else {
            let dir = dest.parent().expect("blob has a parent");
            fs::create_dir_all(dir).ctx("create directory", dir)?;
            let mut perm = fs::metadata(tmp).ctx("stat", tmp)?.permissions();
            perm.set_readonly(true);
            fs::set_permissions(tmp, perm).ctx("chmod", tmp)?;
            fs::rename(tmp, &dest).ctx("rename into store", &dest)?;
            fsync_dir(dir)?;
        }
        let blob = Blob {
            sha256: sha.to_string(),
            path: dest,
            size,
        };
        self.record(&blob, origin)?;
        Ok(blob)
    }

    /// Append an origin record to the index (under the index lock).
    pub fn record(&self, blob: &Blob, origin: &str) -> Result<()> {
        self.append_records(&[IndexRecord {
            sha256: blob.sha256.clone(),
            size: blob.size,
            url: origin.to_string(),
            at: now_rfc3339(),
        }])
    }

    pub(crate) fn append_records(&self, recs: &[IndexRecord]) -> Result<()> {
        let _g = self.lock("index")?;
        let p = self.index_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .ctx("open", &p)?;
        let mut text = String::new();
        for r in recs {
            text.push_str(&serde_json::to_string(r).expect("plain JSON"));
            text.push('\n');
        }
        f.write_all(text.as_bytes()).ctx("append to", &p)?;
        f.sync_data().ctx("fsync", &p)
    }

    /// Every record of the index, oldest first. Lines that do not parse are skipped (with a
    /// warning): a torn last line must not make the whole store unusable.
    pub fn index(&self) -> Result<Vec<IndexRecord>> {
        let p = self.index_path();
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io("open", &p, e)),
        };
        let mut out = vec![];
        for line in BufReader::new(f).lines() {
            let line = line.ctx("read", &p)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<IndexRecord>(&line) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("{}: skipping unreadable index line: {e}", p.display()),
            }
        }
        Ok(out)
    }

    /// The blob the URL gave most recently, if the store still holds it.
    pub fn lookup_url(&self, url: &str) -> Result<Option<Blob>> {
        let idx = self.index()?;
        Ok(idx
            .iter()
            .rev()
            .find(|r| r.url == url)
            .and_then(|r| self.blob(&r.sha256)))
    }

    /// Every blob present, sorted by sha256.
    pub fn list(&self) -> Result<Vec<Blob>> {
        let mut out = vec![];
        let blobs = self.root.join("blobs");
        for d in fs::read_dir(&blobs).ctx("list", &blobs)? {
            let d = d.ctx("list", &blobs)?;
            if !d.file_type().ctx("stat", d.path())?.is_dir() {
                continue;
            }
            for e in fs::read_dir(d.path()).ctx("list", d.path())? {
                let e = e.ctx("list", d.path())?;
                let name = e.file_name().to_string_lossy().into_owned();
                if is_sha256(&name) {
                    let size = e.metadata().ctx("stat", e.path())?.len();
                    out.push(Blob {
                        sha256: name,
                        path: e.path(),
                        size,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(out)
    }

    /// Move a blob aside into `quarantine/`; returns where it went.
    pub fn quarantine(&self, sha: &str) -> Result<PathBuf> {
        let _g = self.lock(sha)?;
        let src = self.blob_path(sha);
        let stamp = jiff::Timestamp::now().as_second();
        let dest = self.root.join("quarantine").join(format!("{sha}.{stamp}"));
        fs::rename(&src, &dest).ctx("quarantine", &src)?;
        Ok(dest)
    }

    /// Re-hash every blob; quarantine the ones whose bytes do not match their name.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        for b in self.list()? {
            rep.checked += 1;
            let (actual, _) = hash_file(&b.path)?;
            if actual != b.sha256 {
                let dest = self.quarantine(&b.sha256)?;
                rep.corrupt.push((b.sha256, actual, dest));
            }
        }
        Ok(rep)
    }

    /// Remove abandoned temporary and partial files (ones no live process holds a lock on);
    /// with `keep`, also every blob not in it. Then drop index records of missing blobs.
    pub fn gc(&self, keep: Option<&std::collections::BTreeSet<String>>) -> Result<GcReport> {
        let mut rep = GcReport::default();
        for dir in [self.tmp_dir(), self.partial_dir()] {
            for e in fs::read_dir(&dir).ctx("list", &dir)? {
                let e = e.ctx("list", &dir)?;
                let p = e.path();
                let Ok(f) = OpenOptions::new().read(true).write(true).open(&p) else {
                    continue;
                };
                if f.try_lock_exclusive().is_ok() {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&p).ctx("remove", &p)?;
                    rep.removed_temp += 1;
                    rep.freed_bytes += len;
                }
            }
        }
        if let Some(keep) = keep {
            for b in self.list()? {
                if !keep.contains(&b.sha256) {
                    let _g = self.lock(&b.sha256)?;
                    fs::remove_file(&b.path).ctx("remove", &b.path)?;
                    rep.removed_blobs += 1;
                    rep.freed_bytes += b.size;
                }
            }
        }
        // Compact the index: keep records whose blob exists, drop exact duplicates.
        let _g = self.lock("index")?;
        let recs = self.index()?;
        let mut seen = std::collections::HashSet::new();
        let kept: Vec<&IndexRecord> = recs
            .iter()
            .rev()
            .filter(|r| {
                self.get(&r.sha256).is_some() && seen.insert((r.url.clone(), r.sha256.clone()))
            })
            .collect();
        rep.index_records_dropped = recs.len() - kept.len();
        if rep.index_records_dropped > 0 {
            let tmp_dir = self.tmp_dir();
            let mut tmp = tempfile::Builder::new()
                .prefix("index-")
                .tempfile_in(&tmp_dir)
                .ctx("create temp file in", &tmp_dir)?;
            for r in kept.iter().rev() {
                writeln!(tmp, "{}", serde_json::to_string(r).expect("plain JSON"))
                    .ctx("write", tmp.path())?;
            }
            tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
            let p = self.index_path();
            tmp.persist(&p)
                .map_err(|e| Error::io("replace", &p, e.error))?;
        }
        Ok(rep)
    }

    /// Write a tar holding the named blobs (all when `only` is `None`) and their index records,
    /// for carrying to another machine. Blobs first, `index.jsonl` last.
    pub fn export(
        &self,
        file: &Path,
        only: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<usize> {
        let blobs: Vec<Blob> = match only {
            None => self.list()?,
            Some(set) => {
                let mut v = vec![];
                for sha in set {
                    v.push(self.blob(sha).ok_or_else(|| {
                        Error::bad_input(
                            format!("blob {sha}"),
                            "is named by the lock but not in the store (expected every blob the lock names to be in the store: fetch it first)",
                        )
                    })?);
                }
                v
            }
        };
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".reprobox-export-")
            .tempfile_in(parent)
            .ctx("create temp file in", parent)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
        let shas: std::collections::HashSet<&str> =
            blobs.iter().map(|b| b.sha256.as_str()).collect();
        for b in &blobs {
            let mut h = tar::Header::new_gnu();
            h.set_size(b.size);
            h.set_mode(0o444);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            let f = File::open(&b.path).ctx("open", &b.path)?;
            tar.append_data(&mut h, format!("blobs/{}", b.sha256), f)
                .ctx("write", file)?;
        }
        let mut idx = String::new();
        for r in self
            .index()?
            .iter()
            .filter(|r| shas.contains(r.sha256.as_str()))
        {
            idx.push_str(&serde_json::to_string(r).expect("plain JSON"));
            idx.push('\n');
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(idx.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, "index.jsonl", idx.as_bytes())
            .ctx("write", file)?;
        let w = tar.into_inner().ctx("write", file)?;
        let tmp = w
            .into_inner()
            .map_err(|e| Error::io("write", file, e.into_error()))?;
        tmp.as_file().sync_all().ctx("fsync", file)?;
        tmp.persist(file)
            .map_err(|e| Error::io("write", file, e.error))?;
        Ok(blobs.len())
    }

    /// Read an export tar: every blob is re-hashed and stored only if it matches its name;
    /// the first mismatch stops the import with `Tampered`. Returns the number of blobs.
    pub fn import(&self, file: &Path) -> Result<usize> {
        let f = File::open(file).ctx("open", file)?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut n = 0;
        let mut records = vec![];
        for e in ar.entries().ctx("read", file)? {
            let e = e.ctx("read", file)?;
            let name = e.path().ctx("read", file)?.to_string_lossy().into_owned();
            if let Some(sha) = name.strip_prefix("blobs/") {
                if !is_sha256(sha) {
                    return Err(Error::bad_input(
                        format!("export file {}", file.display()),
                        format!("entry {name:?} is not blobs/<sha256>"),
                    ));
                }
                let sha = sha.to_string();
                let what = format!("{}: {name}", file.display());
                self.put_reader_named(e, Some(&sha), &format!("import:{}", file.display()), &what)?;
                n += 1;
            } else if name == "index.jsonl" {
                for line in BufReader::new(e).lines() {
                    let line = line.ctx("read", file)?;
                    if let Ok(r) = serde_json::from_str::<IndexRecord>(&line) {
                        records.push(r);
                    }
                }
            } else {
                return Err(Error::bad_input(
                    format!("export file {}", file.display()),
                    format!("unexpected entry {name:?} (expected blobs/<sha256> and index.jsonl)"),
                ));
            }
        }
        records.retain(|r| self.get(&r.sha256).is_some());
        if !records.is_empty() {
            self.append_records(&records)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_refuse_wrong_hash() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let b = s.put_reader(&b"hello"[..], None, "test:hello").unwrap();
        assert_eq!(
            b.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.get(&b.sha256).unwrap(), b.path);
        assert_eq!(fs::read(&b.path).unwrap(), b"hello");
        let wrong = "0".repeat(64);
        let e = s
            .put_reader(&b"other"[..], Some(&wrong), "test:other")
            .unwrap_err();
        assert!(matches!(e, Error::Tampered { .. }), "{e}");
        assert!(s.get(&wrong).is_none());
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(
            fs::read_dir(s.tmp_dir()).unwrap().count(),
            0,
            "no temp file left"
        );
        assert_eq!(
            s.lookup_url("test:hello").unwrap().unwrap().sha256,
            b.sha256
        );
    }
}
