//! One module per subcommand. Each has `Args` (clap) and `execute`, which returns the
//! process exit code or an error that `main` maps to one.

pub mod archive;
pub mod drift;
pub mod mirror;
pub mod plan;
pub mod profiles;
pub mod release;
pub mod run;
pub mod store;
pub mod world;

use crate::cli::Command;
use crate::error::Result;

pub fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Plan(a) => plan::execute(a),
        Command::Profiles(a) => profiles::execute(a),
        Command::Release(a) => release::execute(a),
        Command::Run(a) => run::execute(a),
        Command::Store(a) => store::execute(a),
        Command::Archive(a) => archive::execute(a),
        Command::Mirror(a) => mirror::execute(a),
        Command::Drift(a) => drift::execute(a),
        Command::World(a) => world::execute(a),
    }
}
