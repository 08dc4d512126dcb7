//! The world's Alpine side (`world::alpine`), as root: `library/alpine:3.23` in registry
//! storage and the v3.23/main repository are built into a temporary directory (twice: the
//! same bytes), served on loopback (Debian's docker-registry, plain file servers), and a
//! nested `podman build` of a Dockerfile shaped like the release's verify stage runs inside
//! `reprobox run` in the Debian test root with reprobox's egress as the only way out:
//! `FROM alpine:3.23` (the short name, through the root's registries.conf.d alias and the
//! `registry` policy), `RUN apk add --no-cache curl tar zstd` (the apk stand-in, over HTTPS
//! through the proxy), then curl of the rootfs from gitlab.archlinux.org, `sha256sum -c`
//! and GNU tar unpacking the .tar.zst with zstd.

mod sandbox_common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reprobox::world::alpine;
use reprobox::world::fileserver::FileServer;
use reprobox::world::pki::WorldCa;
use reprobox::world::registry;
use sandbox_common::*;

const V: &str = "20260520.0.1";

struct Registry(Child, String);
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(storage: &Path, work: &Path) -> Registry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = registry::write_config(
        &work.join("registry.yml"),
        storage,
        &format!("127.0.0.1:{port}"),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt-get install docker-registry)");
    let r = Registry(child, format!("http://127.0.0.1:{port}"));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("docker-registry did not listen on {port}");
}

/// A small rootfs tarball, zstd-compressed, as the release's package URL serves it.
fn rootfs_tar_zst() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        (
            "etc/os-release",
            &b"NAME=\"Arch Linux\"\nBUILD_ID=rolling\n"[..],
        ),
        ("usr/share/marker", &b"world rootfs\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_779_235_200);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut z = zstd::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&tar).unwrap();
    z.finish().unwrap()
}

const SCRIPT: &str = r#"set -eu
P="podman --root /var/lib/containers/storage --runroot /run/containers --storage-driver vfs --cgroup-manager cgroupfs --events-backend file"
mkdir /tmp/ctx
cat > /tmp/ctx/Dockerfile <<'EOF'
FROM alpine:3.23 AS verify

RUN apk add --no-cache curl tar zstd

RUN curl -sOJL "https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/@V@/repro-@V@.tar.zst" && \
    echo "@SHA@  repro-@V@.tar.zst" > /tmp/sha256sums.txt && \
    sha256sum -c /tmp/sha256sums.txt && \
    mkdir /rootfs && \
    tar -C /rootfs --extract --file repro-@V@.tar.zst
EOF
$P build --isolation chroot --no-cache -t verify /tmp/ctx >/tmp/build.log 2>&1 || { cat /tmp/build.log >&2; exit 1; }
M=$($P image mount localhost/verify)
echo "MARKER=$(cat "$M/rootfs/usr/share/marker")"
echo "TAR=$(test -f "$M/usr/bin/tar" && ! test -L "$M/usr/bin/tar" && echo gnu) $(test -x "$M/usr/bin/zstd" && echo zstd)"
echo "INSTALLED=$(grep '^P:' "$M/lib/apk/db/installed" | tr '\n' ' ')"
cat /tmp/build.log
"#;

