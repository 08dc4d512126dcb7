//! A nested `podman build` through the hermetic egress (docs/egress.md, "Nested podman
//! builds"), as root on the container backend in the Debian test root, against a loopback
//! upstream only: a RUN step fetches `https://archive.archlinux.org/some/file` (a mapped
//! host, `recorded` policy) through the proxy variables podman passes to RUN containers,
//! trusting the run's CA through the bundle the job's containers.conf binds into every RUN
//! container (the build command names no volume); online, then offline with the upstream
//! stopped and fresh podman storage (the bytes from the store).

mod sandbox_common;

use std::path::Path;

use reprobox::world::fileserver::FileServer;
use sandbox_common::*;

const HOST: &str = "archive.archlinux.org";

/// Import a base image holding dash and curl (with their libraries), build a Containerfile
/// whose RUN step curls the mapped host, print the fetched file from the image.
const SCRIPT: &str = r#"set -eu
B=/tmp/base; mkdir -p $B/bin $B/tmp $B/etc/ssl/certs
cp /bin/dash $B/bin/sh; cp /usr/bin/curl $B/bin/curl
for x in /bin/dash /usr/bin/curl; do
  for l in $(ldd $x | grep -o '/[^ ]*'); do mkdir -p $B$(dirname $l); cp -L $l $B$l; done
done
tar -C $B --sort=name --mtime=@0 --owner=0 --group=0 -cf /tmp/base.tar .
P="podman --root /var/lib/containers/storage --runroot /run/containers --storage-driver vfs --cgroup-manager cgroupfs --events-backend file"
$P import -q /tmp/base.tar localhost/base:1 >/dev/null
mkdir /tmp/ctx
printf 'FROM localhost/base:1\nRUN curl -fsS https://archive.archlinux.org/some/file > /got.txt\n' > /tmp/ctx/Containerfile
$P build -q --isolation chroot --no-cache --timestamp 0 -t t1 /tmp/ctx >/tmp/build.log 2>&1 || { cat /tmp/build.log >&2; exit 1; }
echo "GOT=$(cat "$($P image mount localhost/t1)/got.txt")"
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    record: serde_json::Value,
}

fn build(t: &Path, n: &str, upstream: &str, extra: &[&str]) -> Run {
    require_root();
    let r = debian_rootfs();
    let storage = job_writable_dir(t, &format!("storage{n}"));
    let vartmp = job_writable_dir(t, &format!("vartmp{n}"));
    let tmp = t.join(format!("tmp{n}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let o = std::process::Command::new(bin())
        .args(["run", "--rootfs", r.to_str().unwrap(), "--read-only"])
        .args(["--timeout", "600", "--json", "--store"])
        .arg(t.join("store"))
        .arg("--bind")
        .arg(format!("{}:/var/lib/containers", storage.display()))
        .arg("--bind")
        .arg(format!("{}:/var/tmp", vartmp.display()))
        .args(["--egress", &format!("{HOST}={upstream}")])
        .args(extra)
        .args(["--", "sh", "-c", SCRIPT])
        .env("TMPDIR", &tmp)
        .env_remove("REPROBOX_STORE")
        .output()
        .expect("run reprobox");
    let stdout = text(&o.stdout);
    Run {
        code: o.status.code(),
        record: stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: text(&o.stderr),
    }
}

impl Run {
    fn why(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
    fn lock(&self) -> &str {
        self.record["inputs_lock"].as_str().unwrap_or("")
    }
}

#[test]
fn a_run_step_of_a_nested_podman_build_fetches_a_mapped_host_online_and_offline() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    std::fs::create_dir_all(up.join("some")).unwrap();
    let body = "bytes for the RUN step";
    std::fs::write(up.join("some/file"), format!("{body}\n")).unwrap();
    let sha = reprobox::digest::sha256_hex(format!("{body}\n").as_bytes());
    let url = format!("https://{HOST}/some/file");
    let server = FileServer::dir(&up).unwrap();

    let r = build(t.path(), "1", &server.url(), &[]);
    assert_eq!(r.code, Some(0), "{}", r.why());
    assert!(r.stdout.contains(&format!("GOT={body}\n")), "{}", r.why());
    let line = format!("egress recorded fetched {sha} {} 1 {url}\n", body.len() + 1);
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("127.0.0.1"), "{}", r.lock());
    assert_eq!(
        r.record["egress"]["refusals"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.why()
    );

    // The upstream stopped, fresh podman storage: offline, the RUN step gets the pinned
    // bytes from the store.
    let gone = server.url();
    server.stop();
    let r = build(t.path(), "2", &gone, &["--offline"]);
    assert_eq!(r.code, Some(0), "{}", r.why());
    assert!(r.stdout.contains(&format!("GOT={body}\n")), "{}", r.why());
    let line = format!("egress recorded hit {sha} {} 1 {url}\n", body.len() + 1);
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("fetched"), "{}", r.lock());
}
