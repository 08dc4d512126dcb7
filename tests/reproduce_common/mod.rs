//! What the end-to-end reproduction tests share (tests/reproduce_e2e.rs,
//! tests/reproduce_microvm.rs, tests/world_build.rs, tests/world_arch.rs): the world made
//! from the real upstream repository (`world::from_upstream`), built once per machine under a
//! lock and served on loopback, and `reprobox reproduce archlinux-repro` — the real profile —
//! through the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use reprobox::world::from_upstream::{self, UpstreamWorld};
use reprobox::world::{self, WorldServers};

/// The real upstream's bundles (`archlinux-docker.bundle`, `devtools.bundle`):
/// $REPROBOX_UPSTREAM_DIR, else `../shared/upstream` beside the project, else
/// /work/shared/upstream. Missing, the tests fail with the reason; they never skip.
pub fn upstream_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("REPROBOX_UPSTREAM_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/upstream"),
            PathBuf::from("/work/shared/upstream"),
        ],
    };
    candidates
        .iter()
        .find(|d| d.join("archlinux-docker.bundle").is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the real upstream's bundles are not in {candidates:?} (set REPROBOX_UPSTREAM_DIR to the directory holding archlinux-docker.bundle and devtools.bundle)"
            )
        })
}

/// The world, built once per machine and reused (the build is idempotent), under the world's
/// own lock so test binaries never build it twice at once.
pub fn world() -> &'static (PathBuf, UpstreamWorld) {
    static W: OnceLock<(PathBuf, UpstreamWorld)> = OnceLock::new();
    W.get_or_init(|| {
        // A world someone already built (`reprobox world build DIR --upstream BUNDLE`).
        if let Some(dir) = std::env::var_os("REPROBOX_TEST_WORLD") {
            let dir = PathBuf::from(dir);
            let m = from_upstream::load(&dir).unwrap_or_else(|e| panic!("REPROBOX_TEST_WORLD: {e}"));
            return (dir, m);
        }
        let cache = PathBuf::from(
            std::env::var("REPROBOX_TEST_CACHE").unwrap_or("/var/cache/reprobox-tests".into()),
        );
        let dir = cache.join("world-upstream");
        let up = upstream_dir();
        let m = from_upstream::build(
            &dir,
            &up.join("archlinux-docker.bundle"),
            &up.join("devtools.bundle"),
        )
        .unwrap_or_else(|e| {
            panic!("the test world could not be built (needs root, bwrap, debootstrap, docker-registry, socat, gpg): {e}")
        });
        (dir, m)
    })
}

/// The world's release version.
pub fn version() -> &'static str {
    &world().1.release.version
}

pub fn serve() -> WorldServers {
    world::serve(
        &world().0,
        world::Ports {
            archive: 0,
            registry: 0,
        },
    )
    .expect("serve the world")
}

/// `NAME=URL` for every location the world serves.
pub fn locations(s: &WorldServers) -> Vec<String> {
    s.locations()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// `locs` with location `name` replaced by `url`.
pub fn with_location(locs: &[String], name: &str, url: &str) -> Vec<String> {
    let mut l: Vec<String> = locs
        .iter()
        .filter(|l| !l.starts_with(&format!("{name}=")))
        .cloned()
        .collect();
    l.push(format!("{name}={url}"));
    l
}

/// `reprobox reproduce archlinux-repro VERSION --store STORE --location …` from the
/// project's root; callers add the rest.
pub fn reproduce_cmd(version: &str, store: &Path, locs: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.args(["reproduce", "archlinux-repro", version, "--store"])
        .arg(store);
    for l in locs {
        c.args(["--location", l]);
    }
    c
}

pub fn reproduce(
    store: &Path,
    out: &Path,
    locs: &[String],
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let o = reproduce_cmd(version(), store, locs)
        .arg("--json")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run reprobox");
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, v)
}

pub fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

/// The record of step `name` in a report.
pub fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report:#}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The reproduction work directories (`.reprobox-work-*`) in an output directory.
pub fn work_dirs(out: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(out)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".reprobox-work-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The store's prepared environments.
pub fn prepared_envs(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("envs"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'));
    v.sort();
    v
}

/// `bash -c CMD`'s stdout; a failure fails the test with the command and its stderr.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
