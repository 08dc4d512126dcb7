//! The inputs lock: every request a run made for outside bytes, with the sha256 and size it
//! got, and whether the store already had it (`hit`), had to fetch it (`fetched`) or could
//! not serve it (`miss`).
//!
//! The text format is stable and line-based so that locks diff well and round-trip exactly:
//!
//! ```text
//! # reprobox inputs lock v1
//! # status sha256 bytes requests url
//! fetched 2cf2…9824 5 1 http://127.0.0.1:8080/repos/2026/05/16/core/os/x86_64/core.db
//! miss - - 2 http://127.0.0.1:8080/repos/2026/05/16/core/os/x86_64/nope.pkg.tar.zst
//! ```
//!
//! One line per distinct (URL, status), in order of first request; `requests` counts how often
//! it was asked for. URLs never contain spaces (they are percent-encoded), so the URL is the
//! rest of the line.
//!
//! A job's egress requests (`src/egress`) are lines of their own, after a second column
//! comment, naming the policy that answered and the canonical URL (the real host's, as the
//! build asked for it, not the loopback location that served it); `tampered` is a `pinned`
//! URL whose bytes did not match (nothing stored):
//!
//! ```text
//! # egress policy status sha256 bytes requests url
//! egress recorded fetched 2cf2…9824 5 1 https://archive.archlinux.org/some/file
//! egress pinned tampered - - 1 https://gitlab.archlinux.org/x.tar.zst
//! ```
//!
//! A lock without egress requests has no such lines and is the v1 text it always was.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

