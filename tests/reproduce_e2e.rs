//! `reprobox reproduce` end to end against the test world, through the real binary: the
//! sample release reproduces; again offline with every server stopped; with a later day's
//! environment it differs and names the drifted package and the files; a release whose
//! published rootfs hash was altered fails only the rootfs check; bad inputs exit 2 or 3
//! and leave the store valid. Needs root (CI is root): without it the world cannot be
//! built and the test fails with the reason.

mod reproduce_common;

use std::path::Path;
use std::process::Command;

use reproduce_common::*;

fn store_verifies(store: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .args(["store", "verify", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "store verify after a run: {}",
        stderr(&o)
    );
}

/// The report's environment steps (rollback, install).
/// The report's environment steps; never empty (the world's profile has both), so that a
/// check over all of them cannot pass on none.
fn env_steps(r: &serde_json::Value) -> Vec<&serde_json::Value> {
    let steps: Vec<&serde_json::Value> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "rollback" || s["name"] == "install")
        .collect();
    assert_eq!(steps.len(), 2, "rollback and install in the report: {r:#}");
    steps
}

/// The config blob a `docker save` archive's manifest.json names (hex, without `.json`).
fn archive_config(path: &Path) -> String {
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            return m[0]["Config"]
                .as_str()
                .unwrap()
                .trim_end_matches(".json")
                .to_string();
        }
    }
    panic!("{}: no manifest.json", path.display());
}

