//! The build environment: the Debian root filesystem of `scripts/debian-rootfs.sh` (the
//! world's tools: debootstrap's root that builds the archive and the Alpine image), the
//! unpacking of the archive's bootstrap tarballs (`root.x86_64/`, made by `world::arch`), and
//! the runner that executes commands inside such a root (bwrap, with the world's archive,
//! registry and TLS fronts served on the root's own loopback when asked).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::world::tools;

/// The script that builds (and caches) the Debian root; embedded so the binary works anywhere.
const DEBIAN_ROOTFS_SH: &str = include_str!("../../scripts/debian-rootfs.sh");

/// The archive address every build of the world sees (and that ends in the rootfs'
/// mirrorlist): the port reprobox's mirror has on a job's loopback, so that the published
/// artifacts' mirror URLs are the ones a reproduction serves.
pub fn archive_addr() -> String {
    format!("127.0.0.1:{}", crate::inputs::mirror::MIRROR_PORT)
}
/// The registry address inside the build's network namespace (and in the verify image ref).
pub const REGISTRY_ADDR: &str = "127.0.0.1:7879";

/// libfaketime inside the Debian environment (pins pacman 6.0.2's %INSTALLDATE%).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Builds (once, cached under $REPROBOX_TEST_CACHE) the Debian root and returns its path.
pub fn debian_root() -> Result<PathBuf> {
    tools::require("debootstrap", "debootstrap")?;
    let out = tools::output(
        "build the Debian root filesystem (scripts/debian-rootfs.sh)",
        Command::new("bash")
            .arg("-c")
            .arg(DEBIAN_ROOTFS_SH)
            .arg("debian-rootfs.sh"),
    )?;
    let p = PathBuf::from(String::from_utf8_lossy(&out).trim());
    if !p.join(".complete").exists() {
        return Err(Error::Environment(format!(
            "world: {} is not a complete Debian root",
            p.display()
        )));
    }
    Ok(p)
}

/// Services started in the build's own network namespace, on its loopback.
#[derive(Debug, Default, Clone)]
pub struct Services {
    /// Serve this directory as the archive on [`archive_addr`] (busybox httpd).
    pub archive: Option<PathBuf>,
    /// Run Debian's docker-registry with this config file (listening on 127.0.0.1:7879).
    pub registry: Option<PathBuf>,
    /// TLS fronts for real host names (e.g. `https://archive.archlinux.org` in front of the
    /// archive): each listens on `ip:443` of the namespace's loopback and `/etc/hosts` inside
    /// the root maps `ip` to the host (the file is bound over the root's own).
    pub tls: Vec<TlsFront>,
    /// More directories served like the archive (busybox httpd), each on its own address
    /// (`127.0.0.1:PORT`): the world's gitlab and Alpine trees behind their TLS fronts.
    pub files: Vec<(PathBuf, String)>,
}

/// One TLS front on the build's loopback: the host's `socat` terminates TLS for `host` on
/// `ip:443` (no client certificate asked) with `cert`/`key` (PEM files on the host, e.g. a
/// [`crate::world::pki::WorldCa`] leaf) and forwards each connection to `backend`
/// (`addr:port`, plain TCP, e.g. the archive's busybox httpd on [`archive_addr`]).
#[derive(Debug, Clone)]
pub struct TlsFront {
    pub host: String,
    /// A loopback address (127.0.0.2, 127.0.0.3, …): each host its own, so 443 is free.
    pub ip: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub backend: String,
}

impl TlsFront {
    /// The front for `host` on `ip`, with a leaf for `host` from the world CA written (once)
    /// to `dir/<host>.{pem,key}`.
    pub fn issue(
        ca: &crate::world::pki::WorldCa,
        dir: &Path,
        host: &str,
        ip: &str,
        backend: &str,
    ) -> Result<TlsFront> {
        let (cert, key) = (
            dir.join(format!("{host}.pem")),
            dir.join(format!("{host}.key")),
        );
        if !(cert.is_file() && key.is_file()) {
            std::fs::create_dir_all(dir).ctx("create directory", dir)?;
            let (c, k) = ca.issue(&[host])?;
            std::fs::write(&key, k).ctx("write", &key)?;
            std::fs::write(&cert, c).ctx("write", &cert)?;
        }
        Ok(TlsFront {
            host: host.into(),
            ip: ip.into(),
            cert,
            key,
            backend: backend.into(),
        })
    }
}

/// One command inside a root filesystem.
#[derive(Debug, Clone)]
pub struct EnvRun {
    pub root: PathBuf,
    /// Mount the root read-write (it is a private copy) or read-only (the shared cache).
    pub writable_root: bool,
    /// (host path, path inside); the inside path must exist in the root when read-only.
    pub binds: Vec<(PathBuf, String)>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub services: Services,
    /// Run under the environment's libfaketime at this epoch.
    pub faketime: Option<i64>,
}

impl EnvRun {
    pub fn new(root: &Path, writable_root: bool) -> Self {
        EnvRun {
            root: root.to_path_buf(),
            writable_root,
            binds: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            services: Services::default(),
            faketime: None,
        }
    }

    pub fn bind(mut self, host: &Path, inside: &str) -> Self {
        self.binds.push((host.to_path_buf(), inside.to_string()));
        self
    }

