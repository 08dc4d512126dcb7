//! Nested `podman build` inside a `reprobox run` job: a two-stage Containerfile with a
//! RUN step, no network at all, built twice with the same image ID.

mod sandbox_common;

use sandbox_common::*;

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