#[test]
fn the_sample_release_reproduces_online_then_offline_and_drift_is_explained() {
    let (_, m) = world();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);

    // 1. Online against the loopback world: reproduced.
    let out1 = tmp.path().join("out1");
    let (o, r) = reproduce(&store, &out1, &locs, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    assert_eq!(
        check(&r, "image-config-digest")["actual"],
        m.image.config_digest.as_str()
    );
    assert_eq!(check(&r, "image-diff-ids")["status"], "pass");
    for f in [
        "report.json",
        "summary.txt",
        "env.lock",
        "inputs.lock",
        "attestation.json",
        "artifacts/repro.tar.zst",
    ] {
        assert!(out1.join(f).is_file(), "{f} missing");
    }
    let env_lock = std::fs::read_to_string(out1.join("env.lock")).unwrap();
    let devtools_day0 = &m.env_package.per_day["2026/03/30"];
    assert!(
        env_lock.contains(&format!(
            "name = \"devtools\"\nversion = \"{devtools_day0}\""
        )),
        "{env_lock}"
    );
    assert!(env_lock.contains("day = \"2026/03/30\""), "{env_lock}");
    let summary = std::fs::read_to_string(out1.join("summary.txt")).unwrap();
    assert!(summary.contains("REPRODUCED"), "{summary}");
    // The environment steps ran, and their result was kept as a prepared environment.
    assert!(
        env_steps(&r).iter().all(|s| s.get("cached").is_none()),
        "{r:#}"
    );
    let envs = prepared_envs(&store);
    assert_eq!(envs.len(), 1, "{envs:?}");

    // 2. Every upstream server stopped, the store warm, --offline: still reproduced, and the
    //    inputs lock shows no upstream fetch.
    drop(servers);
    let out2 = tmp.path().join("out2");
    let (o, r) = reproduce(&store, &out2, &locs, &["--offline"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced");
    let lock = std::fs::read_to_string(out2.join("inputs.lock")).unwrap();
    let statuses: Vec<&str> = lock
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(!statuses.is_empty(), "{lock}");
    assert!(
        statuses.iter().all(|s| *s == "hit"),
        "an offline run fetched something:\n{lock}"
    );
    // The warm run took the prepared environment (seen through an overlay, which is gone
    // afterwards) and reused its lock exactly.
    let key = envs[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        env_steps(&r).iter().all(|s| s["cached"] == key.as_str()),
        "{r:#}"
    );
    assert_eq!(
        std::fs::read_to_string(out2.join("env.lock")).unwrap(),
        env_lock
    );
    assert!(work_dirs(&out2).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tmp.path().to_str().unwrap()),
        "a mount of the run remains:\n{mounts}"
    );

    // 2b. --fresh-env: the environment steps run again from the base, for this run alone,
    //     and give the same bytes.
    let out2b = tmp.path().join("out2b");
    let (o, r) = reproduce(&store, &out2b, &locs, &["--offline", "--fresh-env"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    let steps = env_steps(&r);
    assert!(
        !steps.is_empty()
            && steps
                .iter()
                .all(|s| s.get("cached").is_none() && s["exit_code"] == 0),
        "{r:#}"
    );
    assert_eq!(prepared_envs(&store), envs);

    // 3. The environment of the later day: differs, names devtools with both versions and
    //    the files that differ.
    let servers = serve();
    let locs = locations(&servers);
    let out3 = tmp.path().join("out3");
    let (o, r) = reproduce(&store, &out3, &locs, &["--env-day", "2026/04/15"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(r["verdict"], "differs");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "fail");
    let drift = r["environment_drift"].as_array().unwrap();
    let devtools_day1 = &m.env_package.per_day["2026/04/15"];
    assert!(
        drift.iter().any(|d| d["name"] == "devtools"
            && d["a"] == devtools_day0.as_str()
            && d["b"] == devtools_day1.as_str()),
        "{drift:?}"
    );
    let files = r["file_diffs"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "usr/share/man/man1/busybox.1"),
        "{files:?}"
    );
    // diffoscope (installed by scripts/test) ran on the two tarballs; its output is kept.
    assert!(
        ["diffoscope.txt", "diffoscope.json"]
            .iter()
            .all(|f| r["external_diffs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == f)),
        "diffoscope's output is not listed (is diffoscope installed? scripts/apt/world.txt): {r:#}"
    );
    let ds = std::fs::read_to_string(out3.join("diffoscope.txt")).unwrap();
    assert!(ds.contains("usr/share/man/man1/busybox.1"), "{ds}");
    let ds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out3.join("diffoscope.json")).unwrap()).unwrap();
    assert!(ds["source1"].as_str().is_some(), "{ds:#}");
    let summary = std::fs::read_to_string(out3.join("summary.txt")).unwrap();
    assert!(
        summary.contains(&format!("devtools: {devtools_day0} -> {devtools_day1}")),
        "{summary}"
    );
    // Another day is another prepared environment.
    assert_eq!(prepared_envs(&store).len(), 2);
    // Both images are kept as archives, each naming its own config.
    for (file, side) in [("published.tar", "expected"), ("rebuilt.tar", "actual")] {
        let digest = check(&r, "image-config-digest")[side].as_str().unwrap();
        let cfg = archive_config(&out3.join("images").join(file));
        assert_eq!(format!("sha256:{cfg}"), digest, "{file}");
        assert!(
            r["external_diffs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| *f == format!("images/{file}").as_str()),
            "{r:#}"
        );
    }

    // 4. A release whose published rootfs hash was altered: the rootfs check fails and
    //    nothing else is claimed (the image checks still pass).
    let git = tmp.path().join("altered.git");
    let run = |args: &[&str], dir: &Path| {
        let o = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(
        &[
            "clone",
            "-q",
            "--mirror",
            world().0.join("upstream.git").to_str().unwrap(),
            git.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let wt = tmp.path().join("altered-wt");
    run(
        &["clone", "-q", git.to_str().unwrap(), wt.to_str().unwrap()],
        tmp.path(),
    );
    run(&["checkout", "-q", &m.git.tag], &wt);
    let df = wt.join("Dockerfile.repro");
    let text = std::fs::read_to_string(&df).unwrap();
    let altered = "0".repeat(64);
    assert!(text.contains(&m.rootfs.sha256));
    std::fs::write(&df, text.replace(&m.rootfs.sha256, &altered)).unwrap();
    run(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-am",
            "altered",
        ],
        &wt,
    );
    run(&["tag", "-f", &m.git.tag], &wt);
    run(
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("refs/tags/{}", m.git.tag),
        ],
        &wt,
    );
    let mut locs4 = locs.clone();
    locs4[3] = format!("git=file://{}", git.display());
    let out4 = tmp.path().join("out4");
    let (o, r) = reproduce(&store, &out4, &locs4, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(check(&r, "rootfs-sha256")["status"], "fail");
    assert_eq!(check(&r, "rootfs-sha256")["expected"], altered.as_str());
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    assert_eq!(check(&r, "image-config-digest")["status"], "pass");
    assert_eq!(check(&r, "image-diff-ids")["status"], "pass");
    assert!(r["environment_drift"].as_array().unwrap().is_empty());
    drop(servers);
    store_verifies(&store);
}

#[test]
fn bad_inputs_exit_2_or_3_and_leave_the_store_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);
    let run = |version: &str, locs: &[String], extra: &[&str]| {
        reproduce_cmd(version, &store, locs)
            .arg("--out")
            .arg(tmp.path().join("out"))
            .args(extra)
            .output()
            .unwrap()
    };
    // Malformed version.
    let o = run("20260331.0", &locs, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("BUILD_VERSION"));
    // A version with no release tag.
    let o = run("20260331.0.999", &locs, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("v20260331.0.999"), "{}", stderr(&o));
    // An unreachable archive, online: exit 3 naming the URL.
    let mut bad = locs.clone();
    bad[0] = "archive=http://127.0.0.1:9".into();
    let o = run(&world().1.version, &bad, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("http://127.0.0.1:9"), "{}", stderr(&o));
    // An unreachable git remote, online: exit 3 naming it; and it leaves no empty cache
    // that an offline run would mistake for the repository.
    let mut nogit = locs.clone();
    nogit[3] = "git=http://127.0.0.1:9/upstream.git".into();
    let o = run(&world().1.version, &nogit, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("http://127.0.0.1:9/upstream.git"),
        "{}",
        stderr(&o)
    );
    let o = run(&world().1.version, &nogit, &["--offline"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("offline and the store holds no copy"),
        "{}",
        stderr(&o)
    );
    // Offline with an empty store: exit 3, nothing fetched.
    let empty = tmp.path().join("empty-store");
    let o = reproduce_cmd(&world().1.version, &empty, &locs)
        .arg("--offline")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("offline"), "{}", stderr(&o));
    // An output directory that is a file: exit 2 naming it, before anything is fetched;
    // the file is left as it was.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let fresh = tmp.path().join("store-for-out");
    let o = reproduce_cmd(&world().1.version, &fresh, &locs)
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("output directory {}", file.display())),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    assert!(
        !fresh.join("git").exists(),
        "the release was fetched before the output directory was checked"
    );
    // No work directories left behind in the output directory.
    let left = work_dirs(&tmp.path().join("out"));
    assert!(left.is_empty(), "left {left:?}");
    drop(servers);
    store_verifies(&store);
}

#[test]
fn sigint_mid_reproduction_exits_130_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);

    // 1. A cold store: interrupted while the environment is being prepared in the store.
    let out = tmp.path().join("out");
    interrupt_when(
        &store,
        &out,
        &locs,
        |w| w.join("workspace/.git").exists(),
        1500,
    );
    let envs = store.join("envs");
    let staging: Vec<_> = std::fs::read_dir(&envs)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        staging
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".staging-")),
        "a staging directory was left: {staging:?}"
    );

    // 2. A warm store: interrupted while the build runs in the overlay over the prepared
    //    environment; the overlay and its idmapped lower layer are unmounted.
    let (o, _) = reproduce(&store, &tmp.path().join("warm"), &locs, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out2 = tmp.path().join("out2");
    interrupt_when(
        &store,
        &out2,
        &locs,
        |w| w.join("workspace/build").exists(),
        300,
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(tmp.path().to_str().unwrap()),
        "a mount of the run remains:\n{mounts}"
    );
    drop(servers);
    store_verifies(&store);
}

/// Start a reproduction, wait until `ready(work directory)` holds, wait `delay_ms` more,
/// SIGINT it, and check it exits 130 leaving no work directory and no mount of `out`.
fn interrupt_when(
    store: &Path,
    out: &Path,
    locs: &[String],
    ready: impl Fn(&Path) -> bool,
    delay_ms: u64,
) {
    let mut c = reproduce_cmd(&world().1.version, store, locs);
    c.arg("--out").arg(out);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let started = std::time::Instant::now();
    loop {
        let work = work_dirs(out).into_iter().next();
        if work.is_some_and(|w| ready(&w)) {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "the reproduction never reached the point to interrupt"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "reprobox ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(out.is_dir(), "the output directory is gone");
    let left = work_dirs(out);
    assert!(left.is_empty(), "left {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(out.to_str().unwrap()),
        "a mount of the run remains:\n{mounts}"
    );
}
