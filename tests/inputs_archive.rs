//! The archive client and downloads against a local archive-shaped tree on 127.0.0.1.

mod inputs_common;

use inputs_common::{reprobox, run};

use std::time::Duration;

use reprobox::inputs::archive::Archive;
use reprobox::inputs::fetch::Fetcher;
use reprobox::inputs::store::Store;
use reprobox::world::fileserver::{Faults, FileServer};
use reprobox::world::fixtures::{DAY1, DAY2, MONTH, MiniArchive, count_files, noise, sha256};

#[test]
fn resolution_by_day_and_changed_package() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let f = Fetcher::new(Store::open(sd.path()).unwrap(), false).with_progress(false);
    let ar = Archive::new(&srv.url(), &f);
    let h1 = ar.resolve(DAY1, "hello").unwrap();
    let h2 = ar.resolve(DAY2, "hello").unwrap();
    assert_eq!(h1.version, "1.0-1");
    assert_eq!(h2.version, "1.1-1");
    assert_eq!(h1.sha256, w.pkg("hello", "1.0-1").sha256());
    assert_eq!(h2.sha256, w.pkg("hello", "1.1-1").sha256());
    assert_eq!(
        h1.url,
        format!(
            "{}/repos/{DAY1}/core/os/x86_64/hello-1.0-1-x86_64.pkg.tar.zst",
            srv.url()
        )
    );
    let t1 = ar.resolve(DAY1, "tools").unwrap();
    let t2 = ar.resolve(DAY2, "tools").unwrap();
    assert_eq!(
        (t1.version.as_str(), t1.sha256.as_str()),
        (t2.version.as_str(), t2.sha256.as_str())
    );
    let big = ar.resolve(DAY1, "bigdata").unwrap();
    assert_eq!(big.repo, "extra");
    let e = ar.resolve(DAY1, "nonexistent").unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    // Fetching checks the bytes against the database.
    let b = ar.fetch_resolved(&h2).unwrap();
    assert_eq!(
        std::fs::read(&b.path).unwrap(),
        w.pkg("hello", "1.1-1").bytes
    );

    // The same through the CLI, including an offline re-resolve from the store.
    let (code, out, err) = run(
        sd.path(),
        &[
            "archive",
            "resolve",
            "--archive",
            &srv.url(),
            "--day",
            DAY2,
            "hello",
            "tools",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "hello 1.1-1 core {} ",
            w.pkg("hello", "1.1-1").sha256()
        )),
        "{out}"
    );
    drop(srv);
    let (code, out, err) = run(
        sd.path(),
        &[
            "archive",
            "resolve",
            "--offline",
            "--archive",
            "http://127.0.0.1:9",
            "--day",
            DAY2,
            "hello",
        ],
    );
    // Offline with a different base URL: nothing in the store for it, so it must fail, exit 3.
    assert_eq!(code, 3, "{out}{err}");
    let (code, _, _) = run(
        sd.path(),
        &[
            "archive",
            "resolve",
            "--archive",
            "http://127.0.0.1:9",
            "--day",
            "2026-05-17",
            "hello",
        ],
    );
    assert_eq!(code, 2, "a malformed day is bad input");
}

