//! `reprobox archive` (being built; see its issue).

use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn execute(_a: Args) -> Result<i32> {
    Err(Error::Environment(
        "`reprobox archive` is not built yet".into(),
    ))
}
