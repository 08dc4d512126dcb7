//! The microVM backend end to end: real qemu (TCG), Debian's kernel from
//! `linux-image-amd64`, a busybox root filesystem. Every test here boots a guest, so they
//! run one at a time (a lock) to keep boots fast on two cores.
//!
//! These tests need qemu-system-x86, linux-image-amd64, busybox-static and e2fsprogs
//! (scripts/apt/vm.txt); without them they fail and say which is missing.

mod sandbox_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reprobox::job::{Bind, Job, RootfsSource};
use reprobox::vm::{self, Accel, VmOptions};
use sandbox_common::debian_kernel;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn release_of(kernel: &Path) -> String {
    let bytes = std::fs::read(kernel).unwrap();
    reprobox::vm::kernel::bzimage_release(&bytes).expect("a bzImage")
}

/// A root filesystem of busybox applets.
fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox"))
        .expect("/usr/bin/busybox (apt-get install busybox-static)");
    for applet in [
        "sh", "date", "uname", "nc", "echo", "cat", "sleep", "true", "false", "hostname", "ls",
        "wc", "id", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "work"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

fn options() -> VmOptions {
    VmOptions {
        kernel: Some(debian_kernel()),
        accel: Accel::Tcg,
        memory_mib: 512,
        cpus: 1,
        disk_headroom_mib: 64,
        ..VmOptions::default()
    }
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn run(
    job: &Job,
    opts: &VmOptions,
) -> (reprobox::Result<reprobox::job::JobOutcome>, String, String) {
    let (o, e) = (Buf::default(), Buf::default());
    let r = vm::run_with_output(job, opts, Box::new(o.clone()), Box::new(e.clone()));
    (r, o.text(), e.text())
}

fn sh(root: &Path, script: &str) -> Job {
    let mut job = Job::new(
        RootfsSource::Dir(root.to_path_buf()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    job.limits.timeout = Some(Duration::from_secs(240));
    job
}

/// qemu processes that are children of this test process.
fn child_qemus() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: i32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == me && comm.starts_with("qemu") {
            out.push(pid);
        }
    }
    out
}

#[test]
fn guest_clock_kernel_exit_code_and_hostname() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let epoch = 1_774_915_200i64; // 2026-03-31T00:00:00Z
    let mut job = sh(
        &root,
        "echo date=$(date +%s); echo uname=$(uname -r); echo host=$(hostname); \
         echo sde=$SOURCE_DATE_EPOCH; echo pwd=$(pwd); echo cmdline=$(cat /proc/cmdline); echo to-stderr >&2; exit 7",
    );
    job.clock.source_date_epoch = Some(epoch);
    job.hostname = "guesthost".into();
    job.workdir = "/work".into();
    let (r, out, err) = run(&job, &options());
    let outcome = r.expect("the VM ran");
    assert_eq!(outcome.exit_code, 7, "stdout: {out}\nstderr: {err}");
    assert_eq!(outcome.backend, "microvm");
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in guest output: {out}"))
            .to_owned()
    };
    let guest_now: i64 = field("date").parse().unwrap();
    // The guest clock starts at the build time and has run only for the boot.
    assert!(
        (epoch..epoch + 120).contains(&guest_now),
        "guest date {guest_now} is not the build time {epoch}"
    );
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        host_now - guest_now > 3600,
        "guest clock looks like the host's"
    );
    let kernel = debian_kernel();
    assert_eq!(field("uname"), release_of(&kernel));
    // The kernel that ran the job is the one reprobox booted: its command line is ours.
    assert!(field("cmdline").contains("rdinit=/init"), "{out}");
    assert!(
        field("cmdline").contains(&format!("reprobox.epoch={epoch}")),
        "{out}"
    );
    assert_eq!(field("host"), "guesthost");
    assert_eq!(field("sde"), epoch.to_string());
    assert_eq!(field("pwd"), "/work");
    assert_eq!(err.trim(), "to-stderr", "stderr is its own stream");
    assert!(
        !out.contains("reprobox-init"),
        "kernel/init messages leak into stdout: {out}"
    );
    assert!(
        outcome
            .enforcement
            .iter()
            .any(|e| e.feature == "microvm" && e.detail.contains("accel tcg")),
        "{:?}",
        outcome.enforcement
    );
    assert!(child_qemus().is_empty());
}