pub const HEADER: &str = "# reprobox inputs lock v1";
const COLUMNS: &str = "# status sha256 bytes requests url";
const EGRESS_COLUMNS: &str = "# egress policy status sha256 bytes requests url";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Served from the store without any network.
    Hit,
    /// Not in the store; fetched from upstream, checked, stored, served.
    Fetched,
    /// Not served (offline and not in the store, or upstream did not have it).
    Miss,
    /// Not served: the bytes did not match the sha256 pinned beforehand (nothing stored).
    Tampered,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Fetched => "fetched",
            Status::Miss => "miss",
            Status::Tampered => "tampered",
        }
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hit" => Ok(Status::Hit),
            "fetched" => Ok(Status::Fetched),
            "miss" => Ok(Status::Miss),
            "tampered" => Ok(Status::Tampered),
            _ => Err(format!(
                "status {s:?} is not hit, fetched, miss or tampered"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    pub status: Status,
    /// `None` for a miss.
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub requests: u64,
    pub url: String,
    /// The egress policy that answered (an egress request); `None` for the mirror's and
    /// the pipeline's own requests.
    pub policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputsLock {
    pub entries: Vec<LockEntry>,
}

impl InputsLock {
    /// Record one request; repeats of the same (URL, status) bump its count.
    pub fn record(&mut self, status: Status, url: &str, blob: Option<(&str, u64)>) {
        self.record_with(None, status, url, blob);
    }

    /// Record one egress request answered under `policy`, by its canonical URL.
    pub fn record_egress(
        &mut self,
        policy: &str,
        status: Status,
        url: &str,
        blob: Option<(&str, u64)>,
    ) {
        self.record_with(Some(policy), status, url, blob);
    }

    fn record_with(
        &mut self,
        policy: Option<&str>,
        status: Status,
        url: &str,
        blob: Option<(&str, u64)>,
    ) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.url == url && e.status == status && e.policy.as_deref() == policy)
        {
            e.requests += 1;
            return;
        }
        self.entries.push(LockEntry {
            status,
            sha256: blob.map(|b| b.0.to_string()),
            bytes: blob.map(|b| b.1),
            requests: 1,
            url: url.to_string(),
            policy: policy.map(str::to_string),
        });
    }

    /// The egress requests.
    pub fn egress(&self) -> impl Iterator<Item = &LockEntry> {
        self.entries.iter().filter(|e| e.policy.is_some())
    }

    /// The sha256 of every blob the lock names, deduplicated.
    pub fn blobs(&self) -> std::collections::BTreeSet<String> {
        self.entries
            .iter()
            .filter_map(|e| e.sha256.clone())
            .collect()
    }

    pub fn misses(&self) -> impl Iterator<Item = &LockEntry> {
        self.entries.iter().filter(|e| e.status == Status::Miss)
    }

    /// Parse the text form; `name` names the input in errors.
    pub fn parse(text: &str, name: &str) -> Result<InputsLock> {
        let bad = |line: usize, msg: String| {
            Error::bad_input(format!("inputs lock {name} line {line}"), msg)
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l == HEADER => {}
            _ => return Err(bad(1, format!("expected the header {HEADER:?}"))),
        }
        let mut entries = vec![];
        for (i, l) in lines {
            if l.starts_with('#') || l.is_empty() {
                continue;
            }
            let (policy, l) = match l.strip_prefix("egress ") {
                Some(rest) => {
                    let (p, rest) = rest.split_once(' ').ok_or_else(|| {
                        bad(
                            i + 1,
                            "expected `egress policy status sha256 bytes requests url`".into(),
                        )
                    })?;
                    if !matches!(p, "pinned" | "recorded" | "archive" | "registry") {
                        return Err(bad(i + 1, format!("egress policy {p:?} is not known")));
                    }
                    (Some(p.to_string()), rest)
                }
                None => (None, l),
            };
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            if f.len() != 5 {
                return Err(bad(
                    i + 1,
                    "expected `status sha256 bytes requests url`".into(),
                ));
            }
            let status: Status = f[0].parse().map_err(|m| bad(i + 1, m))?;
            let sha256 = match f[1] {
                "-" => None,
                s if crate::inputs::store::is_sha256(s) => Some(s.to_string()),
                s => {
                    return Err(bad(
                        i + 1,
                        format!("{s:?} is not a sha256 (64 lowercase hex digits) or -"),
                    ));
                }
            };
            let bytes = match f[2] {
                "-" => None,
                s => Some(
                    s.parse::<u64>()
                        .map_err(|_| bad(i + 1, format!("bytes {s:?} is not a number or -")))?,
                ),
            };
            let requests = f[3]
                .parse::<u64>()
                .map_err(|_| bad(i + 1, format!("requests {:?} is not a number", f[3])))?;
            if f[4].is_empty() || f[4].contains(char::is_whitespace) {
                return Err(bad(i + 1, "the URL is empty or contains whitespace".into()));
            }
            let unserved = matches!(status, Status::Miss | Status::Tampered);
            if unserved != sha256.is_none() || sha256.is_none() != bytes.is_none() {
                return Err(bad(
                    i + 1,
                    "a miss or tampered has `- -` for sha256 and bytes; hit and fetched have both"
                        .into(),
                ));
            }
            entries.push(LockEntry {
                status,
                sha256,
                bytes,
                requests,
                url: f[4].to_string(),
                policy,
            });
        }
        Ok(InputsLock { entries })
    }

    pub fn read(path: &std::path::Path) -> Result<InputsLock> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_input(
                format!("inputs lock {}", path.display()),
                format!("cannot read: {e}"),
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Write atomically (temp file + rename).
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        use crate::error::IoContext;
        use std::io::Write;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".inputs-lock-")
            .tempfile_in(parent)
            .ctx("create temp file in", parent)?;
        tmp.write_all(self.to_string().as_bytes())
            .ctx("write", tmp.path())?;
        tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
        tmp.persist(path)
            .map_err(|e| Error::io("write", path, e.error))?;
        Ok(())
    }
}

