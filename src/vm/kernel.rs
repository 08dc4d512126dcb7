//! Choosing the guest kernel (and its modules).
//!
//! The default guest kernel is the Arch `linux` package of the snapshot day (a kernel of
//! the same day as the build environment). Fetching it is the pipeline's job; until a
//! caller hands one over, asking for the default is a clear error. `--kernel PATH
//! [--initrd PATH]` chooses one explicitly; tests use the host's Debian
//! `linux-image-amd64` under /boot.

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
                 archive) is not available to this caller yet; pass --kernel PATH \
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
            kernel.display().to_string(),
            "not a Linux bzImage (no HdrS header with a version string)",
        )
    })?;
    if let Some(i) = initrd {
        fs::metadata(i)
            .map_err(|e| Error::Environment(format!("guest initrd {}: {e}", i.display())))?;
    }
    let dir = modules_root.join(&release);
    let modules_dir = dir.join("modules.dep").is_file().then_some(dir);
    if modules_dir.is_none() && initrd.is_none() {
        return Err(Error::Environment(format!(
            "guest kernel {} is {release} but {}/{release}/modules.dep does not exist: \
             install that kernel's modules or pass --initrd with them",
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
