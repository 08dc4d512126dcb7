//! `reprobox image diff A B [--semantic] [--json]` and `reprobox image diff --report DIR`:
//! the native image diff (`verify::imagediff`). Exit codes follow diffoci's: 0 no
//! difference, 1 differences, 2 bad input (an input that cannot be read or is not an image).

use std::path::PathBuf;

use crate::cmd::store::StoreArg;
use crate::error::{Error, Result};
use crate::inputs::fetch::Fetcher;
use crate::verify::imagediff::{self, Image};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Compare two images: config, annotations, layers and each layer's files (exit 1 when
    /// they differ). A and B: docker-archive or oci-archive tars, OCI layout directories, or
    /// registry references (REGISTRY/REPO:TAG, REGISTRY/REPO@sha256:…, http://HOST:PORT/REPO:TAG).
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The first image (for a reproduction: the published one).
    #[arg(required_unless_present = "report", conflicts_with = "report")]
    pub a: Option<String>,
    /// The second image (the rebuilt one).
    #[arg(required_unless_present = "report", conflicts_with = "report")]
    pub b: Option<String>,
    /// A reproduction's output directory: compare its images/published.tar with
    /// images/rebuilt.tar.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Ignore what does not make the image different: image names (RepoTags, ref.name and
    /// containerd name annotations), config and history `created`, the created annotation,
    /// layer compression, empty versus absent config fields, the config's JSON encoding.
    /// File mtimes are still compared.
    #[arg(long)]
    pub semantic: bool,
    /// Print JSON: {a, b, semantic, differences: [{kind, where, a, b}], ignored: [… reason]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArg,
    /// Use only what the store holds for registry references; nothing leaves the machine.
    #[arg(long)]
    pub offline: bool,
    /// Ask a registry's token realm on HOST at URL instead (repeatable): where a mirror of
    /// Docker Hub's auth host answers, e.g. `auth.docker.io=http://127.0.0.1:7878/auth`.
    #[arg(long = "auth-location", value_name = "HOST=URL", value_parser = parse_auth_location)]
    pub auth_locations: Vec<(String, String)>,
}

/// `HOST=URL` of `--auth-location`.
fn parse_auth_location(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((h, u)) if !h.is_empty() && (u.starts_with("http://") || u.starts_with("https://")) => {
            Ok((h.to_ascii_lowercase(), u.to_string()))
        }
        _ => Err("expected HOST=URL (an http:// or https:// URL), for example auth.docker.io=http://127.0.0.1:7878/auth".into()),
    }
}

pub fn execute(a: Args) -> Result<i32> {
    match a.command {
        ImageCommand::Diff(d) => diff(d),
    }
}

fn diff(d: DiffArgs) -> Result<i32> {
    let (a, b) = match (&d.report, d.a, d.b) {
        (Some(dir), _, _) => {
            let images = dir.join("images");
            let pick = |name: &str| -> Result<String> {
                let p = images.join(name);
                if p.is_file() {
                    Ok(p.display().to_string())
                } else {
                    Err(Error::bad_input(
                        format!("--report {}", dir.display()),
                        format!(
                            "no {}: expected a reproduction's output directory with images/published.tar and images/rebuilt.tar (they are saved when the image differs)",
                            p.display()
                        ),
                    ))
                }
            };
            (pick("published.tar")?, pick("rebuilt.tar")?)
        }
        (None, Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::bad_input(
                "image diff",
                "expected two images A B, or --report DIR",
            ));
        }
    };
    let fetcher = || -> Result<Fetcher> { Ok(Fetcher::new(d.store.open()?, d.offline)) };
    let ia = Image::open(&a, fetcher, &d.auth_locations)?;
    let ib = Image::open(&b, fetcher, &d.auth_locations)?;
    let result = imagediff::diff(&ia, &ib)?;
    if d.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result.json(d.semantic)).expect("plain JSON")
        );
    } else {
        print!("{}", result.text(d.semantic));
    }
    Ok(if result.shown(d.semantic).is_empty() {
        0
    } else {
        1
    })
}
