//! The new world's Arch side (world::arch): upstream's UNMODIFIED archlinux-docker make
//! builds a deterministic rootfs in the world's build environment, after the real profile's
//! rollback and install steps, with pacman downloading from https://archive.archlinux.org
//! (a TLS front on the build's loopback) and checking the world's package signatures.
//! Needs root, bwrap, gpg, socat, the Debian root and /work/shared/upstream (or
//! REPROBOX_UPSTREAM_DIR); it fails with the reason, never skips. The archive is the shared
//! test world's (tests/reproduce_common: $REPROBOX_TEST_CACHE/world-upstream, built once).

use std::path::{Path, PathBuf};

mod reproduce_common;

use reproduce_common::sh;

use reprobox::world::arch::{self, ArchRecord};
use reprobox::world::env_rootfs::{EnvRun, unpack_bootstrap};
use reprobox::world::pki::WorldCa;

const REVISION: &str = "34b87485162b028c8d957bdcd2674359d883cd21";

/// The shared test world's directory, CA and archive record.
fn world() -> (PathBuf, WorldCa, ArchRecord) {
    let (dir, m) = reproduce_common::world();
    let rec: ArchRecord = serde_json::from_value(m.arch.clone()).expect("world.json's arch");
    let ca = WorldCa::load_or_create(dir).unwrap();
    (dir.clone(), ca, rec)
}

