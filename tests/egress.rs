//! The hermetic egress (`src/egress`, docs/egress.md) through the real `reprobox run`, as
//! root on the container backend, in the Debian test root, against loopback upstreams only
//! (`world::fileserver`): mapped hosts answer, pinned on first use and replayed offline;
//! everything else is refused, each refusal next to a positive control; pinned bytes that
//! differ are refused and never stored; drift is named; the run's CA key is never written.

mod sandbox_common;

use std::path::{Path, PathBuf};

use reprobox::world::fileserver::FileServer;
use sandbox_common::*;

const HOST: &str = "archive.archlinux.org";

type Run = EgressRun;

/// The container backend's `reprobox run --json` (`egress_run`).
fn run(store: &Path, tmp: &Path, egress: &[String], extra: &[&str], script: &str) -> Run {
    egress_run(&[], store, tmp, egress, extra, script)
}

fn sha(b: &[u8]) -> String {
    reprobox::digest::sha256_hex(b)
}

fn upstream(dir: &Path, files: &[(&str, &[u8])]) -> FileServer {
    for (p, b) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b).unwrap();
    }
    FileServer::dir(dir).unwrap()
}

#[test]
fn a_mapped_host_answers_and_replays_offline_from_the_store() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let body = b"the archive's bytes\n";
    let server = upstream(&up, &[("some/file", body)]);
    let rule = vec![format!("{HOST}={}", server.url())];
    let url = format!("https://{HOST}/some/file");
    let r = run(&store, &tmp, &rule, &[], &format!("curl -fsS {url}"));
    assert!(r.out.status.success(), "{}", r.why());
    assert!(
        r.stdout.starts_with(std::str::from_utf8(body).unwrap()),
        "{}",
        r.why()
    );
    let line = format!(
        "egress recorded fetched {} {} 1 {url}\n",
        sha(body),
        body.len()
    );
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("127.0.0.1"), "{}", r.lock());
    // Stopped: the second run answers from the store, offline, with only hits.
    server.stop();
    let r = run(
        &store,
        &tmp,
        &rule,
        &["--offline"],
        &format!("curl -fsS {url}"),
    );
    assert_offline_hit(&r, body, &url);
    // Offline, a miss fails the request and the run (exit 3), naming the URL.
    let other = format!("https://{HOST}/other/file");
    let r = run(
        &store,
        &tmp,
        &rule,
        &["--offline"],
        &format!("curl -fsS {other}"),
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.why());
    assert!(text(&r.out.stderr).contains(&other), "{}", r.why());
    assert!(
        r.lock()
            .contains(&format!("egress recorded miss - - 1 {other}")),
        "{}",
        r.lock()
    );
}

