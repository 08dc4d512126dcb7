//! The baseline of benches/reproduce_overhead.sh: the real profile's build steps run directly
//! — no reprobox pipeline — in a prepared environment, with the test world's hosts on the
//! build's own loopback as upstream's publishing jobs see them (`world::ci::PublisherNet`:
//! https://archive.archlinux.org, gitlab.archlinux.org, dl-cdn.alpinelinux.org and
//! registry-1.docker.io behind TLS fronts with the world CA).
//!
//! Usage: world_direct WORLD ROOT WORKSPACE TAG [BOOTSTRAP]
//!
//! With BOOTSTRAP (a bootstrap tarball of the world's archive), ROOT must not exist: the
//! tarball is unpacked there and the profile's environment steps run first — pacman pointed
//! at the build day alone, `pacman-key --init`, `--populate archlinux`, `pacman -Syyuu`, the
//! install and optional install steps (without the libfaketime reprobox runs them under) — as
//! reprobox does when it has no prepared environment to reuse.
//!
//! Runs in ROOT (writable: a copy the caller resets), WORKSPACE at /build (a checkout of the
//! release's source revision): `make ARCHIVE_SNAPSHOT=… SOURCE_DATE_EPOCH=…
//! /build/output/Dockerfile.repro` with BUILD_VERSION, upstream's `make-dockerfile.sh` as the
//! profile's make step regenerates the Dockerfile, then the profile's `podman build
//! --no-cache --source-date-epoch=… --rewrite-timestamp -f output/Dockerfile.repro -t TAG
//! output/` (vfs storage, cgroupfs, chroot isolation: what reprobox configures for its nested
//! podman). Exits with reprobox's exit code of the failure (3), the tail of the output on
//! stderr.

use std::path::Path;

use reprobox::world::{self, ci::PublisherNet, pki::WorldCa};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 && a.len() != 6 {
        eprintln!("usage: world_direct WORLD ROOT WORKSPACE TAG [BOOTSTRAP]");
        std::process::exit(2);
    }
    let boot = a.get(5).map(Path::new);
    if let Err(e) = run(
        Path::new(&a[1]),
        Path::new(&a[2]),
        Path::new(&a[3]),
        &a[4],
        boot,
    ) {
        eprintln!("world_direct: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(
    dir: &Path,
    root: &Path,
    ws: &Path,
    tag: &str,
    boot: Option<&Path>,
) -> reprobox::error::Result<()> {
    let m = world::load(dir)?;
    let r = &m.release;
    let ca = WorldCa::load_or_create(dir)?;
    let net = PublisherNet::new(dir, &ca, &dir.join("registry"))?;
    let mut env_steps = String::new();
    let root = match boot {
        None => root.to_path_buf(),
        Some(tarball) => {
            let unpacked = world::env_rootfs::unpack_bootstrap(tarball, root)?;
            env_steps = format!(
                "printf 'Server = https://archive.archlinux.org/repos/{day}/$repo/os/$arch\\n' > /etc/pacman.d/mirrorlist; \
                 pacman-key --init >&2; pacman-key --populate archlinux >&2; pacman -Syyuu --noconfirm >&2; \
                 pacman -S --noconfirm --needed git make fakechroot fakeroot podman >&2; \
                 pacman -Sdd --noconfirm --needed devtools >&2; \
                 pacman -S --noconfirm --needed diffoscope >&2 || true; ",
                day = r.build_day
            );
            unpacked
        }
    };
    let mut run = net.run(&root).bind(ws, "/build");
    // podman reads the cgroup hierarchy's type from /sys.
    run.binds.push(("/sys".into(), "/sys".into()));
    run.cwd = "/build".into();
    run.env.push(("BUILD_VERSION".into(), r.version.clone()));
    run.env.push(("BUILDAH_ISOLATION".into(), "chroot".into()));
    run.env
        .push(("SOURCE_DATE_EPOCH".into(), r.source_date_epoch.to_string()));
    let sde = r.source_date_epoch;
    let out = run.sh(
        "make, make-dockerfile.sh and podman build",
        &format!(
            "set -e; {env_steps}\
             make ARCHIVE_SNAPSHOT={snapshot} SOURCE_DATE_EPOCH={sde} /build/output/Dockerfile.repro >&2; \
             scripts/make-dockerfile.sh repro.tar.zst repro output/ true repro {sde} >&2; \
             podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file build --no-cache --source-date-epoch={sde} --rewrite-timestamp -f output/Dockerfile.repro -t {tag} output/ >&2; \
             podman --storage-driver vfs image inspect --format '{{{{.Id}}}}' {tag}",
            snapshot = r.snapshot,
        ),
    )?;
    println!("{}", String::from_utf8_lossy(&out).trim());
    Ok(())
}
