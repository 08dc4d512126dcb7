//! One module per subcommand. Each has `Args` (clap) and `execute`, which returns the
//! process exit code or an error that `main` maps to one; `cli::Command::execute` calls
//! them (this module knows nothing of `cli`). `backend.rs` holds the backend arguments
//! `run` and `reproduce` share.

pub mod archive;
pub mod backend;
pub mod bisect;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod drift;
pub mod image;
pub mod man;
pub mod mirror;
pub mod plan;
pub mod profiles;
pub mod release;
pub mod reproduce;
pub mod run;
pub mod store;
pub mod world;
