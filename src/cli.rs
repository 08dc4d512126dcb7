//! Command-line definitions (clap derive): one variant per subcommand, each subcommand's
//! arguments defined next to its implementation in `src/cmd/`.

use clap::{Parser, Subcommand};

use crate::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "reprobox",
    version,
    about = "Reproduce published builds bit for bit inside a sealed, pinned environment",
    long_about = None,
)]
pub struct Cli {
    /// More log output (repeat for more); REPROBOX_LOG=debug does the same.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reproduce a published release and say whether the bytes are the same, and why not.
    Reproduce(cmd::reproduce::Args),
    /// Build (or reuse) the local test world and reproduce its sample release.
    Demo(cmd::demo::Args),
    /// Print everything a reproduction of BUILD_VERSION would do, without doing it.
    Plan(cmd::plan::Args),
    /// List the profiles reprobox can find, with a one-line description.
    Profiles(cmd::profiles::Args),
    /// Work with published release manifests.
    Release(cmd::release::Args),
    /// Run a command sealed in a container sandbox (namespaces, no network, fixed clock).
    Run(cmd::run::Args),
    /// Manage the content-addressed store of pinned inputs.
    Store(cmd::store::Args),
    /// Query the Arch Linux Archive (or a local tree of its shape) through the store.
    Archive(cmd::archive::Args),
    /// Serve the archive layout from the store on loopback (the mirror the sandbox uses).
    Mirror(cmd::mirror::Args),
    /// Compare two environment locks: which packages differ (exit 1 when any).
    Drift(cmd::drift::Args),
    /// Build or serve the local test world (an archive, environment, upstream repo and registry).
    World(cmd::world::Args),
}

/// `reprobox run …` alone, parsed without building the whole command tree (which costs
/// more than the rest of a short job's start-up). [`parse`] tries it first and falls back
/// to [`Cli`], which gives the usual help and errors, whenever it does not parse.
#[derive(Debug, Parser)]
#[command(name = "reprobox-run")]
struct RunCli {
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    args: cmd::run::Args,
}

/// Parse the process's arguments: the `run` fast path, else the full [`Cli`].
pub fn parse() -> Cli {
    let mut args = std::env::args_os();
    if let (Some(bin), Some(sub)) = (args.next(), args.next())
        && sub == "run"
        && let Ok(r) = RunCli::try_parse_from(std::iter::once(bin).chain(args))
    {
        return Cli {
            verbose: r.verbose,
            command: Command::Run(r.args),
        };
    }
    Cli::parse()
}
