//! `reprobox run --snapshot DAY --backend microvm` against the world made from the real
//! upstream: the environment a container run prepared at 2026/05/20 is the source of the
//! VM's root disk (the record says it was reused), the guest boots that day's `linux`
//! package, the command sees that day's devtools, and its exit code is reprobox's. Needs
//! root and qemu (KVM when the host has it, TCG otherwise).

mod reproduce_common;

use std::process::Command;

use reproduce_common::*;

#[test]
fn a_snapshot_run_on_the_microvm_uses_the_prepared_environment_and_passes_the_exit_code() {
    let (_, m) = world();
    let servers = serve();
    let locs = locations(&servers);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let day = "2026/05/20";
    let devtools = m.arch["env_per_day"][day]["devtools"].as_str().unwrap();
    let run = |extra: &[&str], cmd: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
        c.arg("run").arg("--store").arg(&store);
        for l in &locs {
            c.args(["--location", l]);
        }
        c.args(["--snapshot", day, "--json"])
            .args(extra)
            .args(["--", "sh", "-c", cmd])
            .output()
            .unwrap()
    };
    // The container prepares and keeps the environment.
    let o = run(&[], "true");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(prepared_envs(&store).len(), 1);

    let o = run(
        &["--backend", "microvm"],
        "pacman -Q devtools; uname -r; exit 7",
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("devtools {devtools}").as_str()),
        "{out}"
    );
    let kernel = lines.next().unwrap_or_default().to_string();
    let rec: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(rec["backend"], "microvm", "{rec}");
    assert_eq!(rec["exit_code"], 7);
    assert_eq!(rec["environment"]["reused"], true, "{rec}");
    // The guest ran the day's linux package, not the host's kernel.
    let linux = m.arch["all_packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "linux")
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stderr(&o).contains(&format!("linux-{linux}-")),
        "kernel {kernel}: {}",
        stderr(&o)
    );
    assert_eq!(prepared_envs(&store).len(), 1);
}