/// The real profile's rollback and install steps, in an unpacked bootstrap.
fn prepare_env(dir: &Path, ca: &WorldCa, iso: &str, day: &str, tmp: &Path) -> PathBuf {
    let tarball = dir.join(format!(
        "archive/iso/{iso}/archlinux-bootstrap-{iso}-x86_64.tar.zst"
    ));
    let root = unpack_bootstrap(&tarball, &tmp.join(format!("env-{iso}"))).unwrap();
    let mut run = EnvRun::new(&root, true);
    run.services = arch::archive_services(dir, ca).unwrap();
    run.sh(
        "rollback and install",
        &format!(
            "exec 2>&1; set -e; printf 'Server = https://archive.archlinux.org/repos/{day}/$repo/os/$arch\\n' > /etc/pacman.d/mirrorlist; \
             pacman-key --init; pacman-key --populate archlinux; pacman -Syyuu --noconfirm; \
             pacman -S --noconfirm --needed git make fakechroot fakeroot podman; \
             pacman -Sdd --noconfirm --needed devtools"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    root
}

/// Upstream's make in `env` (read-only root, a scratch pacman cache, the workspace at
/// /build): returns the workspace.
fn make(dir: &Path, ca: &WorldCa, env: &Path, tmp: &Path, n: u32) -> PathBuf {
    let ws = tmp.join(format!("ws{n}"));
    let cache = tmp.join(format!("pkgcache{n}"));
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(env.join("build")).unwrap();
    sh(&format!(
        "git clone -q '{}' '{}' && git -C '{1}' -c advice.detachedHead=false checkout -q {REVISION}",
        reproduce_common::upstream_dir()
            .join("archlinux-docker.bundle")
            .display(),
        ws.display()
    ));
    let mut run = EnvRun::new(env, false)
        .bind(&ws, "/build")
        .bind(&cache, "/var/cache/pacman/pkg");
    run.services = arch::archive_services(dir, ca).unwrap();
    run.cwd = "/build".into();
    run.env
        .push(("BUILD_VERSION".into(), "20260520.0.1".into()));
    run.sh(
        "upstream make",
        "exec 2>&1; make ARCHIVE_SNAPSHOT=2026/05/19 SOURCE_DATE_EPOCH=1779235200 $PWD/output/Dockerfile.repro",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    ws
}

fn sha(p: &Path) -> String {
    reprobox::digest::sha256_file(p).unwrap()
}

#[test]
fn upstream_make_builds_a_deterministic_rootfs_in_the_world() {
    let t0 = std::time::Instant::now();
    let (dir, ca, rec) = world();
    eprintln!("world: {:?}", t0.elapsed());
    // The record: days, drift, env versions per day and bootstrap.
    assert_eq!(rec.days, ["2026/05/19", "2026/05/20", "2026/06/02"]);
    assert_eq!(rec.env_per_day["2026/05/20"]["devtools"], "1.5.0-1");
    assert_eq!(rec.env_per_day["2026/06/02"]["devtools"], "1.5.1-1");
    assert_eq!(rec.bootstraps[0].packages["devtools"], "1.4.0-1");
    assert_eq!(
        rec.packages["2026/05/19"]["base"],
        rec.packages["2026/05/20"]["base"]
    );
    // Signed: a .sig beside each package, %PGPSIG% in the database.
    let core = dir.join("archive/repos/2026/05/19/core/os/x86_64");
    assert!(
        core.join(format!("{}.sig", rec.packages["2026/05/19"]["base"].file))
            .exists()
    );
    let db = sh(&format!(
        "tar -xOzf '{}' | grep -c '%PGPSIG%'",
        core.join("core.db.tar.gz").display()
    ));
    assert_eq!(
        db.trim().parse::<usize>().unwrap(),
        rec.packages["2026/05/19"]
            .values()
            .filter(|r| r.repo == "core")
            .count()
    );

    let tmp = tempfile::Builder::new()
        .prefix("reprobox-world-arch-")
        .tempdir()
        .unwrap();
    let env = prepare_env(&dir, &ca, "2026.05.01", "2026/05/20", tmp.path());
    let q = sh(&format!(
        "chroot '{}' /usr/lib/reprobox-world/pacman-6.0.2/pacman -Q",
        env.display()
    ));
    assert!(q.contains("devtools 1.5.0-1\n"), "{q}");
    assert!(
        q.contains("podman 5.6.2-1\n") && q.contains("pacman 7.1.0-1\n"),
        "{q}"
    );
    eprintln!("env ready: {:?}", t0.elapsed());

    let ws1 = make(&dir, &ca, &env, tmp.path(), 1);
    eprintln!("make 1: {:?}", t0.elapsed());
    let out = ws1.join("output");
    let rootfs = out.join("repro.tar.zst");
    let recorded = std::fs::read_to_string(out.join("repro.tar.zst.SHA256")).unwrap();
    let sha1 = sha(&rootfs);
    assert_eq!(recorded, format!("{sha1}  repro.tar.zst\n"));
    let dockerfile = std::fs::read_to_string(out.join("Dockerfile.repro")).unwrap();
    assert!(
        dockerfile.contains("org.opencontainers.image.version=\"20260520.0.1\""),
        "{dockerfile}"
    );
    assert!(dockerfile.contains(REVISION), "{dockerfile}");

    // The image's files.
    let list = sh(&format!("tar --zstd -tvf '{}'", rootfs.display()));
    assert!(list.contains(" ./usr/lib/os-release\n"), "{list}");
    assert!(
        list.contains("./etc/os-release -> /usr/lib/os-release"),
        "{list}"
    );
    let x = |p: &str| sh(&format!("tar --zstd -xOf '{}' '{p}'", rootfs.display()));
    assert!(
        x("./etc/shadow").starts_with("root:!:"),
        "{}",
        x("./etc/shadow")
    );
    assert!(x("./usr/lib/os-release").contains("\nBUILD_ID=rolling\n"));
    let extra = sh(&format!(
        "git -C /tmp --git-dir '{}' show v1.5.0:config/pacman/extra.conf",
        dir.join("work/devtools.git").display()
    ));
    let noextract = std::fs::read_to_string(ws1.join("pacman-conf.d-noextract.conf")).unwrap();
    let expected = format!("{extra}{noextract}").replace(
        "#DisableSandboxFilesystem\n",
        "# No kernel landlock in containerd\nDisableSandboxFilesystem\n",
    );
    assert_eq!(x("./etc/pacman.conf"), expected);
    let installdates = sh(&format!(
        "d=$(mktemp -d) && tar --zstd -xf '{}' -C $d ./var/lib/pacman/local && cat $d/var/lib/pacman/local/*/desc | grep -A1 '^%INSTALLDATE%' | grep -v -e '^%' -e '^--' | sort -u; rm -rf $d",
        rootfs.display()
    ));
    assert_eq!(installdates, "1779235200\n");
    // make-rootfs.sh empties the keyring directory; the directory stays.
    assert!(list.contains(" ./etc/pacman.d/gnupg/\n"), "{list}");
    assert!(
        !list
            .lines()
            .any(|l| l.contains("./etc/pacman.d/gnupg/") && !l.ends_with("./etc/pacman.d/gnupg/")),
        "keyring files left: {list}"
    );

    // The image's RUN and CMD work in the rootfs.
    let img = tmp.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    sh(&format!(
        "tar --zstd -xpf '{}' -C '{}'",
        rootfs.display(),
        img.display()
    ));
    let ran = EnvRun::new(&img, true)
        .sh(
            "the image's RUN",
            "ldconfig && sed -i '/BUILD_ID/a VERSION_ID=20260520.0.1' /etc/os-release && rm -f /var/cache/ldconfig/aux-cache && /usr/bin/bash -c 'cat /etc/os-release; ls /usr/bin/bash'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&ran).contains("VERSION_ID=20260520.0.1"));

    // Deterministic: a second checkout and build gives the same bytes.
    let ws2 = make(&dir, &ca, &env, tmp.path(), 2);
    eprintln!("make 2: {:?}", t0.elapsed());
    assert_eq!(sha(&ws2.join("output/repro.tar.zst")), sha1);
}

/// The environment drift: iso/2026.06.01 (devtools 1.5.1-1) rolled back to the build day
/// gives the same rootfs; left on 2026/06/02 it gives another one, whose /etc/pacman.conf
/// has the synthetic devtools' `ParallelDownloads = 10`.
#[test]
fn the_later_environment_drifts_and_rolling_back_reproduces() {
    let (dir, ca, _) = world();
    let tmp = tempfile::Builder::new()
        .prefix("reprobox-world-arch-drift-")
        .tempdir()
        .unwrap();
    let base = prepare_env(&dir, &ca, "2026.05.01", "2026/05/20", tmp.path());
    let want = sha(&make(&dir, &ca, &base, tmp.path(), 1).join("output/repro.tar.zst"));

    let t2 = tmp.path().join("b");
    std::fs::create_dir_all(&t2).unwrap();
    let back = prepare_env(&dir, &ca, "2026.06.01", "2026/05/20", &t2);
    let q = sh(&format!(
        "chroot '{}' /usr/lib/reprobox-world/pacman-6.0.2/pacman -Q devtools",
        back.display()
    ));
    assert_eq!(q, "devtools 1.5.0-1\n");
    assert_eq!(
        sha(&make(&dir, &ca, &back, &t2, 2).join("output/repro.tar.zst")),
        want
    );

    let t3 = tmp.path().join("c");
    std::fs::create_dir_all(&t3).unwrap();
    let later = prepare_env(&dir, &ca, "2026.06.01", "2026/06/02", &t3);
    let ws = make(&dir, &ca, &later, &t3, 3);
    let rootfs = ws.join("output/repro.tar.zst");
    assert_ne!(sha(&rootfs), want);
    let conf = sh(&format!(
        "tar --zstd -xOf '{}' ./etc/pacman.conf",
        rootfs.display()
    ));
    assert!(conf.contains("ParallelDownloads = 10\n"), "{conf}");
}