#[test]
fn offline_resolve_and_packages_and_bootstrap() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let url = srv.url();
    // packages/ by name and version
    let (code, out, err) = run(
        sd.path(),
        &["archive", "fetch", "--archive", &url, "hello=1.0-1"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&w.pkg("hello", "1.0-1").sha256()), "{out}");
    let (code, _, err) = run(
        sd.path(),
        &["archive", "fetch", "--archive", &url, "hello=9.9-1"],
    );
    assert_eq!(
        code, 3,
        "missing version is a network failure naming the URL: {err}"
    );
    assert!(
        err.contains("packages/h/hello/hello-9.9-1-x86_64.pkg.tar.zst"),
        "{err}"
    );
    let (code, _, _) = run(sd.path(), &["archive", "fetch", "--archive", &url, "hello"]);
    assert_eq!(
        code, 2,
        "NAME without =VERSION and without --day is bad input"
    );
    // bootstrap: URL, sha256, store path
    let (code, out, err) = run(
        sd.path(),
        &["archive", "bootstrap", "--archive", &url, "--month", MONTH],
    );
    assert_eq!(code, 0, "{err}");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        f[0],
        format!("{url}/iso/{MONTH}/{}", MiniArchive::bootstrap_name())
    );
    assert_eq!(f[1], sha256(&w.bootstrap));
    assert_eq!(std::fs::read(f[2]).unwrap(), w.bootstrap);
    let (code, _, _) = run(
        sd.path(),
        &[
            "archive",
            "bootstrap",
            "--archive",
            &url,
            "--month",
            "2026-05",
        ],
    );
    assert_eq!(code, 2);
    // day fetch online, then everything again offline with the server gone
    let (code, online, err) = run(
        sd.path(),
        &[
            "archive",
            "fetch",
            "--archive",
            &url,
            "--day",
            DAY1,
            "hello",
            "tools",
        ],
    );
    assert_eq!(code, 0, "{err}");
    srv.stop();
    let (code, offline, err) = run(
        sd.path(),
        &[
            "archive",
            "fetch",
            "--offline",
            "--archive",
            &url,
            "--day",
            DAY1,
            "hello",
            "tools",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(online, offline);
    let (code, _, err) = run(
        sd.path(),
        &[
            "archive",
            "bootstrap",
            "--offline",
            "--archive",
            &url,
            "--month",
            MONTH,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        sd.path(),
        &[
            "archive",
            "fetch",
            "--offline",
            "--archive",
            &url,
            "--day",
            DAY2,
            "hello",
        ],
    );
    assert_eq!(
        code, 3,
        "day two was never fetched: offline must fail: {err}"
    );
}

#[test]
fn a_canonical_name_replays_offline_from_another_location() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    const REAL: &str = "https://archive.archlinux.org";
    let fetch = |archive: &str, extra: &[&str]| {
        let mut args = vec!["archive", "fetch", "--archive", archive];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--day", DAY1, "hello"]);
        run(sd.path(), &args)
    };
    let (code, online, err) = fetch(&srv.url(), &["--canonical", REAL]);
    assert_eq!(code, 0, "{err}");
    srv.stop();
    // The store names the bytes under the real host: an offline run through any other
    // location that stands for it finds them; one naming the location itself does not.
    let elsewhere = "http://127.0.0.9:1";
    let (code, offline, err) = fetch(elsewhere, &["--offline", "--canonical", REAL]);
    assert_eq!(code, 0, "{err}");
    let sha_and_path =
        |out: &str| -> Vec<String> { out.split_whitespace().take(2).map(str::to_string).collect() };
    assert_eq!(sha_and_path(&online), sha_and_path(&offline));
    assert_eq!(sha_and_path(&online)[0], w.pkg("hello", "1.0-1").sha256());
    let (code, _, err) = fetch(elsewhere, &["--offline"]);
    assert_eq!(code, 3, "named by the location, nothing is stored: {err}");
    assert!(err.contains("127.0.0.9"), "{err}");
    let (code, _, err) = fetch(
        elsewhere,
        &["--offline", "--canonical", "archive.archlinux.org"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("archive.archlinux.org") && err.contains("https://"),
        "{err}"
    );
}

#[test]
fn bootstrap_with_wrong_sums_is_tampered() {
    let w = MiniArchive::build().unwrap();
    let sums = w.root().join("iso").join(MONTH).join("sha256sums.txt");
    std::fs::write(
        &sums,
        format!("{}  {}\n", "ab".repeat(32), MiniArchive::bootstrap_name()),
    )
    .unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        sd.path(),
        &[
            "archive",
            "bootstrap",
            "--archive",
            &srv.url(),
            "--month",
            MONTH,
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("tampered"), "{err}");
    let store = Store::open(sd.path()).unwrap();
    assert!(
        store.get(&sha256(&w.bootstrap)).is_none(),
        "the tarball must not be stored"
    );
    assert_eq!(count_files(&sd.path().join("partial")), 0);
    assert_eq!(count_files(&sd.path().join("tmp")), 0);
}

#[test]
fn truncated_download_resumes_with_range() {
    let body = noise(3 << 20, 5);
    let srv = FileServer::body(
        body.clone(),
        Faults {
            cut_responses: 2,
            cut_after: 700_000,
        },
    )
    .unwrap();
    let sd = tempfile::tempdir().unwrap();
    let f = Fetcher::new(Store::open(sd.path()).unwrap(), false)
        .with_progress(false)
        .with_retries(5, Duration::from_millis(10));
    let url = format!("http://127.0.0.1:{}/big.bin", srv.port());
    let b = f.fetch(&url, Some(&sha256(&body))).unwrap();
    assert_eq!(std::fs::read(&b.path).unwrap(), body);
    let ranges = srv.ranges();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=700000-".to_string()),
            Some("bytes=1400000-".to_string())
        ]
    );
    assert_eq!(
        count_files(&sd.path().join("partial")),
        0,
        "partial file moved into the store"
    );
}