#[test]
fn everything_else_is_refused_at_once_and_recorded_each_next_to_its_control() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let server = upstream(&up, &[("some/file", b"ok\n")]);
    let rule = vec![format!("{HOST}={}", server.url())];
    let probes = egress_probes(HOST);
    // Each probe prints `name=rc`; a control is the same probe against the mapped host.
    let script = format!(
        r#"
{probes}probe curl_unlisted curl -fsS https://example.org/
probe curl_mapped curl -fsS https://{HOST}/some/file
probe curl_unlisted_noproxy curl -fsS --noproxy '*' https://example.org/
probe curl_mapped_noproxy curl -fsS --noproxy '*' https://{HOST}/some/file
probe tcp_raw_ip bash -c 'tcp 1.1.1.1 80'
probe tcp_mapped bash -c 'tcp {HOST} 80'
probe tls_raw_ip curl -fsSk --noproxy '*' https://1.1.1.1/some/file
probe tls_mapped curl -fsS --noproxy '*' https://{HOST}/some/file
probe dns_unlisted getent hosts unlisted.example
probe dns_mapped getent hosts {HOST}
probe connect_unlisted bash -c 'connect unlisted.example'
probe connect_mapped bash -c 'connect {HOST}'
probe connect_raw_ip bash -c 'connect 1.1.1.1'
# Where no listener of the egress is: another port of a raw address, a raw IPv6 address, a
# nameserver named by address (the kernel refuses them; the sandbox's watch records them).
probe tcp_raw_ip_other_port bash -c 'tcp 1.1.1.1 25'
probe tcp_raw_ip6 bash -c 'tcp 2606:4700::1111 80'
probe udp_raw_ns bash -c 'udp 8.8.8.8'
probe udp_ns bash -c 'udp 127.0.0.1'
# A port of the job's own loopback that nothing listens on is refused and recorded too; the
# same kind of connect from a network namespace of the job's own making (a nested
# container's, with nothing in it) is not the job's network and is not judged.
probe tcp_loopback_unlistened bash -c 'tcp 127.0.0.1 27'
probe tcp_nested_netns unshare -n bash -c 'tcp 1.1.1.1 26'
# The resolver itself, past /etc/hosts: PROTO NAME -> its rcode, answer count, last 4 bytes.
dnsq() {{ timeout 5 perl -MIO::Socket::INET -e '
  my ($proto, $name) = @ARGV; my $r;
  my $q = pack("n6", 0x1234, 0x0100, 1, 0, 0, 0)
    . join("", map {{ chr(length) . $_ }} split /\./, $name) . "\0" . pack("n2", 1, 1);
  my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => 53, Proto => $proto)
    or die "socket: $!";
  if ($proto eq "tcp") {{ print $s pack("n", length $q) . $q; read($s, my $l, 2);
    read($s, $r, unpack("n", $l)); }} else {{ $s->send($q); $s->recv($r, 512); }}
  my ($id, $fl, $qd, $an) = unpack("n4", $r);
  printf "id=%x rcode=%d an=%d ip=%s\n", $id, $fl & 15, $an, join(".", unpack("C4", substr($r, -4)));
  ' "$@"; }}
echo "udp_mapped: $(dnsq udp {HOST})"
echo "tcp_mapped: $(dnsq tcp {HOST})"
echo "udp_unlisted: $(dnsq udp other.example)"
echo "resolv: $(tr '\n' ' ' < /etc/resolv.conf)"
"#
    );
    let r = run(&store, &tmp, &rule, &[], &script);
    assert!(r.out.status.success(), "{}", r.why());
    for (refused, control) in [
        ("curl_unlisted", "curl_mapped"),
        ("curl_unlisted_noproxy", "curl_mapped_noproxy"),
        ("tcp_raw_ip", "tcp_mapped"),
        ("tls_raw_ip", "tls_mapped"),
        ("connect_raw_ip", "connect_mapped"),
        ("dns_unlisted", "dns_mapped"),
        ("connect_unlisted", "connect_mapped"),
        ("tcp_raw_ip_other_port", "tcp_mapped"),
        ("tcp_raw_ip6", "tcp_mapped"),
        ("udp_raw_ns", "udp_ns"),
        ("tcp_loopback_unlistened", "tcp_mapped"),
        ("tcp_nested_netns", "tcp_mapped"),
    ] {
        assert_eq!(r.rc(control), 0, "{control}: {}", r.why());
        // Failed, and not by the 5 s timeout (124): refused at once.
        let c = r.rc(refused);
        assert!(c != 0 && c != 124, "{refused} = {c}: {}", r.why());
    }
    let refusals = r.refusals();
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
    // Lookups of unlisted names: getent's, and the curl that ignores the proxy.
    assert!(
        refused("unlisted.example", "DNS lookup unlisted.example"),
        "{refusals:?}"
    );
    assert!(
        refused("example.org", "DNS lookup example.org"),
        "{refusals:?}"
    );
    assert!(
        refused("other.example", "DNS lookup other.example (A)"),
        "{refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .filter(|x| x["what"]
                .as_str()
                .is_some_and(|w| w.starts_with("DNS lookup")))
            .all(|x| x["port"] == 53 && x["reason"] == "not a mapped host name"),
        "{refusals:?}"
    );
    // What no listener of the egress takes, each once (bash's and perl's own retries are
    // one attempt), named with the program that made it; the controls on the egress's
    // ports are not among them.
    for (host, what) in [
        ("1.1.1.1", "TCP connect to 1.1.1.1:25 (bash)"),
        (
            "2606:4700::1111",
            "TCP connect to [2606:4700::1111]:80 (bash)",
        ),
        ("8.8.8.8", "UDP datagram to 8.8.8.8:53 (perl)"),
        ("127.0.0.1", "TCP connect to 127.0.0.1:27 (bash)"),
    ] {
        assert_refused_once(&refusals, host, what);
        // And on stderr, one warning each, for a reader without --json.
        let err = text(&r.out.stderr);
        assert!(err.contains(&format!("egress refused {what}")), "{err}");
    }
    assert!(
        !refusals.iter().any(|x| x["port"] != 27
            && x["what"].as_str().is_some_and(|w| w.contains("127.0.0.1"))),
        "{refusals:?}"
    );
    assert!(!refusals.iter().any(|x| x["port"] == 26), "{refusals:?}");
    assert!(!refusals.iter().any(|x| x["host"] == HOST), "{refusals:?}");
    // The resolver answers a mapped name with the loopback listeners, over UDP and TCP.
    for line in [
        "udp_mapped: id=1234 rcode=0 an=1 ip=127.0.0.1",
        "tcp_mapped: id=1234 rcode=0 an=1 ip=127.0.0.1",
        "udp_unlisted: id=1234 rcode=3 an=0",
        "resolv: nameserver 127.0.0.1 options use-vc",
    ] {
        assert!(r.stdout.contains(line), "{line}: {}", r.why());
    }
}