#[test]
fn writable_binds_come_back_read_only_binds_stay() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("old"), "kept\n").unwrap();
    let input = d.path().join("input.txt");
    std::fs::write(&input, "hello input\n").unwrap();
    let mut job = sh(
        &root,
        "cat /in/input.txt > /out/copy; echo made > /out/new; ls /out > /out/listing; \
         echo x > /in/input.txt 2>/dev/null && exit 9; exit 0",
    );
    job.binds.push(Bind {
        src: out_dir.clone(),
        dst: "/out".into(),
        read_only: false,
    });
    job.binds.push(Bind {
        src: input.clone(),
        dst: "/in/input.txt".into(),
        read_only: true,
    });
    let (r, out, err) = run(&job, &options());
    let outcome = r.expect("the VM ran");
    assert_eq!(
        outcome.exit_code, 0,
        "read-only bind was writable? {out} {err}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("copy")).unwrap(),
        "hello input\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("new")).unwrap(),
        "made\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("old")).unwrap(),
        "kept\n"
    );
    let listing = std::fs::read_to_string(out_dir.join("listing")).unwrap();
    assert!(!listing.contains("lost+found"), "{listing}");
    assert!(!out_dir.join("lost+found").exists());
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "hello input\n");
}

#[test]
fn only_the_mirror_is_reachable() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    // Two servers on the host's loopback: the mirror, and one that must stay unreachable.
    let serve = |greeting: &'static str| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(greeting.as_bytes());
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
            }
        });
        addr
    };
    let mirror = serve("MIRROR-HELLO\n");
    let secret = serve("SECRET-HELLO\n");
    let script = format!(
        "echo m1=$(echo | nc -w 5 127.0.0.1 {mp}); \
         echo m2=$(echo | nc -w 5 127.0.0.1 {mp}); \
         echo s1=$(echo | nc -w 3 10.0.2.2 {sp} 2>&1); \
         echo s2=$(echo | nc -w 3 127.0.0.1 {sp} 2>&1); \
         echo s3=$(echo | nc -w 3 10.0.2.100 {sp} 2>&1); \
         exit 0",
        mp = mirror.port(),
        sp = secret.port()
    );
    let job = sh(&root, &script);
    let opts = VmOptions {
        mirror: Some(mirror),
        ..options()
    };
    let (r, out, err) = run(&job, &opts);
    r.expect("the VM ran");
    assert!(
        out.contains("m1=MIRROR-HELLO"),
        "mirror unreachable: {out} {err}"
    );
    assert!(
        out.contains("m2=MIRROR-HELLO"),
        "second connection failed: {out} {err}"
    );
    assert!(
        !out.contains("SECRET"),
        "a host port other than the mirror was reached: {out}"
    );
}

#[test]
fn timeout_is_exit_3_and_kills_qemu() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let mut job = sh(&root, "sleep 600");
    job.limits.timeout = Some(Duration::from_secs(8));
    let started = std::time::Instant::now();
    let (r, _, _) = run(&job, &options());
    let err = r.expect_err("a timeout is an error");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(child_qemus().is_empty(), "qemu left behind");
}

#[test]
fn kernel_panic_is_exit_3_and_leaves_no_qemu() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let job = sh(&root, "echo c > /proc/sysrq-trigger; sleep 600");
    let (r, out, _) = run(&job, &options());
    let err = r.expect_err("a panic is an error");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(
        err.to_string().contains("kernel panic"),
        "{err} (stdout {out})"
    );
    assert!(child_qemus().is_empty(), "qemu left behind");
}

