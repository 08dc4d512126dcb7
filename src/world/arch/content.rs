//! The new world's ALPM packages (see [`super`] for the days and the drift).
//!
//! Rootfs side ("base" and its dependencies, repo `core`): real, dynamic Debian bookworm
//! binaries and libraries from the Debian root (`scripts/debian-rootfs.sh`), laid out the Arch
//! way (everything in `usr/bin` and `usr/lib`; `bin`, `sbin`, `lib`, `lib64`, `usr/sbin`,
//! `usr/lib64` are links of `filesystem`), plus the world's stand-ins from `world/standins/`
//! where Arch's tool cannot come from Debian. They must be dynamic: make-rootfs.sh runs them
//! under `fakechroot -- fakeroot -- chroot BUILDDIR …`, and fakechroot only translates the
//! paths of dynamically linked programs (LD_PRELOAD).
//!
//! Environment side: the stand-in `pacman` (also in the rootfs, where it is inert), `podman`,
//! `devtools` (the real `config/pacman/*.conf` of a devtools tag), `archlinux-keyring` (the
//! world's signing key, where Debian's `pacman-key --populate` reads it) and meta packages
//! `git`, `make`, `fakechroot`, `fakeroot` (Debian's binaries provide those tools).
//!
//! No environment package depends on a rootfs package: the environment is Debian, and a
//! dependency on `glibc` would make pacman overwrite Debian's libc.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::world::alpm::{Entry, PkgSpec};
use crate::world::env_rootfs::EnvRun;
use crate::world::tools;

/// Build date of the rootfs packages and the environment's stand-ins: 2026-05-10T00:00:00Z.
pub const CONTENT_BUILDDATE: i64 = 1_778_371_200;

/// The stand-in scripts (plain files in `world/standins/`, packaged by the world).
pub const PACMAN_STANDIN: &str = include_str!("../../../world/standins/pacman");
pub const PACMAN_KEY_STANDIN: &str = include_str!("../../../world/standins/pacman-key");
pub const PODMAN_STANDIN: &str = include_str!("../../../world/standins/podman");
pub const UPDATE_CA_TRUST_STANDIN: &str = include_str!("../../../world/standins/update-ca-trust");
pub const SYSUSERS_STANDIN: &str = include_str!("../../../world/standins/systemd-sysusers");

/// Where the environment keeps Debian's pacman 6.0.2 (the stand-in execs it from there).
pub const REAL_PACMAN_DIR: &str = "usr/lib/reprobox-world/pacman-6.0.2";
/// Where the environment keeps Debian's podman 4.3.1.
pub const REAL_PODMAN_DIR: &str = "usr/lib/reprobox-world/podman-4.3.1";

/// The stand-in pacman's version (every day and bootstrap).
pub const PACMAN_VERSION: &str = "7.1.0-1";
/// The stand-in podman's version.
pub const PODMAN_VERSION: &str = "5.6.2-1";
/// archlinux-keyring's version.
pub const KEYRING_VERSION: &str = "20260501-1";

/// A package and the repo it belongs to.
#[derive(Debug, Clone)]
pub struct ArchPkg {
    pub spec: PkgSpec,
    pub repo: &'static str,
    /// Installed in the build environment (not part of the rootfs).
    pub env: bool,
}

fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Entry {
    Entry::File {
        path: path.into(),
        mode,
        data: data.into(),
    }
}
fn dir(path: &str, mode: u32) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode,
    }
}
fn link(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

pub(crate) fn spec(
    name: &str,
    version: &str,
    arch: &str,
    desc: &str,
    depends: &[String],
    entries: Vec<Entry>,
) -> PkgSpec {
    PkgSpec {
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        desc: desc.into(),
        depends: depends.to_vec(),
        builddate: CONTENT_BUILDDATE,
        entries,
    }
}

/// A Debian version as an ALPM version: the upstream part with `+`/`~` made `.`/`_`, and
/// pkgrel 1 (`2.36-9+deb12u14` → `2.36-1`).
pub fn alpm_version(debian: &str) -> String {
    let v = debian.split(':').next_back().unwrap_or(debian);
    let up = v.rsplit_once('-').map(|(u, _)| u).unwrap_or(v);
    format!("{}-1", up.replace('+', ".").replace('~', "_"))
}

/// Arch's name for the Debian library packages the rootfs binaries need.
fn arch_name(debian_pkg: &str) -> String {
    match debian_pkg {
        "libc6" => "glibc",
        "libtinfo6" => "ncurses",
        "libacl1" => "acl",
        "libattr1" => "attr",
        "libselinux1" => "libselinux",
        "libpcre2-8-0" => "pcre2",
        "libgmp10" => "gmp",
        "libcap2" => "libcap",
        "libssl3" => "openssl",
        other => other,
    }
    .into()
}

/// Shell function: the Debian package owning a path (dpkg knows some libraries under /lib,
/// others under /usr/lib: merged-usr).
const OWN: &str = "own() { { dpkg -S \"$1\" || dpkg -S \"/usr$1\" || dpkg -S \"${1#/usr}\"; } 2>/dev/null | head -1 | cut -d: -f1; };";

/// The Debian programs of the rootfs: (Arch package, Debian package, program paths).
fn programs(debian: &Path) -> Result<Vec<(&'static str, &'static str, Vec<String>)>> {
    let coreutils = tools::output(
        "list Debian's coreutils",
        Command::new("chroot")
            .arg(debian)
            .args(["dpkg", "-L", "coreutils"]),
    )?;
    let mut cu: Vec<String> = String::from_utf8_lossy(&coreutils)
        .lines()
        .filter(|l| (l.contains("/bin/") || l.contains("/sbin/")) && !l.ends_with('/'))
        .map(String::from)
        .collect();
    cu.sort();
    Ok(vec![
        ("bash", "bash", vec!["/bin/bash".into()]),
        ("coreutils", "coreutils", cu),
        ("sed", "sed", vec!["/bin/sed".into()]),
        ("grep", "grep", vec!["/bin/grep".into()]),
        (
            "findutils",
            "findutils",
            vec!["/usr/bin/find".into(), "/usr/bin/xargs".into()],
        ),
    ])
}

/// Every rootfs package: base, filesystem, glibc and the libraries, the tools, the stand-ins.
/// `ca_pem` is the world CA (the trust anchor of `ca-certificates`); `keyring` the
/// archlinux-keyring package (shared with the environment); `pacman` the stand-in pacman.
pub fn rootfs_packages(debian: &Path, ca_pem: &str) -> Result<Vec<ArchPkg>> {
    let progs = programs(debian)?;
    // ldd of every program, in the Debian root: which library (and Debian package) each needs.
    let all: Vec<&String> = progs.iter().flat_map(|(_, _, p)| p).collect();
    let script = format!(
        "set -e; {OWN} for b in {}; do ldd \"$b\" | while read -r a b2 c rest; do case \"$c\" in /*) p=$(own \"$c\"); v=$(dpkg-query -W -f='${{Version}}' \"$p\"); echo \"$b $c $p $v\";; esac; done; done; \
         for p in bash coreutils sed grep findutils libc6 systemd; do printf 'VERSION %s %s\\n' \"$p\" \"$(dpkg-query -W -f='${{Version}}' $p 2>/dev/null || echo 0)\"; done",
        all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    );
    let out =
        EnvRun::new(debian, false).sh("list the libraries of the rootfs programs", &script)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    // program -> libs (path, debian pkg)
    let mut needs: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 && f[0] == "VERSION" {
            versions.insert(f[1].into(), f[2].into());
        } else if f.len() == 4 {
            versions.insert(f[2].into(), f[3].into());
            needs
                .entry(f[0].into())
                .or_default()
                .insert((f[1].into(), f[2].into()));
        }
    }
    let read = |p: &str| -> Result<Vec<u8>> {
        let host = debian.join(p.trim_start_matches('/'));
        std::fs::read(&host).ctx("read", &host)
    };
    let base_name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let mut pkgs = Vec::new();

    // Library packages (other than glibc): each library the programs need, by Debian package.
    let mut libs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for set in needs.values() {
        for (path, dpkg) in set {
            if dpkg != "libc6" {
                libs.entry(dpkg.clone()).or_default().insert(path.clone());
            }
        }
    }
    // Libraries' own needs (libselinux needs pcre2, …).
    let lib_paths: Vec<String> = libs.values().flatten().cloned().collect();
    let mut lib_deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if !lib_paths.is_empty() {
        let script = format!(
            "set -e; {OWN} for b in {}; do ldd \"$b\" | while read -r a b2 c rest; do case \"$c\" in /*) echo \"$b $(own \"$c\")\";; esac; done; done; for b in {0}; do echo \"$b $(own \"$b\")\"; done",
            lib_paths.join(" ")
        );
        let out = EnvRun::new(debian, false).sh("list the libraries' libraries", &script)?;
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        let text = String::from_utf8_lossy(&out).into_owned();
        let lines: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        // The last block names each library's own package.
        for (p, d) in lines.iter().rev().take(lib_paths.len()) {
            owner.insert(p.clone(), d.clone());
        }
        for (p, d) in &lines[..lines.len() - lib_paths.len()] {
            let me = owner.get(p).cloned().unwrap_or_default();
            if *d != me {
                lib_deps.entry(me).or_default().insert(arch_name(d));
            }
        }
    }
    for (dpkg, paths) in &libs {
        let name = arch_name(dpkg);
        let mut deps: Vec<String> = vec!["glibc".into()];
        deps.extend(
            lib_deps
                .get(dpkg)
                .into_iter()
                .flatten()
                .filter(|d| *d != "glibc")
                .cloned(),
        );
        let mut entries = Vec::new();
        for p in paths {
            entries.push(file(&format!("usr/lib/{}", base_name(p)), 0o755, read(p)?));
        }
        pkgs.push(ArchPkg {
            spec: spec(
                &name,
                &alpm_version(versions.get(dpkg).map(|s| s.as_str()).unwrap_or("0-0")),
                "x86_64",
                &format!("{name} (reprobox test world: Debian bookworm's {dpkg})"),
                &deps,
                entries,
            ),
            repo: "core",
            env: false,
        });
    }

    // glibc: Debian's libc6 libraries and loader in usr/lib, its static ldconfig.
    let libc = tools::output(
        "list Debian's libc6",
        Command::new("chroot")
            .arg(debian)
            .args(["dpkg", "-L", "libc6"]),
    )?;
    let mut entries = vec![
        file(
            "etc/ld.so.conf",
            0o644,
            "# See ld.so(8)\ninclude /etc/ld.so.conf.d/*.conf\n",
        ),
        dir("etc/ld.so.conf.d", 0o755),
        dir("var/cache/ldconfig", 0o755),
        file("usr/bin/ldconfig", 0o755, read("/sbin/ldconfig")?),
    ];
    let mut seen = BTreeSet::new();
    for l in String::from_utf8_lossy(&libc).lines() {
        let Some(name) = l.strip_prefix("/lib/x86_64-linux-gnu/") else {
            continue;
        };
        if name.contains('/') || !name.contains(".so") || !seen.insert(name.to_string()) {
            continue;
        }
        entries.push(file(&format!("usr/lib/{name}"), 0o755, read(l)?));
    }
    pkgs.push(ArchPkg {
        spec: spec(
            "glibc",
            &alpm_version(versions.get("libc6").map(|s| s.as_str()).unwrap_or("0-0")),
            "x86_64",
            "GNU C Library (reprobox test world: Debian bookworm's libc6 libraries, loader and static ldconfig)",
            &["filesystem".into()],
            entries,
        ),
        repo: "core",
        env: false,
    });

    // The tools.
    for (name, dpkg, paths) in &progs {
        let mut deps: BTreeSet<String> = BTreeSet::from(["glibc".to_string()]);
        let mut entries = Vec::new();
        for p in paths {
            entries.push(file(&format!("usr/bin/{}", base_name(p)), 0o755, read(p)?));
            for (_, d) in needs.get(p).into_iter().flatten() {
                deps.insert(arch_name(d));
            }
        }
        if *name == "bash" {
            entries.push(link("usr/bin/sh", "bash"));
        }
        let deps: Vec<String> = deps.into_iter().collect();
        pkgs.push(ArchPkg {
            spec: spec(
                name,
                &alpm_version(versions.get(*dpkg).map(|s| s.as_str()).unwrap_or("0-0")),
                "x86_64",
                &format!("{name} (reprobox test world: Debian bookworm's {dpkg} binaries)"),
                &deps,
                entries,
            ),
            repo: "core",
            env: false,
        });
    }

    pkgs.push(ArchPkg {
        spec: filesystem(),
        repo: "core",
        env: false,
    });
    pkgs.push(ArchPkg {
        spec: spec(
            "ca-certificates",
            "20260501-1",
            "any",
            "Trust anchors (reprobox test world: the world CA, standing in for the public roots) and an update-ca-trust stand-in",
            &["bash".into(), "coreutils".into()],
            vec![
                file("usr/bin/update-ca-trust", 0o755, UPDATE_CA_TRUST_STANDIN),
                file(
                    "usr/share/ca-certificates/trust-source/anchors/reprobox-world-ca.crt",
                    0o644,
                    ca_pem,
                ),
                dir("etc/ca-certificates/trust-source/anchors", 0o755),
                dir("etc/ca-certificates/extracted", 0o755),
                link(
                    "etc/ssl/certs/ca-certificates.crt",
                    "../../ca-certificates/extracted/tls-ca-bundle.pem",
                ),
            ],
        ),
        repo: "core",
        env: false,
    });
    pkgs.push(ArchPkg {
        spec: systemd(SYSTEMD_VERSIONS[0]),
        repo: "core",
        env: false,
    });
    pkgs.push(ArchPkg {
        spec: spec(
            "base",
            "3-2",
            "any",
            "Minimal package set to define a basic Arch Linux installation (reprobox test world)",
            &[
                "filesystem",
                "glibc",
                "bash",
                "coreutils",
                "sed",
                "grep",
                "findutils",
                "ca-certificates",
                "pacman",
                "systemd",
                "archlinux-keyring",
            ]
            .map(String::from),
            vec![],
        ),
        repo: "core",
        env: false,
    });
    Ok(pkgs)
}

