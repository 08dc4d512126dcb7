//! Running the external tools the world is made with (repo-add, pacman, make, podman run
//! inside the build environment; git, busybox, bwrap, unshare on the host). A missing tool
//! or a failing step is an `Environment` error (exit 3) naming the step and the tail of its
//! output, so `world build` says exactly what it could not do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The host tools the test world is built with (`world build`, `reprobox demo`), each with
/// the Debian package that has it (`scripts/apt/world.txt` installs them).
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("bwrap", "bubblewrap"),
    ("unshare", "util-linux"),
    ("git", "git"),
    ("tar", "tar"),
    ("zstd", "zstd"),
    ("docker-registry", "docker-registry"),
    ("debootstrap", "debootstrap"),
    ("busybox", "busybox-static"),
    // The TLS fronts of the real host names (env_rootfs::TlsFront).
    ("socat", "socat"),
    // The archive's package signatures (world::arch).
    ("gpg", "gnupg"),
];

/// Those of [`HOST_TOOLS`] this host lacks, as (tool, Debian package).
pub fn missing_host_tools() -> Vec<(&'static str, &'static str)> {
    HOST_TOOLS
        .iter()
        .copied()
        .filter(|(t, p)| {
            if *t == "busybox" {
                super::env_rootfs::busybox().is_err()
            } else {
                require(t, p).is_err()
            }
        })
        .collect()
}

/// The one command that installs `packages` on Debian (duplicates dropped, order kept).
pub fn apt_install_command<'a>(packages: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for p in packages {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    format!(
        "apt-get install -y --no-install-recommends {}",
        seen.join(" ")
    )
}

/// Fails (an `Environment` error, exit 3) naming every missing host tool of the world and
/// the exact command that installs them, before anything is built.
pub fn require_host_tools() -> Result<()> {
    let missing = missing_host_tools();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Environment(format!(
        "world: missing host tools {}; install them (as root): {}",
        missing
            .iter()
            .map(|(t, _)| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", "),
        apt_install_command(missing.iter().map(|(_, p)| *p))
    )))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_names_each_package_once() {
        assert_eq!(
            apt_install_command(["git", "util-linux", "git"]),
            "apt-get install -y --no-install-recommends git util-linux"
        );
    }

    #[test]
    fn every_world_tool_has_its_package_in_the_apt_list() {
        let list = include_str!("../../scripts/apt/world.txt");
        let pkgs: Vec<&str> = list
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .collect();
        for (tool, pkg) in HOST_TOOLS {
            assert!(
                pkgs.contains(pkg),
                "{tool}: {pkg} not in scripts/apt/world.txt"
            );
        }
    }
}
