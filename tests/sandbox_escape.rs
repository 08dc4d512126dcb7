//! Escape attempts from a `reprobox run` job; each must fail, and the host must show it
//! was untouched. Runs as root (CI is root); a test that cannot run says why and fails.

mod sandbox_common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use sandbox_common::*;

/// Run `script` in the Debian root, read-only. The job prints a marker before the script:
/// a probe that "fails" because reprobox never started the job (a set-up error, exit 2 or 3
/// from reprobox itself) fails the test here instead of passing as a refused escape.
fn sh(extra: &[&str], script: &str) -> std::process::Output {
    require_root();
    let r = debian_rootfs();
    let mut args = vec!["--rootfs", r.to_str().unwrap(), "--read-only"];
    args.extend_from_slice(extra);
    let script = format!("echo JOB-STARTED; {script}");
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let mut o = run(&args);
    let marker = b"JOB-STARTED\n";
    assert!(
        o.stdout.starts_with(marker),
        "the job did not start (exit {:?}): {}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    // The probes read what the script printed, without the marker.
    o.stdout.drain(..marker.len());
    o
}

#[test]
fn cannot_write_outside_declared_writable_paths() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    // A writable root of the test's own (a copy), so only Landlock stands in the way.
    let root = t.path().join("root");
    mini_rootfs(&root);
    let out_dir = job_writable_dir(t.path(), "out");
    let o = run(&[
        "--rootfs",
        root.to_str().unwrap(),
        "--caps",
        "none",
        "--json",
        "--bind",
        &format!("{}:/out", out_dir.display()),
        "--",
        "sh",
        "-c",
        "touch /etc/evil && echo WROTE-ETC; touch /usr/evil && echo WROTE-USR; touch /out/ok && echo WROTE-OUT; touch /tmp/ok && echo WROTE-TMP",
    ]);
    let so = text(&o.stdout);
    assert!(
        so.contains("WROTE-OUT") && so.contains("WROTE-TMP"),
        "positive control: {so} {}",
        text(&o.stderr)
    );
    assert!(
        !so.contains("WROTE-ETC") && !so.contains("WROTE-USR"),
        "{so}"
    );
    assert!(!root.join("etc/evil").exists() && !root.join("usr/evil").exists());
    assert!(out_dir.join("ok").exists());
    assert!(
        so.contains("\"landlock-filesystem\",\"enforced\":true"),
        "{so}"
    );
    // Read-only root: no write at all outside the binds, whatever the capabilities.
    let o = sh(
        &[],
        "touch /etc/evil2 && echo WROTE; touch /var/evil2 && echo WROTE",
    );
    assert!(!text(&o.stdout).contains("WROTE"));
    assert!(!debian_rootfs().join("etc/evil2").exists());
}

