//! `reprobox run --snapshot DAY` and `reprobox drift` against the world made from the real
//! upstream, through the real binary: a command in the real profile's environment at
//! 2026/05/20 sees that day's devtools, at 2026/06/02 the later one; a second run reuses
//! the prepared environment (the run record says so); the command's exit code is
//! reprobox's; `--packages` makes another environment; a bad day exits 2. Then `drift`
//! between a report's env.lock and a day, between two reports, and two locks. Needs root
//! (CI is root).

mod reproduce_common;

use std::path::Path;
use std::process::{Command, Output};

use reproduce_common::*;

fn reprobox(store: &Path, locs: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.arg("run").arg("--store").arg(store);
    for l in locs {
        c.args(["--location", l]);
    }
    c
}

/// `run --snapshot DAY --json … -- CMD`: the output, the command's stdout (all lines but
/// the last) and the run record (the last line).
fn run_json(
    store: &Path,
    locs: &[String],
    day: &str,
    extra: &[&str],
    cmd: &[&str],
) -> (Output, String, serde_json::Value) {
    let o = reprobox(store, locs)
        .args(["--snapshot", day, "--json"])
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, last) = out
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", out.trim_end()));
    let rec = serde_json::from_str(last).unwrap_or(serde_json::Value::Null);
    (o, format!("{body}\n"), rec)
}

fn drift_cmd(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .arg("drift")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

#[test]
fn run_at_a_snapshot_sees_that_days_packages_reuses_its_environment_and_drift_compares_days() {
    let (_, m) = world();
    let servers = serve();
    let locs = locations(&servers);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let devtools = |day: &str| {
        m.arch["env_per_day"][day]["devtools"]
            .as_str()
            .expect("the world's devtools of the day")
            .to_string()
    };
    assert_ne!(devtools("2026/05/20"), devtools("2026/06/02"));

    // 1. The day's devtools, the environment prepared and kept.
    let (o, stdout, rec) = run_json(
        &store,
        &locs,
        "2026/05/20",
        &[],
        &["pacman", "-Q", "devtools"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout, format!("devtools {}\n", devtools("2026/05/20")));
    let env = &rec["environment"];
    assert_eq!(env["day"], "2026/05/20");
    assert_eq!(env["reused"], false, "{env}");
    let key = env["prepared"]
        .as_str()
        .expect("a prepared environment")
        .to_string();
    assert!(env["env_lock"].as_str().unwrap().contains(&format!(
        "name = \"devtools\"\nversion = \"{}\"",
        devtools("2026/05/20")
    )));
    assert_eq!(prepared_envs(&store).len(), 1);

    // 2. Again: the same prepared environment, nothing rolled back (every step cached).
    let (o, stdout, rec) = run_json(
        &store,
        &locs,
        "2026/05/20",
        &[],
        &[
            "sh",
            "-c",
            "pacman -Q devtools; echo SDE=$SOURCE_DATE_EPOCH",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let env = &rec["environment"];
    assert_eq!(env["reused"], true, "{env}");
    assert_eq!(env["prepared"], key.as_str());
    assert!(
        env["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["cached"] == key.as_str())
    );
    // SOURCE_DATE_EPOCH: 00:00:00 UTC of the day.
    assert_eq!(
        stdout,
        format!("devtools {}\nSDE=1779235200\n", devtools("2026/05/20"))
    );
    assert_eq!(prepared_envs(&store).len(), 1);
    let lock_0520 = env["env_lock"].as_str().unwrap().to_string();

    // 3. The later day: its devtools, another environment; the exit code passes through.
    let (o, stdout, rec) = run_json(
        &store,
        &locs,
        "2026/06/02",
        &[],
        &["sh", "-c", "pacman -Q devtools; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout, format!("devtools {}\n", devtools("2026/06/02")));
    assert_eq!(rec["exit_code"], 7);
    assert_ne!(rec["environment"]["prepared"], key.as_str());
    assert_eq!(prepared_envs(&store).len(), 2);
    let lock_0602 = rec["environment"]["env_lock"].as_str().unwrap().to_string();

    // 4. --packages: another environment with the package; a bind, read-only, as workdir.
    let proj = tmp.path().join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("marker"), "from the host\n").unwrap();
    let bind = format!("{}:/src:ro", proj.display());
    let (o, stdout, rec) = run_json(
        &store,
        &locs,
        "2026/05/20",
        &["--packages", "linux", "--bind", &bind, "--workdir", "/src"],
        &["sh", "-c", "pacman -Q linux; cat marker"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let linux = m.arch["all_packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "linux")
        .expect("the world's linux package")["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stdout, format!("linux {linux}\nfrom the host\n"));
    assert_eq!(rec["environment"]["packages"][0], "linux");
    assert_eq!(prepared_envs(&store).len(), 3);

    // 5. Bad days: exit 2, the day named, nothing prepared.
    for (day, what) in [
        ("2026/05/21", "has no such day"),
        ("2026-05-20", "YYYY/MM/DD"),
        ("2026/02/30", "YYYY/MM/DD"),
    ] {
        let o = reprobox(&store, &locs)
            .args(["--snapshot", day, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{day}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(day) && e.contains(what), "{day}: {e}");
    }
    assert_eq!(prepared_envs(&store).len(), 3);

    // 6. drift: a report's env.lock against a day, from the day's databases alone.
    let report_a = tmp.path().join("report-a");
    let report_b = tmp.path().join("report-b");
    for (dir, lock) in [(&report_a, &lock_0520), (&report_b, &lock_0602)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("env.lock"), lock).unwrap();
    }
    let archive = locs
        .iter()
        .find_map(|l| l.strip_prefix("archive="))
        .expect("the world serves an archive")
        .to_string();
    let ra = report_a.to_str().unwrap();
    let o = drift_cmd(
        &store,
        &["--report", ra, "--day", "2026/06/02", "--archive", &archive],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "devtools: {} -> {}\n",
            devtools("2026/05/20"),
            devtools("2026/06/02")
        )
    );
    // The day's lock from the databases is what the environment of that day held; offline,
    // from the databases the run at that day stored (under the real archive's URLs: the
    // world's location stands for it).
    let o = drift_cmd(
        &store,
        &[
            report_b.to_str().unwrap(),
            "--day",
            "2026/06/02",
            "--archive",
            &archive,
            "--offline",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = drift_cmd(
        &store,
        &["--report", ra, "--day", "2026/05/21", "--archive", &archive],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("2026/05/21"));
    // Between two reports, and a report and a lock.
    let o = drift_cmd(&store, &[ra, report_b.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d[0]["name"], "devtools");
    let o = drift_cmd(&store, &[ra, report_a.join("env.lock").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = drift_cmd(&store, &[tmp.path().to_str().unwrap(), ra]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no env.lock"));
}
