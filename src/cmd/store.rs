//! `reprobox store {verify,gc,export,import,ls,hash}` over the content-addressed store.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::inputs::lock::InputsLock;
use crate::inputs::prepared::PreparedEnvs;
use crate::inputs::store::{self, Store};

/// `--store DIR` (env `REPROBOX_STORE`), shared by every command that uses the store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArg {
    /// The store directory [default: $XDG_CACHE_HOME/reprobox, else ~/.cache/reprobox].
    #[arg(
        long = "store",
        env = "REPROBOX_STORE",
        value_name = "DIR",
        global = true
    )]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    pub fn open(&self) -> Result<Store> {
        let dir = match &self.store {
            Some(d) => d.clone(),
            None => Store::default_dir()?,
        };
        Store::open(dir)
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Re-hash every blob; move corrupt ones to quarantine/ (exit 1 if any were found).
    Verify,
    /// Remove abandoned temporary files; with --keep, also every blob no given lock names.
    Gc {
        /// Inputs locks whose blobs are kept (repeatable); without it no blob is removed.
        #[arg(long, value_name = "LOCK")]
        keep: Vec<PathBuf>,
    },
    /// Write the blobs named by an inputs lock (or all) with their origins to a tar FILE.
    Export {
        file: PathBuf,
        /// Export only the blobs this inputs lock names.
        #[arg(long, value_name = "FILE")]
        lock: Option<PathBuf>,
    },
    /// Import a tar written by `store export`, verifying every blob.
    Import { file: PathBuf },
    /// List blobs: sha256, size, last origin.
    Ls,
    /// Print the sha256 of a file (`sha256sum` format), without storing it.
    Hash { file: PathBuf },
    /// List the prepared environments (`envs/`): key, day, base sha256, when prepared.
    Envs {
        /// Remove every prepared environment (the next reproduction prepares its own).
        #[arg(long)]
        clear: bool,
    },
}

pub fn execute(a: Args) -> Result<i32> {
    if let StoreCommand::Hash { file } = &a.command {
        return hash(file);
    }
    let s = a.store.open()?;
    match a.command {
        StoreCommand::Verify => {
            let rep = s.verify()?;
            for (sha, actual, dest) in &rep.corrupt {
                println!(
                    "corrupt {sha} (bytes hash to {actual}), moved to {}",
                    dest.display()
                );
            }
            println!(
                "checked {} blobs, {} corrupt",
                rep.checked,
                rep.corrupt.len()
            );
            Ok(if rep.corrupt.is_empty() { 0 } else { 1 })
        }
        StoreCommand::Gc { keep } => {
            let keep_set = if keep.is_empty() {
                None
            } else {
                let mut set = std::collections::BTreeSet::new();
                for k in &keep {
                    set.extend(InputsLock::read(k)?.blobs());
                }
                Some(set)
            };
            let r = s.gc(keep_set.as_ref())?;
            let staging = PreparedEnvs::new(s.root()).remove_staging()?;
            println!(
                "removed {} temporary files and {} blobs, freed {} bytes, dropped {} index records; removed {staging} abandoned environment stagings",
                r.removed_temp, r.removed_blobs, r.freed_bytes, r.index_records_dropped
            );
            Ok(0)
        }
        StoreCommand::Export { file, lock } => {
            let only = match &lock {
                Some(l) => Some(InputsLock::read(l)?.blobs()),
                None => None,
            };
            let n = s.export(&file, only.as_ref())?;
            println!("exported {n} blobs to {}", file.display());
            Ok(0)
        }
        StoreCommand::Import { file } => {
            if !file.is_file() {
                return Err(Error::bad_input(
                    format!("export file {}", file.display()),
                    "no such file (expected a tar written by `reprobox store export`)",
                ));
            }
            let n = s.import(&file)?;
            println!("imported {n} blobs from {}", file.display());
            Ok(0)
        }
        StoreCommand::Ls => {
            let idx = s.index()?;
            let mut origin = std::collections::HashMap::new();
            for r in &idx {
                origin.insert(r.sha256.as_str(), r.url.as_str());
            }
            for b in s.list()? {
                println!(
                    "{} {} {}",
                    b.sha256,
                    b.size,
                    origin.get(b.sha256.as_str()).copied().unwrap_or("-")
                );
            }
            Ok(0)
        }
        StoreCommand::Envs { clear } => {
            let cache = PreparedEnvs::new(s.root());
            if clear {
                let n = cache.clear()?;
                println!("removed {n} prepared environments");
                return Ok(0);
            }
            for p in cache.list()? {
                match p.meta() {
                    Ok(m) => {
                        let when = jiff::Timestamp::from_second(m.prepared_at)
                            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_else(|_| m.prepared_at.to_string());
                        println!(
                            "{} day {} base {} steps {} prepared {when}",
                            p.key,
                            m.recipe.day.as_deref().unwrap_or("-"),
                            m.recipe.base_sha256,
                            m.recipe
                                .steps
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                    }
                    Err(e) => println!("{} unreadable: {e}", p.key),
                }
            }
            Ok(0)
        }
        StoreCommand::Hash { .. } => unreachable!("handled above"),
    }
}

fn hash(file: &Path) -> Result<i32> {
    if !file.is_file() {
        return Err(Error::bad_input(
            format!("file {}", file.display()),
            "no such regular file (expected a file to hash)",
        ));
    }
    let (sha, _) = store::hash_file(file)?;
    println!("{sha}  {}", file.display());
    Ok(0)
}
