//! The CI examples (`examples/ci/.gitlab-ci.yml`, `examples/ci/github-actions.yml`) run as
//! written against the world made from the real upstream, so that they cannot rot: each
//! job's shell commands are read from the YAML (GitLab's `before_script` + `script`,
//! GitHub's `run:` steps) and run with bash as the runners do (`-eo pipefail`), in a
//! project directory standing for the checkout, and each job's artifacts (GitLab's
//! `artifacts.paths`, GitHub's `upload-artifact` `path`) must exist afterwards.
//!
//! Replaced, and only these: the locations (`REPROBOX_BIN_URL` becomes the binary under
//! test as a file:// URL; the world's `REPROBOX_LOCATION_*`), the runner's paths
//! (`CI_PROJECT_DIR`/`GITHUB_WORKSPACE`, `RUNNER_TEMP`, `REPROBOX_HOME`, `REPROBOX_STORE`)
//! and `REPRO_VERSION` (the world publishes one release). `actions/checkout` is the project
//! directory itself. Needs root (CI is root) and sudo (the GitHub workflow's commands use it
//! as on GitHub's runners).

mod reproduce_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reproduce_common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn load(name: &str) -> Yaml {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ci")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .remove(0)
}

/// A YAML mapping of scalars as (key, value) strings.
fn vars(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .expect("a mapping of variables")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) | Yaml::Real(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                other => panic!("variable {k:?}: not a scalar: {other:?}"),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn lines(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::BadValue | Yaml::Null => Vec::new(),
        Yaml::Array(a) => a.iter().map(|l| l.as_str().unwrap().to_string()).collect(),
        Yaml::String(s) => vec![s.clone()],
        other => panic!("not a list of commands: {other:?}"),
    }
}