/// systemd's versions: the first on the snapshot day, the second from the build day on
/// (the rootfs package that changes between the two days, see [`systemd`]).
pub const SYSTEMD_VERSIONS: [&str; 2] = ["258.1-1", "258.2-1"];
/// 2026-05-19T12:00:00Z: the build date of the second systemd (after the snapshot day's).
const SYSTEMD_NEXT_BUILDDATE: i64 = 1_779_192_000;

/// `systemd` at `version`: a systemd-sysusers stand-in and sysusers.d. The later version's
/// `basic.conf` carries one more comment line, so a rootfs made from the build day's
/// repositories differs from one made from the snapshot day's in a file as well as in the
/// pacman database (the world's next-day release, docs/world.md).
pub fn systemd(version: &str) -> PkgSpec {
    let mut basic = String::from("# reprobox test world: system users (explicit ids)\n");
    if version != SYSTEMD_VERSIONS[0] {
        basic.push_str(&format!("# systemd {version}: the same users\n"));
    }
    basic.push_str("g wheel 998\ng utmp 996\nu bin 1 \"n/a\" /\nu daemon 2 \"n/a\" /\nu mail 8 \"n/a\" /var/spool/mail\nu nobody 65534:65534 \"Kernel Overflow User\" /\n");
    let mut s = spec(
        "systemd",
        version,
        "x86_64",
        "system and service manager (reprobox test world: only a systemd-sysusers stand-in and sysusers.d)",
        &["bash".into(), "grep".into()],
        vec![
            file("usr/bin/systemd-sysusers", 0o755, SYSUSERS_STANDIN),
            file("usr/lib/sysusers.d/basic.conf", 0o644, basic),
        ],
    );
    if version != SYSTEMD_VERSIONS[0] {
        s.builddate = SYSTEMD_NEXT_BUILDDATE;
    }
    s
}

