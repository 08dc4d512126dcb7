//! `reprobox doctor`, the checks `demo` makes before any work, and `scripts/demo`'s refusal,
//! through the real binary and script. Each of the doctor's answers is compared with an
//! independent attempt made here (util-linux `unshare` and `mount`, the Landlock syscall,
//! qemu booting the host kernel under KVM), not with a value written into the test.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod sandbox_common;

const BIN: &str = env!("CARGO_BIN_EXE_reprobox");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

const ITEMS: [&str; 17] = [
    "user-namespace",
    "mount-namespace",
    "pid-namespace",
    "net-namespace",
    "time-namespace",
    "idmapped-mount",
    "overlay-over-idmapped",
    "landlock",
    "seccomp-notify",
    "cgroup",
    "cgroup-v2-delegation",
    "subids",
    "qemu",
    "vm-tools",
    "guest-kernel",
    "kvm",
    "world-tools",
];

fn require_root() {
    // SAFETY: trivial getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests probe idmapped mounts and run scripts as another user: run them as root"
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn doctor_json() -> (Output, serde_json::Value) {
    let o = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v = serde_json::from_str(&text(&o.stdout))
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {}", text(&o.stdout)));
    (o, v)
}

fn check<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

fn sh(script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A process parked in a user namespace of its own whose map is 0 → 100000 (65536 ids),
/// written here; killed on drop.
struct Userns(std::process::Child);

impl Userns {
    fn new() -> Userns {
        let child = Command::new("unshare")
            .args(["--user", "--", "sleep", "60"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        // Wait until it has unshared (its exec of sleep comes after).
        for _ in 0..500 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            if comm.trim() == "sleep" && ns.is_some_and(|n| n != ours) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536\n").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), "0 100000 65536\n").unwrap();
        Userns(child)
    }
}

impl Drop for Userns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether an idmapped mount (made here with open_tree + mount_setattr) shows a root-owned
/// file as 100000, and whether an overlay (mounted with util-linux `mount`) over it does.
fn try_idmapped_and_overlay() -> (bool, bool) {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for s in ["base", "lower", "upper", "work", "merged"] {
        std::fs::create_dir(d.join(s)).unwrap();
    }
    std::fs::write(d.join("base/f"), "x").unwrap();
    let ns = Userns::new();
    let nsfd = std::fs::File::open(format!("/proc/{}/ns/user", ns.0.id())).unwrap();
    let base = CString::new(d.join("base").to_str().unwrap()).unwrap();
    // SAFETY: the new mount API's syscalls with valid arguments.
    let tree = unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            base.as_ptr(),
            1u32 | libc::O_CLOEXEC as u32, // OPEN_TREE_CLONE
        );
        if fd < 0 {
            return (false, false);
        }
        OwnedFd::from_raw_fd(fd as i32)
    };
    let attr: [u64; 4] = [0x0010_0000, 0, 0, nsfd.as_raw_fd() as u64]; // MOUNT_ATTR_IDMAP
    // SAFETY: as above; `attr` is a struct mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as u32,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    drop(ns);
    if r != 0 {
        return (false, false);
    }
    let fpath = format!("/proc/self/fd/{}/f", tree.as_raw_fd());
    let idmapped = std::fs::metadata(&fpath).is_ok_and(|m| m.uid() == 100_000);
    if !idmapped {
        return (false, false);
    }
    let lower = CString::new(d.join("lower").to_str().unwrap()).unwrap();
    // SAFETY: move_mount of the detached tree onto an empty directory.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            lower.as_ptr(),
            4u32, // MOVE_MOUNT_F_EMPTY_PATH
        )
    } == 0;
    let p = |s: &str| d.join(s).display().to_string();
    let overlay = moved
        && sh(&format!(
            "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {} && [ \"$(stat -c %u {}/f)\" = 100000 ]",
            p("lower"),
            p("upper"),
            p("work"),
            p("merged"),
            p("merged")
        ));
    for m in ["merged", "lower"] {
        sh(&format!("mountpoint -q {0} && umount -l {0}", p(m)));
    }
    (idmapped, overlay)
}