#[test]
fn pinned_bytes_that_differ_are_refused_and_never_stored() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let (good, evil) = (
        b"the published rootfs\n".as_slice(),
        b"something else\n".as_slice(),
    );
    let server = upstream(&up, &[("r/good.tar", good), ("r/evil.tar", evil)]);
    let pins = |path: &str| {
        vec![format!(
            "gitlab.archlinux.org={}:pinned={path}@{}",
            server.url(),
            sha(good)
        )]
    };
    // Control: the pinned URL with its own bytes.
    let r = run(
        &store,
        &tmp,
        &pins("/r/good.tar"),
        &[],
        "curl -fsS https://gitlab.archlinux.org/r/good.tar",
    );
    assert!(r.out.status.success(), "{}", r.why());
    assert!(r.stdout.starts_with("the published rootfs"), "{}", r.why());
    // The same hash pinned on a URL that serves other bytes (a store without the good
    // bytes: with them, the pinned hash is answered from the store without asking).
    let store = t.path().join("store2");
    let r = run(
        &store,
        &tmp,
        &pins("/r/evil.tar"),
        &[],
        "curl -fsS https://gitlab.archlinux.org/r/evil.tar; echo curl=$?",
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.why());
    assert!(r.stdout.contains("curl=22"), "{}", r.why());
    assert!(text(&r.out.stderr).contains("evil.tar"), "{}", r.why());
    let tampered = &r.record["egress"]["tampered"][0];
    assert_eq!(tampered["url"], "https://gitlab.archlinux.org/r/evil.tar");
    assert_eq!(tampered["expected"], sha(good).as_str());
    assert_eq!(tampered["actual"], sha(evil).as_str());
    assert!(
        r.lock()
            .contains("egress pinned tampered - - 1 https://gitlab.archlinux.org/r/evil.tar"),
        "{}",
        r.lock()
    );
    let s = reprobox::inputs::store::Store::open(&store).unwrap();
    assert!(s.blob(&sha(evil)).is_none(), "tampered bytes were stored");
    assert!(s.list().unwrap().is_empty(), "something was stored");
}

#[test]
fn recorded_drift_serves_the_pin_and_names_both_hashes() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let (v1, v2) = (b"apk index v1\n".as_slice(), b"apk index v2\n".as_slice());
    let server = upstream(&up, &[("x/APKINDEX", v1)]);
    let rule = vec![format!("dl-cdn.alpinelinux.org={}", server.url())];
    let url = "https://dl-cdn.alpinelinux.org/x/APKINDEX";
    let r = run(&store, &tmp, &rule, &[], &format!("curl -fsS {url}"));
    assert!(r.stdout.starts_with("apk index v1"), "{}", r.why());
    assert_eq!(r.record["egress"]["drift"], serde_json::json!([]));
    std::fs::write(up.join("x/APKINDEX"), v2).unwrap();
    let r = run(&store, &tmp, &rule, &[], &format!("curl -fsS {url}"));
    assert!(r.out.status.success(), "{}", r.why());
    assert!(r.stdout.starts_with("apk index v1"), "{}", r.why());
    assert_eq!(
        r.record["egress"]["drift"],
        serde_json::json!([{"url": url, "pinned": sha(v1), "upstream": sha(v2)}])
    );
}

