//! `reprobox reproduce archlinux-repro` — the real profile — end to end against the world
//! made from the real upstream repository, through the real binary: the world's release
//! reproduces; again offline with every server stopped, and with the release's own
//! Dockerfile; with a later day's environment it differs and names the drifted package and
//! the file; a release whose published rootfs hash was altered fails only the rootfs check;
//! an altered package is refused and the verdict is incomplete; a real release's tag goes
//! as far as the world allows and is never reproduced; bad inputs exit 2 or 3 and leave the
//! store valid. Needs root (CI is root): without it the world cannot be
//! built and the test fails with the reason.

mod reproduce_common;

use std::path::{Path, PathBuf};
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
    // install-optional (diffoscope, which the world's archive lacks) is an environment
    // step too, but optional: its exit status is not asserted.
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

/// Every status of an inputs lock: the first word of a plain line, the third of an
/// `egress POLICY STATUS …` line.
fn lock_statuses(lock: &str) -> Vec<String> {
    lock.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            if w[0] == "egress" { w[2] } else { w[0] }.to_string()
        })
        .collect()
}

/// The report a stopped run wrote into `out`: incomplete, stopped at one of `stages` with an
/// error naming `what`, no check passed, and the summary saying it.
fn stopped_report(out: &Path, stages: &[&str], what: &str) -> serde_json::Value {
    let text = std::fs::read(out.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json in {}: {e}", out.display()));
    let r: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(r["verdict"], "incomplete", "{r:#}");
    let stage = r["stopped"]["stage"].as_str().unwrap();
    assert!(
        stages.contains(&stage),
        "{stage} not one of {stages:?}: {r:#}"
    );
    let error = r["stopped"]["error"].as_str().unwrap();
    assert!(error.contains(what), "{error}");
    for c in [
        "rootfs-sha256",
        "image-config-digest",
        "image-diff-ids",
        "image-manifest-digest",
    ] {
        assert_ne!(check(&r, c)["status"], "pass", "{c}: {r:#}");
    }
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("INCOMPLETE") && summary.contains(&format!("stopped at stage {stage}")),
        "{summary}"
    );
    assert!(out.join("inputs.lock").is_file());
    assert!(!out.join("attestation.json").exists());
    r
}

/// The version of `name` the world's archive has on `day` for the environment.
fn env_version(m: &reprobox::world::from_upstream::UpstreamWorld, day: &str, name: &str) -> String {
    m.arch["env_per_day"][day][name]
        .as_str()
        .unwrap_or_else(|| panic!("world.json: no {name} on {day}"))
        .to_string()
}

