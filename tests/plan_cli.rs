//! The front door: `reprobox plan`, `profiles`, `release inspect`, through the real binary.
//! Exit codes and messages are what a user sees, so they are asserted exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn reprobox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The environment must not leak overrides into golden output.
    for (k, _) in std::env::vars() {
        if k.starts_with("REPROBOX_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(args: &[&str]) -> Output {
    reprobox().args(args).output().expect("run reprobox")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "golden {name} differs (UPDATE_GOLDEN=1 to accept)"
    );
}

/// The 32 real repro releases (copied from ../shared/data/repro-releases.tsv).
fn releases() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/repro-releases.tsv"),
    )
    .unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn plan_of_every_real_release_agrees_with_the_table() {
    let rows = releases();
    assert_eq!(rows.len(), 32, "the table lists 32 releases");
    for row in rows {
        let (version, created) = (&row[0], &row[3]);
        let o = run(&["plan", "archlinux-repro", version, "--json"]);
        assert!(o.status.success(), "{version}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["created"], created.as_str(), "{version}");
        assert_eq!(v["tag"], format!("v{version}"), "{version}");
        // The snapshot day is the day before the created day.
        let day = jiff::civil::Date::strptime("%Y-%m-%dT00:00:00Z", created).unwrap();
        let snap = day.yesterday().unwrap().strftime("%Y/%m/%d").to_string();
        assert_eq!(v["snapshot"], snap, "{version}");
        // The environment is rolled to the build day (upstream's CI used its live mirrors).
        assert_eq!(
            v["env_day"],
            day.strftime("%Y/%m/%d").to_string(),
            "{version}"
        );
        let sde = day
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second();
        assert_eq!(v["source_date_epoch"], sde, "{version}");
    }
}

#[test]
fn plan_golden_text_and_json_for_the_real_profile() {
    let o = run(&["plan", "archlinux-repro", "20260518.0.532496"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("environment day    2026/05/18 (the build day: upstream's CI used the live mirrors of that day"),
        "{text}"
    );
    assert!(text.contains("snapshot day       2026/05/17"), "{text}");
    golden("plan-archlinux-repro-20260518.0.532496.txt", &text);
    let o = run(&["plan", "archlinux-repro", "20260518.0.532496", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    golden("plan-archlinux-repro-20260518.0.532496.json", &stdout(&o));
}

#[test]
fn plan_by_path_and_with_overrides_points_everything_at_loopback() {
    let o = reprobox()
        .args([
            "plan",
            "profiles/archlinux-repro.toml",
            "20260420.0.518142",
            "--location",
            "git=file:///srv/upstream.git",
            "--json",
        ])
        .env("REPROBOX_LOCATION_ARCHIVE", "http://127.0.0.1:8080")
        .env("REPROBOX_LOCATION_REGISTRY", "http://127.0.0.1:5000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["base"]["url"],
        "http://127.0.0.1:8080/iso/2026.04.01/archlinux-bootstrap-2026.04.01-x86_64.tar.zst"
    );
    assert_eq!(v["source"]["git"], "file:///srv/upstream.git");
    assert_eq!(v["locations"]["archive"]["from"], "environment");
    assert_eq!(v["locations"]["git"]["from"], "command-line");
    assert_eq!(v["expected"]["registry"], "http://127.0.0.1:5000");
    // Nothing the job runs names the internet: the sandbox only sees the mirror.
    for step in v["steps"].as_array().unwrap() {
        for cmd in step["commands"].as_array().unwrap() {
            let line = cmd.to_string();
            assert!(!line.contains("archlinux.org"), "{line}");
        }
    }
}

#[test]
fn profiles_lists_the_real_profile() {
    let o = run(&["profiles"]);
    assert!(o.status.success());
    let s = stdout(&o);
    let line = s
        .lines()
        .find(|l| l.starts_with("archlinux-repro "))
        .expect(&s);
    assert!(line.contains("repro container image"), "{line}");
}

fn tmpfile(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reprobox-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Every bad input: one line on stderr naming the input and the expected form, exit 2.
fn assert_bad(args: &[&str], must_contain: &[&str]) {
    let o = assert_bad_stderr(args, must_contain);
    assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout");
}

fn assert_bad_stderr(args: &[&str], must_contain: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "{args:?}: one line expected: {e}"
    );
    for m in must_contain {
        assert!(e.contains(m), "{args:?}: {e:?} should contain {m:?}");
    }
    o
}

#[test]
fn malformed_build_versions_exit_2_with_the_expected_form() {
    for bad in [
        "2026051.0.1",
        "20260230.0.1",
        "20261301.0.1",
        "2026a518.0.1",
        " 20260518.0.1",
        "20260518.0.1 ",
        "",
        "20260518.0",
        "20260518.0.",
    ] {
        assert_bad(
            &["plan", "archlinux-repro", bad],
            &[
                "BUILD_VERSION",
                &format!("{bad:?}"),
                "expected YYYYMMDD.N.JOB",
            ],
        );
    }
    assert_bad(
        &["plan", "archlinux-repro", "20130831.0.1"],
        &["before the archive's first day 2013/08/31"],
    );
}

#[test]
fn unknown_or_broken_profiles_exit_2() {
    assert_bad(
        &["plan", "nope", "20260518.0.532496"],
        &["profile \"nope\"", "archlinux-repro"],
    );
    let broken = tmpfile("broken.toml", "schema = 1\nname = [\n");
    assert_bad(
        &["plan", broken.to_str().unwrap(), "20260518.0.532496"],
        &["broken.toml", "invalid profile TOML"],
    );
    let real = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/archlinux-repro.toml"),
    )
    .unwrap();
    let typo = tmpfile(
        "typo.toml",
        &real.replacen("[rollback]\n", "[rollback]\npackges = []\n", 1),
    );
    assert_bad(
        &["plan", typo.to_str().unwrap(), "20260518.0.532496"],
        &["typo.toml", "packges"],
    );
    assert_bad(
        &[
            "plan",
            "archlinux-repro",
            "20260518.0.532496",
            "-L",
            "archiv=http://x",
        ],
        &["--location archiv", "archive"],
    );
    assert_bad(
        &[
            "plan",
            "archlinux-repro",
            "20260518.0.532496",
            "-L",
            "archive",
        ],
        &["NAME=URL"],
    );
}

fn release_text(version: &str, created: &str, sha: &str) -> String {
    format!(
        "FROM alpine:3.23 AS verify\nRUN apk add --no-cache curl tar zstd\n\
RUN ROOTFS=\"$(curl -sOJL -w \"%{{filename_effective}}\" \"https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/{version}/repro-{version}.tar.zst\")\" && \\\n\
    echo \"{sha}  repro-{version}.tar.zst\" > /tmp/rootfs.tar.sha256 && \\\n\
    sha256sum -c /tmp/rootfs.tar.sha256 && mkdir /rootfs && tar -C /rootfs --extract --file \"${{ROOTFS}}\"\n\
FROM scratch AS root\n\
LABEL org.opencontainers.image.version=\"{version}\"\n\
LABEL org.opencontainers.image.revision=\"7161278aa0983266f49d863ce814ec87d8245a2f\"\n\
LABEL org.opencontainers.image.created=\"{created}\"\n\
COPY --from=verify /rootfs/ /\nENV LANG=C.UTF-8\nCMD [\"/usr/bin/bash\"]\n"
    )
}

#[test]
fn release_inspect_reads_every_field() {
    for row in releases() {
        let (version, created, sha) = (&row[0], &row[3], &row[4]);
        let f = tmpfile(
            &format!("Dockerfile.{version}"),
            &release_text(version, created, sha),
        );
        let o = run(&["release", "inspect", f.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{version}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["version"], version.as_str());
        assert_eq!(v["rootfs_sha256"], sha.as_str());
        assert_eq!(v["rootfs_file"], format!("repro-{version}.tar.zst"));
        assert_eq!(v["base_image"], "alpine:3.23");
        assert_eq!(v["agrees_with_plan"], true);
    }
}

#[test]
fn release_inspect_bad_inputs_exit_2() {
    let sha = "008e69cf045b94cb8fff8115fd970c44a355ce7d6ea2fe28a43dfb454ba51db4";
    let wrong_created = tmpfile(
        "wc",
        &release_text("20260420.0.518142", "2026-04-19T00:00:00Z", sha),
    );
    // The fields are still printed; the disagreement is the one error line.
    let o = assert_bad_stderr(
        &["release", "inspect", wrong_created.to_str().unwrap()],
        &[
            "org.opencontainers.image.created is \"2026-04-19T00:00:00Z\"",
            "2026-04-20T00:00:00Z",
        ],
    );
    assert!(
        stdout(&o).contains("rootfs sha256    008e69cf"),
        "{}",
        stdout(&o)
    );
    let no_labels = tmpfile("nl", "FROM scratch\nCOPY x /\n");
    assert_bad(
        &["release", "inspect", no_labels.to_str().unwrap()],
        &["nl", "no LABEL org.opencontainers.image.version"],
    );
    let good = release_text("20260420.0.518142", "2026-04-20T00:00:00Z", sha);
    let two = good.replace(
        "sha256sum -c",
        &format!(
            "echo \"{}  repro-20260420.0.518142.tar.zst\" && sha256sum -c",
            "0".repeat(64)
        ),
    );
    let two = tmpfile("two", &two);
    assert_bad(
        &["release", "inspect", two.to_str().unwrap()],
        &["two different rootfs sha256 lines"],
    );
    assert_bad(
        &["release", "inspect", "/nonexistent/Dockerfile.repro"],
        &["/nonexistent/Dockerfile.repro", "cannot read"],
    );
}

#[test]
fn drift_compares_two_locks() {
    let a = tmpfile(
        "a.lock",
        "schema = 1\n\n[[package]]\nname = \"devtools\"\nversion = \"1.0-1\"\n\n[[package]]\nname = \"pacman\"\nversion = \"6.0.2-1\"\n",
    );
    let b = tmpfile(
        "b.lock",
        "schema = 1\n\n[[package]]\nname = \"devtools\"\nversion = \"2.0-1\"\n\n[[package]]\nname = \"pacman\"\nversion = \"6.0.2-1\"\n",
    );
    let o = run(&["drift", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "devtools: 1.0-1 -> 2.0-1\n");
    let o = run(&["drift", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let bad = tmpfile("bad.lock", "schema = 1\nbogus = 1\n");
    assert_bad(
        &["drift", a.to_str().unwrap(), bad.to_str().unwrap()],
        &["environment lock", "bad.lock"],
    );
}

/// `lock from-rootfs` on a small rootfs tarball (made here, gzip), and its bad inputs.
#[test]
fn lock_from_rootfs_reads_a_tarball_and_refuses_bad_ones() {
    let desc = |name: &str, version: &str, arch: &str| {
        format!(
            "%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%BASE%\n{name}\n\n%DESC%\nx\n\n%URL%\nhttps://example.org/\n\n%ARCH%\n{arch}\n\n\
%BUILDDATE%\n1774828800\n\n%INSTALLDATE%\n1774915200\n\n%PACKAGER%\nworld <w@reprobox.invalid>\n\n\
%SIZE%\n1\n\n%REASON%\n1\n\n%LICENSE%\nMIT\n\n%VALIDATION%\nnone\n\n"
        )
    };
    let tarball = |name: &str, files: &[(String, String)]| {
        let p = tmpfile(name, "");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        p
    };
    let good = tarball(
        "rootfs.tar.gz",
        &[
            (
                "./var/lib/pacman/local/systemd-258.2-1/desc".into(),
                desc("systemd", "258.2-1", "x86_64"),
            ),
            (
                "./var/lib/pacman/local/base-3-2/desc".into(),
                desc("base", "3-2", "any"),
            ),
        ],
    );
    let good_s = good.to_str().unwrap();
    let o = run(&["lock", "from-rootfs", good_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("[[package]]\nname = \"base\"\nversion = \"3-2\"\narch = \"any\"\n")
            && text.contains("name = \"systemd\"\nversion = \"258.2-1\"\narch = \"x86_64\"\n"),
        "{text}"
    );
    // The printed lock is what `drift` reads: against itself, no drift.
    let lock = tmpfile("rootfs.lock", &text);
    let o = run(&["drift", lock.to_str().unwrap(), lock.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["lock", "from-rootfs", good_s, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["package"][1]["name"], "systemd");
    // A wrong --sha256 is refused as tampered (3); a malformed one is bad input.
    let o = run(&["lock", "from-rootfs", good_s, "--sha256", &"0".repeat(64)]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_bad(
        &["lock", "from-rootfs", good_s, "--sha256", "xyz"],
        &["--sha256", "64 hex"],
    );
    assert_bad(
        &["lock", "from-rootfs", "/nonexistent/repro.tar.zst"],
        &["/nonexistent/repro.tar.zst", "no such file"],
    );
    let empty = tarball("empty.tar.gz", &[("./etc/hostname".into(), "x\n".into())]);
    assert_bad(
        &["lock", "from-rootfs", empty.to_str().unwrap()],
        &["empty.tar.gz", "no pacman database"],
    );
}
