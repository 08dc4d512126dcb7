//! `reprobox profiles`

use crate::error::Result;
use crate::plan::profile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(a: Args) -> Result<i32> {
    let list = profile::list()?;
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.profile.name,
                    "description": p.profile.description,
                    "origin": p.origin,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("plain JSON"));
    } else {
        let w = list.iter().map(|p| p.profile.name.len()).max().unwrap_or(0);
        for p in &list {
            println!(
                "{:<w$}  {}  [{}]",
                p.profile.name, p.profile.description, p.origin
            );
        }
    }
    Ok(0)
}