#[test]
fn the_world_release_reproduces_with_the_real_profile_online_then_offline_and_drift_is_explained() {
    let (_, m) = world();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);
    let build_day = m.release.build_day.as_str();

    // 1. Online against the loopback world: reproduced, from a clean checkout of the
    //    release's real source revision, with upstream's unmodified scripts.
    let out1 = tmp.path().join("out1");
    let (o, r) = reproduce(&store, &out1, &locs, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    assert_eq!(r["profile"], "archlinux-repro");
    assert_eq!(
        r["source_revision"],
        "34b87485162b028c8d957bdcd2674359d883cd21"
    );
    assert_eq!(r["workspace"]["revision"], r["source_revision"]);
    assert_eq!(r["workspace"]["clean_checkout"], true, "{r:#}");
    assert_eq!(r["environment_day"], build_day);
    assert_eq!(r["snapshot"], m.release.snapshot.as_str());
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    assert_eq!(
        check(&r, "image-config-digest")["actual"],
        m.image.config_digest.as_str()
    );
    assert_eq!(check(&r, "image-diff-ids")["status"], "pass");
    // Pushed by the environment's podman as the publish job pushed it (OCI, gzip), the
    // rebuilt image has the published manifest digest: the image users pull.
    let md = check(&r, "image-manifest-digest");
    assert_eq!(md["status"], "pass", "{r:#}");
    assert_eq!(md["decisive"], true, "{md:#}");
    assert_eq!(md["actual"], m.image.manifest_digest.as_str(), "{md:#}");
    // The regenerated Dockerfile differs from the release's only where the two
    // make-dockerfile.sh invocations differ.
    assert_eq!(check(&r, "dockerfile")["status"], "pass", "{r:#}");
    let make = step(&r, "make");
    assert_eq!(make["env"]["BUILD_VERSION"], m.release.version.as_str());
    // The make step made all three artifacts: none was there before it ran.
    assert_eq!(
        make["produced"],
        serde_json::json!(["repro.tar.zst", "repro.tar.zst.SHA256", "Dockerfile.repro"]),
        "{make:#}"
    );
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
    let devtools_day = env_version(m, build_day, "devtools");
    assert!(
        env_lock.contains(&format!(
            "name = \"devtools\"\nversion = \"{devtools_day}\""
        )),
        "{env_lock}"
    );
    assert!(
        env_lock.contains(&format!("day = \"{build_day}\"")),
        "{env_lock}"
    );
    // Every host the build reached went through the egress and is in the inputs lock.
    let lock1 = std::fs::read_to_string(out1.join("inputs.lock")).unwrap();
    for host in [
        "https://archive.archlinux.org/repos/",
        "https://registry-1.docker.io/v2/library/alpine/manifests/3.23",
        "https://dl-cdn.alpinelinux.org/alpine/v3.23/main/x86_64/APKINDEX.tar.gz",
    ] {
        assert!(
            lock1
                .lines()
                .any(|l| l.starts_with("egress ") && l.contains(host)),
            "no egress line for {host}:\n{lock1}"
        );
    }
    // reprobox's own fetches (the bootstrap, the published image) are named by the real
    // hosts' URLs too, not by the locations that served them.
    for name in [
        format!(
            "https://registry-1.docker.io/v2/{}/manifests/{}",
            m.image.repository, m.image.tag
        ),
        "https://archive.archlinux.org/iso/".to_string(),
    ] {
        assert!(
            lock1
                .lines()
                .any(|l| !l.starts_with("egress ") && l.contains(&name)),
            "no line names {name}:\n{lock1}"
        );
    }
    // The report carries the egress's record: the run CA's certificate (never a key), and
    // every request, none refused.
    let eg = &r["egress"];
    assert!(
        eg["ca_certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "{eg:#}"
    );
    assert!(eg["requests"].as_array().unwrap().len() > 10, "{eg:#}");
    assert!(eg["refusals"].as_array().unwrap().is_empty(), "{eg:#}");
    // (The prepared environments are left out: they are the build environment's files,
    // whose binaries name PEM headers and whose pacman keyring has its own secret key.)
    let o = Command::new("grep")
        .args([
            "-rlE",
            "--exclude-dir=envs",
            "-----BEGIN ([A-Z]+ )?PRIVATE KEY-----",
        ])
        .arg(&out1)
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        o.stdout.is_empty(),
        "a private key in the outputs or the store: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let summary = std::fs::read_to_string(out1.join("summary.txt")).unwrap();
    assert!(summary.contains("REPRODUCED"), "{summary}");
    assert!(summary.contains("a clean checkout"), "{summary}");
    assert!(
        summary.contains("the rebuilt image is the one users pull, digest for digest"),
        "{summary}"
    );
    // The environment steps ran, and their result was kept as a prepared environment.
    assert!(
        env_steps(&r).iter().all(|s| s.get("cached").is_none()),
        "{r:#}"
    );
    let envs = prepared_envs(&store);
    assert_eq!(envs.len(), 1, "{envs:?}");

    // 2. Every upstream server stopped, the store warm, --offline, and every location moved
    //    to another address (the store names what reprobox fetched by the real hosts'
    //    URLs, so it replays wherever it was fetched from): still reproduced, and the inputs
    //    lock shows no upstream fetch.
    drop(servers);
    let out2 = tmp.path().join("out2");
    let moved: Vec<String> = locs
        .iter()
        .map(|l| l.replace("http://127.0.0.1:", "http://127.0.0.9:"))
        .collect();
    assert_ne!(moved, locs);
    let (o, r) = reproduce(&store, &out2, &moved, &["--offline"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced");
    assert_eq!(
        check(&r, "image-manifest-digest")["status"],
        "pass",
        "{r:#}"
    );
    let lock = std::fs::read_to_string(out2.join("inputs.lock")).unwrap();
    let statuses = lock_statuses(&lock);
    assert!(
        statuses.iter().filter(|s| *s == "hit").count() > 20,
        "{lock}"
    );
    // `miss`: the world's archive has no database signatures (pacman asks for them, and
    // DatabaseOptional accepts their absence): 404 online, and so a miss offline.
    assert!(
        statuses.iter().all(|s| s == "hit" || s == "miss"),
        "an offline run fetched something:\n{lock}"
    );
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
    //     and give the same bytes (the rollback's mirror, too, answers from what the store
    //     holds under the real archive's URLs, at the moved location).
    let out2b = tmp.path().join("out2b");
    let (o, r) = reproduce(&store, &out2b, &moved, &["--offline", "--fresh-env"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    let steps = env_steps(&r);
    assert!(
        steps
            .iter()
            .all(|s| s.get("cached").is_none() && s["exit_code"] == 0),
        "{r:#}"
    );
    assert_eq!(prepared_envs(&store), envs);

    // 3. The environment of the later day: differs, names devtools with both versions and
    //    the file that differs (devtools' extra.conf is the image's /etc/pacman.conf).
    let servers = serve();
    let locs = locations(&servers);
    // 2c. Online again, --image-from published: the release's own Dockerfile.repro, whose
    //     curl fetches the published rootfs through the egress's pinned rule, gives the
    //     same image.
    let out2c = tmp.path().join("out2c");
    let (o, r) = reproduce(&store, &out2c, &locs, &["--image-from", "published"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        r["image_from"].as_str().unwrap().starts_with("published"),
        "{r:#}"
    );
    assert_eq!(
        check(&r, "image-config-digest")["actual"],
        m.image.config_digest.as_str()
    );
    let lock = std::fs::read_to_string(out2c.join("inputs.lock")).unwrap();
    // A hit: every run's `published-rootfs-sha256` check already put the tarball, pinned by
    // the release's hash, into the store.
    assert!(
        lock.lines().any(|l| l.starts_with("egress pinned hit ")
            && l.contains(&m.rootfs.sha256)
            && l.contains(&m.rootfs.url)),
        "the published rootfs was not served by the pinned rule:\n{lock}"
    );

    let later = "2026/06/02";
    let devtools_later = env_version(m, later, "devtools");
    assert_ne!(devtools_later, devtools_day);
    let out3 = tmp.path().join("out3");
    let (o, r) = reproduce(&store, &out3, &locs, &["--env-day", later]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(r["verdict"], "differs");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "fail");
    // Another image: its pushed manifest differs too, with no harmless cause.
    let md = check(&r, "image-manifest-digest");
    assert_eq!(md["status"], "fail", "{md:#}");
    assert!(md.get("known_cause").is_none(), "{md:#}");
    let drift = r["environment_drift"].as_array().unwrap();
    assert!(
        drift.iter().any(|d| d["name"] == "devtools"
            && d["a"] == devtools_day.as_str()
            && d["b"] == devtools_later.as_str()),
        "{drift:?}"
    );
    let files = r["file_diffs"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["path"] == "etc/pacman.conf"),
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
    assert!(ds.contains("ParallelDownloads"), "{ds}");
    let summary = std::fs::read_to_string(out3.join("summary.txt")).unwrap();
    assert!(
        summary.contains(&format!("devtools: {devtools_day} -> {devtools_later}")),
        "{summary}"
    );
    assert_eq!(
        prepared_envs(&store).len(),
        2,
        "{:?}\n{r:#}",
        prepared_envs(&store)
    );
    // Both images are kept as archives, each naming its own config, and the native image
    // diff ran on them.
    for (file, side) in [("published.tar", "expected"), ("rebuilt.tar", "actual")] {
        let digest = check(&r, "image-config-digest")[side].as_str().unwrap();
        let cfg = archive_config(&out3.join("images").join(file));
        assert_eq!(format!("sha256:{cfg}"), digest, "{file}");
    }
    assert!(out3.join("image-diff.txt").is_file(), "{r:#}");

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
    let world_git = locs
        .iter()
        .find_map(|l| l.strip_prefix("git="))
        .unwrap()
        .to_string();
    run(
        &["clone", "-q", "--mirror", &world_git, git.to_str().unwrap()],
        tmp.path(),
    );
    let wt = tmp.path().join("altered-wt");
    run(
        &["clone", "-q", git.to_str().unwrap(), wt.to_str().unwrap()],
        tmp.path(),
    );
    run(&["checkout", "-q", &m.tag], &wt);
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
    run(&["tag", "-f", &m.tag], &wt);
    run(
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("refs/tags/{}", m.tag),
        ],
        &wt,
    );
    let locs4 = with_location(&locs, "git", &format!("file://{}", git.display()));
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

    // 5. An altered package in the archive make-rootfs installs from: the egress refuses
    //    the bytes (they are not the day's database's), make fails, and the verdict is
    //    incomplete, never reproduced, naming the package.
    let world_archive = world().0.join("archive");
    let altered_archive = tmp.path().join("altered-archive");
    let o = Command::new("cp")
        .args(["-al"])
        .arg(&world_archive)
        .arg(&altered_archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let day_dir = altered_archive.join(format!("repos/{}/core/os/x86_64", m.release.snapshot));
    let bash = std::fs::read_dir(&day_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("bash-") && n.ends_with(".pkg.tar.zst")
        })
        .unwrap();
    let mut bytes = std::fs::read(&bash).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::remove_file(&bash).unwrap();
    std::fs::write(&bash, &bytes).unwrap();
    let altered_server = reprobox::world::fileserver::FileServer::dir(&altered_archive).unwrap();
    let locs5 = with_location(&locs, "archive", &altered_server.url());
    // A store of its own: the shared one holds the genuine package already (checked against
    // the database when it was stored) and would serve it without asking the archive.
    let out5 = tmp.path().join("out5");
    let (o, r) = reproduce(&tmp.path().join("store5"), &out5, &locs5, &[]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "incomplete", "{r:#}");
    let bash_name = bash.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        r["notes"].as_array().unwrap().iter().any(|n| {
            let n = n.as_str().unwrap();
            n.contains(&bash_name) && n.contains("refused")
        }),
        "the refused package is not named: {r:#}"
    );
    drop(altered_server);

    // The published image unreachable (the registry's location a closed port), the rest as
    // before and the store warm: the image cannot be compared, so never `reproduced`.
    let locs6 = with_location(&locs, "registry", "http://127.0.0.1:9");
    let out6 = tmp.path().join("out6");
    let (o, r) = reproduce(&store, &out6, &locs6, &[]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "incomplete", "{r:#}");
    for name in ["image-config-digest", "image-diff-ids"] {
        assert_ne!(check(&r, name)["status"], "pass", "{name}: {r:#}");
    }
    assert!(
        r.to_string().contains("127.0.0.1:9"),
        "the unreachable registry is not named: {r:#}"
    );
    drop(servers);
    store_verifies(&store);
}

/// A real release's tag, in the world's copy of the real repository: its real
/// Dockerfile.repro is read (the real hash, the real source revision), and the run goes as
/// far as the world allows — the world's archive has no day 2026/05/18 and its registry no
/// published image of that release — and is never called reproduced.
#[test]
fn a_real_release_goes_as_far_as_the_world_allows_and_is_never_reproduced() {
    let tmp = tempfile::tempdir().unwrap();
    let servers = serve();
    let locs = locations(&servers);
    let out = tmp.path().join("out");
    let o = reproduce_cmd("20260518.0.532496", &tmp.path().join("store"), &locs)
        .arg("--json")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let r: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(r["verdict"], "incomplete", "{r:#}");
    assert_eq!(r["hosts"], "local-world", "{r:#}");
    // The tag's real Dockerfile.repro was parsed.
    assert_eq!(
        r["source_revision"],
        "34b87485162b028c8d957bdcd2674359d883cd21"
    );
    assert_eq!(
        check(&r, "rootfs-sha256")["expected"],
        "2fd2e5f7c5b08ebe3ac829083995f3f5faf7fa80d6f36fe080a6740bc341005c"
    );
    assert_ne!(check(&r, "rootfs-sha256")["status"], "pass");
    for c in ["image-config-digest", "image-diff-ids"] {
        assert_ne!(check(&r, c)["status"], "pass", "{c}: {r:#}");
    }
    // Why, in the report's own words: the environment day is not in the world's archive,
    // and the published image is not in its registry.
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("step rollback failed")),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("repos/2026/05/18")),
        "{notes:#?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the published image could not be read")
                && n.contains("repro-20260518.0.532496")),
        "{notes:#?}"
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("INCOMPLETE") && summary.contains("local world"),
        "{summary}"
    );
    drop(servers);
}

