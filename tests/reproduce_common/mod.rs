//! What the end-to-end reproduction tests share (tests/reproduce_e2e.rs,
//! tests/reproduce_microvm.rs): the test world, built once per machine under a lock and
//! served on loopback, and `reprobox reproduce` through the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use reprobox::world::{self, WorldManifest, WorldServers};

/// The world, built once per machine and reused (world::build is idempotent), under a lock
/// so test binaries never build it twice at once.
pub fn world() -> &'static (PathBuf, WorldManifest) {
    static W: OnceLock<(PathBuf, WorldManifest)> = OnceLock::new();
    W.get_or_init(|| {
        // A world someone already built (for example with `reprobox world build DIR`).
        if let Some(dir) = std::env::var_os("REPROBOX_TEST_WORLD") {
            let dir = PathBuf::from(dir);
            let m = world::load(&dir).unwrap_or_else(|e| panic!("REPROBOX_TEST_WORLD: {e}"));
            return (dir, m);
        }
        let cache = PathBuf::from(std::env::var("REPROBOX_TEST_CACHE").unwrap_or("/var/cache/reprobox-tests".into()));
        std::fs::create_dir_all(&cache).unwrap();
        let lock = std::fs::File::create(cache.join(".world-e2e.lock")).unwrap();
        fs2::FileExt::lock_exclusive(&lock).unwrap();
        let dir = cache.join("world-e2e");
        let m = world::build(&dir)
            .unwrap_or_else(|e| panic!("the test world could not be built (needs root, bwrap, debootstrap, docker-registry, linux-image-amd64): {e}"));
        (dir, m)
    })
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

pub fn locations(s: &WorldServers) -> Vec<String> {
    vec![
        format!("archive={}", s.archive_url),
        format!("rootfs={}", s.rootfs_url),
        format!("registry={}", s.registry_url),
        format!("git={}", s.git_url),
    ]
}

/// `reprobox reproduce test-world VERSION --store STORE --location …` from the project's
/// root; callers add the rest.
pub fn reproduce_cmd(version: &str, store: &Path, locs: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.args(["reproduce", "test-world", version, "--store"])
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
    let o = reproduce_cmd(&world().1.version, store, locs)
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