#[test]
fn the_verify_stage_runs_on_the_worlds_alpine_through_the_egress() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let world = t.path().join("world");
    let storage = world.join("registry");
    let debian = debian_rootfs();
    let ca = WorldCa::load_or_create(&world).unwrap();

    let started = std::time::Instant::now();
    let rec = alpine::build(&world, &ca, &storage, &debian).unwrap();
    eprintln!("alpine::build: {:?}", started.elapsed());
    // Deterministic: a second build (same CA, same Debian root) gives the same bytes, and in
    // another directory the same image digest.
    assert_eq!(alpine::build(&world, &ca, &storage, &debian).unwrap(), rec);
    let other = t.path().join("other");
    std::fs::create_dir_all(other.join("pki")).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(world.join("pki").join(f), other.join("pki").join(f)).unwrap();
    }
    let ca2 = WorldCa::load_or_create(&other).unwrap();
    let rec2 = alpine::build(&other, &ca2, &other.join("registry"), &debian).unwrap();
    assert_eq!(rec2.image, rec.image);
    assert_eq!(rec2.packages, rec.packages);
    assert_eq!(
        registry::read_image(&storage, alpine::IMAGE_REPO, alpine::IMAGE_TAG).unwrap(),
        rec.image
    );
    let names: Vec<&str> = rec.packages.iter().map(|p| p.name.as_str()).collect();
    for n in ["curl", "tar", "zstd", "libcurl", "libzstd", "libacl"] {
        assert!(names.contains(&n), "{names:?}");
    }
    for p in &rec.packages {
        let b = std::fs::read(rec.repository_dir.join(&p.file)).unwrap();
        assert_eq!(reprobox::digest::sha256_hex(&b), p.sha256);
    }

    // The servers: the registry (Docker Hub), the Alpine CDN, GitLab's package URL.
    let reg = start_registry(&storage, t.path());
    let cdn = FileServer::dir(&world.join("alpine")).unwrap();
    let gitlab_dir = t.path().join("gitlab");
    let pkg = gitlab_dir.join(format!("api/v4/projects/10185/packages/generic/rootfs/{V}"));
    std::fs::create_dir_all(&pkg).unwrap();
    let rootfs = rootfs_tar_zst();
    let rootfs_sha = reprobox::digest::sha256_hex(&rootfs);
    std::fs::write(pkg.join(format!("repro-{V}.tar.zst")), &rootfs).unwrap();
    let gitlab = FileServer::dir(&gitlab_dir).unwrap();

    let script = SCRIPT.replace("@V@", V).replace("@SHA@", &rootfs_sha);
    let tmp = t.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let (cdn_url, gitlab_url, reg_url) = (cdn.url(), gitlab.url(), reg.1.clone());
    // One nested build in fresh podman storage; online, or offline from the store.
    let run = |n: &str, offline: bool| {
        let containers = job_writable_dir(t.path(), &format!("containers{n}"));
        let vartmp = job_writable_dir(t.path(), &format!("vartmp{n}"));
        // Short-name resolution records the alias it used (short-name-aliases.conf).
        let cache = job_writable_dir(t.path(), &format!("cache{n}"));
        let started = std::time::Instant::now();
        let o = Command::new(bin())
            .args(["run", "--rootfs", debian.to_str().unwrap(), "--read-only"])
            .args(["--timeout", "600", "--json", "--store"])
            .arg(t.path().join("store"))
            .arg("--bind")
            .arg(format!("{}:/var/lib/containers", containers.display()))
            .arg("--bind")
            .arg(format!("{}:/var/tmp", vartmp.display()))
            .arg("--bind")
            .arg(format!("{}:/var/cache/containers", cache.display()))
            .args(["--egress", &format!("dl-cdn.alpinelinux.org={cdn_url}")])
            .args(["--egress", &format!("gitlab.archlinux.org={gitlab_url}")])
            .args([
                "--egress",
                &format!("registry-1.docker.io={reg_url}:registry"),
            ])
            .args(if offline { &["--offline"][..] } else { &[][..] })
            .args(["--", "sh", "-c", &script])
            .env("TMPDIR", &tmp)
            .env_remove("REPROBOX_STORE")
            .output()
            .expect("run reprobox");
        eprintln!("the nested build ({n}): {:?}", started.elapsed());
        let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
        let why = format!(
            "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            o.status.code()
        );
        assert_eq!(o.status.code(), Some(0), "{why}");
        assert!(stdout.contains("MARKER=world rootfs\n"), "{why}");
        // GNU tar (not busybox's, which cannot read zstd: "tar: short read") did the
        // unpacking, with zstd beside it.
        assert!(stdout.contains("TAR=gnu zstd\n"), "{why}");
        assert!(stdout.contains("repro-20260520.0.1.tar.zst: OK"), "{why}");
        (stdout, why)
    };
    let (stdout, why) = run("1", false);
    let installed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INSTALLED="))
        .unwrap_or("");
    for n in ["P:curl", "P:tar", "P:zstd", "P:libcurl"] {
        assert!(installed.split(' ').any(|p| p == n), "{why}");
    }
    let record: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default();
    let lock = record["inputs_lock"].as_str().unwrap_or("");
    for url in [
        "https://registry-1.docker.io/v2/library/alpine/manifests/3.23".to_string(),
        "https://dl-cdn.alpinelinux.org/alpine/v3.23/main/x86_64/APKINDEX.tar.gz".to_string(),
        format!(
            "https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/{V}/repro-{V}.tar.zst"
        ),
    ] {
        assert!(lock.contains(&url), "{url} not in the lock:\n{lock}");
    }
    let curl = rec.packages.iter().find(|p| p.name == "curl").unwrap();
    assert!(
        lock.contains(&format!(
            "{} {} 1 https://dl-cdn.alpinelinux.org/alpine/v3.23/main/x86_64/{}\n",
            curl.sha256,
            std::fs::metadata(rec.repository_dir.join(&curl.file))
                .unwrap()
                .len(),
            curl.file
        )),
        "{lock}"
    );
    assert!(lock.contains(&rec.image.manifest_digest[7..]), "{lock}");
    assert_eq!(
        record["egress"]["refusals"].as_array().map(Vec::len),
        Some(0),
        "{why}"
    );

    // The servers stopped, fresh podman storage: offline, the same build from the store
    // (the tag's pinned manifest, the apk index and packages, the rootfs), every request a hit.
    drop(reg);
    cdn.stop();
    gitlab.stop();
    let (stdout, why) = run("2", true);
    let record: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default();
    let lock = record["inputs_lock"].as_str().unwrap_or("");
    assert!(lock.contains("egress registry hit"), "{lock}\n{why}");
    assert!(
        lock.contains(&format!("egress recorded hit {} ", curl.sha256)),
        "{lock}"
    );
    assert!(!lock.contains(" fetched "), "{lock}");
}