#[test]
fn bad_inputs_exit_2_or_3_and_leave_the_store_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);
    let out = tmp.path().join("out");
    let run = |version: &str, locs: &[String], extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&out);
        reproduce_cmd(version, &store, locs)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    // Malformed version: bad input, nothing written.
    let o = run("20260520.0", &locs, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("BUILD_VERSION"));
    assert!(!out.join("report.json").exists());
    // A version with no release tag: bad input found after the plan, nothing written.
    let o = run("20260520.0.999", &locs, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("v20260520.0.999"), "{}", stderr(&o));
    assert!(!out.join("report.json").exists());
    // An unreachable archive, online: exit 3 naming the URL; the run stopped after the
    // release was read, and its report says so (incomplete, the stage, the URL).
    let bad = with_location(&locs, "archive", "http://127.0.0.1:9");
    let o = run(version(), &bad, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("http://127.0.0.1:9"), "{}", stderr(&o));
    let r = stopped_report(&out, &["workspace"], "http://127.0.0.1:9");
    assert_eq!(
        r["source_revision"],
        "34b87485162b028c8d957bdcd2674359d883cd21"
    );
    // An unreachable git remote, online: exit 3 naming it, a report stopped at the release
    // (no revision known); and it leaves no empty cache that an offline run would mistake
    // for the repository.
    let nogit = with_location(&locs, "git", "http://127.0.0.1:9/upstream.git");
    let o = run(version(), &nogit, &["--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("http://127.0.0.1:9/upstream.git"),
        "{}",
        stderr(&o)
    );
    let r = stopped_report(&out, &["release"], "http://127.0.0.1:9/upstream.git");
    assert!(r["source_revision"].is_null(), "{r:#}");
    // --json: the same report on stdout.
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not the report ({e}): {}", stderr(&o)));
    assert_eq!(printed, r);
    let o = run(version(), &nogit, &["--offline"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("offline and the store holds no copy"),
        "{}",
        stderr(&o)
    );
    stopped_report(&out, &["release"], "offline and the store holds no copy");
    // Offline with an empty store: exit 3, nothing fetched.
    let empty = tmp.path().join("empty-store");
    let o = reproduce_cmd(version(), &empty, &locs)
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
    let o = reproduce_cmd(version(), &fresh, &locs)
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
    // A store that cannot be opened (its directory would be inside a file): stopped before
    // the first stage, and the report says so.
    let out_store = tmp.path().join("out-store");
    let o = reproduce_cmd(version(), &file.join("store"), &locs)
        .arg("--out")
        .arg(&out_store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&file.display().to_string()),
        "{}",
        stderr(&o)
    );
    stopped_report(&out_store, &["store"], &file.display().to_string());
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
    let mut c = reproduce_cmd(version(), store, locs);
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
    // Interrupted after the plan: the report says so.
    let r = stopped_report(out, &["workspace", "environment", "build"], "interrupted");
    assert_eq!(r["stopped"]["exit_code"], 130, "{r:#}");
    // Stopped after the egress was made: its record is in the report all the same.
    if r["stopped"]["stage"] != "workspace" {
        assert!(
            r["egress"]["ca_certificate"]
                .as_str()
                .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----")),
            "{r:#}"
        );
    }
    let left = work_dirs(out);
    assert!(left.is_empty(), "left {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(out.to_str().unwrap()),
        "a mount of the run remains:\n{mounts}"
    );
}

