//! The hermetic egress (`src/egress`, docs/egress.md) on the microVM backend, through the
//! real `reprobox run --backend microvm` in the Debian test root, against loopback upstreams
//! only: the guest reaches the same hosts as a container job, through qemu forwards of its
//! 127.0.0.1:3128/443/80 to the egress's host listeners, with the run's CA bundle and hosts
//! file given as read-only bind disks. A mapped host answers (proxy and /etc/hosts+443), is
//! recorded under its canonical URL and replays offline with the server stopped; unlisted
//! hosts, raw addresses (the guest's catch-all route and forwarders, `vm/init`) and lookups
//! of unlisted names (the resolver, over TCP) are refused at once and recorded. A pinned
//! URL serving other bytes is refused (exit 3, nothing stored), a recorded URL whose
//! upstream changed serves the pin and names the drift, and each run has its own CA.
//!
//! Each run boots a guest (TCG here, tens of seconds); the tests run one at a time.

mod sandbox_common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use reprobox::world::fileserver::FileServer;
use sandbox_common::*;

const HOST: &str = "archive.archlinux.org";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_vm() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

type Run = EgressRun;

/// `reprobox run --backend microvm --json` (`egress_run`): 512 MiB, one vCPU, Debian's
/// kernel, 300 s at most.
fn run(store: &Path, tmp: &Path, egress: &[String], extra: &[&str], script: &str) -> Run {
    let kernel = debian_kernel();
    let vm = [
        "--backend",
        "microvm",
        "--vm-memory",
        "512",
        "--vm-cpus",
        "1",
        "--timeout",
        "300",
        "--kernel",
        kernel.to_str().unwrap(),
    ];
    egress_run(&vm, store, tmp, egress, extra, script)
}

fn sha(b: &[u8]) -> String {
    reprobox::digest::sha256_hex(b)
}

#[test]
fn the_guest_reaches_mapped_hosts_replays_offline_and_is_refused_the_rest() {
    let _one = one_vm();
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let body = b"the archive's bytes, through a microVM\n";
    std::fs::create_dir_all(up.join("some")).unwrap();
    std::fs::write(up.join("some/file"), body).unwrap();
    let server = FileServer::dir(&up).unwrap();
    let rule = vec![format!("{HOST}={}", server.url())];
    let url = format!("https://{HOST}/some/file");
    // One boot: the file through the proxy (printed), then probes, each `name=rc`.
    let probes = egress_probes(HOST);
    let script = format!(
        r#"
curl -fsS {url} || echo "curl failed: $?"
{probes}probe curl_unlisted curl -fsS https://example.org/
probe curl_mapped_noproxy curl -fsS --noproxy '*' {url}
probe dns_unlisted getent hosts unlisted.example
probe dns_mapped getent hosts {HOST}
probe connect_unlisted bash -c 'connect unlisted.example'
probe connect_mapped bash -c 'connect {HOST}'
probe tcp_raw_ip bash -c 'tcp 1.1.1.1 80'
probe tcp_mapped bash -c 'tcp {HOST} 80'
probe tls_raw_ip curl -fsSk --noproxy '*' https://9.9.9.9/some/file
# Where no forwarder is: another port of an address, a nameserver named by address over
# UDP (qemu forwards no UDP), next to the same query to the guest's own 127.0.0.1:53.
probe tcp_raw_ip_other_port bash -c 'tcp 1.1.1.1 25'
# A raw IPv6 address: on a forwarded port (the forwarder names it), and on another.
probe tcp_raw_ip6 bash -c 'tcp 2606:4700::1111 80'
probe tcp_raw_ip6_other_port bash -c 'tcp 2606:4700::1111 25'
probe udp_raw_ns bash -c 'udp 8.8.8.8'
"#
    );
    let r = run(&store, &tmp, &rule, &[], &script);
    assert!(r.out.status.success(), "{}", r.why());
    assert!(
        r.stdout.starts_with(std::str::from_utf8(body).unwrap()),
        "{}",
        r.why()
    );
    for (refused, control) in [
        ("curl_unlisted", "curl_mapped_noproxy"),
        ("dns_unlisted", "dns_mapped"),
        ("connect_unlisted", "connect_mapped"),
        ("tcp_raw_ip", "tcp_mapped"),
        ("tls_raw_ip", "curl_mapped_noproxy"),
        ("tcp_raw_ip_other_port", "tcp_mapped"),
        ("tcp_raw_ip6", "tcp_mapped"),
        ("tcp_raw_ip6_other_port", "tcp_mapped"),
    ] {
        assert_eq!(r.rc(control), 0, "{control}: {}", r.why());
        // Failed, and not by the 5 s timeout (124): refused at once.
        let c = r.rc(refused);
        assert!(c != 0 && c != 124, "{refused} = {c}: {}", r.why());
    }
    // Recorded under the canonical URL, never the location that served it. The proxy's
    // request fetched it; the 443 listener's was a hit.
    let line = format!(
        "egress recorded fetched {} {} 1 {url}\n",
        sha(body),
        body.len()
    );
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("127.0.0.1"), "{}", r.lock());
    let refusals = r.record["egress"]["refusals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let refused = |host: &str, what: &str| {
        refusals
            .iter()
            .any(|x| x["host"] == host && x["what"].as_str().is_some_and(|w| w.contains(what)))
    };
    assert!(
        refused("example.org", "CONNECT example.org:443"),
        "{refusals:?}"
    );
    assert!(
        refused("unlisted.example", "CONNECT unlisted.example:443"),
        "{refusals:?}"
    );
    // Raw addresses, named by the guest's forwarder; lookups, by the resolver (over TCP).
    assert!(refused("1.1.1.1", "connect to 1.1.1.1:80"), "{refusals:?}");
    assert!(refused("9.9.9.9", "connect to 9.9.9.9:443"), "{refusals:?}");
    assert!(
        refused("unlisted.example", "DNS lookup unlisted.example"),
        "{refusals:?}"
    );
    assert!(!refusals.iter().any(|x| x["host"] == HOST), "{refusals:?}");
    // What reaches no forwarder, seen by the guest kernel's trace events: refused at once
    // (the UDP query gets port unreachable: 9, not the timeout) and recorded once each.
    let c = r.rc("udp_raw_ns");
    assert_eq!(c, 9, "udp_raw_ns: {}", r.why());
    for (host, what) in [
        ("1.1.1.1", "TCP connect to 1.1.1.1:25 (bash)"),
        ("8.8.8.8", "UDP datagram to 8.8.8.8:53 (perl)"),
        (
            "2606:4700::1111",
            "TCP connect to [2606:4700::1111]:25 (bash)",
        ),
        ("2606:4700::1111", "connect to [2606:4700::1111]:80"),
    ] {
        assert_refused_once(&refusals, host, what);
    }
    let watch = r.record["enforcement"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["feature"] == "unanswered-connects");
    assert_eq!(
        watch.map(|e| e["enforced"].clone()),
        Some(serde_json::Value::Bool(true)),
        "{}",
        r.why()
    );
    // The run's CA is in the record, its key nowhere in the store or the temporary dir.
    let ca = r.record["egress"]["ca_certificate"].as_str().unwrap_or("");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{}", r.why());
    for d in [&store, &tmp] {
        for e in walkdir(d) {
            let b = std::fs::read(&e).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&b).contains("PRIVATE KEY"),
                "{}",
                e.display()
            );
        }
    }

    // The server stopped: offline, the guest gets the same bytes from the store.
    server.stop();
    let r = run(
        &store,
        &tmp,
        &rule,
        &["--offline"],
        &format!("curl -fsS {url}"),
    );
    assert_offline_hit(&r, body, &url);
}

