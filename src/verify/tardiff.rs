//! Native file-level diff of two rootfs tarballs: which paths differ, and in what.

use serde::Serialize;

use crate::verify::tarindex::{TarEntry, TarIndex};

/// What differs for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "what")]
pub enum Change {
    /// Present in only one of the two.
    Presence {
        only_in: Side,
    },
    Kind {
        a: String,
        b: String,
    },
    Content {
        a: Option<String>,
        b: Option<String>,
        size_a: u64,
        size_b: u64,
    },
    Mode {
        a: String,
        b: String,
    },
    Owner {
        a: String,
        b: String,
    },
    Mtime {
        a: u64,
        b: u64,
    },
    Link {
        a: Option<String>,
        b: Option<String>,
    },
    Xattrs {
        a: Vec<String>,
        b: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The first tarball (the published one).
    A,
    /// The second tarball (the rebuilt one).
    B,
}

impl Change {
    /// One word for the summary: content, mode, owner, mtime, xattrs, presence, kind, link.
    pub fn word(&self) -> &'static str {
        match self {
            Change::Presence { .. } => "presence",
            Change::Kind { .. } => "kind",
            Change::Content { .. } => "content",
            Change::Mode { .. } => "mode",
            Change::Owner { .. } => "owner",
            Change::Mtime { .. } => "mtime",
            Change::Link { .. } => "link",
            Change::Xattrs { .. } => "xattrs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    pub path: String,
    pub changes: Vec<Change>,
}

impl std::fmt::Display for FileDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self
            .changes
            .iter()
            .map(|c| match c {
                Change::Presence { only_in: Side::A } => "only in the published".into(),
                Change::Presence { only_in: Side::B } => "only in the rebuilt".into(),
                Change::Mode { a, b } => format!("mode {a} -> {b}"),
                Change::Owner { a, b } => format!("owner {a} -> {b}"),
                Change::Mtime { a, b } => format!("mtime {a} -> {b}"),
                Change::Content { size_a, size_b, .. } => {
                    format!("content ({size_a} -> {size_b} bytes)")
                }
                other => other.word().to_string(),
            })
            .collect();
        write!(f, "{}: {}", self.path, words.join(", "))
    }
}

fn entry_changes(a: &TarEntry, b: &TarEntry) -> Vec<Change> {
    let mut c = Vec::new();
    if a.kind != b.kind {
        c.push(Change::Kind {
            a: a.kind.into(),
            b: b.kind.into(),
        });
        return c;
    }
    if a.sha256 != b.sha256 || a.size != b.size && a.kind == "file" {
        c.push(Change::Content {
            a: a.sha256.clone(),
            b: b.sha256.clone(),
            size_a: a.size,
            size_b: b.size,
        });
    }
    if a.mode != b.mode {
        c.push(Change::Mode {
            a: format!("{:04o}", a.mode),
            b: format!("{:04o}", b.mode),
        });
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        c.push(Change::Owner {
            a: format!("{}:{}", a.uid, a.gid),
            b: format!("{}:{}", b.uid, b.gid),
        });
    }
    if a.mtime != b.mtime {
        c.push(Change::Mtime {
            a: a.mtime,
            b: b.mtime,
        });
    }
    if a.link != b.link {
        c.push(Change::Link {
            a: a.link.clone(),
            b: b.link.clone(),
        });
    }
    if a.pax != b.pax {
        let fmt = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        c.push(Change::Xattrs {
            a: fmt(&a.pax),
            b: fmt(&b.pax),
        });
    }
    c
}

/// Every path that differs between `a` (published) and `b` (rebuilt), sorted by path.
pub fn diff(a: &TarIndex, b: &TarIndex) -> Vec<FileDiff> {
    let mut out = Vec::new();
    for (path, ea) in a {
        match b.get(path) {
            None => out.push(FileDiff {
                path: path.clone(),
                changes: vec![Change::Presence { only_in: Side::A }],
            }),
            Some(eb) => {
                let changes = entry_changes(ea, eb);
                if !changes.is_empty() {
                    out.push(FileDiff {
                        path: path.clone(),
                        changes,
                    });
                }
            }
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            out.push(FileDiff {
                path: path.clone(),
                changes: vec![Change::Presence { only_in: Side::B }],
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::tarindex::read_index;
    use std::path::Path;

    /// Build a tar.zst with the given entries: (path, content, mode, mtime, xattr).
    /// (path, content, mode, mtime, one xattr)
    pub(crate) type Member<'a> = (&'a str, &'a str, u32, u64, Option<(&'a str, &'a str)>);

    pub(crate) fn make_tar(path: &Path, files: &[Member]) {
        let f = std::fs::File::create(path).unwrap();
        let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
        let mut b = tar::Builder::new(enc);
        for (name, data, mode, mtime, xattr) in files {
            if let Some((k, v)) = xattr {
                let key = format!("SCHILY.xattr.{k}");
                b.append_pax_extensions([(key.as_str(), v.as_bytes())])
                    .unwrap();
            }
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(*mtime);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn finds_each_kind_of_difference() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.tar.zst"), d.path().join("b.tar.zst"));
        make_tar(
            &a,
            &[
                ("./etc/pacman.conf", "NoExtract = a", 0o644, 100, None),
                ("./same", "x", 0o644, 100, None),
                ("./mode", "x", 0o644, 100, None),
                ("./time", "x", 0o644, 100, None),
                ("./xa", "x", 0o644, 100, Some(("security.capability", "1"))),
                ("./gone", "x", 0o644, 100, None),
            ],
        );
        make_tar(
            &b,
            &[
                ("./etc/pacman.conf", "NoExtract = a b", 0o644, 100, None),
                ("./same", "x", 0o644, 100, None),
                ("./mode", "x", 0o755, 100, None),
                ("./time", "x", 0o644, 200, None),
                ("./xa", "x", 0o644, 100, None),
                ("./new", "x", 0o644, 100, None),
            ],
        );
        let diffs = diff(&read_index(&a).unwrap(), &read_index(&b).unwrap());
        let words: Vec<(String, Vec<&str>)> = diffs
            .iter()
            .map(|d| (d.path.clone(), d.changes.iter().map(Change::word).collect()))
            .collect();
        assert_eq!(
            words,
            vec![
                ("etc/pacman.conf".to_string(), vec!["content"]),
                ("gone".to_string(), vec!["presence"]),
                ("mode".to_string(), vec!["mode"]),
                ("new".to_string(), vec!["presence"]),
                ("time".to_string(), vec!["mtime"]),
                ("xa".to_string(), vec!["xattrs"]),
            ]
        );
        assert_eq!(diffs[2].to_string(), "mode: mode 0644 -> 0755");
        assert!(diff(&read_index(&a).unwrap(), &read_index(&a).unwrap()).is_empty());
    }
}
