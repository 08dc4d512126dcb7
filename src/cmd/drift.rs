//! `reprobox drift A.lock B.lock [--json]`: which environment packages differ.

use std::path::PathBuf;

use crate::envlock::{EnvLock, drift};
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first environment lock (for example the snapshot day's, or the original build's).
    pub a: PathBuf,
    /// The second environment lock.
    pub b: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when the two environments hold the same package versions, 1 when they differ.
pub fn execute(a: Args) -> Result<i32> {
    let la = EnvLock::load(&a.a)?;
    let lb = EnvLock::load(&a.b)?;
    let d = drift(&la, &lb);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d).expect("plain JSON"));
    } else if d.is_empty() {
        println!("no drift: {} packages, same versions", la.packages.len());
    } else {
        for x in &d {
            println!("{x}");
        }
    }
    Ok(if d.is_empty() { 0 } else { 1 })
}
