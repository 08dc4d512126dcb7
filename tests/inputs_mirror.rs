//! The mirror: online run, offline replay with upstream gone, export/import, tampering, and a
//! real pacman installing through it. All on 127.0.0.1 against a local archive-shaped tree.

mod inputs_common;

use inputs_common::{reprobox, run};

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reprobox::inputs::lock::{InputsLock, Status};
use reprobox::inputs::mirror::{Mirror, MirrorConfig};
use reprobox::inputs::store::Store;
use reprobox::world::fileserver::FileServer;
use reprobox::world::fixtures::{DAY1, DAY2, MONTH, MiniArchive, count_files, sha256};
use reprobox::world::tools;

/// A `reprobox mirror` process; `stop` sends SIGTERM and waits.
struct MirrorProc {
    child: Child,
    url: String,
}

impl MirrorProc {
    fn start(store: &Path, upstream: &str, offline: bool, lock_out: &Path) -> MirrorProc {
        let extra: &[&str] = if offline { &["--offline"] } else { &[] };
        MirrorProc::start_with(store, upstream, extra, lock_out)
    }

    fn start_with(store: &Path, upstream: &str, extra: &[&str], lock_out: &Path) -> MirrorProc {
        let mut cmd = reprobox();
        cmd.args([
            "mirror",
            "--listen",
            "127.0.0.1:0",
            "--archive",
            upstream,
            "--store",
        ])
        .arg(store)
        .arg("--lock-out")
        .arg(lock_out)
        .args(extra)
        .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected mirror banner {line:?}"))
            .to_string();
        MirrorProc { child, url }
    }
    fn stop(mut self) -> i32 {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for MirrorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a URL: (status, body).
fn get(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let mut body = vec![];
    resp.into_body()
        .into_reader()
        .read_to_end(&mut body)
        .unwrap();
    (status, body)
}

/// Paths every run here asks for.
fn paths(w: &MiniArchive) -> Vec<String> {
    vec![
        format!("/repos/{DAY1}/core/os/x86_64/core.db"),
        format!(
            "/repos/{DAY1}/core/os/x86_64/{}",
            w.pkg("hello", "1.0-1").filename()
        ),
        format!("/repos/{DAY2}/core/os/x86_64/core.db"),
        format!(
            "/repos/{DAY2}/core/os/x86_64/{}",
            w.pkg("hello", "1.1-1").filename()
        ),
        format!("/packages/t/tools/{}", w.pkg("tools", "2.0-1").filename()),
        format!("/iso/{MONTH}/sha256sums.txt"),
        format!("/iso/{MONTH}/{}", MiniArchive::bootstrap_name()),
    ]
}

/// Install `hello` with pacman from the mirror as of `day` into a fresh root; returns the
/// installed file's content.
fn pacman_install(mirror: &str, day: &str) -> String {
    tools::require("pacman", "pacman-package-manager").unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["var/lib/pacman", "var/cache/pacman/pkg", "var/log", "etc"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let conf = r.join("etc/pacman.conf");
    std::fs::write(
        &conf,
        format!(
            "[options]\nArchitecture = x86_64\nSigLevel = Never\nLocalFileSigLevel = Never\n\
             [core]\nServer = {mirror}/repos/{day}/$repo/os/$arch\n\
             [extra]\nServer = {mirror}/repos/{day}/$repo/os/$arch\n"
        ),
    )
    .unwrap();
    let out = Command::new("pacman")
        .arg("-r")
        .arg(r)
        .arg("--config")
        .arg(&conf)
        .arg("--dbpath")
        .arg(r.join("var/lib/pacman"))
        .arg("--cachedir")
        .arg(r.join("var/cache/pacman/pkg"))
        .arg("--logfile")
        .arg(r.join("var/log/pacman.log"))
        .arg("--gpgdir")
        .arg(r.join("etc/gnupg"))
        .args(["--noconfirm", "--noprogressbar", "-Syy", "hello"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pacman through the mirror failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(r.join("usr/share/hello/data")).unwrap()
}

fn fetch_all(base: &str, paths: &[String]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let (code, body) = get(&format!("{base}{p}"));
            assert_eq!(code, 200, "GET {p}: {}", String::from_utf8_lossy(&body));
            body
        })
        .collect()
}

#[test]
fn a_canonical_name_is_recorded_and_replays_through_another_upstream() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let locks = tempfile::tempdir().unwrap();
    let (l1, l2) = (locks.path().join("1.lock"), locks.path().join("2.lock"));
    const REAL: &str = "https://archive.archlinux.org";
    let ps = paths(&w);
    let m = MirrorProc::start_with(sd.path(), &srv.url(), &["--canonical", REAL], &l1);
    let online = fetch_all(&m.url, &ps);
    assert_eq!(m.stop(), 0);
    srv.stop();
    // The lock names what was served under the real host, never the upstream location.
    let lock = InputsLock::read(&l1).unwrap();
    for p in &ps {
        let url = format!("{REAL}{p}");
        assert!(
            lock.entries
                .iter()
                .any(|e| e.url == url && e.status == Status::Fetched),
            "{url}:\n{lock}"
        );
    }
    assert!(!lock.to_string().contains("127.0.0.1"), "{lock}");
    // Offline through another upstream location standing for the same host: every path
    // from the store, byte for byte.
    let m = MirrorProc::start_with(
        sd.path(),
        "http://127.0.0.9:1",
        &["--canonical", REAL, "--offline"],
        &l2,
    );
    assert_eq!(fetch_all(&m.url, &ps), online);
    assert_eq!(m.stop(), 0);
    let lock = InputsLock::read(&l2).unwrap();
    assert!(
        lock.entries
            .iter()
            .all(|e| e.status == Status::Hit && e.url.starts_with(REAL)),
        "{lock}"
    );
}

#[test]
fn online_run_then_offline_replay_gives_identical_bytes() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let up = srv.url();
    let sd = tempfile::tempdir().unwrap();
    let locks = tempfile::tempdir().unwrap();
    let (l1, l2) = (
        locks.path().join("online.lock"),
        locks.path().join("offline.lock"),
    );
    let ps = paths(&w);

    let m = MirrorProc::start(sd.path(), &up, false, &l1);
    let online = fetch_all(&m.url, &ps);
    assert_eq!(online[1], w.pkg("hello", "1.0-1").bytes);
    assert_eq!(online[3], w.pkg("hello", "1.1-1").bytes);
    assert_eq!(online[6], w.bootstrap);
    assert_eq!(pacman_install(&m.url, DAY2), "hello, day two\n");
    assert_eq!(pacman_install(&m.url, DAY1), "hello, day one\n");
    let missing = format!("/repos/{DAY1}/core/os/x86_64/nope-1-1-x86_64.pkg.tar.zst");
    assert_eq!(get(&format!("{}{missing}", m.url)).0, 404);
    assert_eq!(m.stop(), 0);
    let lock1 = InputsLock::read(&l1).unwrap();
    for p in &ps {
        let url = format!("{up}{p}");
        let e = lock1
            .entries
            .iter()
            .find(|e| e.url == url)
            .unwrap_or_else(|| panic!("{url} not in lock:\n{lock1}"));
        assert_eq!(e.status, Status::Fetched, "{url}");
    }
    assert!(
        lock1
            .misses()
            .any(|e| e.url.ends_with("nope-1-1-x86_64.pkg.tar.zst")),
        "{lock1}"
    );
    // Repeated requests (pacman re-asks for core.db) are hits and counted.
    assert!(
        lock1
            .entries
            .iter()
            .any(|e| e.status == Status::Hit && e.url.ends_with("core.db")),
        "{lock1}"
    );

    srv.stop();
    let m = MirrorProc::start(sd.path(), &up, true, &l2);
    let offline = fetch_all(&m.url, &ps);
    assert_eq!(online, offline, "offline replay serves identical bytes");
    assert_eq!(pacman_install(&m.url, DAY2), "hello, day two\n");
    let never = format!(
        "/repos/{DAY2}/extra/os/x86_64/{}",
        w.pkg("bigdata", "3.0-1").filename()
    );
    assert_eq!(
        get(&format!("{}{never}", m.url)).0,
        404,
        "offline miss is a 404"
    );
    assert_eq!(m.stop(), 0);
    let lock2 = InputsLock::read(&l2).unwrap();
    assert!(
        lock2.entries.iter().all(|e| e.status != Status::Fetched),
        "offline fetched nothing:\n{lock2}"
    );
    let misses: Vec<_> = lock2.misses().map(|e| e.url.clone()).collect();
    assert_eq!(misses, vec![format!("{up}{never}")]);
    for e in lock2.entries.iter().filter(|e| e.status == Status::Hit) {
        let before = lock1
            .entries
            .iter()
            .find(|x| x.url == e.url && x.sha256.is_some())
            .unwrap();
        assert_eq!(before.sha256, e.sha256, "{}", e.url);
    }
}

#[test]
fn export_import_into_empty_store_then_offline_replay() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let up = srv.url();
    let s1 = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let l1 = work.path().join("run.lock");
    let ps = paths(&w);
    let m = MirrorProc::start(s1.path(), &up, false, &l1);
    let online = fetch_all(&m.url, &ps);
    assert_eq!(m.stop(), 0);
    srv.stop();
    // Something in s1 the lock does not name must not travel.
    let extra = Store::open(s1.path())
        .unwrap()
        .put_reader(&b"unrelated"[..], None, "test:unrelated")
        .unwrap();

