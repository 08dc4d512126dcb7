//! Rebuilding from the published package set, against the world made from the real upstream
//! (its next-day release, 20260520.0.2, was made by upstream's CI with make-rootfs.sh run
//! against the build day's repositories, where systemd is 258.2-1, instead of the snapshot
//! day's 258.1-1; docs/world.md): `reprobox lock from-rootfs` of each published rootfs
//! equals the world's record of what it installed (Debian's real pacman over the same
//! database); `reprobox drift --release` names systemd; a normal reproduction of the
//! next-day release differs and names systemd; with `--packages-from published` it
//! reproduces, online and then offline with every server stopped. Needs root (CI is root): without it the world cannot be built and the test
//! fails with the reason.

mod reproduce_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use reproduce_common::*;

fn reprobox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// The published rootfs tarball of `version` in the world's package registry.
fn published_tarball(version: &str) -> PathBuf {
    world()
        .0
        .join("gitlab/api/v4/projects/10185/packages/generic/rootfs")
        .join(version)
        .join(format!("repro-{version}.tar.zst"))
}

/// `name version` lines of a lock read by `reprobox lock from-rootfs SOURCE --json`.
fn lock_lines(source: &str, store: &Path) -> Vec<String> {
    let o = reprobox()
        .args(["lock", "from-rootfs", source, "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "lock from-rootfs {source}: {}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["arch"].is_string(), "every package has its arch: {p}");
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_lock_from_the_published_rootfs_equals_the_worlds_record() {
    let (_, m) = world();
    let next = m
        .next_day
        .as_ref()
        .expect("the world has its next-day release (world.json next_day)");
    let store = tempfile::tempdir().unwrap();
    for (version, rootfs) in [
        (m.release.version.as_str(), &m.rootfs),
        (next.release.version.as_str(), &next.rootfs),
    ] {
        let mut record = rootfs.installed.clone();
        record.sort();
        assert!(
            record.len() > 10,
            "the world recorded the installed packages: {record:?}"
        );
        let mut got = lock_lines(published_tarball(version).to_str().unwrap(), store.path());
        got.sort();
        assert_eq!(got, record, "lock from-rootfs of {version}");
    }
    // The two releases differ in exactly the world's delta.
    assert!(m.rootfs.installed.contains(&"systemd 258.1-1".to_string()));
    assert!(
        next.rootfs
            .installed
            .contains(&"systemd 258.2-1".to_string())
    );

    // Through a URL (the world's gitlab over HTTP), into the store, checked by --sha256.
    let s = serve();
    let locs = locations(&s);
    let gitlab = locs
        .iter()
        .find_map(|l| l.strip_prefix("gitlab="))
        .expect("the world serves gitlab");
    let url = format!(
        "{gitlab}/api/v4/projects/10185/packages/generic/rootfs/{v}/repro-{v}.tar.zst",
        v = next.release.version
    );
    let mut got = lock_lines(&url, store.path());
    got.sort();
    let mut record = next.rootfs.installed.clone();
    record.sort();
    assert_eq!(got, record, "lock from-rootfs {url}");
    let o = reprobox()
        .args([
            "lock",
            "from-rootfs",
            &url,
            "--sha256",
            &"0".repeat(64),
            "--store",
        ])
        .arg(store.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "a wrong --sha256 is refused: {}",
        stderr(&o)
    );

    // Bad input: exit 2, naming it.
    let o = reprobox()
        .args(["lock", "from-rootfs", "/nonexistent/rootfs.tar.zst"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/rootfs.tar.zst"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn drift_between_the_two_releases_names_systemd() {
    let (_, m) = world();
    let next = m.next_day.as_ref().expect("the next-day release");
    let s = serve();
    let locs = locations(&s);
    let store = tempfile::tempdir().unwrap();
    let mut c = reprobox();
    c.args(["drift", "--release", &m.release.version, "--release"])
        .arg(&next.release.version)
        .arg("--store")
        .arg(store.path());
    for l in &locs {
        c.args(["--location", l]);
    }
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "drift exits 1 on a difference: {out}{}",
        stderr(&o)
    );
    let drifts: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(drifts, ["systemd: 258.1-1 -> 258.2-1"], "{out}");
    // A release with itself: no drift.
    let mut c = reprobox();
    c.args(["drift", "--release", &m.release.version, "--release"])
        .arg(&m.release.version)
        .arg("--store")
        .arg(store.path());
    for l in &locs {
        c.args(["--location", l]);
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // With the published tarballs gone (the `rootfs` location answers 404), each set is read
    // from the published image's COPY layer instead, and the drift is the same.
    let empty = store.path().join("gone");
    std::fs::create_dir(&empty).unwrap();
    let gone = reprobox::world::fileserver::FileServer::dir(&empty).unwrap();
    let mut c = reprobox();
    c.args([
        "drift",
        "--json",
        "--release",
        &m.release.version,
        "--release",
    ])
    .arg(&next.release.version)
    .arg("--store")
    .arg(store.path().join("store2"));
    for l in with_location(&locs, "rootfs", &gone.url()) {
        c.args(["--location", &l]);
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["drift"],
        serde_json::json!([{"name": "systemd", "a": "258.1-1", "b": "258.2-1"}]),
        "{v:#}"
    );
    for s in v["sources"].as_array().unwrap() {
        assert!(
            s.as_str().unwrap().contains("image"),
            "read from the image layer: {v:#}"
        );
    }
    // One --release only: bad input.
    let o = reprobox()
        .args(["drift", "--release", &m.release.version])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--release"), "{}", stderr(&o));
}

#[test]
fn the_next_day_release_reproduces_only_from_its_published_package_set() {
    let (_, m) = world();
    let next = m.next_day.as_ref().expect("the next-day release");
    let v = next.release.version.as_str();
    let s = serve();
    let locs = locations(&s);
    let store = tempfile::tempdir().unwrap();
    let outs = tempfile::tempdir().unwrap();

    // From the snapshot day: the rootfs differs, and the report names systemd.
    let run = |out: &Path, extra: &[&str]| {
        let o = reproduce_cmd(v, store.path(), &locs)
            .arg("--json")
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", stderr(&o)));
        (o, r)
    };
    let (o, r) = run(&outs.path().join("snapshot"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(r["verdict"], "differs", "{r:#}");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "fail", "{r:#}");
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("systemd: 258.2-1 -> 258.1-1"),
        "the report names the package: {notes}"
    );
    assert!(r.get("packages_from_published").is_none(), "{r:#}");

    // From the published set: reproduced, and the report says so.
    let (o, r) = run(
        &outs.path().join("published"),
        &["--packages-from", "published"],
    );
    assert_eq!(o.status.code(), Some(0), "{r:#}\n{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "pass");
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"].as_str(),
        Some(next.rootfs.sha256.as_str())
    );
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("--packages-from published")
            && notes.contains("systemd 258.1-1 → 258.2-1 (2026/05/20 core)"),
        "{notes}"
    );
    // The report's record: the whole published set, systemd alone differing.
    let p = &r["packages_from_published"];
    assert_eq!(p["day"], "2026/05/19", "{p:#}");
    assert_eq!(
        p["packages"].as_u64(),
        Some(next.rootfs.installed.len() as u64),
        "{p:#}"
    );
    assert!(
        p["source"].as_str().unwrap().contains(&next.rootfs.sha256),
        "{p:#}"
    );
    let differ = p["differ_from_snapshot"].as_array().unwrap();
    assert_eq!(differ.len(), 1, "{p:#}");
    assert_eq!(differ[0]["name"], "systemd");
    assert_eq!(differ[0]["version"], "258.2-1");
    assert_eq!(differ[0]["snapshot_version"], "258.1-1");
    assert_eq!(differ[0]["day"], "2026/05/20");

    // Offline, with every server stopped: the published set, its day and its package files
    // all come from the store, and it reproduces again.
    drop(s);
    let (o, r) = run(
        &outs.path().join("offline"),
        &["--packages-from", "published", "--offline"],
    );
    assert_eq!(o.status.code(), Some(0), "{r:#}\n{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    assert_eq!(
        r["packages_from_published"]["differ_from_snapshot"][0]["name"],
        "systemd"
    );
}
