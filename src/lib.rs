//! reprobox: reproduce published builds bit for bit inside a sealed, pinned environment,
//! and explain every difference. See ARCHITECTURE.md for the map of the code.

pub mod backend;
pub mod bisect;
pub mod cli;
pub mod cmd;
pub mod digest;
pub mod doctor;
pub mod egress;
pub mod envlock;
pub mod error;
pub mod inputs;
pub(crate) mod interrupt;
pub mod job;
pub mod logging;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod sandbox;
pub mod shell;
pub mod suggest;
pub mod verify;
pub mod vm;
pub mod world;

pub use error::{Error, Result};