/// `filesystem`: Arch's usrmerge layout, the base files, /usr/lib/os-release (BUILD_ID
/// rolling), root with an empty password (make-rootfs.sh locks it).
fn filesystem() -> PkgSpec {
    let os_release = "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\nANSI_COLOR=\"38;2;23;147;209\"\nHOME_URL=\"https://archlinux.org/\"\nDOCUMENTATION_URL=\"https://wiki.archlinux.org/\"\nSUPPORT_URL=\"https://bbs.archlinux.org/\"\nBUG_REPORT_URL=\"https://gitlab.archlinux.org/groups/archlinux/-/issues\"\nPRIVACY_POLICY_URL=\"https://terms.archlinux.org/docs/privacy-policy/\"\nLOGO=archlinux-logo\n";
    let e = vec![
        link("bin", "usr/bin"),
        link("sbin", "usr/bin"),
        link("lib", "usr/lib"),
        link("lib64", "usr/lib"),
        link("usr/sbin", "bin"),
        link("usr/lib64", "lib"),
        link("var/run", "../run"),
        link("etc/mtab", "../proc/self/mounts"),
        link("var/lock", "../run/lock"),
        link("var/mail", "spool/mail"),
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
        dir("usr/include", 0o755),
        dir("usr/lib", 0o755),
        dir("usr/local/bin", 0o755),
        dir("usr/share/misc", 0o755),
        dir("var/cache", 0o755),
        dir("var/empty", 0o755),
        dir("var/lib", 0o755),
        dir("var/log", 0o755),
        dir("var/spool/mail", 0o1777),
        dir("var/tmp", 0o1777),
        file("etc/passwd", 0o644, "root:x:0:0::/root:/usr/bin/bash\n"),
        file("etc/group", 0o644, "root:x:0:root\n"),
        file("etc/shadow", 0o600, "root::14871::::::\n"),
        file("etc/gshadow", 0o600, "root:::root\n"),
        file(
            "etc/hosts",
            0o644,
            "# Static table lookup for hostnames.\n# See hosts(5) for details.\n",
        ),
        file("etc/host.conf", 0o644, "multi on\n"),
        file(
            "etc/nsswitch.conf",
            0o644,
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\nethers: files\nrpc: files\n",
        ),
        file(
            "etc/shells",
            0o644,
            "/bin/sh\n/bin/bash\n/usr/bin/sh\n/usr/bin/bash\n",
        ),
        file(
            "etc/profile",
            0o644,
            "# /etc/profile (reprobox test world)\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/bin\n",
        ),
        file("etc/issue", 0o644, "Arch Linux \\r (\\l)\n\n"),
        file("usr/lib/os-release", 0o644, os_release),
    ];
    spec(
        "filesystem",
        "2026.05.01-1",
        "any",
        "Base Arch Linux files (reprobox test world)",
        &[],
        e,
    )
}