#[test]
fn pinned_bytes_that_differ_are_refused_drift_serves_the_pin_and_each_run_has_its_own_ca() {
    let _one = one_vm();
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    for d in [up.join("r"), up.join("x")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (good, evil) = (
        b"the published rootfs\n".as_slice(),
        b"something else\n".as_slice(),
    );
    let (v1, v2) = (b"apk index v1\n".as_slice(), b"apk index v2\n".as_slice());
    std::fs::write(up.join("r/evil.tar"), evil).unwrap();
    std::fs::write(up.join("x/APKINDEX"), v1).unwrap();
    let server = FileServer::dir(&up).unwrap();
    let rules = vec![
        format!(
            "gitlab.archlinux.org={}:pinned=/r/evil.tar@{}",
            server.url(),
            sha(good)
        ),
        format!("dl-cdn.alpinelinux.org={}", server.url()),
    ];
    let (pinned, recorded) = (
        "https://gitlab.archlinux.org/r/evil.tar",
        "https://dl-cdn.alpinelinux.org/x/APKINDEX",
    );
    // 1. The recorded URL is pinned on first use; the pinned URL serves other bytes than
    //    its hash: refused in the guest (curl's 22), the run exits 3, nothing of it stored.
    let script = format!("curl -fsS {recorded}; curl -fsS {pinned} >/dev/null; echo curl=$?");
    let a = run(&store, &tmp, &rules, &[], &script);
    assert_eq!(a.out.status.code(), Some(3), "{}", a.why());
    assert!(a.stdout.starts_with("apk index v1"), "{}", a.why());
    assert!(a.stdout.contains("curl=22"), "{}", a.why());
    let tampered = &a.record["egress"]["tampered"][0];
    assert_eq!(tampered["url"], pinned, "{}", a.why());
    assert_eq!(tampered["expected"], sha(good).as_str());
    assert_eq!(tampered["actual"], sha(evil).as_str());
    assert!(
        a.lock()
            .contains(&format!("egress pinned tampered - - 1 {pinned}")),
        "{}",
        a.lock()
    );
    let s = reprobox::inputs::store::Store::open(&store).unwrap();
    assert!(s.blob(&sha(evil)).is_none(), "tampered bytes were stored");
    assert!(
        s.blob(&sha(v1)).is_some(),
        "the recorded bytes were not pinned"
    );

    // 2. Upstream changes the recorded URL's bytes: the guest gets the pinned ones, the
    //    record names the drift with both hashes; and this run's CA is not the first's.
    std::fs::write(up.join("x/APKINDEX"), v2).unwrap();
    let b = run(&store, &tmp, &rules, &[], &format!("curl -fsS {recorded}"));
    assert!(b.out.status.success(), "{}", b.why());
    assert!(b.stdout.starts_with("apk index v1"), "{}", b.why());
    assert_eq!(
        b.record["egress"]["drift"],
        serde_json::json!([{"url": recorded, "pinned": sha(v1), "upstream": sha(v2)}])
    );
    let ca = |r: &Run| {
        r.record["egress"]["ca_certificate"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        ca(&a).starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        a.why()
    );
    assert_ne!(ca(&a), ca(&b));
}

/// Every regular file under `d`.
fn walkdir(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![d.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let md = match std::fs::symlink_metadata(e.path()) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if md.is_dir() {
                todo.push(e.path());
            } else if md.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}
