//! What the world's packages are (the PKGBUILD-like descriptions): the image content (`base`,
//! `filesystem`, `busybox`, `glibc`'s ldconfig shim) and the build environment's drifting
//! `devtools`, with which day and which bootstrap carries which version.

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::world::alpm::{Entry, PkgSpec};

/// 2026-03-20T00:00:00Z: build date of the image content packages.
const T_CONTENT: i64 = 1_773_964_800;
/// 2026-02-20T00:00:00Z: devtools 1.0-1 (in the 03.01 bootstrap and the 03/30 snapshot).
const T_DEVTOOLS_1: i64 = 1_771_545_600;
/// 2026-03-31T06:00:00Z: devtools 1.0.1-1 (after the 03/30 snapshot, in the 04.01 bootstrap).
const T_DEVTOOLS_101: i64 = 1_774_936_800;
/// 2026-04-10T00:00:00Z: devtools 1.1-1 (the 04/15 snapshot).
const T_DEVTOOLS_11: i64 = 1_775_779_200;

/// devtools' extra.conf before the drift: no NoExtract of its own.
pub const EXTRA_CONF_OLD: &str = "# devtools pacman.conf for [extra] builds (test world)\n[options]\nHoldPkg = pacman glibc\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Optional\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\n[extra]\nInclude = /etc/pacman.d/mirrorlist\n";
/// After the drift: man pages are no longer extracted, so the rootfs changes.
pub const EXTRA_CONF_NEW: &str = "# devtools pacman.conf for [extra] builds (test world)\n[options]\nHoldPkg = pacman glibc\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Optional\nNoExtract = usr/share/man/*\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\n[extra]\nInclude = /etc/pacman.d/mirrorlist\n";

/// A package and where it appears.
#[derive(Debug, Clone)]
pub struct Placed {
    pub spec: PkgSpec,
    pub repo: &'static str,
    /// Archive days (`YYYY/MM/DD`) whose repo lists this version.
    pub days: Vec<&'static str>,
    /// Bootstrap tarballs (`YYYY.MM.DD`) that have it installed (environment packages only).
    pub isos: Vec<&'static str>,
    /// A package of the build environment (not of the image).
    pub env: bool,
}

fn dir(p: &str, mode: u32) -> Entry {
    Entry::Dir {
        path: p.into(),
        mode,
    }
}
fn file(p: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
    Entry::File {
        path: p.into(),
        mode,
        data: data.into(),
    }
}
fn link(p: &str, t: &str) -> Entry {
    Entry::Symlink {
        path: p.into(),
        target: t.into(),
    }
}

/// The busybox applets the image and the verify stage use.
pub const APPLETS: &[&str] = &[
    "sh",
    "bash",
    "ash",
    "sed",
    "ls",
    "cat",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "echo",
    "env",
    "true",
    "false",
    "sha256sum",
    "tar",
    "grep",
    "touch",
    "chmod",
    "ln",
    "id",
    "uname",
    "head",
    "tail",
    "wc",
];

const OS_RELEASE: &str = "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\nANSI_COLOR=\"38;2;23;147;209\"\nHOME_URL=\"https://archlinux.org/\"\nDOCUMENTATION_URL=\"https://wiki.archlinux.org/\"\nLOGO=archlinux-logo\n";

/// The guest kernel of the microVM backend, as Arch's `linux` package lays it out, made
/// from the host's Debian kernel (`linux-image-amd64`): `usr/lib/modules/<release>/vmlinuz`,
/// `pkgbase`, `modules.builtin` and only the modules the guest init loads (with their
/// dependencies), compressed `.ko.zst` as Arch ships them and without `modules.dep` (Arch's
/// depmod runs in a pacman hook).
pub fn linux_package() -> Result<PkgSpec> {
    let host = crate::vm::HostKernel::newest().map_err(|e| {
        crate::error::Error::Environment(format!(
            "world: the `linux` package is made from the host's Debian kernel: {e}"
        ))
    })?;
    let bytes = std::fs::read(&host.kernel).ctx("read", &host.kernel)?;
    let release = &host.release;
    let mods = &host.modules_dir;
    let base = format!("usr/lib/modules/{release}");
    let mut entries = vec![
        file(&format!("{base}/vmlinuz"), 0o644, bytes),
        file(&format!("{base}/pkgbase"), 0o644, "linux\n"),
    ];
    let builtin = mods.join("modules.builtin");
    entries.push(file(
        &format!("{base}/modules.builtin"),
        0o644,
        std::fs::read(&builtin).ctx("read", &builtin)?,
    ));
    for m in host.guest_modules()? {
        let rel = m.path;
        let z = zstd::encode_all(&m.elf[..], 19).ctx("zstd", mods.join(&rel))?;
        let plain = rel.strip_suffix(".zst").unwrap_or(&rel);
        entries.push(file(&format!("{base}/{plain}.zst"), 0o644, z));
    }
    // pkgver cannot hold '-': 6.1.0-48-amd64 → 6.1.0.48.amd64.
    Ok(PkgSpec {
        name: "linux".into(),
        version: format!("{}-1", release.replace('-', ".")),
        arch: "x86_64".into(),
        desc: format!(
            "The Linux kernel and modules (test world: Debian's {release}, guest modules only)"
        ),
        depends: vec![],
        builddate: T_CONTENT,
        entries,
    })
}

