//! Command-line definitions (clap derive): one variant per subcommand, each subcommand's
//! arguments defined next to its implementation in `src/cmd/`.

use std::ffi::OsString;

use clap::{CommandFactory, Parser, Subcommand};

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

    /// Print only the verdict line (reproduce, demo) or the command's own output: no
    /// progress, no summary; errors still go to stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per process; `run`'s arguments (with --snapshot's) are the largest"
)]
pub enum Command {
    /// Reproduce a published release and say whether the bytes are the same, and why not.
    Reproduce(cmd::reproduce::Args),
    /// Build (or reuse) the test world made from the real upstream and reproduce its release
    /// with the real profile, online then offline.
    Demo(cmd::demo::Args),
    /// Report what this host can do (namespaces, idmapped mounts, Landlock, KVM, tools…);
    /// exit 0 when `reproduce` can run here.
    Doctor(cmd::doctor::Args),
    /// Print everything a reproduction of BUILD_VERSION would do, without doing it.
    Plan(cmd::plan::Args),
    /// List the profiles reprobox can find, with a one-line description.
    Profiles(cmd::profiles::Args),
    /// Work with published release manifests.
    Release(cmd::release::Args),
    /// Run a command sealed in a container sandbox or microVM (namespaces, no network, fixed
    /// clock), in a given root or an Arch environment prepared at an archive day (--snapshot).
    Run(cmd::run::Args),
    /// Manage the content-addressed store of pinned inputs.
    Store(cmd::store::Args),
    /// Query the Arch Linux Archive (or a local tree of its shape) through the store.
    Archive(cmd::archive::Args),
    /// Serve the archive layout from the store on loopback (the mirror the sandbox uses).
    Mirror(cmd::mirror::Args),
    /// Find the first environment day whose outcome changes, and the package version
    /// change(s) responsible; every probe is kept as an ordinary reproduction report.
    Bisect(cmd::bisect::Args),
    /// Compare two environments (locks, report directories, or one and an archive day with
    /// --day): which packages differ (exit 1 when any).
    Drift(cmd::drift::Args),
    /// Work with container images: `image diff A B` compares two images natively.
    Image(cmd::image::Args),
    /// Build or serve the local test world (an archive, environment, upstream repo and registry).
    World(cmd::world::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print the manual page (roff), or write every command's page into a directory.
    Man(cmd::man::Args),
}

impl Command {
    /// Run the subcommand: its exit code, or the error `main` maps to one.
    pub fn execute(self) -> crate::Result<i32> {
        match self {
            Command::Reproduce(a) => cmd::reproduce::execute(a),
            Command::Demo(a) => cmd::demo::execute(a),
            Command::Doctor(a) => cmd::doctor::execute(a),
            Command::Plan(a) => cmd::plan::execute(a),
            Command::Profiles(a) => cmd::profiles::execute(a),
            Command::Release(a) => cmd::release::execute(a),
            Command::Run(a) => cmd::run::execute(a),
            Command::Store(a) => cmd::store::execute(a),
            Command::Archive(a) => cmd::archive::execute(a),
            Command::Mirror(a) => cmd::mirror::execute(a),
            Command::Bisect(a) => cmd::bisect::execute(a),
            Command::Drift(a) => cmd::drift::execute(a),
            Command::Image(a) => cmd::image::execute(a),
            Command::World(a) => cmd::world::execute(a),
            Command::Completions(a) => cmd::completions::execute(a, Cli::command()),
            Command::Man(a) => cmd::man::execute(a, Cli::command()),
        }
    }
}

/// Parse the process's arguments: `reprobox run …` in its plain forms by hand
/// ([`cmd::run::parse_plain`]), everything else (and anything it does not take) with clap.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|s| s == "run")
        && let Some((verbose, a)) = cmd::run::parse_plain(&args[2..])
    {
        return Cli {
            verbose,
            quiet: false,
            command: Command::Run(a),
        };
    }
    Cli::parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(args: &[&str]) -> (Option<String>, Result<String, String>) {
        let os: Vec<OsString> = args.iter().map(OsString::from).collect();
        let fast = cmd::run::parse_plain(&os[2..]).map(|(verbose, a)| {
            format!(
                "{:?}",
                Cli {
                    verbose,
                    quiet: false,
                    command: Command::Run(a)
                }
            )
        });
        let clap = Cli::try_parse_from(&os)
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string());
        (fast, clap)
    }

    #[test]
    fn run_by_hand_is_what_clap_makes_of_it() {
        let taken: &[&[&str]] = &[
            &["reprobox", "run", "--rootfs", "/r", "--", "true"],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--read-only",
                "--",
                "/bin/true",
                "-x",
                "--",
                "y",
            ],
            &[
                "reprobox",
                "run",
                "-v",
                "--rootfs=/r",
                "--verbose",
                "--json",
                "--",
                "sh",
                "-c",
                "echo hi",
            ],
            &[
                "reprobox",
                "run",
                "--bind",
                "/a:/b",
                "--bind=/c:/d:ro",
                "--rootfs",
                "/r.tar.zst",
                "--workdir",
                "/w",
                "--env",
                "A=1",
                "--env=B=2=3",
                "--network",
                "none",
                "--hostname=h",
                "--source-date-epoch",
                "1774915200",
                "--timeout",
                "2.5",
                "--memory",
                "1000000",
                "--caps",
                "none",
                "--no-landlock",
                "--backend",
                "microvm",
                "--kernel",
                "/k",
                "--initrd=/i",
                "--vm-memory",
                "512",
                "--vm-cpus",
                "+3",
                "--",
                "make",
                "-j4",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--caps",
                "sys_admin,chown",
                "--backend=container",
                "--",
                "x",
            ],
        ];
        for args in taken {
            let (fast, clap) = both(args);
            let fast = fast.unwrap_or_else(|| panic!("not taken by hand: {args:?}"));
            assert_eq!(Ok(fast), clap, "{args:?}");
        }
        let left_to_clap: &[&[&str]] = &[
            &["reprobox", "run", "--help"],
            &["reprobox", "run", "-h"],
            &["reprobox", "run", "--version"],
            &["reprobox", "run", "--rootfs", "/r"],
            &["reprobox", "run", "--rootfs", "/r", "--"],
            &["reprobox", "run", "--", "true"],
            &[
                "reprobox", "run", "--rootfs", "/r", "--rootfs", "/s", "--", "true",
            ],
            &[
                "reprobox", "run", "--rootfs", "/r", "--json", "--json", "--", "true",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--json=yes",
                "--",
                "true",
            ],
            &["reprobox", "run", "--rootfs", "/r", "--bogus", "--", "true"],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--hostname=",
                "--",
                "true",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--workdir",
                "-w",
                "--",
                "true",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--timeout",
                "soon",
                "--",
                "true",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--vm-cpus",
                "-1",
                "--",
                "true",
            ],
            &[
                "reprobox",
                "run",
                "--rootfs",
                "/r",
                "--backend",
                "Container",
                "--",
                "true",
            ],
            &["reprobox", "run", "--rootfs", "/r", "-vv", "--", "true"],
            &["reprobox", "run", "-q", "--rootfs", "/r", "--", "true"],
            &["reprobox", "run", "--rootfs", "/r", "--quiet", "--", "true"],
            &["reprobox", "run", "stray", "--rootfs", "/r", "--", "true"],
            &["reprobox", "run", "--rootfs"],
        ];
        for args in left_to_clap {
            assert_eq!(both(args).0, None, "{args:?}");
        }
    }
}