#[test]
fn missing_qemu_kernel_or_bad_input_are_clear_errors() {
    // The lock too: the final check counts this process's qemu children, and another
    // test's guest must not be counted as one this test started.
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let job = sh(&root, "true");
    // No kernel given: the default needs the pipeline.
    let e = vm::run(
        &job,
        &VmOptions {
            kernel: None,
            ..options()
        },
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains("--kernel"), "{e}");
    // A kernel path that does not exist.
    let e = vm::run(
        &job,
        &VmOptions {
            kernel: Some(d.path().join("no-such-vmlinuz")),
            ..options()
        },
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains("no-such-vmlinuz"), "{e}");
    // A bind whose source does not exist: bad input, nothing started.
    let mut bad = sh(&root, "true");
    bad.binds.push(Bind {
        src: d.path().join("absent"),
        dst: "/x".into(),
        read_only: true,
    });
    let e = vm::run(&bad, &options()).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(child_qemus().is_empty());
}

/// qemu missing: REPROBOX_QEMU pointing nowhere is checked in a child process so the
/// environment of the other tests is untouched.
#[test]
fn missing_qemu_is_an_environment_error() {
    if std::env::var_os("REPROBOX_VM_TEST_CHILD").is_some() {
        let d = tempfile::tempdir().unwrap();
        let root = busybox_root(d.path());
        let e = vm::run(&sh(&root, "true"), &options()).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("does not exist"), "{e}");
        return;
    }
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "missing_qemu_is_an_environment_error",
            "--nocapture",
        ])
        .env("REPROBOX_VM_TEST_CHILD", "1")
        .env("REPROBOX_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    // The child ran this very test (a filter that matched nothing would also succeed).
    assert!(out.contains("test result: ok. 1 passed"), "{out}");
}

fn qemu_children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: i32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == pid && comm.starts_with("qemu") {
            out.push(p);
        }
    }
    out
}

/// SIGINT while the guest runs: run() returns Interrupted (exit 130) and qemu is gone.
/// The VM runs in a child test process that the test interrupts.
#[test]
fn sigint_kills_qemu_and_reports_interrupted() {
    if std::env::var_os("REPROBOX_VM_SIGINT_CHILD").is_some() {
        let d = tempfile::tempdir().unwrap();
        let root = busybox_root(d.path());
        let e = vm::run(&sh(&root, "sleep 600"), &options()).unwrap_err();
        assert_eq!(e.exit_code(), 130, "{e}");
        assert!(child_qemus().is_empty());
        std::process::exit(130);
    }
    let _l = lock();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigint_kills_qemu_and_reports_interrupted",
            "--nocapture",
        ])
        .env("REPROBOX_VM_SIGINT_CHILD", "1")
        .spawn()
        .unwrap();
    let cpid = child.id() as i32;
    let mut qemus = Vec::new();
    for _ in 0..600 {
        qemus = qemu_children_of(cpid);
        if !qemus.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!qemus.is_empty(), "the child never started qemu");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(cpid, libc::SIGINT);
    }
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{st}");
    for q in qemus {
        assert!(
            !Path::new(&format!("/proc/{q}")).exists(),
            "qemu {q} survived the interrupt"
        );
    }
}

/// Auto tries KVM with a probe guest and falls back to TCG, saying which in the outcome.
#[test]
fn auto_accel_records_what_was_used() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let opts = VmOptions {
        accel: Accel::Auto,
        ..options()
    };
    let (r, out, err) = run(&sh(&root, "echo ran"), &opts);
    let outcome = r.expect("the VM ran");
    assert_eq!(out.trim(), "ran", "{err}");
    let vm = outcome
        .enforcement
        .iter()
        .find(|e| e.feature == "microvm")
        .expect("microvm entry");
    eprintln!("accel: {}", vm.detail);
    assert!(
        vm.detail
            .contains("accel kvm (a probe guest booted under KVM)")
            || (vm.detail.contains("accel tcg") && vm.detail.contains("TCG")),
        "{}",
        vm.detail
    );
}