/// Every package of the world, every version.
pub fn packages(busybox: &Path) -> Result<Vec<Placed>> {
    let bb = std::fs::read(busybox).ctx("read", busybox)?;
    let both = vec!["2026/03/30", "2026/04/15"];

    let filesystem = PkgSpec {
        name: "filesystem".into(),
        version: "2026.03.20-1".into(),
        arch: "any".into(),
        desc: "Base directory layout and /etc files (test world)".into(),
        depends: vec![],
        builddate: T_CONTENT,
        entries: vec![
            link("bin", "usr/bin"),
            link("sbin", "usr/bin"),
            link("lib", "usr/lib"),
            link("lib64", "usr/lib"),
            link("usr/sbin", "bin"),
            link("usr/lib64", "lib"),
            dir("boot", 0o755),
            dir("dev", 0o755),
            dir("home", 0o755),
            dir("mnt", 0o755),
            dir("opt", 0o755),
            dir("proc", 0o555),
            dir("root", 0o750),
            dir("run", 0o755),
            dir("srv", 0o755),
            dir("sys", 0o555),
            dir("tmp", 0o1777),
            dir("usr/bin", 0o755),
            dir("usr/lib", 0o755),
            dir("usr/share", 0o755),
            dir("var/cache", 0o755),
            dir("var/lib", 0o755),
            dir("var/log", 0o755),
            dir("var/tmp", 0o1777),
            dir("etc/pacman.d", 0o755),
            file("etc/os-release", 0o644, OS_RELEASE),
            file(
                "etc/passwd",
                0o644,
                "root:x:0:0::/root:/usr/bin/bash\nnobody:x:65534:65534:Kernel Overflow User:/:/usr/bin/nologin\n",
            ),
            file("etc/group", 0o644, "root:x:0:root\nnobody:x:65534:\n"),
            file(
                "etc/shadow",
                0o600,
                "root::14871::::::\nnobody:!*:14871::::::\n",
            ),
            file("etc/hostname", 0o644, ""),
            file(
                "etc/profile",
                0o644,
                "export PATH=/usr/local/sbin:/usr/local/bin:/usr/bin\n",
            ),
        ],
    };
    let mut bb_entries = vec![
        file("usr/bin/busybox", 0o755, bb),
        file(
            "usr/share/doc/busybox/README",
            0o644,
            "BusyBox (Debian's busybox-static binary, repackaged for the reprobox test world).\n",
        ),
        file(
            "usr/share/man/man1/busybox.1",
            0o644,
            ".TH BUSYBOX 1\n.SH NAME\nbusybox \\- the Swiss Army Knife of Embedded Linux\n",
        ),
    ];
    for a in APPLETS {
        bb_entries.push(link(&format!("usr/bin/{a}"), "busybox"));
    }
    let busybox_pkg = PkgSpec {
        name: "busybox".into(),
        version: "1.35.0-1".into(),
        arch: "x86_64".into(),
        desc: "Shell and utilities (Debian's static busybox, test world)".into(),
        depends: vec!["filesystem".into()],
        builddate: T_CONTENT,
        entries: bb_entries,
    };
    let glibc = PkgSpec {
        name: "glibc".into(),
        version: "2.41-1".into(),
        arch: "x86_64".into(),
        desc: "ldconfig shim standing in for glibc (test world; the image is static busybox)"
            .into(),
        depends: vec!["filesystem".into()],
        builddate: T_CONTENT,
        entries: vec![
            file(
                "usr/bin/ldconfig",
                0o755,
                "#!/bin/sh\n# test world: no dynamic libraries; leave the cache file ldconfig would write\nmkdir -p /var/cache/ldconfig && : > /var/cache/ldconfig/aux-cache\n",
            ),
            dir("var/cache/ldconfig", 0o755),
        ],
    };
    let base = PkgSpec {
        name: "base".into(),
        version: "3-2".into(),
        arch: "any".into(),
        desc: "Minimal package set of the repro image (test world)".into(),
        depends: vec!["filesystem".into(), "busybox".into(), "glibc".into()],
        builddate: T_CONTENT,
        entries: vec![],
    };
    let devtools = |version: &str, t: i64, conf: &str| PkgSpec {
        name: "devtools".into(),
        version: version.into(),
        arch: "any".into(),
        desc: "Tools for Arch Linux package maintainers (test world: pacman.conf.d only)".into(),
        depends: vec![],
        builddate: t,
        entries: vec![file(
            "usr/share/devtools/pacman.conf.d/extra.conf",
            0o644,
            conf,
        )],
    };
    Ok(vec![
        Placed {
            spec: filesystem,
            repo: "core",
            days: both.clone(),
            isos: vec![],
            env: false,
        },
        Placed {
            spec: busybox_pkg,
            repo: "core",
            days: both.clone(),
            isos: vec![],
            env: false,
        },
        Placed {
            spec: glibc,
            repo: "core",
            days: both.clone(),
            isos: vec![],
            env: false,
        },
        Placed {
            spec: base,
            repo: "core",
            days: both.clone(),
            isos: vec![],
            env: false,
        },
        Placed {
            spec: linux_package()?,
            repo: "core",
            days: both,
            isos: vec![],
            env: false,
        },
        Placed {
            spec: devtools("1.0-1", T_DEVTOOLS_1, EXTRA_CONF_OLD),
            repo: "extra",
            days: vec!["2026/03/30"],
            isos: vec!["2026.03.01"],
            env: true,
        },
        Placed {
            spec: devtools("1.0.1-1", T_DEVTOOLS_101, EXTRA_CONF_NEW),
            repo: "extra",
            days: vec![],
            isos: vec!["2026.04.01"],
            env: true,
        },
        Placed {
            spec: devtools("1.1-1", T_DEVTOOLS_11, EXTRA_CONF_NEW),
            repo: "extra",
            days: vec!["2026/04/15"],
            isos: vec![],
            env: true,
        },
    ])
}
