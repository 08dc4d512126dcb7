//! `reprobox lock from-rootfs FILE|URL [--sha256 HEX] [--json]`: the package lock of a rootfs
//! tarball, read from its own pacman database (`envlock::rootfs`). A URL is fetched through
//! the store like every input (`inputs::fetch`), checked against `--sha256` when given.

use std::path::{Path, PathBuf};

use crate::cmd::store::StoreArg;
use crate::envlock::EnvLock;
use crate::envlock::rootfs::lock_from_tarball;
use crate::error::{Error, Result};
use crate::inputs::fetch::Fetcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(subcommand)]
    pub command: LockCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LockCommand {
    /// Read a rootfs tarball (.tar, .tar.gz, .tar.zst; a path or a file://, http(s):// URL)
    /// into a package lock: every package of its `var/lib/pacman/local/*/desc`, with name,
    /// version and arch. The lock is the format `reprobox drift` compares.
    FromRootfs {
        /// The rootfs tarball: a path or a URL.
        source: String,
        /// The tarball's expected sha256 (a URL's download is checked against it).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Use only what the store holds (for a URL); nothing leaves the machine.
        #[arg(long)]
        offline: bool,
        /// Print the lock as JSON instead of the lock's text format.
        #[arg(long)]
        json: bool,
    },
}

pub fn execute(a: Args) -> Result<i32> {
    match a.command {
        LockCommand::FromRootfs {
            source,
            sha256,
            offline,
            json,
        } => {
            let lock = read_rootfs_lock(&source, sha256.as_deref(), offline, &a.store)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&lock).expect("plain JSON")
                );
            } else {
                print!("{}", lock.to_text());
            }
            Ok(0)
        }
    }
}

/// Whether `source` is a URL reprobox fetches (rather than a path).
fn is_url(source: &str) -> bool {
    ["file://", "http://", "https://"]
        .iter()
        .any(|p| source.starts_with(p))
}

/// The lock of the rootfs at `source` (path or URL; a URL through the store of `store`).
pub fn read_rootfs_lock(
    source: &str,
    sha256: Option<&str>,
    offline: bool,
    store: &StoreArg,
) -> Result<EnvLock> {
    if let Some(h) = sha256
        && (h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Error::bad_input(
            "--sha256",
            format!("{h:?} is not a sha256; expected 64 hex digits"),
        ));
    }
    let path: PathBuf = if is_url(source) {
        let fetcher = Fetcher::new(store.open()?, offline);
        fetcher.fetch(source, sha256)?.path
    } else {
        let p = Path::new(source);
        if !p.is_file() {
            return Err(Error::bad_input(
                format!("rootfs tarball {source}"),
                "no such file; expected a path to a rootfs .tar/.tar.gz/.tar.zst or a file://, http:// or https:// URL",
            ));
        }
        if let Some(h) = sha256 {
            let actual = crate::digest::sha256_file(p)?;
            if !actual.eq_ignore_ascii_case(h) {
                return Err(Error::Tampered {
                    what: source.to_string(),
                    expected: h.to_string(),
                    actual,
                });
            }
        }
        p.to_path_buf()
    };
    lock_from_tarball(&path)
}
