//! `reprobox doctor [--json]`: what this host can do, found by trying each item
//! (`crate::doctor`); exit 0 when `reproduce` can run here, 1 otherwise.

use crate::doctor;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the `reprobox.doctor/v1` document instead of one line per item.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(a: Args) -> Result<i32> {
    let report = doctor::report();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain JSON")
        );
    } else {
        print!("{}", doctor::render(&report));
    }
    Ok(if report.can_reproduce { 0 } else { 1 })
}