/// The stand-in `pacman` (environment and rootfs): the 7.1 wrapper and pacman-key.
pub fn pacman() -> PkgSpec {
    spec(
        "pacman",
        PACMAN_VERSION,
        "x86_64",
        "A library-based package manager with dependency support (reprobox test world: a pacman 7.1 stand-in around Debian's pacman 6.0.2)",
        &[],
        vec![
            file("usr/bin/pacman", 0o755, PACMAN_STANDIN),
            file("usr/bin/pacman-key", 0o755, PACMAN_KEY_STANDIN),
            dir("usr/share/libalpm/hooks", 0o755),
            dir("etc/pacman.d", 0o755),
            dir("var/cache/pacman/pkg", 0o755),
            dir("var/lib/pacman", 0o755),
        ],
    )
}

/// The stand-in `podman` 5.6 (environment only).
pub fn podman() -> PkgSpec {
    spec(
        "podman",
        PODMAN_VERSION,
        "x86_64",
        "Tool and library for running OCI-based containers in pods (reprobox test world: a podman 5.6 stand-in around Debian's podman 4.3.1)",
        &[],
        vec![file("usr/bin/podman", 0o755, PODMAN_STANDIN)],
    )
}

/// `archlinux-keyring`: the world's signing key as the files Debian's `pacman-key
/// --populate` reads (`/usr/share/keyrings/archlinux{.gpg,-trusted,-revoked}`; Arch's own
/// package puts them in /usr/share/pacman/keyrings/).
pub fn keyring(pubkey: &[u8], fingerprint: &str) -> PkgSpec {
    spec(
        "archlinux-keyring",
        KEYRING_VERSION,
        "any",
        "Arch Linux PGP keyring (reprobox test world: the world's packager key)",
        &[],
        vec![
            file("usr/share/keyrings/archlinux.gpg", 0o644, pubkey.to_vec()),
            file(
                "usr/share/keyrings/archlinux-trusted",
                0o644,
                format!("{fingerprint}:4:\n"),
            ),
            file("usr/share/keyrings/archlinux-revoked", 0o644, ""),
        ],
    )
}