impl fmt::Display for InputsLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        writeln!(f, "{COLUMNS}")?;
        let line = |f: &mut fmt::Formatter<'_>, e: &LockEntry| {
            let sha = e.sha256.as_deref().unwrap_or("-");
            let bytes = e.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{} {sha} {bytes} {} {}",
                e.status.as_str(),
                e.requests,
                e.url
            )
        };
        for e in self.entries.iter().filter(|e| e.policy.is_none()) {
            line(f, e)?;
        }
        if self.egress().next().is_some() {
            writeln!(f, "{EGRESS_COLUMNS}")?;
            for e in self.egress() {
                write!(f, "egress {} ", e.policy.as_deref().unwrap_or("-"))?;
                line(f, e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# reprobox inputs lock v1
# status sha256 bytes requests url
fetched 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5 1 http://127.0.0.1:8080/repos/2026/05/16/core/os/x86_64/core.db
hit 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5 3 http://127.0.0.1:8080/repos/2026/05/16/core/os/x86_64/core.db
miss - - 2 http://127.0.0.1:8080/packages/n/nope/nope-1-1-x86_64.pkg.tar.zst
";

    #[test]
    fn exact_round_trip() {
        let lock = InputsLock::parse(TEXT, "t").unwrap();
        assert_eq!(lock.entries.len(), 3);
        assert_eq!(lock.entries[1].requests, 3);
        assert_eq!(lock.entries[2].status, Status::Miss);
        assert_eq!(lock.to_string(), TEXT);
        assert_eq!(InputsLock::parse(&lock.to_string(), "t").unwrap(), lock);
    }

    #[test]
    fn record_counts_repeats() {
        let mut l = InputsLock::default();
        l.record(Status::Fetched, "http://x/a", Some(("ab", 1)));
        l.record(Status::Hit, "http://x/a", Some(("ab", 1)));
        l.record(Status::Hit, "http://x/a", Some(("ab", 1)));
        l.record(Status::Miss, "http://x/b", None);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[1].requests, 2);
        assert_eq!(l.misses().count(), 1);
    }

    const EGRESS_TEXT: &str = "# reprobox inputs lock v1
# status sha256 bytes requests url
hit 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5 3 http://127.0.0.1:8080/repos/2026/05/16/core/os/x86_64/core.db
# egress policy status sha256 bytes requests url
egress recorded fetched 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5 1 https://archive.archlinux.org/some/file
egress recorded hit 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5 2 https://archive.archlinux.org/some/file
egress pinned tampered - - 1 https://gitlab.archlinux.org/x.tar.zst
egress recorded miss - - 1 https://dl-cdn.alpinelinux.org/nope
";

    #[test]
    fn egress_lines_round_trip_and_count_apart() {
        let lock = InputsLock::parse(EGRESS_TEXT, "t").unwrap();
        assert_eq!(lock.entries.len(), 5);
        assert_eq!(lock.egress().count(), 4);
        assert_eq!(lock.entries[1].policy.as_deref(), Some("recorded"));
        assert_eq!(lock.entries[3].status, Status::Tampered);
        assert_eq!(lock.to_string(), EGRESS_TEXT);
        assert_eq!(lock.blobs().len(), 1);
        // Recorded out of order, written mirror lines first.
        let mut l = InputsLock::default();
        l.record_egress("recorded", Status::Fetched, "https://a/x", Some(("ab", 1)));
        l.record(Status::Hit, "http://m/x", Some(("ab", 1)));
        l.record_egress("recorded", Status::Fetched, "https://a/x", Some(("ab", 1)));
        // The same URL asked through the mirror is a line of its own.
        l.record(Status::Fetched, "https://a/x", Some(("ab", 1)));
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[0].requests, 2);
        let text = l.to_string();
        assert!(
            text.ends_with(
                "# egress policy status sha256 bytes requests url\negress recorded fetched ab 1 2 https://a/x\n"
            ),
            "{text}"
        );
        for bad in [
            "egress\n",
            "egress bogus hit - - 1 http://x\n",
            "egress pinned tampered ab 1 1 http://x\n",
        ] {
            let e = InputsLock::parse(&format!("{HEADER}\n{bad}"), "f").unwrap_err();
            assert!(e.to_string().contains("f line 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_lines_are_named() {
        let e = InputsLock::parse("# reprobox inputs lock v1\nhit zz 5 1 http://x\n", "f.lock")
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("f.lock line 2"), "{e}");
        assert!(InputsLock::parse("nope\n", "f").is_err());
        assert!(
            InputsLock::parse("# reprobox inputs lock v1\nmiss - 5 1 http://x\n", "f").is_err()
        );
    }
}
