//! Every real repro release of upstream's repository: its Dockerfile.repro, read at its tag
//! from the real repository (the bundle `../shared/upstream/archlinux-docker.bundle`,
//! cloned once per run; never a copy in the project), parses with `reprobox release
//! inspect`, agrees with `reprobox plan archlinux-repro VERSION`, and matches the table of
//! the 32 releases (`../shared/data/repro-releases.tsv`, as `tests/data/`). No root needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn reprobox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(manifest());
    for (k, _) in std::env::vars() {
        if k.starts_with("REPROBOX_") {
            c.env_remove(k);
        }
    }
    c
}

fn ok(o: &Output, what: &str) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

/// A clone of the real upstream repository from the bundle.
fn upstream(dir: &Path) -> PathBuf {
    // $REPROBOX_UPSTREAM_DIR (scripts/test sets it), else `../shared/upstream` beside the
    // project.
    let bundle = std::env::var_os("REPROBOX_UPSTREAM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("../shared/upstream"))
        .join("archlinux-docker.bundle");
    assert!(
        bundle.is_file(),
        "{} is missing: this test reads the real upstream repository from that bundle (../shared/upstream/README.md); without it nothing can be checked",
        bundle.display()
    );
    let repo = dir.join("upstream.git");
    let o = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&bundle)
        .arg(&repo)
        .output()
        .expect("git is needed to read the upstream bundle");
    assert!(
        o.status.success(),
        "git clone {}: {}",
        bundle.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    repo
}

/// The 32 releases: build_version, tag_commit, source_revision, created, rootfs_sha256.
fn releases() -> Vec<Vec<String>> {
    let path = manifest().join("tests/data/repro-releases.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

#[test]
fn every_real_tags_dockerfile_parses_and_agrees_with_the_plan_and_the_table() {
    let t = tempfile::tempdir().unwrap();
    let repo = upstream(t.path());
    let rows = releases();
    assert_eq!(rows.len(), 32, "the table lists 32 releases");
    for row in rows {
        let [version, tag_commit, revision, created, sha] = &row[..] else {
            panic!("bad row {row:?}")
        };
        let tag = format!("v{version}");
        let git = |args: &[&str]| {
            let o = Command::new("git")
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8(o.stdout).unwrap()
        };
        assert_eq!(
            git(&["rev-parse", &format!("{tag}^{{commit}}")]).trim(),
            tag_commit,
            "{tag}"
        );
        // The source revision is in the repository (the bundle has them all).
        git(&["cat-file", "-e", &format!("{revision}^{{commit}}")]);
        let file = t.path().join(format!("Dockerfile.repro-{version}"));
        std::fs::write(&file, git(&["show", &format!("{tag}:Dockerfile.repro")])).unwrap();

        let r = ok(
            &reprobox()
                .args(["release", "inspect", "--json"])
                .arg(&file)
                .output()
                .unwrap(),
            &format!("release inspect {tag}"),
        );
        let p = ok(
            &reprobox()
                .args(["plan", "archlinux-repro", version, "--json"])
                .output()
                .unwrap(),
            &format!("plan {version}"),
        );
        // release inspect agrees with the plan for its own version …
        assert_eq!(r["agrees_with_plan"], true, "{tag}: {r:#}");
        assert_eq!(r["version"], version.as_str(), "{tag}");
        assert_eq!(r["plan"]["snapshot"], p["snapshot"], "{tag}");
        assert_eq!(
            r["plan"]["source_date_epoch"], p["source_date_epoch"],
            "{tag}"
        );
        assert_eq!(r["plan"]["created"], p["created"], "{tag}");
        assert_eq!(r["plan"]["tag"], p["tag"], "{tag}");
        assert_eq!(p["source"]["tag"], tag.as_str(), "{tag}");
        // … the rootfs URL the release downloads is the one the plan expects …
        assert_eq!(r["rootfs_url"], p["expected"]["rootfs_url"], "{tag}");
        assert_eq!(
            r["rootfs_file"],
            format!("repro-{version}.tar.zst"),
            "{tag}"
        );
        // … and both match the table.
        assert_eq!(r["source_revision"], revision.as_str(), "{tag}");
        assert_eq!(r["rootfs_sha256"], sha.as_str(), "{tag}");
        assert_eq!(r["created"], created.as_str(), "{tag}");
        assert_eq!(p["created"], created.as_str(), "{tag}");
        let day = jiff::civil::Date::strptime("%Y-%m-%dT00:00:00Z", created).unwrap();
        assert_eq!(
            p["snapshot"],
            day.yesterday().unwrap().strftime("%Y/%m/%d").to_string(),
            "{tag}"
        );
        assert_eq!(p["env_day"], day.strftime("%Y/%m/%d").to_string(), "{tag}");
        let sde = day
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second();
        assert_eq!(p["source_date_epoch"], sde, "{tag}");
        // The release's revision label is the source revision the plan reads.
        assert_eq!(
            p["source"]["revision_label"],
            "org.opencontainers.image.revision"
        );
    }
}
