//! `reprobox bisect` against the world made from the real upstream (ROOT tier): between
//! the build day and the later day whose devtools (1.5.1-1, synthetic) changes the rootfs'
//! `etc/pacman.conf`, it names that day and that package, keeps every probe as an ordinary
//! reproduction report, and refuses bad days (exit 2) before probing anything.

mod reproduce_common;

use std::path::Path;
use std::process::{Command, Output};

use reproduce_common::*;

fn bisect_cmd(store: &Path, locs: &[String], out: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.args(["bisect", "archlinux-repro", version(), "--store"])
        .arg(store)
        .arg("--out")
        .arg(out);
    for l in locs {
        c.args(["--location", l]);
    }
    c.args(extra).output().expect("run reprobox bisect")
}

#[test]
fn bisect_names_devtools_and_its_first_day_and_keeps_every_probe() {
    let (dir, m) = world();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = tmp.path().join("out");
    let servers = serve();
    let locs = locations(&servers);
    let (good, bad) = ("2026/05/20", "2026/06/02");
    let env = |day: &str| {
        m.arch["env_per_day"][day]["devtools"]
            .as_str()
            .unwrap_or_else(|| panic!("world.json: no devtools on {day}"))
            .to_string()
    };
    let (from, to) = (env(good), env(bad));
    assert_ne!(from, to, "the world's days do not differ in devtools");

    let o = bisect_cmd(
        &store,
        &locs,
        &out,
        &["--good-day", good, "--bad-day", bad, "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not the JSON report ({e}): {}", stderr(&o)));
    // The same report is written into the output directory.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bisect.json")).unwrap()).unwrap();
    assert_eq!(r, written);

    assert_eq!(r["schema"], "reprobox.bisect/v1");
    assert_eq!(r["changed"], true, "{r:#}");
    assert_eq!(r["last_good_day"], good, "{r:#}");
    assert_eq!(r["first_bad_day"], bad, "{r:#}");
    assert_eq!(r["days"], serde_json::json!([good, bad]));
    assert_eq!(r["baseline"]["verdict"], "reproduced", "{r:#}");
    assert_eq!(r["baseline"]["rootfs_sha256"], m.rootfs.sha256.as_str());
    assert_eq!(r["explained"], true, "{r:#}");

    // The culprit: devtools, pinned to the exact file of the archive's packages/ tree, by
    // the sha256 the bad day's database lists (here: the world's file's own hash).
    let culprits = r["culprits"].as_array().unwrap();
    assert_eq!(culprits.len(), 1, "{r:#}");
    let c = &culprits[0];
    assert_eq!(c["name"], "devtools");
    assert_eq!(c["from"], from.as_str());
    assert_eq!(c["to"], to.as_str());
    let file = &c["file"];
    let rel = file["path"].as_str().unwrap();
    assert!(
        rel.starts_with("/packages/d/devtools/devtools-"),
        "{file:#}"
    );
    assert_eq!(file["day"], bad);
    assert_eq!(
        file["sha256"],
        reprobox::digest::sha256_file(&dir.join("archive").join(rel.trim_start_matches('/')))
            .unwrap()
            .as_str()
    );
    let rootfs = r["rootfs_changes"].as_array().unwrap();
    assert!(rootfs.iter().any(|p| p == "etc/pacman.conf"), "{r:#}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("devtools {from} → {to}: changes etc/pacman.conf"))
            && msg.ends_with(&format!("in the rootfs (first on {bad})")),
        "{msg}"
    );

    // Every probe is an ordinary reproduction report under OUT/probes/<label>/.
    let probes = r["probes"].as_array().unwrap();
    let labels: Vec<&str> = probes
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["day-2026-05-20", "day-2026-06-02", "packages-1"],
        "{r:#}"
    );
    let mut reports = Vec::new();
    for p in probes {
        let rep: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(p["report"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(rep["verdict"], p["signature"]["verdict"], "{p:#}");
        assert_eq!(
            check(&rep, "rootfs-sha256")["actual"],
            p["signature"]["rootfs_sha256"]
        );
        reports.push(rep);
    }
    assert_eq!(probes[0]["changed"], false);
    assert_eq!(reports[0]["environment_day"], good);
    assert_eq!(probes[1]["changed"], true);
    assert_eq!(reports[1]["environment_day"], bad);
    assert_eq!(reports[1]["verdict"], "differs");
    // The package probe: the good day's environment, plus devtools of the bad day installed
    // by the added environment step from the mirror's packages/ path; same rootfs as the
    // bad day.
    assert_eq!(probes[2]["kind"], "packages");
    assert_eq!(probes[2]["day"], good);
    assert_eq!(probes[2]["changed"], true);
    assert_eq!(
        probes[2]["signature"]["rootfs_sha256"],
        probes[1]["signature"]["rootfs_sha256"]
    );
    assert_eq!(reports[2]["environment_day"], good);
    assert!(
        reports[2]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "bisect-apply" && s["exit_code"] == 0),
        "{:#}",
        reports[2]["steps"]
    );
    let version_in = |label: &str| {
        let l = reprobox::envlock::EnvLock::load(&out.join("probes").join(label).join("env.lock"))
            .unwrap();
        l.packages
            .iter()
            .find(|p| p.name == "devtools")
            .map(|p| p.version.clone())
    };
    assert_eq!(version_in("day-2026-05-20").as_deref(), Some(from.as_str()));
    assert_eq!(version_in("packages-1").as_deref(), Some(to.as_str()));
    let inputs = std::fs::read_to_string(out.join("probes/packages-1/inputs.lock")).unwrap();
    assert!(inputs.contains(rel), "{inputs}");
    // Each day's environment and the probe's set were prepared once, in the store.
    assert_eq!(prepared_envs(&store).len(), 3);
}

#[test]
fn bad_days_exit_2_before_any_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let servers = serve();
    let locs = locations(&servers);
    for (args, says) in [
        (
            vec!["--good-day", "2026-05-20"],
            "--good-day \"2026-05-20\": expected",
        ),
        (vec!["--bad-day", "2026/02/30"], "--bad-day \"2026/02/30\""),
        (
            vec!["--good-day", "2026/06/02", "--bad-day", "2026/05/20"],
            "the good day must come before the bad day",
        ),
        // Days the archive does not list (its listing is read from the world's server).
        (
            vec!["--good-day", "2026/05/20", "--bad-day", "2026/05/25"],
            "days from 2026/05/20 to it: 2026/05/20",
        ),
        (
            vec!["--good-day", "2026/05/21"],
            "--good-day 2026/05/21: is not a day the archive",
        ),
        // The latest day as the good day: nothing later to bisect to.
        (vec!["--good-day", "2026/06/02"], "no later day"),
    ] {
        let out = tmp.path().join("out");
        let o = bisect_cmd(&store, &locs, &out, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
}
