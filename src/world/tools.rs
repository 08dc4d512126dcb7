//! Running the external tools the world is made with (repo-add, pacman, make, podman run
//! inside the build environment; git, busybox, bwrap, unshare on the host). A missing tool
//! or a failing step is an `Environment` error (exit 3) naming the step and the tail of its
//! output, so `world build` says exactly what it could not do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Finds `name` on PATH (or as an absolute path), or fails naming the Debian package.
pub fn require(name: &str, debian_package: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        if p.exists() {
            return Ok(p.to_path_buf());
        }
    } else if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(name);
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(Error::Environment(format!(
        "world: the tool `{name}` is missing on this host (install the Debian package `{debian_package}`)"
    )))
}

/// Runs `cmd`, describing it as `what`; on failure returns the last lines of its output.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = output(what, cmd)?;
    let _ = out;
    Ok(())
}

/// Runs `cmd` and returns its stdout; on failure the error carries the tail of stderr+stdout.
pub fn output(what: &str, cmd: &mut Command) -> Result<Vec<u8>> {
    tracing::debug!("world: {what}: {cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        Error::Environment(format!(
            "world: {what}: cannot start {:?}: {e}",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        return Err(Error::Environment(format!(
            "world: {what} failed ({}); last output:\n{tail}",
            out.status
        )));
    }
    Ok(out.stdout)
}