    let export = work.path().join("inputs.tar");
    let (code, out, err) = run(
        s1.path(),
        &[
            "store",
            "export",
            export.to_str().unwrap(),
            "--lock",
            l1.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let n = InputsLock::read(&l1).unwrap().blobs().len();
    assert_eq!(
        out.trim(),
        format!("exported {n} blobs to {}", export.display())
    );

    let s2 = tempfile::tempdir().unwrap();
    let (code, out, err) = run(s2.path(), &["store", "import", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("imported {n} blobs")), "{out}");
    assert!(Store::open(s2.path()).unwrap().get(&extra.sha256).is_none());

    let l2 = work.path().join("replay.lock");
    let m = MirrorProc::start(s2.path(), &up, true, &l2);
    let replay = fetch_all(&m.url, &ps);
    assert_eq!(online, replay);
    assert_eq!(m.stop(), 0);
    let lock2 = InputsLock::read(&l2).unwrap();
    assert_eq!(lock2.misses().count(), 0, "{lock2}");

    // A blob altered in transit is refused on import, and not stored.
    let mut tar = std::fs::read(&export).unwrap();
    let hello = w.pkg("hello", "1.1-1");
    let at = tar
        .windows(hello.bytes.len())
        .position(|win| win == &hello.bytes[..])
        .expect("blob in tar");
    tar[at + 100] ^= 0x01;
    let bad = work.path().join("bad.tar");
    std::fs::write(&bad, &tar).unwrap();
    let s3 = tempfile::tempdir().unwrap();
    let (code, _, err) = run(s3.path(), &["store", "import", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("tampered"), "{err}");
    assert!(
        Store::open(s3.path())
            .unwrap()
            .get(&hello.sha256())
            .is_none()
    );
    assert_eq!(count_files(&s3.path().join("tmp")), 0);
    let (code, _, _) = run(s3.path(), &["store", "import", "/nonexistent/x.tar"]);
    assert_eq!(code, 2);
}

#[test]
fn mirror_catches_upstream_serving_wrong_bytes() {
    let w = MiniArchive::build().unwrap();
    let good = w.pkg("hello", "1.1-1");
    let mut bad = good.bytes.clone();
    bad[10] ^= 0xff;
    std::fs::write(w.day_dir(DAY2, "core").join(good.filename()), &bad).unwrap();
    let packages_copy = w.root().join("packages/h/hello").join(good.filename());
    std::fs::write(&packages_copy, &bad).unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = Mirror::serve(
        listener,
        MirrorConfig {
            store: Store::open(sd.path()).unwrap(),
            upstream: srv.url(),
            canonical: None,
            offline: false,
        },
    )
    .unwrap();
    let base = format!("http://{}", h.local_addr());
    // The package is asked for before its database: the mirror loads the database itself.
    let p = format!("/repos/{DAY2}/core/os/x86_64/{}", good.filename());
    let (code, body) = get(&format!("{base}{p}"));
    assert_eq!(code, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("tampered"));
    // Via packages/, once a database that lists the file has been loaded.
    let (code, _) = get(&format!("{base}/packages/h/hello/{}", good.filename()));
    assert_eq!(code, 502);
    let lock = h.stop();
    assert_eq!(lock.misses().count(), 2, "{lock}");
    let store = Store::open(sd.path()).unwrap();
    assert!(store.get(&sha256(&bad)).is_none() && store.get(&good.sha256()).is_none());
    assert_eq!(count_files(&sd.path().join("partial")), 0);
    assert_eq!(store.list().unwrap().len(), 1, "only core.db is stored");
}

#[test]
fn mirror_serves_ranges_and_head() {
    let w = MiniArchive::build().unwrap();
    let sd = tempfile::tempdir().unwrap();
    let up = format!("file://{}", w.root().display());
    let h = Mirror::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        MirrorConfig {
            store: Store::open(sd.path()).unwrap(),
            upstream: up,
            canonical: None,
            offline: false,
        },
    )
    .unwrap();
    let url = format!(
        "http://{}/packages/t/tools/{}",
        h.local_addr(),
        w.pkg("tools", "2.0-1").filename()
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&url)
        .header("Range", "bytes=100-")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let body = r.body_mut().read_to_vec().unwrap();
    assert_eq!(body, w.pkg("tools", "2.0-1").bytes[100..]);
    let r = agent.head(&url).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let len: usize = r
        .headers()
        .get("content-length")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, w.pkg("tools", "2.0-1").bytes.len());
    let lock = h.stop();
    assert_eq!(lock.entries[0].status, Status::Fetched);
    assert_eq!(lock.entries[1].status, Status::Hit);
}