    /// Runs `script` with `sh -c` inside the root; `what` names the step in errors.
    pub fn sh(&self, what: &str, script: &str) -> Result<Vec<u8>> {
        let bwrap = tools::require("bwrap", "bubblewrap")?;
        let mut args: Vec<String> = vec![bwrap.display().to_string()];
        // /etc/hosts for the TLS fronts' names (kept until the command ends).
        let hosts_file = if self.services.tls.is_empty() {
            None
        } else {
            let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
            for t in &self.services.tls {
                text.push_str(&format!("{} {}\n", t.ip, t.host));
            }
            let f = tempfile::NamedTempFile::new().ctx("create", "a hosts file")?;
            std::fs::write(f.path(), text).ctx("write", f.path())?;
            Some(f)
        };
        let rootbind = if self.writable_root {
            "--bind"
        } else {
            "--ro-bind"
        };
        args.extend([rootbind.into(), self.root.display().to_string(), "/".into()]);
        args.extend(
            [
                "--dev-bind",
                "/dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/dev/shm",
            ]
            .map(String::from),
        );
        for (h, i) in &self.binds {
            args.extend(["--bind".into(), h.display().to_string(), i.clone()]);
        }
        if let Some(f) = &hosts_file {
            args.extend([
                "--ro-bind".into(),
                f.path().display().to_string(),
                "/etc/hosts".into(),
            ]);
        }
        args.extend(
            [
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--cap-add",
                "ALL",
                "--clearenv",
            ]
            .map(String::from),
        );
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TZ".into(), "UTC".into()),
        ];
        if let Some(t) = self.faketime {
            let ts = jiff::Timestamp::from_second(t)
                .map_err(|e| Error::Environment(format!("world: bad faketime {t}: {e}")))?;
            // Stopped at that time, as the sandbox does (sandbox/env.rs).
            env.push((
                "FAKETIME".into(),
                ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            ));
            env.push(("LD_PRELOAD".into(), FAKETIME_LIB.into()));
        }
        env.extend(self.env.iter().cloned());
        for (k, v) in env {
            args.extend(["--setenv".into(), k, v]);
        }
        args.extend([
            "--chdir".into(),
            self.cwd.clone(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
        ]);

        if self.services.archive.is_none()
            && self.services.registry.is_none()
            && self.services.tls.is_empty()
            && self.services.files.is_empty()
        {
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..]);
            return tools::output(what, &mut cmd);
        }
        // A fresh network namespace whose loopback carries the world's servers, so the build
        // sees exactly http://{archive_addr()} whatever else runs on this host.
        tools::require("unshare", "util-linux")?;
        let busybox = busybox()?;
        let mut pre = format!("set -e; {bb} ip link set lo up; ", bb = busybox.display());
        if let Some(a) = &self.services.archive {
            pre.push_str(&format!(
                "{bb} httpd -p {addr} -h '{}'; ",
                a.display(),
                addr = archive_addr(),
                bb = busybox.display()
            ));
        }
        for (root, addr) in &self.services.files {
            pre.push_str(&format!(
                "{bb} httpd -p {addr} -h '{}'; ",
                root.display(),
                bb = busybox.display()
            ));
        }
        if let Some(r) = &self.services.registry {
            let reg = tools::require("docker-registry", "docker-registry")?;
            pre.push_str(&format!(
                "{1} serve '{0}' >/dev/null 2>&1 & \
                 i=0; until {bb} wget -q -O /dev/null http://{REGISTRY_ADDR}/v2/; do i=$((i+1)); [ $i -lt 300 ] || {{ echo registry did not start >&2; exit 1; }}; sleep 0.1; done; ",
                r.display(),
                reg.display(),
                bb = busybox.display()
            ));
        }
        if !self.services.tls.is_empty() {
            let socat = tools::require("socat", "socat")?;
            for t in &self.services.tls {
                pre.push_str(&format!(
                    "{s} OPENSSL-LISTEN:443,bind={ip},reuseaddr,fork,cert='{c}',key='{k}',verify=0 TCP:{b} 2>/dev/null & \
                     i=0; until {s} -u OPEN:/dev/null TCP:{ip}:443 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || {{ echo TLS front {h} did not start >&2; exit 1; }}; sleep 0.1; done; ",
                    s = socat.display(),
                    ip = t.ip,
                    c = t.cert.display(),
                    k = t.key.display(),
                    b = t.backend,
                    h = t.host,
                ));
            }
        }
        pre.push_str("exec \"$@\"");
        let mut cmd = Command::new("unshare");
        // A fresh /proc for the new pid namespace: bwrap reads its own /proc/<pid>/ns.
        cmd.args([
            "--net",
            "--pid",
            "--mount",
            "--mount-proc",
            "--fork",
            "--kill-child",
            "--",
            "/bin/sh",
            "-c",
            &pre,
            "sh",
        ])
        .args(&args);
        tools::output(what, &mut cmd)
    }
}

/// The host's static busybox (Debian `busybox-static`): httpd for the archive, ip for lo.
pub fn busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    tools::require("busybox", "busybox-static")
}

/// Unpacks a bootstrap tarball into `dest` (which must not exist) and returns the root.
pub fn unpack_bootstrap(tarball: &Path, dest: &Path) -> Result<PathBuf> {
    remove_tree(dest)?;
    std::fs::create_dir_all(dest).ctx("create directory", dest)?;
    tools::run(
        "unpack the environment",
        Command::new("tar")
            .arg("--zstd")
            .arg("--numeric-owner")
            .arg("--xattrs")
            .arg("--acls")
            .arg("-xpf")
            .arg(tarball)
            .arg("-C")
            .arg(dest),
    )?;
    Ok(dest.join("root.x86_64"))
}

/// `rm -rf` that tolerates absence.
pub fn remove_tree(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => std::fs::remove_dir_all(p).ctx("remove", p),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_where_the_mirror_is() {
        assert_eq!(archive_addr(), "127.0.0.1:7878");
        assert_eq!(
            crate::world::Ports::default().archive,
            crate::inputs::mirror::MIRROR_PORT
        );
    }
}