/// The published rootfs tarball gone: the world served 61 days after its release, when its
/// package registry answers 404 for it as upstream's cleanup of packages older than 60 days
/// does. On a rootfs mismatch the files are diffed against the published image's
/// `COPY --from=verify` layer instead, and the report says so.
#[test]
fn with_the_published_tarball_gone_the_rootfs_is_diffed_against_the_image_layer() {
    let (dir, m) = world();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let release_day = jiff::civil::Date::strptime("%Y/%m/%d", &m.release.build_day).unwrap();
    let today = release_day.checked_add(jiff::Span::new().days(61)).unwrap();
    let servers = reprobox::world::serve_at(
        dir,
        reprobox::world::Ports {
            archive: 0,
            registry: 0,
        },
        Some(today),
    )
    .unwrap();
    let locs = locations(&servers);
    // The world's own registry has forgotten the release: its URL answers 404.
    let rootfs_url = m.rootfs.url.replace(
        "https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs",
        &servers.rootfs_url,
    );
    assert_ne!(rootfs_url, m.rootfs.url, "{}", m.rootfs.url);
    match ureq::get(&rootfs_url).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("{rootfs_url} 61 days after the release: {other:?}"),
    }
    let out = tmp.path().join("out");
    let (o, r) = reproduce(&store, &out, &locs, &["--env-day", "2026/06/02"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(r["verdict"], "differs", "{r:#}");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "fail", "{r:#}");
    assert_eq!(
        check(&r, "rootfs-sha256")["expected"],
        m.rootfs.sha256.as_str()
    );
    let files = r["file_diffs"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["path"] == "etc/pacman.conf"
            && f["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["what"] == "content")),
        "{files:?}"
    );
    assert_eq!(
        r["file_diffs_source"],
        "published image layer 1 (COPY --from=verify), the tarball being gone",
        "{r:#}"
    );
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let has = |s: &str| notes.iter().any(|n| n.contains(s));
    assert!(has("could not fetch the published rootfs"), "{notes:#?}");
    assert!(
        has("the published rootfs tarball is gone: the file diff is against the published image"),
        "{notes:#?}"
    );
    assert!(
        has("what the image layer cannot show") && has("etc/ld.so.cache"),
        "{notes:#?}"
    );
    // The tarball was asked for at the world's package registry, and never got.
    assert!(has(&rootfs_url) && has("404"), "{notes:#?}");
    // No diffoscope on a tarball that was never fetched.
    assert!(!out.join("diffoscope.txt").exists());
    // The layer came through the registry client: recorded in the inputs lock.
    let lock = std::fs::read_to_string(out.join("inputs.lock")).unwrap();
    assert!(
        lock.lines()
            .any(|l| l.contains("/v2/archlinux/archlinux/blobs/sha256:")),
        "{lock}"
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("files that differ (published image layer 1 (COPY --from=verify)"),
        "{summary}"
    );
    assert!(summary.contains("etc/pacman.conf"), "{summary}");
}

/// A directory laid out as the world, whose registry is `storage` and whose archive, gitlab
/// and Alpine trees are the world's own: the world with another Docker Hub.
fn world_with_registry(parent: &Path, name: &str, storage: &Path) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(d.join("work")).unwrap();
    for sub in ["archive", "gitlab", "alpine"] {
        std::os::unix::fs::symlink(world().0.join(sub), d.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(storage, d.join("registry")).unwrap();
    d
}

fn serve_dir(dir: &Path) -> reprobox::world::WorldServers {
    reprobox::world::serve(
        dir,
        reprobox::world::Ports {
            archive: 0,
            registry: 0,
        },
    )
    .unwrap()
}

/// Two registries that are not the world's Docker Hub, through the real docker-registry:
/// 1. one whose stored config blob of the published image was altered (it serves a body
///    that is not its digest): the run refuses it, is never reproduced, names the digest
///    and the URL, and the store keeps nothing of it;
/// 2. one where the world's publish job pushed the same image with `podman push
///    --compression-format zstd:chunked`: the rebuilt image, pushed as plain zstd (what the
///    layers' media type says), has another manifest digest over the same config and
///    diffIDs; the check names the compressor as the cause and the verdict stays
///    reproduced, with no failure shown.
#[test]
fn a_registry_body_not_matching_its_digest_is_refused_and_another_compressor_is_named_not_failed() {
    let (dir, m) = world();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    // 1. The config blob altered in the registry's own storage (still valid JSON, so only
    //    its digest can tell).
    let tampered = tmp.path().join("tampered-registry");
    sh(&format!(
        "cp -a {} {}",
        dir.join("registry").display(),
        tampered.display()
    ));
    let hex = m.image.config_digest.trim_start_matches("sha256:");
    let blob = tampered.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let text = std::fs::read_to_string(&blob).unwrap();
    assert!(text.contains("amd64"), "{text}");
    let bad = text.replacen("amd64", "amd65", 1).into_bytes();
    std::fs::write(&blob, &bad).unwrap();
    let bad_hex = reprobox::digest::sha256_hex(&bad);
    let w = world_with_registry(tmp.path(), "tampered-world", &tampered);
    let servers = serve_dir(&w);
    let out = tmp.path().join("tampered");
    let (o, r) = reproduce(&store, &out, &locations(&servers), &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(r["verdict"], "incomplete", "{r:#}");
    assert_eq!(check(&r, "rootfs-sha256")["status"], "pass", "{r:#}");
    for c in [
        "image-config-digest",
        "image-diff-ids",
        "image-manifest-digest",
    ] {
        assert_eq!(check(&r, c)["status"], "unknown", "{c}: {r:#}");
    }
    let url = format!(
        "{}/v2/archlinux/archlinux/blobs/{}",
        servers.registry_url, m.image.config_digest
    );
    assert!(
        r["notes"].as_array().unwrap().iter().any(|n| {
            let n = n.as_str().unwrap();
            n.contains(&url) && n.contains(hex) && n.contains(&bad_hex) && n.contains("tampered")
        }),
        "no note names {url} and both digests: {r:#}"
    );
    drop(servers);
    // Nothing of the altered body was kept: the store verifies, and no file of it is named
    // by the altered bytes' hash.
    store_verifies(&store);
    let found = sh(&format!("find {} -name '*{bad_hex}*'", store.display()));
    assert!(found.trim().is_empty(), "{found}");

    // 2. The same image published again by the world's publish job, its podman pushing
    //    zstd:chunked.
    let chunked = tmp.path().join("chunked-registry");
    let rec = reprobox::world::ci::republish(
        dir,
        m,
        &chunked,
        &tmp.path().join("republish"),
        "--compression-format zstd:chunked",
    )
    .unwrap();
    assert_eq!(rec.config_digest, m.image.config_digest);
    assert_eq!(rec.diff_ids, m.image.diff_ids);
    assert_ne!(rec.manifest_digest, m.image.manifest_digest);
    let w = world_with_registry(tmp.path(), "chunked-world", &chunked);
    let servers = serve_dir(&w);
    let manifest: serde_json::Value = serde_json::from_slice(
        &ureq::get(&format!(
            "{}/v2/archlinux/archlinux/manifests/{}",
            servers.registry_url, rec.manifest_digest
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .header(
            "Authorization",
            &servers.pull_authorization("archlinux/archlinux").unwrap(),
        )
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(
        !layers.is_empty()
            && layers
                .iter()
                .all(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd")),
        "{manifest:#}"
    );
    let out = tmp.path().join("chunked");
    let (o, r) = reproduce(&store, &out, &locations(&servers), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    let md = check(&r, "image-manifest-digest");
    assert_eq!(md["status"], "fail", "{md:#}");
    assert_eq!(md["decisive"], false, "{md:#}");
    assert_eq!(md["expected"], rec.manifest_digest.as_str(), "{md:#}");
    assert!(
        md["evidence"].as_str().unwrap().contains("zstd layers"),
        "{md:#}"
    );
    let cause = md["known_cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("over the same diffIDs")
            && cause.contains("the compressor differs, not the content"),
        "{md:#}"
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("image-manifest-digest"))
        .unwrap();
    assert!(line.contains("differs (known, harmless:"), "{summary}");
    assert!(!summary.contains("FAIL"), "{summary}");
    assert!(summary.contains("REPRODUCED"), "{summary}");
    drop(servers);
}