/// The kernel's Landlock ABI, asked directly.
fn landlock_abi() -> Option<i64> {
    // SAFETY: the documented version query of landlock_create_ruleset.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    (v > 0).then_some(v)
}

/// Whether a guest boots under KVM: the host kernel, no root disk, `panic=-1` with
/// `-no-reboot` makes qemu exit 0 once the kernel has run to its panic (about a second with
/// a working KVM); no exit within 10 s, or a failing exit, means KVM does not work here.
fn kvm_boots(kernel: &Path) -> bool {
    Command::new("timeout")
        .arg("10")
        .arg("qemu-system-x86_64")
        .args(["-M", "microvm", "-accel", "kvm", "-m", "256"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "none", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn doctor_json_has_every_item_and_each_answer_matches_an_attempt() {
    require_root();
    let (o, doc) = doctor_json();
    assert_eq!(doc["schema"], "reprobox.doctor/v1");
    let checks = doc["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ITEMS);
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "missing", "failed"].contains(&status), "{c}");
        assert!(!c["enables"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        assert!(c["required"].is_boolean(), "{c}");
        // A remedy exactly when the item is not ok.
        assert_eq!(c["remedy"].is_null(), status == "ok", "{c}");
    }

    // Namespaces: each as util-linux's unshare finds it.
    for (item, flag) in [
        ("user-namespace", "--user"),
        ("mount-namespace", "--mount"),
        ("pid-namespace", "--pid"),
        ("net-namespace", "--net"),
        ("time-namespace", "--time"),
    ] {
        let works = sh(&format!("unshare {flag} true"));
        assert_eq!(check(&doc, item)["status"] == "ok", works, "{item}");
        assert_eq!(check(&doc, item)["required"], true, "{item}");
    }

    let (idmapped, overlay) = try_idmapped_and_overlay();
    assert_eq!(
        check(&doc, "idmapped-mount")["status"] == "ok",
        idmapped,
        "idmapped-mount"
    );
    assert_eq!(
        check(&doc, "overlay-over-idmapped")["status"] == "ok",
        overlay,
        "overlay-over-idmapped"
    );
    assert_eq!(check(&doc, "idmapped-mount")["required"], true);
    assert_eq!(check(&doc, "overlay-over-idmapped")["required"], true);

    // cgroup v2 delegation: ok exactly when findmnt sees a cgroup2 mount and the doctor
    // names a directory whose cgroup.subtree_control this (root) test can open for writing.
    let v2 = check(&doc, "cgroup-v2-delegation");
    assert_eq!(v2["required"], false, "{v2}");
    let mounted = sh("findmnt -t cgroup2 >/dev/null");
    if !mounted {
        assert_eq!(v2["status"], "missing", "{v2}");
    } else if v2["status"] == "ok" {
        let dir = v2["detail"].as_str().unwrap().split(' ').next().unwrap();
        let ctl = Path::new(dir).join("cgroup.subtree_control");
        assert!(
            std::fs::OpenOptions::new().append(true).open(&ctl).is_ok(),
            "{} not writable: {v2}",
            ctl.display()
        );
    }

    let ll = check(&doc, "landlock");
    match landlock_abi() {
        Some(v) => {
            assert_eq!(ll["status"], "ok");
            assert!(
                ll["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("ABI {v} ")),
                "{ll}"
            );
        }
        None => assert_ne!(ll["status"], "ok", "{ll}"),
    }
    assert_eq!(ll["required"], false);

    let qemu_runs = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(check(&doc, "qemu")["status"] == "ok", qemu_runs);

    let kvm = check(&doc, "kvm");
    assert_eq!(kvm["required"], false);
    let gk = check(&doc, "guest-kernel");
    if gk["status"] == "ok" {
        let kernel = PathBuf::from(gk["detail"].as_str().unwrap());
        assert!(kernel.is_file(), "{gk}");
        let boots = Path::new("/dev/kvm").exists() && kvm_boots(&kernel);
        assert_eq!(kvm["status"] == "ok", boots, "{kvm}");
        if !boots {
            assert!(["failed", "missing"].contains(&kvm["status"].as_str().unwrap()));
            assert!(kvm["remedy"].as_str().unwrap().contains("TCG will be used"));
        }
    } else {
        assert_ne!(kvm["status"], "ok");
    }

    // World tools as PATH has them.
    let world = check(&doc, "world-tools");
    let all_there = ["bwrap", "git", "docker-registry", "debootstrap", "zstd"]
        .iter()
        .all(|t| sh(&format!("command -v {t}")));
    if !all_there {
        assert_eq!(world["status"], "missing");
    }

    // Exit 0 exactly when reproduce can run; here (root, every required item ok) it can.
    let required_ok = checks
        .iter()
        .all(|c| c["required"] == false || c["status"] == "ok");
    assert_eq!(doc["can_reproduce"], required_ok);
    assert_eq!(o.status.code(), Some(if required_ok { 0 } else { 1 }));
    assert_eq!(o.status.code(), Some(0), "{doc:#}");
    // Nothing left mounted or behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("reprobox-probe-"), "{mounts}");
}

/// The seccomp watch's item against what it enables: an egress job in the Debian root
/// (`reprobox run --egress … --json`) has the watch enforced exactly when the doctor says
/// ok; and the doctor run inside such a job (whose process is already under a
/// user-notification filter) says failed, naming the kernel's refusal.
#[test]
fn the_seccomp_item_matches_an_egress_job_and_fails_inside_one() {
    require_root();
    let (_, doc) = doctor_json();
    let item = check(&doc, "seccomp-notify");
    assert_eq!(item["required"], true, "{item}");
    let root = sandbox_common::debian_rootfs();
    let store = tempfile::tempdir().unwrap();
    let job = |argv: &[&str]| {
        let o = Command::new(BIN)
            .args([
                "run",
                "--rootfs",
                root.to_str().unwrap(),
                "--read-only",
                "--json",
            ])
            .args(["--store", store.path().to_str().unwrap()])
            .args(["--bind", &format!("{BIN}:/tmp/reprobox:ro")])
            .args(["--egress", "a.example=http://127.0.0.1:1", "--"])
            .args(argv)
            .output()
            .unwrap();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let (code, out, err) = job(&["true"]);
    assert_eq!(code, Some(0), "{err}");
    let record: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let watch = record["enforcement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "unanswered-connects")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        watch["enforced"] == true,
        item["status"] == "ok",
        "{watch} / {item}"
    );
    // Required and failed: the doctor inside says reproduce cannot run there (exit 1).
    let (code, out, err) = job(&["/tmp/reprobox", "doctor", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    // The doctor's document (pretty-printed), then the run record's line.
    let doc_end = out
        .trim_end()
        .rfind('\n')
        .unwrap_or_else(|| panic!("{out}"));
    let inner: serde_json::Value =
        serde_json::from_str(&out[..doc_end]).unwrap_or_else(|e| panic!("{e}: {out}"));
    let inside = check(&inner, "seccomp-notify");
    assert_eq!(inside["status"], "failed", "{inside}");
    assert!(
        inside["detail"].as_str().unwrap().contains("busy"),
        "{inside}"
    );
    assert!(
        inside["remedy"]
            .as_str()
            .unwrap()
            .contains("reprobox inside a reprobox job"),
        "{inside}"
    );
}

#[test]
fn doctor_prints_one_aligned_line_per_item_then_the_verdict() {
    require_root();
    let o = Command::new(BIN).arg("doctor").output().unwrap();
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), ITEMS.len() + 1, "{out}");
    // Aligned: status, name and the required mark each padded to one width.
    let w = ITEMS.iter().map(|i| i.len()).max().unwrap();
    for (line, item) in lines.iter().zip(ITEMS) {
        assert!(
            ["ok      ", "missing ", "failed  "].contains(&&line[..8]),
            "{line}"
        );
        assert_eq!(line[8..8 + w].trim_end(), item, "{line}");
        assert_eq!(&line[8 + w..8 + w + 1], " ", "{line}");
        assert!(
            ["required ", "         "].contains(&&line[9 + w..18 + w]),
            "{line}"
        );
        assert_ne!(&line[18 + w..19 + w], " ", "{line}");
        assert!(line.contains("; enables "), "{line}");
        assert_eq!(
            line.contains("; to get it: "),
            !line.starts_with("ok "),
            "{line}"
        );
    }
    assert_eq!(
        lines[ITEMS.len()],
        "reprobox reproduce can run here (container backend)."
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn demo_refuses_before_building_when_a_world_tool_is_missing() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let store = t.path().join("store");
    let o = Command::new(BIN)
        .args(["demo", "--store"])
        .arg(&store)
        .arg("--out")
        .arg(t.path().join("out"))
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("world-tools missing"), "{err}");
    assert!(
        err.contains(
            "to get it: apt-get install -y --no-install-recommends bubblewrap util-linux git"
        ),
        "{err}"
    );
    // Nothing built, nothing written.
    assert!(!store.join("world").exists());
    assert!(!t.path().join("out").exists());
}

#[test]
fn demo_refuses_a_missing_bundle_before_building() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let absent = t.path().join("absent.bundle");
    let o = Command::new(BIN)
        .args(["demo", "--store"])
        .arg(&store)
        .arg("--out")
        .arg(t.path().join("out"))
        .arg("--upstream")
        .arg(&absent)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(absent.to_str().unwrap()), "{err}");
    // Nothing built, nothing written.
    assert!(!store.exists());
    assert!(!t.path().join("out").exists());
}

/// A user without privileges (made once, as `tests/sandbox_run.rs` does).
fn plain_user(name: &str) {
    if !Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        let s = Command::new("useradd")
            .args(["-M", "-N", "-s", "/bin/sh", name])
            .status()
            .unwrap();
        assert!(s.success(), "useradd {name}");
    }
}

fn as_user(user: &str, script: &Path, cwd: &Path) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(script)
        .current_dir(cwd)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap()
}

fn mtime(p: &Path) -> Option<i64> {
    std::fs::metadata(p)
        .ok()
        .map(|m| m.mtime_nsec() + m.mtime() * 1_000_000_000)
}

#[test]
fn scripts_demo_refuses_a_plain_user_at_once_with_the_install_command() {
    require_root();
    plain_user("rbx-doctor");
    // In place: refused (exit 2) before cargo runs: no build output, the release binary
    // (if any) untouched.
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"))
        .join("release/reprobox");
    let before = mtime(&release);
    let o = as_user(
        "rbx-doctor",
        &Path::new(REPO).join("scripts/demo"),
        Path::new("/"),
    );
    let err = text(&o.stderr);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("scripts/demo: needs root"), "{err}");
    for cargo_says in ["Compiling", "Finished", "Running", "cargo"] {
        assert!(
            !out.contains(cargo_says) && !err.contains(cargo_says),
            "{out}{err}"
        );
    }
    assert_eq!(mtime(&release), before);

    // A copy of the script whose package lists name one package this host lacks: the
    // refusal prints the exact install command with it.
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("scripts");
    std::fs::create_dir_all(copy.join("apt")).unwrap();
    std::fs::copy(Path::new(REPO).join("scripts/demo"), copy.join("demo")).unwrap();
    std::fs::write(
        copy.join("apt/extra.txt"),
        "# absent on purpose\nreprobox-absent-pkg\n",
    )
    .unwrap();
    for f in std::fs::read_dir(Path::new(REPO).join("scripts/apt")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join("apt").join(f.file_name().unwrap())).unwrap();
    }
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(t.path(), 0o755);
    let o = as_user("rbx-doctor", &copy.join("demo"), Path::new("/"));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("apt-get install -y --no-install-recommends "))
        .unwrap_or_else(|| panic!("no install command: {err}"));
    let pkgs: Vec<&str> = line.split(' ').skip(4).collect();
    assert!(pkgs.contains(&"reprobox-absent-pkg"), "{line}");
    // Only what is missing: an installed package of the lists is not named.
    assert!(!pkgs.contains(&"util-linux"), "{line}");
    // The copy has no Cargo.toml: had it tried to build, cargo would have said so.
    assert!(
        !err.contains("Cargo.toml") && !err.contains("could not find"),
        "{err}"
    );
}