#[test]
fn cannot_read_a_planted_host_file() {
    let t = tempfile::tempdir().unwrap();
    let secret = t.path().join("planted-secret");
    std::fs::write(&secret, "TOPSECRET-4711").unwrap();
    let o = sh(
        &[],
        &format!(
            "cat {} /proc/1/root{} 2>&1; cat /etc/shadow-host 2>&1; true",
            secret.display(),
            secret.display()
        ),
    );
    assert!(
        !text(&o.stdout).contains("TOPSECRET-4711"),
        "{}",
        text(&o.stdout)
    );
    // Positive control: the same probe reads the file where it is allowed (bound in).
    let bind = format!("{}:/mnt/planted:ro", t.path().display());
    let o = sh(&["--bind", &bind], "cat /mnt/planted/planted-secret");
    assert!(
        text(&o.stdout).contains("TOPSECRET-4711"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[test]
fn cannot_connect_to_a_host_loopback_server() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let o = sh(
        &[],
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED; echo done"),
    );
    // `sh` is dash here, which has no /dev/tcp: use bash explicitly too.
    let o2 = sh(
        &[],
        &format!("bash -c 'echo x > /dev/tcp/127.0.0.1/{port} && echo CONNECTED' 2>&1; echo done"),
    );
    assert!(text(&o2.stdout).contains("done"), "{}", text(&o2.stderr));
    assert!(!text(&o.stdout).contains("CONNECTED") && !text(&o2.stdout).contains("CONNECTED"));
    assert!(
        l.accept().is_err(),
        "the host server saw a connection from the job"
    );
}

#[test]
fn cannot_see_or_signal_host_processes() {
    let mut victim = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = victim.id();
    let o = sh(
        &[],
        &format!(
            "ls /proc | grep -c '^[0-9]' ; cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'sleep 30[0]'; kill -9 {pid} && echo KILLED; true"
        ),
    );
    let so = text(&o.stdout);
    let mut lines = so.lines();
    let visible: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(visible <= 4, "the job sees {visible} processes: {so}");
    assert_eq!(
        lines.next().unwrap().trim(),
        "0",
        "the job sees the host's sleep"
    );
    assert!(!so.contains("KILLED"));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process was killed from the job"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn cannot_mount_over_root_without_caps_nor_touch_host_mounts() {
    let before = mountinfo();
    let o = sh(
        &["--caps", "none"],
        "mount -t tmpfs none / 2>&1 && echo MOUNTED; true",
    );
    assert!(!text(&o.stdout).contains("MOUNTED"), "{}", text(&o.stdout));
    // With the default (podman) caps the job may mount — in its own namespace only.
    let o = sh(&[], "mount -t tmpfs none /mnt && echo MOUNTED-INSIDE");
    assert!(
        text(&o.stdout).contains("MOUNTED-INSIDE"),
        "{}",
        text(&o.stderr)
    );
    let after = mountinfo();
    assert!(
        after
            .iter()
            .all(|l| before.contains(l) || !l.contains("tmpfs none")),
        "host mounts changed"
    );
}

#[test]
fn cannot_load_a_kernel_module() {
    // finit_module(2) is syscall 313 on x86_64. EPERM means refused. A kernel built
    // without module support answers ENOSYS to everyone (this project's machines do): then
    // the host gets ENOSYS too, and the job must still lack CAP_SYS_MODULE in its
    // bounding set, which is what would refuse it on a modular kernel.
    let o = sh(
        &[],
        "perl -e 'my $s = \"\"; $r = syscall(313, -1, $s, 0); print \"ret=$r errno=\", $!+0, \"\\n\"'; grep CapBnd /proc/self/status",
    );
    let so = text(&o.stdout);
    let host_enosys = !Path::new("/proc/modules").exists();
    let ok = so.contains("ret=-1 errno=1\n") || (host_enosys && so.contains("ret=-1 errno=38\n"));
    assert!(ok, "{so} {}", text(&o.stderr));
    let bnd = so.lines().find(|l| l.starts_with("CapBnd")).unwrap();
    let mask = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(
        mask & (1 << 16),
        0,
        "CAP_SYS_MODULE in the job's bounding set: {bnd}"
    );
}

#[test]
fn cannot_change_host_hostname_or_clock() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let o = sh(
        &[],
        "hostname evil-host && echo SET-INSIDE; date -s @0 >/dev/null 2>&1 && echo CLOCK-SET; true",
    );
    assert!(text(&o.stdout).contains("SET-INSIDE"));
    assert!(!text(&o.stdout).contains("CLOCK-SET"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now > 1_700_000_000, "host clock moved");
}

#[test]
fn setuid_binary_gives_no_privilege() {
    let t = tempfile::tempdir().unwrap();
    let d = job_writable_dir(t.path(), "w");
    let o = sh(
        &["--bind", &format!("{}:/w", d.display())],
        "cp /usr/bin/id /w/id && chmod 4755 /w/id && setpriv --reuid=1000 --regid=1000 --clear-groups /w/id -u",
    );
    assert_eq!(
        text(&o.stdout).trim(),
        "1000",
        "stderr: {}",
        text(&o.stderr)
    );
}

#[test]
fn cannot_open_kvm_or_block_devices() {
    let t = tempfile::tempdir().unwrap();
    let d = job_writable_dir(t.path(), "w");
    let o = sh(
        &["--bind", &format!("{}:/w", d.display())],
        "for d in /dev/kvm /dev/vda /dev/sda /dev/mem; do head -c1 $d >/dev/null 2>&1 && echo OPENED $d; done; \
         mknod /w/blk b 253 0 2>/dev/null && head -c1 /w/blk >/dev/null 2>&1 && echo OPENED-MKNOD; echo done",
    );
    let so = text(&o.stdout);
    assert!(so.contains("done"), "{so}");
    assert!(!so.contains("OPENED"), "{so}");
}

/// One raw tar entry: name, type, link target, content.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// Write a tar with a raw entry name (tar's builder refuses `..`, which is the point).
fn evil_tar(path: &Path, entries: &[RawEntry]) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(f);
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            let raw = &mut h.as_old_mut().linkname;
            raw[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

#[test]
fn rootfs_tarball_escapes_are_refused() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let v = victim.to_str().unwrap();
    let reg = tar::EntryType::Regular;
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        (
            "dotdot",
            vec![
                (
                    "../../../../../../../..",
                    tar::EntryType::Directory,
                    "",
                    b"",
                ),
                ("a/../../pwned", reg, "", b"x"),
            ],
        ),
        ("absolute", vec![("/tmp/pwned-abs", reg, "", b"x")]),
        (
            "symlink",
            vec![
                ("link", tar::EntryType::Symlink, v, b""),
                ("link/pwned", reg, "", b"x"),
            ],
        ),
        (
            "hardlink",
            vec![(
                "hl",
                tar::EntryType::Link,
                "../../../../../../etc/passwd",
                b"",
            )],
        ),
    ];
    let tmpdir = t.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    for (name, entries) in cases {
        let tarp = t.path().join(format!("{name}.tar"));
        evil_tar(&tarp, &entries);
        let o = Command::new(bin())
            .env("TMPDIR", &tmpdir)
            .args(["run", "--rootfs", tarp.to_str().unwrap(), "--", "true"])
            .output()
            .unwrap();
        let se = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {se}");
        assert!(
            se.contains("entry") && se.contains("refused"),
            "{name}: {se}"
        );
        assert_eq!(se.lines().count(), 1, "one error line: {se}");
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            0,
            "{name} wrote through"
        );
        assert_eq!(
            std::fs::read_dir(&tmpdir).unwrap().count(),
            0,
            "{name} left a temp dir"
        );
    }
    assert!(!Path::new("/tmp/pwned-abs").exists());
}

#[test]
fn bind_through_a_symlink_in_the_root_is_refused() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    mini_rootfs(&root);
    let victim = t.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // The root filesystem points /mnt at a host directory; a bind onto /mnt/x must not
    // become a mount on the host's victim directory.
    std::os::unix::fs::symlink(&victim, root.join("mnt")).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let before = mountinfo();
    let o = run(&[
        "--rootfs",
        root.to_str().unwrap(),
        "--bind",
        &format!("{}:/mnt/x", src.display()),
        "--",
        "true",
    ]);
    let se = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{se}");
    assert!(se.contains("symlink") && se.contains("/mnt/x"), "{se}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    assert_eq!(mountinfo(), before);
}
