//! Nested `podman build` inside a `reprobox run` job: a two-stage Containerfile with a
//! RUN step, no network at all, built twice with the same image ID.

mod sandbox_common;

use sandbox_common::*;
use std::path::Path;

const SCRIPT: &str = r#"set -eu
B=/tmp/base; mkdir -p $B/bin $B/tmp
cp /bin/dash $B/bin/sh
for l in $(ldd /bin/dash | grep -o '/[^ ]*'); do mkdir -p $B$(dirname $l); cp $l $B$l; done
tar -C $B --sort=name --mtime=@0 --owner=0 --group=0 -cf /tmp/base.tar .
P="podman --root /var/lib/containers/storage --runroot /run/containers --storage-driver vfs --cgroup-manager cgroupfs --events-backend file"
$P import -q /tmp/base.tar localhost/base:1 >/dev/null
mkdir /tmp/ctx
printf 'FROM localhost/base:1 AS build\nRUN echo built > /out.txt\nFROM localhost/base:1\nCOPY --from=build /out.txt /out.txt\n' > /tmp/ctx/Containerfile
for n in 1 2; do
  $P build -q --isolation chroot --no-cache --timestamp 0 -t t$n /tmp/ctx >/tmp/build$n.log 2>&1 || { cat /tmp/build$n.log >&2; exit 1; }
  echo "ID$n=$($P images --no-trunc --format '{{.ID}}' localhost/t$n)"
done
"#;

#[test]
fn nested_podman_build_is_reproducible_without_network() {
    require_root();
    let r = debian_rootfs();
    let t = tempfile::tempdir().unwrap();
    let storage = job_writable_dir(t.path(), "storage");
    let vartmp = job_writable_dir(t.path(), "vartmp");
    let o = run(&[
        "--rootfs",
        r.to_str().unwrap(),
        "--read-only",
        "--timeout",
        "600",
        "--bind",
        &format!("{}:/var/lib/containers", storage.display()),
        "--bind",
        &format!("{}:/var/tmp", vartmp.display()),
        "--",
        "sh",
        "-c",
        SCRIPT,
    ]);
    let so = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {so}\nstderr: {}",
        text(&o.stderr)
    );
    let id = |n: &str| {
        so.lines()
            .find_map(|l| l.strip_prefix(&format!("ID{n}=")))
            .unwrap_or_else(|| panic!("no ID{n} in {so}"))
            .to_string()
    };
    let (a, b) = (id("1"), id("2"));
    assert!(a.len() >= 64, "{a}");
    assert_eq!(a, b, "two builds gave different image IDs");
}

/// The same nested build, configured the way a reproduction configures a nested-containers
/// step (`reprobox::job::NestedPodman`: storage.conf bound read-only and named by
/// CONTAINERS_STORAGE_CONF, a containers.conf.d drop-in, BUILDAH_ISOLATION): podman's
/// command line carries no storage, cgroup, events or isolation flag. The root stays
/// read-only: the drop-in goes into a copy of the root's /etc/containers bound over it.
const PLAIN_SCRIPT: &str = r#"set -eu
B=/tmp/base; mkdir -p $B/bin $B/tmp
cp /bin/dash $B/bin/sh
for l in $(ldd /bin/dash | grep -o '/[^ ]*'); do mkdir -p $B$(dirname $l); cp $l $B$l; done
tar -C $B --sort=name --mtime=@0 --owner=0 --group=0 -cf /tmp/base.tar .
podman import -q /tmp/base.tar localhost/base:1 >/dev/null
mkdir /tmp/ctx
printf 'FROM localhost/base:1 AS build\nRUN echo built > /out.txt\nFROM localhost/base:1\nCOPY --from=build /out.txt /out.txt\n' > /tmp/ctx/Containerfile
podman build -q --no-cache --timestamp 0 -t t1 /tmp/ctx >/tmp/build.log 2>&1 || { cat /tmp/build.log >&2; exit 1; }
echo "DRIVER=$(podman info --format '{{.Store.GraphDriverName}}')"
echo "CGROUPS=$(podman info --format '{{.Host.CgroupManager}}')"
echo "EVENTS=$(podman info --format '{{.Host.EventLogger}}')"
echo "ID=$(podman images --no-trunc --format '{{.ID}}' localhost/t1)"
"#;

#[test]
fn nested_podman_build_works_with_reproboxs_configuration_and_no_flags() {
    use reprobox::job::NestedPodman;
    require_root();
    let r = debian_rootfs();
    let t = tempfile::tempdir().unwrap();
    let storage = job_writable_dir(t.path(), "storage");
    let vartmp = job_writable_dir(t.path(), "vartmp");
    let runc = job_writable_dir(t.path(), "run-containers");
    let conf = t.path().join("conf");
    NestedPodman::write(&conf).unwrap();
    let etc = t.path().join("etc-containers");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(r.join("etc/containers"))
        .arg(&etc)
        .status()
        .unwrap();
    assert!(cp.success());
    let dropin = Path::new(NestedPodman::CONTAINERS_CONF_DROPIN);
    let dropin_dir = etc.join("containers.conf.d");
    std::fs::create_dir_all(&dropin_dir).unwrap();
    std::fs::copy(
        conf.join("containers.conf"),
        dropin_dir.join(dropin.file_name().unwrap()),
    )
    .unwrap();
    let mut args: Vec<String> = [
        "--rootfs",
        r.to_str().unwrap(),
        "--read-only",
        "--timeout",
        "600",
    ]
    .map(String::from)
    .to_vec();
    for (src, dst) in [
        (storage.display().to_string(), "/var/lib/containers"),
        (vartmp.display().to_string(), "/var/tmp"),
        (runc.display().to_string(), "/run/containers"),
    ] {
        args.push("--bind".into());
        args.push(format!("{src}:{dst}"));
    }
    args.push("--bind".into());
    args.push(format!("{}:{}:ro", conf.display(), NestedPodman::JOB_DIR));
    args.push("--bind".into());
    args.push(format!("{}:/etc/containers:ro", etc.display()));
    for (k, v) in NestedPodman::env() {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(["--", "sh", "-c", PLAIN_SCRIPT].map(String::from));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&a);
    let so = text(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {so}\nstderr: {}",
        text(&o.stderr)
    );
    assert!(so.contains("DRIVER=vfs"), "{so}");
    assert!(so.contains("CGROUPS=cgroupfs"), "{so}");
    assert!(so.contains("EVENTS=file"), "{so}");
    assert!(
        so.lines()
            .any(|l| l.strip_prefix("ID=").is_some_and(|id| id.len() >= 64)),
        "{so}"
    );
}