/// A root filesystem given as a tar.gz is unpacked and booted; a read-only root stays
/// read-only in the guest.
#[test]
fn archive_rootfs_and_read_only_root() {
    let _l = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let archive = d.path().join("root.tar.gz");
    let f = std::fs::File::create(&archive).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        f,
        flate2::Compression::fast(),
    ));
    t.follow_symlinks(false);
    t.append_dir_all(".", &root).unwrap();
    t.into_inner().unwrap().finish().unwrap();
    let mut job = Job::new(
        RootfsSource::Archive(archive),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /tmp/ok && ! touch /newfile 2>/dev/null && echo read-only".into(),
        ],
    );
    job.read_only_root = true;
    job.limits.timeout = Some(Duration::from_secs(240));
    let (r, out, err) = run(&job, &options());
    let outcome = r.expect("the VM ran");
    assert_eq!(outcome.exit_code, 0, "root was writable: {out} {err}");
    assert_eq!(out.trim(), "read-only");
}

/// `--initrd`: a caller's initramfs (here Debian's own, with its own /init) is loaded
/// before reprobox's, and reprobox's init still runs the job.
#[test]
fn extra_initrd_is_loaded_and_our_init_wins() {
    let _l = lock();
    let kernel = debian_kernel();
    let initrd = PathBuf::from(
        kernel
            .to_str()
            .unwrap()
            .replace("/vmlinuz-", "/initrd.img-"),
    );
    assert!(
        initrd.is_file(),
        "{} missing: linux-image-amd64 installs it (initramfs-tools)",
        initrd.display()
    );
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let opts = VmOptions {
        initrd: Some(initrd),
        ..options()
    };
    let (r, out, err) = run(&sh(&root, "echo ours; exit 3"), &opts);
    let outcome = r.expect("the VM ran");
    assert_eq!(outcome.exit_code, 3, "{out} {err}");
    assert_eq!(out.trim(), "ours");
}

/// A real distribution root (the cached Debian build environment of
/// scripts/debian-rootfs.sh): the job's own GNU tools run, not busybox's applets, and
/// they see the build time too.
#[test]
fn debian_root_runs_its_own_tools_at_build_time() {
    let out = std::process::Command::new("scripts/debian-rootfs.sh")
        .output()
        .expect("run scripts/debian-rootfs.sh");
    assert!(
        out.status.success(),
        "scripts/debian-rootfs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let _l = lock();
    let epoch = 1_774_915_200i64;
    let mut job = Job::new(
        RootfsSource::Dir(root),
        vec![
            "/bin/bash".into(),
            "-c".into(),
            "date --version | head -n1; date -u +%s; date -u +%Y-%m-%d".into(),
        ],
    );
    job.read_only_root = true;
    job.clock.source_date_epoch = Some(epoch);
    job.limits.timeout = Some(Duration::from_secs(300));
    let (r, out, err) = run(&job, &options());
    let outcome = r.expect("the VM ran");
    assert_eq!(outcome.exit_code, 0, "{out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("GNU coreutils"), "{out}");
    let now: i64 = lines[1].parse().unwrap();
    assert!((epoch..epoch + 120).contains(&now), "{out}");
    assert_eq!(lines[2], "2026-03-31");
}

/// `reprobox run --backend microvm` through the real binary: the guest's clock is the build
/// time, its kernel is the one given, the job's exit code is reprobox's; `--kernel` with the
/// container backend is bad input.
#[test]
fn run_cli_backend_microvm() {
    let _g = lock();
    let d = tempfile::tempdir().unwrap();
    let root = busybox_root(d.path());
    let kernel = debian_kernel();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .args([
            "run",
            "--backend",
            "microvm",
            "--vm-memory",
            "512",
            "--vm-cpus",
            "1",
            "--kernel",
        ])
        .arg(&kernel)
        .arg("--rootfs")
        .arg(&root)
        .args([
            "--source-date-epoch",
            "1774915200",
            "--",
            "sh",
            "-c",
            "date -u +%s; uname -r; exit 7",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out, format!("1774915200\n{}\n", release_of(&kernel)));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .args(["run", "--kernel"])
        .arg(&kernel)
        .arg("--rootfs")
        .arg(&root)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--backend microvm"));
}
