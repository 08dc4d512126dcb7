//! Choosing the guest kernel (and its modules).
//!
//! The default guest kernel of a reproduction is the Arch `linux` package of the
//! environment's day (a kernel of the same day as the build environment): the pipeline
//! fetches it through the archive client (pinned in the store, recorded in the inputs
//! lock) and [`from_package`] unpacks it. `reprobox run` has no day, so its default is
//! the host's kernel under /boot (see `cmd/run.rs`). `--kernel PATH [--initrd PATH]`
//! chooses one explicitly; tests use the host's Debian `linux-image-amd64` under /boot.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The kernel a run boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// A bzImage.
    pub kernel: PathBuf,
    /// An extra initramfs placed before reprobox's own (it may carry modules; reprobox's
    /// `/init` always wins because it comes last).
    pub initrd: Option<PathBuf>,
    /// The release string from the bzImage header (`uname -r` in the guest).
    pub release: String,
    /// `/lib/modules/<release>` when the host has it; the modules are taken from there.
    pub modules_dir: Option<PathBuf>,
}

/// Where a kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The `linux` package of the snapshot day; not wired yet (needs the pipeline).
    SnapshotPackage,
    /// An explicit kernel (and optional initrd).
    Path {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
    },
}

impl KernelSource {
    /// From the `--kernel`/`--initrd` options: no `--kernel` means the default.
    pub fn from_options(kernel: Option<&Path>, initrd: Option<&Path>) -> Result<KernelSource> {
        match (kernel, initrd) {
            (Some(k), i) => Ok(KernelSource::Path {
                kernel: k.to_path_buf(),
                initrd: i.map(Path::to_path_buf),
            }),
            (None, Some(i)) => Err(Error::bad_input(
                format!("--initrd {}", i.display()),
                "--initrd needs --kernel PATH (a bzImage) as well",
            )),
            (None, None) => Ok(KernelSource::SnapshotPackage),
        }
    }
}

/// Resolve a kernel source to a bootable kernel, checking the files exist and reading
/// the kernel's release from its header.
pub fn select(source: &KernelSource) -> Result<GuestKernel> {
    select_with_modules_root(source, Path::new("/lib/modules"))
}

/// [`select`] with the modules tree elsewhere than /lib/modules (for tests).
pub fn select_with_modules_root(source: &KernelSource, modules_root: &Path) -> Result<GuestKernel> {
    let (kernel, initrd) = match source {
        KernelSource::SnapshotPackage => {
            return Err(Error::Environment(
                "no guest kernel: the default (the snapshot day's `linux` package from the \
                 archive) needs a reproduction's day; pass --kernel PATH \
                 (for example /boot/vmlinuz-* of Debian's linux-image-amd64)"
                    .into(),
            ));
        }
        KernelSource::Path { kernel, initrd } => (kernel, initrd),
    };
    let bytes = fs::read(kernel).map_err(|e| {
        Error::Environment(format!(
            "guest kernel {}: {e} (expected a bzImage, e.g. /boot/vmlinuz-*)",
            kernel.display()
        ))
    })?;
    let release = bzimage_release(&bytes).ok_or_else(|| {
        Error::bad_input(
            format!("kernel {}", kernel.display()),
            "expected a Linux bzImage (found no HdrS header with a version string)",
        )
    })?;
    if let Some(i) = initrd {
        fs::metadata(i)
            .map_err(|e| Error::Environment(format!("guest initrd {}: {e}", i.display())))?;
    }
    let dir = modules_root.join(&release);
    // A Debian tree has modules.dep; an Arch `linux` package has only the modules (its
    // depmod runs in a pacman hook), and their dependencies are read from their modinfo.
    let modules_dir =
        (dir.join("modules.dep").is_file() || dir.join("kernel").is_dir()).then_some(dir);
    if modules_dir.is_none() && initrd.is_none() {
        return Err(Error::Environment(format!(
            "guest kernel {} is {release} but {}/{release} has neither modules.dep nor \
             kernel/: install that kernel's modules or pass --initrd with them",
            kernel.display(),
            modules_root.display()
        )));
    }
    Ok(GuestKernel {
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        release,
        modules_dir,
    })
}

/// The host's kernel for a guest: `/boot/vmlinuz-<running release>` when it exists and
/// its modules are installed, else the newest `/boot/vmlinuz-*` whose modules are (the
/// default of `reprobox run --backend microvm`, which has no snapshot day).
pub fn host_kernel() -> Result<PathBuf> {
    let boot = Path::new("/boot");
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(&mut uts) } == 0 {
        // SAFETY: release is NUL-terminated by uname.
        let rel = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
        let p = boot.join(format!("vmlinuz-{}", rel.to_string_lossy()));
        if has_host_modules(&p) {
            return Ok(p);
        }
    }
    newest_boot_kernel()
}

/// `p` is a bzImage whose release has its modules installed under /lib/modules.
fn has_host_modules(p: &Path) -> bool {
    fs::read(p)
        .ok()
        .and_then(|b| bzimage_release(&b))
        .is_some_and(|r| {
            Path::new("/lib/modules")
                .join(r)
                .join("modules.dep")
                .is_file()
        })
}