#[test]
fn no_private_key_is_written_and_two_runs_have_different_cas() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let server = upstream(&up, &[("some/file", b"ok\n")]);
    let rule = vec![format!("{HOST}={}", server.url())];
    let out = t.path().join("out");
    let outs = job_writable_dir(t.path(), "out");
    let script = format!(
        "curl -fsS https://{HOST}/some/file > /out/got; cat /run/reprobox-egress/* /etc/ssl/certs/ca-certificates.crt > /out/seen; grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"
    );
    let bind = format!("--bind={}:/out", outs.display());
    let a = run(&store, &tmp, &rule, &[&bind], &script);
    assert!(a.out.status.success(), "{}", a.why());
    let b = run(&store, &tmp, &rule, &[&bind], &script);
    assert!(b.out.status.success(), "{}", b.why());
    assert!(
        a.ca().starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        a.why()
    );
    assert_ne!(a.ca(), b.ca());
    // The job saw the root's bundle plus the run's CA (more than one certificate).
    let seen = std::fs::read_to_string(out.join("seen")).unwrap();
    assert!(
        seen.contains(b.ca().trim()),
        "the job's bundle lacks the run's CA"
    );
    for r in [&a, &b] {
        assert!(!r.stdout.contains("PRIVATE KEY") && !text(&r.out.stderr).contains("PRIVATE KEY"));
    }
    // Nothing under the store, the temporary directory or the outputs holds a key; the
    // egress's temporary directory is gone.
    for d in [&store, &tmp, &out] {
        let g = std::process::Command::new("grep")
            .args(["-rl", "PRIVATE KEY"])
            .arg(d)
            .output()
            .unwrap();
        assert!(g.stdout.is_empty(), "{}: {}", d.display(), text(&g.stdout));
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temporary files left"
    );
}

#[test]
fn bad_rules_are_refused_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, _) = egress_dirs(t.path());
    for (args, needle) in [
        (vec!["--egress", "nohost"], "--egress nohost"),
        (vec!["--egress", "1.1.1.1=http://127.0.0.1:1"], "1.1.1.1"),
        // (archive and registry are served now: a host mapped twice is the rule refused
        // at configuration.)
        (
            vec![
                "--egress",
                "a.example=http://127.0.0.1:1",
                "--egress",
                "a.example=http://127.0.0.1:2:archive",
            ],
            "mapped twice",
        ),
        (vec!["--offline"], "--offline"),
    ] {
        let egress: Vec<String> = Vec::new();
        let r = run(&store, &tmp, &egress, &args, "true");
        assert_eq!(r.out.status.code(), Some(2), "{args:?}: {}", r.why());
        assert!(
            text(&r.out.stderr).contains(needle),
            "{args:?}: {}",
            r.why()
        );
    }
}

#[test]
fn archive_policy_checks_packages_against_the_day_database_and_replays_offline() {
    use reprobox::world::fixtures::{DAY1, MiniArchive};
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, _) = egress_dirs(t.path());
    let mini = MiniArchive::build().unwrap();
    let server = FileServer::dir(mini.root()).unwrap();
    let rule = vec![format!("{HOST}={}:archive", server.url())];
    let hello = mini.pkg("hello", "1.0-1");
    let url = format!(
        "https://{HOST}/repos/{DAY1}/core/os/x86_64/{}",
        hello.filename()
    );
    let r = run(
        &store,
        &tmp,
        &rule,
        &[],
        &format!("curl -fsS {url} | sha256sum"),
    );
    assert!(r.out.status.success(), "{}", r.why());
    assert!(r.stdout.starts_with(&hello.sha256()), "{}", r.why());
    let line = format!(
        "egress archive fetched {} {} 1 {url}\n",
        hello.sha256(),
        hello.bytes.len()
    );
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("127.0.0.1"), "{}", r.lock());
    // Upstream now sends other bytes for a package the (pinned) day database lists: refused
    // (502), listed as tampered, nothing stored under it, the run fails.
    let tools = mini.pkg("tools", "2.0-1");
    let evil = b"not the package the database lists\n";
    std::fs::write(
        mini.day_dir(DAY1, "core").join(tools.filename()),
        evil.as_slice(),
    )
    .unwrap();
    let turl = format!(
        "https://{HOST}/repos/{DAY1}/core/os/x86_64/{}",
        tools.filename()
    );
    let r = run(
        &store,
        &tmp,
        &rule,
        &[],
        &format!("curl -fsS {turl} >/dev/null; echo curl=$?"),
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.why());
    assert!(r.stdout.contains("curl=22"), "{}", r.why());
    let tampered = &r.record["egress"]["tampered"][0];
    assert_eq!(tampered["url"], turl.as_str(), "{}", r.why());
    assert_eq!(tampered["expected"], tools.sha256().as_str());
    assert_eq!(tampered["actual"], sha(evil).as_str());
    assert!(
        r.lock()
            .contains(&format!("egress archive tampered - - 1 {turl}")),
        "{}",
        r.lock()
    );
    let s = reprobox::inputs::store::Store::open(&store).unwrap();
    assert!(s.blob(&sha(evil)).is_none(), "tampered bytes were stored");
    // Stopped: offline, the package comes from the store.
    server.stop();
    let r = run(
        &store,
        &tmp,
        &rule,
        &["--offline"],
        &format!("curl -fsS {url} | sha256sum"),
    );
    assert!(r.out.status.success(), "{}", r.why());
    assert!(r.stdout.starts_with(&hello.sha256()), "{}", r.why());
    let line = format!(
        "egress archive hit {} {} 1 {url}\n",
        hello.sha256(),
        hello.bytes.len()
    );
    assert!(r.lock().contains(&line), "{}", r.lock());
}

