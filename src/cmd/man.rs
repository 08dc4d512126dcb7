//! `reprobox man [--dir DIR]`: manual pages in roff, generated from the clap definitions
//! (`clap_mangen`): the top page on stdout, or with `--dir` every page (`reprobox.1`,
//! `reprobox-reproduce.1`, `reprobox-store-verify.1`, …) written into DIR.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one page per command and subcommand into DIR (created if needed) instead of
    /// the top page on stdout; the paths written are listed.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The page of `cmd`, titled in capitals as manual pages are (`.TH REPROBOX 1`,
/// `.TH REPROBOX-REPRODUCE 1`).
fn man(cmd: clap::Command) -> clap_mangen::Man {
    let title = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_uppercase();
    clap_mangen::Man::new(cmd)
        .title(title)
        .source(format!("reprobox {}", env!("CARGO_PKG_VERSION")))
}

/// The top page (`reprobox.1`) of `cli`.
pub fn top_page(cli: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    man(cli).render(&mut out).expect("rendering into memory");
    out
}

/// Every page of `cli` into `dir`: the command's and, recursively, each subcommand's
/// (named `reprobox-SUB[-SUB].1`). Returns the paths written, the top page first.
pub fn write_pages(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::error::dir_or_absent(dir, "--dir")?;
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let mut written = Vec::new();
    write_tree(cli, dir, &mut written)?;
    Ok(written)
}

fn write_tree(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = man(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut bytes = Vec::new();
    man.render(&mut bytes).expect("rendering into memory");
    std::fs::write(&path, bytes).ctx("write", &path)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub.clone(), dir, written)?;
    }
    Ok(())
}

pub fn execute(a: Args, cli: clap::Command) -> Result<i32> {
    use std::io::Write;
    match &a.dir {
        None => {
            let page = top_page(cli);
            std::io::stdout()
                .lock()
                .write_all(&page)
                .ctx("write", "stdout")?;
        }
        Some(dir) => {
            for p in write_pages(cli, dir)? {
                println!("{}", p.display());
            }
        }
    }
    Ok(0)
}