/// Run `script` with `bash ARGS -c`, in `dir`, with `env` on top of this process's
/// environment; fail the test with the output when it fails.
fn bash(what: &str, shell: &[&str], script: &str, dir: &Path, env: &BTreeMap<String, String>) {
    let o = Command::new("bash")
        .args(shell)
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A project whose `make check` checks it runs in the pinned day's environment.
fn project(dir: &Path, devtools: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "check:\n\tpacman -Q devtools | grep -qx 'devtools {devtools}'\n\ttest \"$$SOURCE_DATE_EPOCH\" = 1779235200\n\techo tests passed\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    // The job's root is host uid 100000: the checkout must be readable by others, as a
    // runner's is.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The replacements: locations, runner paths, the world's release.
fn overrides(locs: &[String], store: &Path, extra: &[(&str, &Path)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "REPROBOX_BIN_URL".into(),
        format!("file://{}", env!("CARGO_BIN_EXE_reprobox")),
    );
    m.insert("REPROBOX_STORE".into(), store.display().to_string());
    m.insert("REPRO_VERSION".into(), version().to_string());
    for l in locs {
        let (k, v) = l.split_once('=').unwrap();
        m.insert(
            format!("REPROBOX_LOCATION_{}", k.to_ascii_uppercase()),
            v.into(),
        );
    }
    for (k, p) in extra {
        m.insert(k.to_string(), p.display().to_string());
    }
    m
}

fn env_of(
    declared: BTreeMap<String, String>,
    over: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = declared;
    for (k, v) in env.iter_mut() {
        if let Some(o) = over.get(k) {
            *v = o.clone();
        }
    }
    env.extend(over.clone());
    env
}

fn run_record(dir: &Path) -> serde_json::Value {
    let p = dir.join("run-record.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", p.display()))
}

#[test]
fn the_gitlab_and_github_examples_run_as_written_against_the_world() {
    let (_, m) = world();
    let servers = serve();
    let locs = locations(&servers);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let declared_day = |v: &BTreeMap<String, String>| v["ARCH_SNAPSHOT"].clone();
    let devtools = |day: &str| {
        m.arch["env_per_day"][day]["devtools"]
            .as_str()
            .expect("the world's devtools of the day")
            .to_string()
    };

    // GitLab: every job of the file (hidden `.` templates are what jobs extend).
    let gl = load(".gitlab-ci.yml");
    let gl_vars = vars(&gl["variables"]);
    let day = declared_day(&gl_vars);
    let ci_dir = tmp.path().join("gitlab-project");
    project(&ci_dir, &devtools(&day));
    let over = overrides(
        &locs,
        &store,
        &[
            ("CI_PROJECT_DIR", &ci_dir),
            ("REPROBOX_HOME", &tmp.path().join("gitlab-reprobox")),
        ],
    );
    let env = env_of(gl_vars, &over);
    let mut jobs = Vec::new();
    for (name, job) in gl.as_hash().unwrap() {
        let name = name.as_str().unwrap();
        if name.starts_with('.') || job["script"].is_badvalue() {
            continue;
        }
        jobs.push(name.to_string());
        let base = &gl[job["extends"].as_str().unwrap_or("-")];
        let before = if job["before_script"].is_badvalue() {
            lines(&base["before_script"])
        } else {
            lines(&job["before_script"])
        };
        let script = [before, lines(&job["script"])].concat().join("\n");
        bash(
            &format!("GitLab job {name}"),
            &["-eo", "pipefail"],
            &script,
            &ci_dir,
            &env,
        );
        for p in lines(&job["artifacts"]["paths"]) {
            assert!(
                ci_dir.join(&p).is_file(),
                "GitLab job {name}: artifact {p} missing"
            );
        }
    }
    assert_eq!(jobs, ["test-at-snapshot", "reproduce-release"]);
    let rec = run_record(&ci_dir);
    assert_eq!(rec["exit_code"], 0, "{rec}");
    assert_eq!(rec["environment"]["day"], day.as_str());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ci_dir.join("reprobox-out/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "reproduced", "{}", report["verdict"]);

    // GitHub: every job's `run:` steps; `actions/checkout` is the project directory.
    let gh = load("github-actions.yml");
    let gh_vars = vars(&gh["env"]);
    assert_eq!(gh["defaults"]["run"]["shell"].as_str(), Some("bash"));
    let ws = tmp.path().join("github-workspace");
    project(&ws, &devtools(&declared_day(&gh_vars)));
    let runner_temp = tmp.path().join("runner-temp");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let over = overrides(
        &locs,
        &store,
        &[("GITHUB_WORKSPACE", &ws), ("RUNNER_TEMP", &runner_temp)],
    );
    let env = env_of(gh_vars, &over);
    let mut uploaded = Vec::new();
    for (name, job) in gh["jobs"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        for step in job["steps"].as_vec().unwrap() {
            if let Some(uses) = step["uses"].as_str() {
                if uses.starts_with("actions/upload-artifact@") {
                    for p in step["with"]["path"].as_str().unwrap().lines() {
                        assert!(
                            ws.join(p.trim()).is_file(),
                            "GitHub job {name}: artifact {p} missing"
                        );
                        uploaded.push(p.trim().to_string());
                    }
                } else {
                    assert!(
                        uses.starts_with("actions/checkout@"),
                        "{name}: unknown action {uses}"
                    );
                }
                continue;
            }
            let run = step["run"].as_str().expect("a run step");
            // What `shell: bash` runs on GitHub's runners.
            bash(
                &format!("GitHub job {name}, step {:?}", step["name"].as_str()),
                &["--noprofile", "--norc", "-eo", "pipefail"],
                run,
                &ws,
                &env,
            );
        }
    }
    assert!(uploaded.contains(&"reprobox-out/attestation.json".to_string()));
    let rec = run_record(&ws);
    assert_eq!(rec["exit_code"], 0, "{rec}");
    // The store is the same: the environment the GitLab job prepared is reused.
    assert_eq!(rec["environment"]["reused"], true, "{rec}");
}
