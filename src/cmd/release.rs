//! `reprobox release inspect FILE [--json]`

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::plan::BuildVersion;
use crate::plan::release::Release;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Parse a release Dockerfile.repro and check it against the plan for its version.
    Inspect {
        /// The release `Dockerfile.repro`.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn execute(a: Args) -> Result<i32> {
    match a.command {
        ReleaseCommand::Inspect { file, json } => inspect(&file, json),
    }
}

fn inspect(file: &std::path::Path, json: bool) -> Result<i32> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::bad_input(format!("release file {name}"), format!("cannot read: {e}"))
    })?;
    let release = Release::parse(&text, &name)?;
    let version = BuildVersion::parse(&release.version).map_err(|e| {
        Error::bad_input(
            format!("release file {name}"),
            format!("its version label: {e}"),
        )
    })?;
    let disagreements = release.check_against(&version);
    if json {
        let v = serde_json::json!({
            "schema": "reprobox.release/v1",
            "file": name,
            "version": release.version,
            "source_revision": release.source_revision,
            "created": release.created,
            "rootfs_url": release.rootfs_url,
            "rootfs_file": release.rootfs_file,
            "rootfs_sha256": release.rootfs_sha256,
            "base_image": release.base_image,
            "plan": {
                "snapshot": version.snapshot_path(),
                "source_date_epoch": version.source_date_epoch(),
                "created": version.created(),
                "tag": version.tag(),
            },
            "agrees_with_plan": disagreements.is_empty(),
            "disagreements": disagreements,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("plain JSON"));
    } else {
        println!("version          {}", release.version);
        println!("source revision  {}", release.source_revision);
        println!("created          {}", release.created);
        println!("rootfs URL       {}", release.rootfs_url);
        println!("rootfs file      {}", release.rootfs_file);
        println!("rootfs sha256    {}", release.rootfs_sha256);
        println!("base image       {}", release.base_image);
        println!("snapshot day     {}", version.snapshot_path());
        println!("SOURCE_DATE_EPOCH {}", version.source_date_epoch());
        if disagreements.is_empty() {
            println!("agrees with the plan for {}", release.version);
        }
    }
    if disagreements.is_empty() {
        return Ok(0);
    }
    let lines: Vec<String> = disagreements
        .iter()
        .map(|d| {
            format!(
                "{} is {:?}, the plan for {} says {:?}",
                d.field, d.release, release.version, d.plan
            )
        })
        .collect();
    Err(Error::bad_input(
        format!("release file {name}"),
        format!("disagrees with the plan: {}", lines.join("; ")),
    ))
}