/// The newest `/boot/vmlinuz-*` (by name) whose modules are under /lib/modules (Debian's
/// `linux-image-amd64`); outside `vm`, [`super::HostKernel::newest`].
pub(super) fn newest_boot_kernel() -> Result<PathBuf> {
    let boot = Path::new("/boot");
    let mut found: Vec<PathBuf> = fs::read_dir(boot)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .rev()
        .find(|p| has_host_modules(p))
        .ok_or_else(|| {
            Error::Environment(
                "no guest kernel: /boot has no vmlinuz-* with its modules under /lib/modules; \
             pass --kernel PATH or install one (apt-get install linux-image-amd64)"
                    .into(),
            )
        })
}

/// A kernel unpacked from an Arch `linux` package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedKernel {
    /// `usr/lib/modules/<release>/vmlinuz`.
    pub kernel: PathBuf,
    /// `usr/lib/modules`: pass as the modules root.
    pub modules_root: PathBuf,
    pub release: String,
}

/// Unpack a `linux` package (`.pkg.tar.zst`) into `dest` (empty or missing) and find its
/// kernel as Arch lays it out: `usr/lib/modules/<release>/vmlinuz` next to the modules
/// (`kernel/**/*.ko.zst`).
pub fn from_package(package: &Path, dest: &Path) -> Result<PackagedKernel> {
    crate::inputs::unpack::unpack(package, dest)?;
    let modules_root = dest.join("usr/lib/modules");
    let mut found = Vec::new();
    if let Ok(rd) = fs::read_dir(&modules_root) {
        for e in rd.flatten() {
            let k = e.path().join("vmlinuz");
            if k.is_file() {
                found.push(k);
            }
        }
    }
    found.sort();
    let kernel = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::Environment(format!(
                "{}: no usr/lib/modules/<release>/vmlinuz in this linux package",
                package.display()
            )));
        }
        _ => {
            return Err(Error::Environment(format!(
                "{}: more than one usr/lib/modules/*/vmlinuz in this linux package",
                package.display()
            )));
        }
    };
    let bytes = fs::read(&kernel).map_err(|e| Error::io("read", &kernel, e))?;
    let release = bzimage_release(&bytes).ok_or_else(|| {
        Error::Environment(format!(
            "{}: {} is not a Linux bzImage",
            package.display(),
            kernel.display()
        ))
    })?;
    let dir_name = kernel
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir_name != release {
        return Err(Error::Environment(format!(
            "{}: the kernel under usr/lib/modules/{dir_name} says it is {release}",
            package.display()
        )));
    }
    Ok(PackagedKernel {
        kernel,
        modules_root,
        release,
    })
}

/// The release (first word of the version string) of an x86 bzImage: the boot protocol
/// header has the magic `HdrS` at 0x202 and, at 0x20e, the offset (minus 0x200) of a
/// NUL-terminated version string.
pub fn bzimage_release(bytes: &[u8]) -> Option<String> {
    if bytes.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*bytes.get(0x20e)?, *bytes.get(0x20f)?]) as usize + 0x200;
    let tail = bytes.get(off..)?;
    let end = tail.iter().take(256).position(|&b| b == 0)?;
    let text = std::str::from_utf8(&tail[..end]).ok()?;
    let release = text.split_whitespace().next()?;
    (!release.is_empty()).then(|| release.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let off: u16 = 0x100;
        b[0x20e..0x210].copy_from_slice(&off.to_le_bytes());
        let at = off as usize + 0x200;
        b[at..at + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn release_from_header() {
        let b = fake_bzimage("6.1.0-48-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(bzimage_release(&b).as_deref(), Some("6.1.0-48-amd64"));
        assert_eq!(bzimage_release(&[0u8; 0x400]), None);
    }

    #[test]
    fn default_kernel_is_a_clear_environment_error() {
        let err = select(&KernelSource::SnapshotPackage).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("--kernel PATH"), "{err}");
    }

    #[test]
    fn initrd_without_kernel_is_bad_input() {
        let err = KernelSource::from_options(None, Some(Path::new("/x"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn missing_kernel_and_missing_modules() {
        let err = select(&KernelSource::Path {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");

        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("vmlinuz");
        std::fs::write(&k, fake_bzimage("9.9.9-test #1")).unwrap();
        let src = KernelSource::Path {
            kernel: k,
            initrd: None,
        };
        let err = select_with_modules_root(&src, d.path()).unwrap_err();
        assert!(err.to_string().contains("9.9.9-test"), "{err}");
        std::fs::create_dir_all(d.path().join("9.9.9-test")).unwrap();
        std::fs::write(d.path().join("9.9.9-test/modules.dep"), "").unwrap();
        let got = select_with_modules_root(&src, d.path()).unwrap();
        assert_eq!(got.release, "9.9.9-test");
        assert_eq!(got.modules_dir, Some(d.path().join("9.9.9-test")));
    }
}