/// Meta packages for tools Debian's binaries provide in the environment (`git`, `make`,
/// `fakechroot`, `fakeroot`): empty, at Debian's versions.
pub fn meta_packages(debian: &Path) -> Result<Vec<ArchPkg>> {
    let out = tools::output(
        "read Debian's tool versions",
        Command::new("chroot").arg(debian).args([
            "dpkg-query",
            "-W",
            "-f=${Package} ${Version}\\n",
            "git",
            "make",
            "fakechroot",
            "fakeroot",
        ]),
    )?;
    let mut v = Vec::new();
    for l in String::from_utf8_lossy(&out).lines() {
        let Some((name, ver)) = l.split_once(' ') else {
            continue;
        };
        let repo = if matches!(name, "make" | "fakeroot") {
            "core"
        } else {
            "extra"
        };
        v.push(ArchPkg {
            spec: spec(
                name,
                &alpm_version(ver),
                "x86_64",
                &format!("{name} (reprobox test world: empty; Debian's {name} {ver} in the build environment provides the tool)"),
                &[],
                vec![],
            ),
            repo,
            env: true,
        });
    }
    if v.len() != 4 {
        return Err(Error::Environment(format!(
            "world: the Debian root lacks one of git, make, fakechroot, fakeroot: {}",
            String::from_utf8_lossy(&out)
        )));
    }
    Ok(v)
}

/// `devtools` at `version` with the `config/pacman/*.conf` files of devtools' git `tag`
/// (read from the devtools repository `git_dir`), installed as
/// `/usr/share/devtools/pacman.conf.d/*.conf`; `edit` changes extra.conf (synthetic
/// versions only).
pub fn devtools(
    git_dir: &Path,
    tag: &str,
    version: &str,
    edit: Option<&dyn Fn(&str) -> String>,
) -> Result<PkgSpec> {
    let ls = tools::output(
        "list devtools' pacman configs",
        Command::new("git").arg("--git-dir").arg(git_dir).args([
            "ls-tree",
            "--name-only",
            tag,
            "config/pacman/",
        ]),
    )?;
    let mut entries = Vec::new();
    for p in String::from_utf8_lossy(&ls).lines() {
        let data = tools::output(
            "read a devtools pacman config",
            Command::new("git")
                .arg("--git-dir")
                .arg(git_dir)
                .args(["show", &format!("{tag}:{p}")]),
        )?;
        let name = p.rsplit('/').next().unwrap_or(p);
        let data = match (name, edit) {
            ("extra.conf", Some(f)) => f(&String::from_utf8_lossy(&data)).into_bytes(),
            _ => data,
        };
        entries.push(file(
            &format!("usr/share/devtools/pacman.conf.d/{name}"),
            0o644,
            data,
        ));
    }
    if entries.is_empty() {
        return Err(Error::Environment(format!(
            "world: devtools tag {tag} has no config/pacman/*.conf"
        )));
    }
    Ok(spec(
        "devtools",
        version,
        "any",
        &format!(
            "Tools for Arch Linux package maintainers (reprobox test world: only pacman.conf.d from devtools {tag})"
        ),
        &[],
        entries,
    ))
}

/// The guest kernel of the microVM backend, as Arch's `linux` package lays it out, made from
/// the host's Debian kernel (`linux-image-amd64`): `usr/lib/modules/<release>/vmlinuz`,
/// `pkgbase`, `modules.builtin` and only the modules the guest init loads (with their
/// dependencies), compressed `.ko.zst` as Arch ships them and without `modules.dep` (Arch's
/// depmod runs in a pacman hook). In [core] every day, never installed in an environment:
/// the microVM takes it from the archive of the environment's day.
pub fn linux() -> Result<PkgSpec> {
    let host = crate::vm::HostKernel::newest().map_err(|e| {
        Error::Environment(format!(
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
    Ok(spec(
        "linux",
        &format!("{}-1", release.replace('-', ".")),
        "x86_64",
        &format!(
            "The Linux kernel and modules (test world: Debian's {release}, guest modules only)"
        ),
        &[],
        entries,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_become_alpm_versions() {
        assert_eq!(alpm_version("2.36-9+deb12u14"), "2.36-1");
        assert_eq!(alpm_version("1:2.39.5-0+deb12u2"), "2.39.5-1");
        assert_eq!(alpm_version("9.1-1"), "9.1-1");
        assert_eq!(alpm_version("1.2~rc1.3-2"), "1.2_rc1.3-1");
    }
}