#[test]
fn registry_policy_pins_a_tag_to_its_digest_and_checks_blobs() {
    let t = tempfile::tempdir().unwrap();
    let (store, tmp, up) = egress_dirs(t.path());
    let layer = b"a layer's bytes\n".as_slice();
    let manifest = |n: u8| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"sha256:{}","size":{n}}},"layers":[]}}"#,
            sha(layer)
        )
        .into_bytes()
    };
    let (m1, m2) = (manifest(1), manifest(2));
    let evil = b"not the layer\n".as_slice();
    let v2 = "v2/library/x";
    let server = upstream(
        &up,
        &[
            (&format!("{v2}/manifests/3.23"), &m1),
            (&format!("{v2}/blobs/sha256:{}", sha(layer)), layer),
            (&format!("{v2}/blobs/sha256:{}", sha(b"other")), evil),
        ],
    );
    let reg = "registry-1.docker.io";
    let rule = vec![format!("{reg}={}:registry", server.url())];
    let tag = format!("https://{reg}/v2/library/x/manifests/3.23");
    let blob = format!("https://{reg}/v2/library/x/blobs/sha256:{}", sha(layer));
    let bad = format!("https://{reg}/v2/library/x/blobs/sha256:{}", sha(b"other"));
    let r = run(
        &store,
        &tmp,
        &rule,
        &[],
        &format!(
            "curl -fsS https://{reg}/v2/; echo; curl -fsS -D - {tag}; echo; curl -fsS {blob}; \
             curl -fsS {bad}; echo curl=$?"
        ),
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.why());
    let out = &r.stdout;
    assert!(out.starts_with("{}\n"), "{}", r.why());
    assert!(
        out.contains(std::str::from_utf8(&m1).unwrap()),
        "{}",
        r.why()
    );
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("docker-content-digest: sha256:{}", sha(&m1))),
        "{}",
        r.why()
    );
    assert!(out.contains("a layer's bytes\n"), "{}", r.why());
    assert!(out.contains("curl=22"), "{}", r.why());
    // The lock pins the tag's digest under the canonical URL; the tampered blob is listed.
    let pin = format!(
        "egress registry fetched {} {} 1 {tag}\n",
        sha(&m1),
        m1.len()
    );
    assert!(r.lock().contains(&pin), "{}", r.lock());
    assert!(
        r.lock()
            .contains(&format!("egress registry tampered - - 1 {bad}"))
    );
    assert_eq!(r.record["egress"]["tampered"][0]["url"], bad.as_str());
    assert!(!r.lock().contains("127.0.0.1"), "{}", r.lock());
    // The tag moves upstream: the job gets the pinned manifest and the drift is named.
    std::fs::write(up.join(format!("{v2}/manifests/3.23")), &m2).unwrap();
    let r = run(&store, &tmp, &rule, &[], &format!("curl -fsS {tag}; echo"));
    assert!(r.out.status.success(), "{}", r.why());
    assert!(
        r.stdout.starts_with(std::str::from_utf8(&m1).unwrap()),
        "{}",
        r.why()
    );
    let drift = &r.record["egress"]["drift"][0];
    assert_eq!(drift["url"], tag.as_str());
    assert_eq!(drift["pinned"], sha(&m1).as_str());
    assert_eq!(drift["upstream"], sha(&m2).as_str());
    // Offline, server stopped: the pinned tag and the blob come from the store.
    server.stop();
    let r = run(
        &store,
        &tmp,
        &rule,
        &["--offline"],
        &format!("curl -fsS {tag}; echo; curl -fsS {blob}; echo"),
    );
    assert!(r.out.status.success(), "{}", r.why());
    assert!(
        r.stdout.starts_with(std::str::from_utf8(&m1).unwrap()),
        "{}",
        r.why()
    );
    assert!(r.stdout.contains("a layer's bytes"), "{}", r.why());
    let hit = format!("egress registry hit {} {} 1 {tag}\n", sha(&m1), m1.len());
    assert!(r.lock().contains(&hit), "{}", r.lock());
}

