//! A tarball read as an index of its entries, for native diffs and timestamp audits.
//!
//! Every member is keyed by its normalised path (no leading `./` or `/`) and carries what
//! can make two rootfs tarballs differ: type, mode, owner, mtime, size, content sha256,
//! link target and PAX extended attributes (xattrs, ACLs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TarEntry {
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`, `other`.
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// sha256 of the content (regular files only).
    pub sha256: Option<String>,
    pub link: Option<String>,
    /// PAX records other than times and sizes (`SCHILY.xattr.*`, ACLs…).
    pub pax: BTreeMap<String, String>,
}

/// Path → entry, sorted.
pub type TarIndex = BTreeMap<String, TarEntry>;

pub use crate::inputs::unpack::open_decompressed;

pub fn normalise(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p.is_empty() { ".".into() } else { p.into() }
}

/// Read a tarball (any compression) into an index.
pub fn read_index(path: &Path) -> Result<TarIndex> {
    index_reader(open_decompressed(path)?, path)
}

/// Read an uncompressed tar stream into an index; `path` names it in errors (an image
/// layer read from inside an archive, `verify::imagediff`).
pub fn index_reader(r: impl std::io::Read, path: &Path) -> Result<TarIndex> {
    let mut ar = tar::Archive::new(r);
    let mut out = TarIndex::new();
    let bad = |e: std::io::Error| Error::io("read tar entry in", path, e);
    // One read buffer for every member's content hash.
    let mut buf = vec![0u8; 256 * 1024];
    for entry in ar.entries().map_err(bad)? {
        let mut e = entry.map_err(bad)?;
        let name = normalise(&String::from_utf8_lossy(&e.path_bytes()));
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            _ => "other",
        };
        let mut pax = BTreeMap::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                let k = ext.key().unwrap_or("").to_string();
                if matches!(
                    k.as_str(),
                    "mtime"
                        | "atime"
                        | "ctime"
                        | "size"
                        | "path"
                        | "linkpath"
                        | "uid"
                        | "gid"
                        | "uname"
                        | "gname"
                ) {
                    continue;
                }
                pax.insert(k, String::from_utf8_lossy(ext.value_bytes()).into_owned());
            }
        }
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let sha256 = if kind == "file" {
            Some(
                crate::digest::sha256_reader_with(&mut e, &mut buf)
                    .map_err(bad)?
                    .0,
            )
        } else {
            None
        };
        out.insert(
            name,
            TarEntry {
                kind,
                mode: h.mode().unwrap_or(0) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                mtime: e.header().mtime().unwrap_or(0),
                size: h.size().unwrap_or(0),
                sha256,
                link: link.map(|l| if kind == "hardlink" { normalise(&l) } else { l }),
                pax,
            },
        );
    }
    Ok(out)
}
