//! `reprobox archive {resolve,fetch,bootstrap}`: the Arch Linux Archive through the store.

use crate::cmd::store::StoreArg;
use crate::error::{Error, Result};
use crate::inputs::archive::{self, Archive, DEFAULT_ARCHIVE};
use crate::inputs::fetch::Fetcher;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArg,
    /// The archive root: the real one, or a local tree of its shape (file:// or http://).
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_ARCHIVE)]
    pub archive: String,
    /// Use only what the store holds; nothing leaves the machine.
    #[arg(long, global = true)]
    pub offline: bool,
    /// The archive root `--archive` stands for (e.g. https://archive.archlinux.org when
    /// `--archive` is a mirror of it): the store's origin index and offline lookups name
    /// what is fetched under it, as a reproduction does, so either finds the other's bytes
    /// whatever location fetched them [default: `--archive` itself].
    #[arg(long, global = true, value_name = "URL")]
    pub canonical: Option<String>,
    #[command(subcommand)]
    pub command: ArchiveCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Resolve package names as they were on a day: name, version, repo, sha256, URL.
    Resolve {
        /// The snapshot day, YYYY/MM/DD.
        #[arg(long)]
        day: String,
        /// Repositories to search, in order (repeatable) [default: core, extra].
        #[arg(long = "repo", value_name = "REPO")]
        repos: Vec<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Fetch packages into the store: NAME with --day (checked against that day's database),
    /// or NAME=VERSION from packages/ without --day. Prints sha256, store path, URL.
    Fetch {
        /// The snapshot day, YYYY/MM/DD.
        #[arg(long)]
        day: Option<String>,
        #[arg(long = "repo", value_name = "REPO")]
        repos: Vec<String>,
        /// Expected sha256 (only with a single NAME=VERSION).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Fetch a month's bootstrap tarball, checked against its sha256sums.txt.
    Bootstrap {
        /// The release directory, YYYY.MM.01.
        #[arg(long)]
        month: String,
    },
}

pub fn execute(a: Args) -> Result<i32> {
    let base = archive::parse_base(&a.archive)?;
    let names = match &a.canonical {
        Some(c) => vec![(base.clone(), archive::parse_base(c)?)],
        None => Vec::new(),
    };
    let fetcher = Fetcher::new(a.store.open()?, a.offline).with_names(names);
    match a.command {
        ArchiveCommand::Resolve { day, repos, names } => {
            let day = archive::parse_day(&day)?;
            let ar = with_repos(Archive::new(&base, &fetcher), repos);
            for n in &names {
                let p = ar.resolve(&day, n)?;
                println!("{} {} {} {} {}", p.name, p.version, p.repo, p.sha256, p.url);
            }
            Ok(0)
        }
        ArchiveCommand::Fetch {
            day,
            repos,
            sha256,
            names,
        } => {
            let ar = with_repos(Archive::new(&base, &fetcher), repos);
            if sha256.is_some() && (day.is_some() || names.len() != 1) {
                return Err(Error::bad_input(
                    "--sha256",
                    "taken only with a single NAME=VERSION and no --day",
                ));
            }
            match day {
                Some(day) => {
                    let day = archive::parse_day(&day)?;
                    for n in &names {
                        let p = ar.resolve(&day, n)?;
                        let b = ar.fetch_resolved(&p)?;
                        println!("{} {} {}", b.sha256, b.path.display(), p.url);
                    }
                }
                None => {
                    for n in &names {
                        let Some((name, version)) = n.split_once('=') else {
                            return Err(Error::bad_input(
                                format!("package {n:?}"),
                                "without --day, expected NAME=VERSION (e.g. pacman=7.0.0.r6.gc685ae6-2)",
                            ));
                        };
                        let (url, b) = ar.fetch_package(name, version, sha256.as_deref())?;
                        println!("{} {} {}", b.sha256, b.path.display(), url);
                    }
                }
            }
            Ok(0)
        }
        ArchiveCommand::Bootstrap { month } => {
            let b = Archive::new(&base, &fetcher).bootstrap(&month)?;
            println!("{} {} {}", b.url, b.blob.sha256, b.blob.path.display());
            Ok(0)
        }
    }
}

fn with_repos<'a>(ar: Archive<'a>, repos: Vec<String>) -> Archive<'a> {
    if repos.is_empty() {
        ar
    } else {
        ar.with_repos(repos)
    }
}