/// A package upgrade in an environment step (`ca-certificates` rewriting the bundle that
/// `update-ca-trust` extracts, by a new file renamed over it) under the egress: a job that
/// may write `/etc` (the rollback and install steps) gets no bind over the root's bundle,
/// so the rename replaces the environment's own file, and still trusts the run's CA
/// through `SSL_CERT_FILE`; a job that may not (a build step) gets the bind, over which the
/// same rename fails, as it would inside pacman. Library level: the container backend with
/// the egress's services, in a minimal root with busybox's `mv`.
#[test]
fn an_environment_step_replaces_the_bundle_a_build_step_reads_it_with_the_run_ca() {
    use reprobox::backend::{Backend, Container, Services};
    use reprobox::egress::{Egress, EgressRule};
    use reprobox::job::{Bind, Job, RootfsSource};
    require_root();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    mini_rootfs(&root);
    std::fs::copy("/usr/bin/busybox", root.join("usr/bin/busybox"))
        .expect("copy /usr/bin/busybox: the egress tests need busybox-static (scripts/apt)");
    let bundle = root.join("etc/ca-certificates/extracted/tls-ca-bundle.pem");
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::write(&bundle, "OLD ROOTS\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let out = job_writable_dir(t.path(), "out");
    let store = reprobox::inputs::store::Store::open(t.path().join("store")).unwrap();
    let rule = EgressRule::parse(&format!("{HOST}=http://127.0.0.1:1")).unwrap();
    let eg = std::sync::Arc::new(Egress::new(vec![rule], store, true).unwrap());
    let services = Services {
        egress: Some(eg.clone()),
        ..Services::none()
    };
    let script = format!(
        "b=/etc/ca-certificates/extracted/tls-ca-bundle.pem
        echo NEW ROOTS > $b.new && busybox mv $b.new $b; echo $? > /out/mv
        grep -c 'BEGIN CERTIFICATE' $SSL_CERT_FILE > /out/ca
        grep -c {HOST} /etc/hosts > /out/hosts; true"
    );
    let run = |writable: &[&str]| -> (String, String, String) {
        let mut job = Job::new(
            RootfsSource::Dir(root.clone()),
            vec!["/bin/sh".into(), "-c".into(), script.clone()],
        );
        job.landlock.writable = writable.iter().map(PathBuf::from).collect();
        job.binds.push(Bind {
            src: out.clone(),
            dst: "/out".into(),
            read_only: false,
        });
        eg.prepare_job(&mut job, Some(&root)).unwrap();
        job.listen = services.ports();
        job.listen_udp = services.udp_ports();
        let (o, _) = Container.run(&job, &services).unwrap();
        assert_eq!(o.exit_code, 0, "{o:?}");
        let read = |f: &str| {
            std::fs::read_to_string(out.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        (read("mv"), read("ca"), read("hosts"))
    };
    // A build step: the bundle is the bind (the root's + the run's CA); renaming over it
    // fails, and the environment's file is untouched.
    let (mv, ca, hosts) = run(&["/tmp"]);
    assert_ne!(mv, "0", "a rename over the bound bundle succeeded");
    assert_eq!((ca.as_str(), hosts.as_str()), ("1", "1"));
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), "OLD ROOTS\n");
    // An environment step: nothing is bound over /etc; the upgrade replaces the file, and
    // the job still trusts the run's CA through the variables.
    let (mv, ca, hosts) = run(&["/etc", "/usr", "/var"]);
    assert_eq!(mv, "0");
    assert_eq!((ca.as_str(), hosts.as_str()), ("1", "0"));
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), "NEW ROOTS\n");
    assert!(
        !std::fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .contains(HOST)
    );
}
