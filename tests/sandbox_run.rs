//! Correctness, cleanup, listeners and the unprivileged path of the container sandbox,
//! through the real `reprobox run` binary and the library API.

mod sandbox_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reprobox::job::{Bind, Job, RootfsSource};
use sandbox_common::*;

fn debian(extra: &[&str], argv: &[&str]) -> std::process::Output {
    require_root();
    let r = debian_rootfs();
    let mut args = vec!["--rootfs", r.to_str().unwrap(), "--read-only"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(argv);
    run(&args)
}

#[test]
fn exit_codes_and_signals_propagate() {
    assert_eq!(debian(&[], &["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(debian(&[], &["true"]).status.code(), Some(0));
    let o = debian(&["--json"], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143));
    let rec: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(rec["signal"], 15);
    assert_eq!(rec["exit_code"], 143);
    // SIGPIPE is default in the job (Rust ignores it in reprobox itself).
    let o = debian(&[], &["sh", "-c", "grep SigIgn /proc/self/status"]);
    let so = text(&o.stdout);
    let mask = u64::from_str_radix(so.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(
        mask & 0x7fff_ffff,
        0,
        "standard signals ignored in the job: {so}"
    );
    let o = debian(&[], &["no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
}

#[test]
fn environment_is_exactly_as_declared() {
    let o = debian(
        &[
            "--env",
            "FOO=bar baz",
            "--env",
            "LANG=C",
            "--source-date-epoch",
            "1700000000",
        ],
        &["/usr/bin/env"],
    );
    let mut got: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
    got.sort();
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
    let mut want = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".into(),
        format!("TERM={term}"),
        "LANG=C".into(),
        "TZ=UTC".into(),
        "SOURCE_DATE_EPOCH=1700000000".into(),
        "FOO=bar baz".into(),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn hostname_uptime_and_source_date_epoch_are_as_declared() {
    let o = debian(
        &[
            "--hostname",
            "builder-7",
            "--source-date-epoch",
            "1774915200",
            "--workdir",
            "/etc",
        ],
        &[
            "sh",
            "-c",
            "hostname; cut -d' ' -f1 /proc/uptime; echo $SOURCE_DATE_EPOCH; pwd; date +%Z",
        ],
    );
    let so = text(&o.stdout);
    let l: Vec<&str> = so.lines().collect();
    assert_eq!(l.len(), 5, "{so} {}", text(&o.stderr));
    assert_eq!(l[0], "builder-7");
    let up: f64 = l[1].parse().unwrap();
    assert!(up < 5.0, "uptime inside is {up}s");
    assert_eq!(l[2], "1774915200");
    assert_eq!(l[3], "/etc");
    assert_eq!(l[4], "UTC");
}

#[test]
fn bad_input_is_one_line_exit_2() {
    for args in [
        vec!["--rootfs", "/nonexistent/rootfs", "--", "true"],
        vec!["--rootfs", "/", "--bind", "relative:/x", "--", "true"],
        vec!["--rootfs", "/", "--caps", "fly", "--", "true"],
        vec!["--rootfs", "/", "--env", "NOEQUALS", "--", "true"],
        vec!["--rootfs", "/", "--network", "host", "--", "true"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert_eq!(
            text(&o.stderr).trim().lines().count(),
            1,
            "{}",
            text(&o.stderr)
        );
    }
}

/// A truncated root filesystem archive is bad input naming it (exit 2), the same on both
/// backends (they unpack through one `unpack_root`), and leaves no temporary root behind;
/// the whole archive runs (positive control).
#[test]
fn a_truncated_rootfs_archive_is_bad_input_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let whole = mini_tar(t.path());
    let o = run(&["--rootfs", whole.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let bytes = std::fs::read(&whole).unwrap();
    let cut = t.path().join("cut.tar");
    // Cut mid-block half way through: the last header promises more than follows.
    let at = bytes.len() / 2;
    std::fs::write(&cut, &bytes[..at - at % 512 + 100]).unwrap();
    // Its own TMPDIR, so that no other test's temporary root is counted.
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let o = Command::new(bin())
        .env("TMPDIR", &tmp)
        .args(["run", "--rootfs", cut.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(cut.to_str().unwrap()), "{err}");
    assert!(err.contains("truncated or corrupt"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "no temporary root left behind: {left:?}");
}

/// A tar of the mini root filesystem (exercises the archive path and its temp dir).
fn mini_tar(dir: &Path) -> PathBuf {
    let root = dir.join("mini");
    mini_rootfs(&root);
    let tarp = dir.join("mini.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarp).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", &root).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    tarp
}

fn job_processes(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .count()
}

fn assert_clean(before: &[String], tmpdir: &Path, marker: &str) {
    // Only mounts of this test's own directory count: tests of other checkouts running at
    // the same time mount and unmount elsewhere, and their mounts are not this job's.
    let ours = tmpdir.parent().unwrap().to_str().unwrap();
    let after = mountinfo();
    let new: Vec<&String> = after
        .iter()
        .filter(|l| !before.contains(l) && l.contains(ours))
        .collect();
    assert!(new.is_empty(), "mounts left on the host: {new:?}");
    assert_eq!(job_processes(marker), 0, "processes of the job left");
    let left: Vec<_> = std::fs::read_dir(tmpdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary directories left: {left:?}");
}

#[test]
fn timeout_kills_the_tree_and_cleans_up() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let tarp = mini_tar(t.path());
    let tmpdir = t.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let before = mountinfo();
    let start = Instant::now();
    let o = Command::new(bin())
        .env("TMPDIR", &tmpdir)
        .args([
            "run",
            "--rootfs",
            tarp.to_str().unwrap(),
            "--timeout",
            "1",
            "--json",
            "--",
        ])
        .args(["sh", "-c", "sleep 4711 & sleep 4711 & sleep 4711"])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(137), "{}", text(&o.stderr));
    let rec: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(rec["timed_out"], true);
    assert_clean(&before, &tmpdir, "sleep 4711");
}

#[test]
fn sigint_to_reprobox_ends_the_job_and_cleans_up() {
    signal_ends_the_job_and_cleans_up(libc::SIGINT, "4712");
}

#[test]
fn sigterm_to_reprobox_ends_the_job_and_cleans_up() {
    signal_ends_the_job_and_cleans_up(libc::SIGTERM, "4713");
}

fn signal_ends_the_job_and_cleans_up(sig: i32, marker: &str) {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let tarp = mini_tar(t.path());
    let tmpdir = t.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let out = job_writable_dir(t.path(), "out");
    let before = mountinfo();
    let mut child = Command::new(bin())
        .env("TMPDIR", &tmpdir)
        .args(["run", "--rootfs", tarp.to_str().unwrap()])
        .args(["--bind", &format!("{}:/out", out.display()), "--"])
        .args([
            "sh",
            "-c",
            &format!("sleep {marker} & touch /out/started; sleep {marker}"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.join("started").exists() {
        assert!(Instant::now() < deadline, "job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(job_processes(&format!("sleep {marker}")) >= 2);
    unsafe { libc::kill(child.id() as i32, sig) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert_clean(&before, &tmpdir, &format!("sleep {marker}"));
}

#[test]
fn listener_made_inside_is_served_by_the_host() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let out = job_writable_dir(t.path(), "out");
    let mut job = Job::new(
        RootfsSource::Dir(debian_rootfs()),
        vec![
            "bash".into(),
            "-c".into(),
            "exec 3<>/dev/tcp/127.0.0.1/8080 && echo ping >&3 && read l <&3 && echo \"$l\" > /out/reply; \
             (echo x > /dev/tcp/127.0.0.1/8081) 2>/dev/null && echo reached > /out/other; true"
                .into(),
        ],
    );
    job.read_only_root = true;
    job.listen = vec![8080];
    job.binds.push(Bind {
        src: out.clone(),
        dst: "/out".into(),
        read_only: false,
    });
    let running = reprobox::sandbox::spawn(&job).unwrap();
    assert_eq!(running.listeners.len(), 1);
    let (port, l) = &running.listeners[0];
    assert_eq!(*port, 8080);
    let l = l.try_clone().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut s = s;
        writeln!(s, "pong to {}", line.trim()).unwrap();
    });
    let outcome = running.wait().unwrap();
    server.join().unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(out.join("reply")).unwrap().trim(),
        "pong to ping"
    );
    assert!(
        !out.join("other").exists(),
        "the job reached a port it did not declare"
    );
    assert!(
        outcome
            .enforcement
            .iter()
            .any(|e| e.feature == "landlock-network" && e.enforced && e.detail.contains("8080"))
    );
}

static USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ensure_user(name: &str, sub: Option<u32>) -> u32 {
    let _g = USERS.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
    } else {
        let s = Command::new("useradd")
            .args(["-M", "-N", "-s", "/bin/sh", name])
            .status()
            .unwrap();
        assert!(s.success(), "useradd {name}");
    }
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let has = text.lines().any(|l| l.starts_with(&format!("{name}:")));
        match sub {
            Some(start) if !has => {
                let mut fh = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(f)
                    .unwrap();
                writeln!(fh, "{name}:{start}:65536").unwrap();
            }
            None if has => {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{name}:")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(f, kept).unwrap();
            }
            _ => {}
        }
    }
    let o = Command::new("id").args(["-u", name]).output().unwrap();
    text(&o.stdout).trim().parse().unwrap()
}

/// A copy of the binary the test user can reach wherever CI checked the tree out (the
/// checkout may sit under a directory only root can traverse). `dir` must be 0755.
fn user_bin(dir: &Path) -> PathBuf {
    let b = dir.join("reprobox");
    std::fs::copy(bin(), &b).unwrap();
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
    b
}

fn run_as(user: &str, root: &Path, extra: &[&str], script: &str) -> std::process::Output {
    let b = user_bin(root.parent().unwrap());
    Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&b)
        .args(["run", "--rootfs", root.to_str().unwrap(), "--json"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn user_rootfs(base: &Path, uid: u32) -> PathBuf {
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = base.join("root");
    mini_rootfs(&root);
    Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(&root)
        .status()
        .unwrap();
    root
}

#[test]
fn unprivileged_user_with_subordinate_ids() {
    require_root();
    let uid = ensure_user("rbx-sub", Some(400000));
    let t = tempfile::tempdir().unwrap();
    let root = user_rootfs(t.path(), uid);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let o = run_as(
        "rbx-sub",
        &root,
        &["--caps", "none"],
        "cat /proc/self/uid_map; id -u; touch /etc/evil && echo WROTE; ls /proc | grep -c '^[0-9]'",
    );
    let so = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{so} {}", text(&o.stderr));
    let lines: Vec<Vec<&str>> = so
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", &uid.to_string(), "1"]);
    let sub = std::fs::read_to_string("/etc/subuid").unwrap();
    let start = sub
        .lines()
        .find_map(|l| l.strip_prefix("rbx-sub:"))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(lines[1], ["1", start.as_str(), "65535"]);
    assert!(so.lines().nth(2) == Some("0"), "{so}");
    assert!(!so.contains("WROTE") && !root.join("etc/evil").exists());
    let rec: serde_json::Value = serde_json::from_str(so.lines().last().unwrap()).unwrap();
    let idmap = rec["enforcement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "idmap")
        .unwrap();
    assert_eq!(idmap["enforced"], true, "{idmap}");
    assert!(l.accept().is_err());
}

#[test]
fn unprivileged_user_without_subordinate_ids_gets_a_single_id_map_and_says_so() {
    require_root();
    let uid = ensure_user("rbx-single", None);
    let t = tempfile::tempdir().unwrap();
    let root = user_rootfs(t.path(), uid);
    let o = run_as("rbx-single", &root, &[], "cat /proc/self/uid_map; id -u");
    let so = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{so} {}", text(&o.stderr));
    let first: Vec<&str> = so.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first, ["0", &uid.to_string(), "1"]);
    assert_eq!(so.lines().count(), 3, "{so}");
    let rec: serde_json::Value = serde_json::from_str(so.lines().last().unwrap()).unwrap();
    let idmap = rec["enforcement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "idmap")
        .unwrap();
    assert_eq!(idmap["enforced"], false);
    let d = idmap["detail"].as_str().unwrap();
    assert!(
        d.contains("single-id")
            && d.contains("nested podman cannot work")
            && d.contains("rbx-single"),
        "{d}"
    );
}

#[test]
fn memory_limit_holds() {
    let o = debian(
        &["--memory", "67108864", "--json"],
        &[
            "perl",
            "-e",
            "my $x = 'a' x (512*1024*1024); print qq(ALLOCATED\\n)",
        ],
    );
    let so = text(&o.stdout);
    assert!(
        !so.contains("ALLOCATED"),
        "allocated 512 MiB under a 64 MiB limit"
    );
    assert_ne!(o.status.code(), Some(0));
    let rec: serde_json::Value = serde_json::from_str(so.lines().last().unwrap()).unwrap();
    assert!(
        rec["enforcement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["feature"] == "memory-limit" && e["enforced"] == true)
    );
}

#[test]
fn process_limit_holds() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let out = job_writable_dir(t.path(), "out");
    let mut job = Job::new(
        RootfsSource::Dir(debian_rootfs()),
        vec![
            "perl".into(),
            "-e".into(),
            "my $n = 0; for (1..40) { my $p = fork; last unless defined $p; if ($p == 0) { sleep 3; exit } $n++ } \
             open F, '>/out/n' or die; print F \"$n\\n\"; close F; kill 9, -1"
                .into(),
        ],
    );
    job.read_only_root = true;
    job.limits.pids = Some(10);
    job.binds.push(Bind {
        src: out.clone(),
        dst: "/out".into(),
        read_only: false,
    });
    let o = reprobox::sandbox::run(&job).unwrap();
    let n: u32 = std::fs::read_to_string(out.join("n"))
        .unwrap_or_else(|e| panic!("{e}: {o:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!(n > 0 && n < 10, "{n} forks under a limit of 10 processes");
    assert!(
        o.enforcement
            .iter()
            .any(|e| e.feature == "pids-limit" && e.enforced)
    );
}

#[test]
fn unprivileged_archive_root_is_removed_even_with_subordinate_owned_files() {
    require_root();
    let uid = ensure_user("rbx-sub", Some(400000));
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarp = mini_tar(t.path());
    std::fs::set_permissions(&tarp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tmpdir = t.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    std::os::unix::fs::chown(&tmpdir, Some(uid), Some(uid)).unwrap();
    let o = Command::new("runuser")
        .args(["-u", "rbx-sub", "--", "env"])
        .arg(format!("TMPDIR={}", tmpdir.display()))
        .arg(user_bin(t.path()))
        .args(["run", "--rootfs", tarp.to_str().unwrap(), "--"])
        .args(["sh", "-c", "mkdir /d && chown 5:5 /d && setpriv --reuid=5 --regid=5 --clear-groups touch /d/f && echo MADE"])
        .output()
        .unwrap();
    assert!(
        text(&o.stdout).contains("MADE"),
        "{} {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary root left: {left:?}");
}

#[test]
fn faketime_pins_the_wall_clock_of_dynamic_tools() {
    require_root();
    let mut job = Job::new(
        RootfsSource::Dir(debian_rootfs()),
        vec![
            "sh".into(),
            "-c".into(),
            "date +%s > /out/now; sleep 1.2; date +%s >> /out/now".into(),
        ],
    );
    let t = tempfile::tempdir().unwrap();
    let out = job_writable_dir(t.path(), "out");
    job.read_only_root = true;
    job.binds.push(Bind {
        src: out.clone(),
        dst: "/out".into(),
        read_only: false,
    });
    job.clock.source_date_epoch = Some(1774915200);
    job.clock.faketime = true;
    let o = reprobox::sandbox::run(&job).unwrap();
    assert_eq!(o.exit_code, 0);
    // Stopped, not merely started there: what a tool writes a second later carries the
    // same time, however loaded the machine is.
    let now: Vec<i64> = std::fs::read_to_string(out.join("now"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(now, [1774915200, 1774915200], "date inside, 1.2 s apart");
    let f = o
        .enforcement
        .iter()
        .find(|e| e.feature == "faketime")
        .unwrap();
    assert!(f.enforced, "{f:?}");
}