#[test]
fn cut_download_gives_up_naming_url_then_resumes_next_run() {
    let body = noise(1 << 20, 9);
    let srv = FileServer::body(
        body.clone(),
        Faults {
            cut_responses: 3,
            cut_after: 100_000,
        },
    )
    .unwrap();
    let sd = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/file.bin", srv.port());
    let f = Fetcher::new(Store::open(sd.path()).unwrap(), false)
        .with_progress(false)
        .with_retries(2, Duration::from_millis(10));
    let e = f.fetch(&url, Some(&sha256(&body))).unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains(&url), "{e}");
    assert_eq!(
        count_files(&sd.path().join("partial")),
        1,
        "partial kept for resume"
    );
    // A new process (new fetcher) resumes where the last stopped.
    let f = Fetcher::new(Store::open(sd.path()).unwrap(), false)
        .with_progress(false)
        .with_retries(3, Duration::from_millis(10));
    let b = f.fetch(&url, Some(&sha256(&body))).unwrap();
    assert_eq!(std::fs::read(&b.path).unwrap(), body);
    assert_eq!(srv.ranges()[2].as_deref(), Some("bytes=200000-"));
}

#[test]
fn upstream_serving_wrong_bytes_is_caught_and_nothing_stored() {
    let w = MiniArchive::build().unwrap();
    let good = w.pkg("hello", "1.0-1");
    let path = w.day_dir(DAY1, "core").join(good.filename());
    let mut bad = good.bytes.clone();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        sd.path(),
        &[
            "archive",
            "fetch",
            "--archive",
            &srv.url(),
            "--day",
            DAY1,
            "hello",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("tampered") && err.contains(&good.sha256()),
        "{err}"
    );
    let store = Store::open(sd.path()).unwrap();
    assert!(store.get(&good.sha256()).is_none());
    assert!(
        store.get(&sha256(&bad)).is_none(),
        "wrong bytes stored under their own hash"
    );
    assert!(
        store
            .index()
            .unwrap()
            .iter()
            .all(|r| !r.url.ends_with(".pkg.tar.zst"))
    );
    assert_eq!(count_files(&sd.path().join("partial")), 0);
}

#[test]
fn two_processes_fetching_the_same_blobs_store_each_once() {
    let w = MiniArchive::build().unwrap();
    let srv = FileServer::dir(w.root()).unwrap();
    let sd = tempfile::tempdir().unwrap();
    let url = srv.url();
    let spawn = || {
        reprobox()
            .args(["archive", "--store"])
            .arg(sd.path())
            .args([
                "fetch",
                "--archive",
                &url,
                "--day",
                DAY1,
                "bigdata",
                "hello",
                "tools",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(a.stdout, b.stdout, "both name the same blobs");
    let store = Store::open(sd.path()).unwrap();
    let blobs = store.list().unwrap();
    // core.db, extra.db, bigdata, hello 1.0-1, tools: each exactly once.
    assert_eq!(blobs.len(), 5, "{blobs:?}");
    assert_eq!(count_files(&sd.path().join("blobs")), 5);
    for p in ["bigdata", "tools"] {
        let pkg = w.pkgs.iter().find(|x| x.name == p).unwrap();
        assert_eq!(
            std::fs::read(store.get(&pkg.sha256()).unwrap()).unwrap(),
            pkg.bytes
        );
    }
    assert_eq!(count_files(&sd.path().join("partial")), 0);
    assert_eq!(count_files(&sd.path().join("tmp")), 0);
    assert_eq!(store.verify().unwrap().corrupt.len(), 0);
}

#[test]
fn without_expected_hash_or_validator_a_cut_download_restarts_from_zero() {
    // No sha256 to check against and no ETag/Last-Modified to send as If-Range: resuming could
    // splice two versions of the resource, so every attempt starts over.
    let body = noise(1 << 20, 3);
    let srv = FileServer::body(
        body.clone(),
        Faults {
            cut_responses: 2,
            cut_after: 300_000,
        },
    )
    .unwrap();
    let sd = tempfile::tempdir().unwrap();
    let f = Fetcher::new(Store::open(sd.path()).unwrap(), false)
        .with_progress(false)
        .with_retries(3, Duration::from_millis(10));
    let b = f
        .fetch(&format!("http://127.0.0.1:{}/db", srv.port()), None)
        .unwrap();
    assert_eq!(b.sha256, sha256(&body));
    assert_eq!(srv.ranges(), vec![None, None, None]);
}
