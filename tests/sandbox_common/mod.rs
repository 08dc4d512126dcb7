//! Shared helpers for the sandbox tests: the real reprobox binary, the Debian root
//! filesystem from scripts/debian-rootfs.sh, and a tiny root filesystem copied from the
//! host's own binaries.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_reprobox")
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the sandbox tests must run as root (CI runs as root); they cannot be skipped"
    );
}

/// The Debian bookworm root filesystem (built once, cached). Never written to by tests:
/// they use `--read-only` and binds.
pub fn debian_rootfs() -> PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-rootfs.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run debian-rootfs.sh");
        assert!(
            out.status.success(),
            "scripts/debian-rootfs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A directory holding a minimal root filesystem (sh and a few coreutils with their
/// libraries, copied from the host), writable by the test.
pub fn mini_rootfs(dir: &Path) {
    let root = dir;
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
    for (l, t) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/bin"),
    ] {
        std::os::unix::fs::symlink(t, root.join(l)).unwrap();
    }
    for d in ["etc", "proc", "dev", "tmp", "run", "sys", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let tools = [
        "sh", "sleep", "cat", "true", "env", "ls", "touch", "id", "echo", "hostname", "grep",
        "mkdir", "chown", "setpriv", "seq",
    ];
    for t in tools {
        let src = Path::new("/usr/bin").join(t);
        let src = if src.exists() {
            src
        } else {
            Path::new("/bin").join(t)
        };
        std::fs::copy(&src, root.join("usr/bin").join(t)).unwrap();
        let out = Command::new("ldd").arg(&src).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(p) = p {
                let dst = root.join(p.strip_prefix("/").unwrap());
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                if !dst.exists() {
                    std::fs::copy(&p, &dst).unwrap();
                }
            }
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
}

/// A host directory the job's root can write: owned by the host id that uid 0 inside
/// maps to (root has no /etc/subuid entry in tests, so 100000).
pub fn job_writable_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(100000), Some(100000)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("run")
        .args(args)
        .output()
        .expect("run reprobox")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines of the host's mountinfo (to compare before/after).
pub fn mountinfo() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The shell functions the egress tests probe a job's way out with (`bash` in the Debian
/// root, both backends), each printing or returning what a control can be compared with:
/// - `probe NAME CMD…`: runs CMD (5 s at most, output dropped) and prints `NAME=RC`;
/// - `tcp ADDR PORT`: a plain `GET /some/file` naming `host` over `/dev/tcp`, true on 200;
/// - `connect HOST`: a proxy `CONNECT HOST:443` to 127.0.0.1:3128, true on 200;
/// - `udp SERVER`: an `A` query for `a` over UDP to SERVER:53 (exit 8: not sent, 9: refused).
pub fn egress_probes(host: &str) -> String {
    format!(
        r#"
probe() {{ name=$1; shift; timeout 5 "$@" >/dev/null 2>&1; echo "$name=$?"; }}
tcp() {{ exec 3<>/dev/tcp/$1/$2 || return 9
  printf 'GET /some/file HTTP/1.0\r\nHost: {host}\r\n\r\n' >&3
  read -r v code rest <&3; exec 3>&-; [ "$code" = 200 ]; }}
connect() {{ exec 3<>/dev/tcp/127.0.0.1/3128 || return 9
  printf 'CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n' "$1" "$1" >&3
  read -r v code rest <&3; exec 3>&-; [ "$code" = 200 ]; }}
udp() {{ perl -MIO::Socket::INET -e '
  my $s = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => 53, Proto => "udp") or exit 8;
  $s->send(pack("n6", 0x1234, 0x0100, 1, 0, 0, 0) . "\1a\0" . pack("n2", 1, 1)) or exit 8;
  defined $s->recv(my $r, 512) or exit 9;' "$1"; }}
export -f tcp connect udp
"#
    )
}

/// A run record's `egress.refusals` lists exactly one refusal of `host` described as `what`
/// (the egress records a client's retries once).
pub fn assert_refused_once(refusals: &[serde_json::Value], host: &str, what: &str) {
    let n = refusals
        .iter()
        .filter(|x| x["host"] == host && x["what"] == what)
        .count();
    assert_eq!(n, 1, "{what}: {refusals:?}");
}

/// A `reprobox run --json` of the egress tests (either backend): its output and the run
/// record (stdout's last line).
pub struct EgressRun {
    pub out: Output,
    pub stdout: String,
    pub record: serde_json::Value,
}

/// `reprobox run --json` in the Debian root, read-only, with `backend`'s arguments (none:
/// the container), `egress` rules over `store` and `extra` arguments, running `script` with
/// `bash -c`; TMPDIR is `tmp` (where the egress's temporary directory goes).
pub fn egress_run(
    backend: &[&str],
    store: &Path,
    tmp: &Path,
    egress: &[String],
    extra: &[&str],
    script: &str,
) -> EgressRun {
    require_root();
    let r = debian_rootfs();
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .args(backend)
        .args(["--rootfs", r.to_str().unwrap(), "--read-only", "--json"])
        .args(["--store", store.to_str().unwrap()])
        .env("TMPDIR", tmp)
        .env_remove("REPROBOX_STORE");
    for e in egress {
        cmd.args(["--egress", e]);
    }
    cmd.args(extra).args(["--", "bash", "-c", script]);
    let out = cmd.output().expect("run reprobox");
    let stdout = text(&out.stdout);
    let record = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    EgressRun {
        out,
        stdout,
        record,
    }
}

impl EgressRun {
    pub fn why(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status.code(),
            self.stdout,
            text(&self.out.stderr)
        )
    }
    pub fn lock(&self) -> &str {
        self.record["inputs_lock"].as_str().unwrap_or("")
    }
    pub fn refusals(&self) -> Vec<serde_json::Value> {
        self.record["egress"]["refusals"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    pub fn ca(&self) -> String {
        self.record["egress"]["ca_certificate"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    /// The exit status an [`egress_probes`] `probe NAME …` printed.
    pub fn rc(&self, name: &str) -> i32 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}: {}", self.why()))
            .parse()
            .unwrap()
    }
}

/// `store`, `tmp` and `up` (an upstream's files) under `t`, made.
pub fn egress_dirs(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let d = (t.join("store"), t.join("tmp"), t.join("up"));
    for p in [&d.0, &d.1, &d.2] {
        std::fs::create_dir_all(p).unwrap();
    }
    d
}

/// An offline run printed `body` first and its lock has `url` (a `recorded` rule's) as a
/// store hit, with nothing fetched.
pub fn assert_offline_hit(r: &EgressRun, body: &[u8], url: &str) {
    assert!(r.out.status.success(), "{}", r.why());
    assert!(
        r.stdout.starts_with(std::str::from_utf8(body).unwrap()),
        "{}",
        r.why()
    );
    let sha = reprobox::digest::sha256_hex(body);
    let line = format!("egress recorded hit {sha} {} 1 {url}\n", body.len());
    assert!(r.lock().contains(&line), "{}", r.lock());
    assert!(!r.lock().contains("fetched"), "{}", r.lock());
}

/// Debian's kernel image under /boot (`linux-image-amd64`), the microVM tests' guest kernel
/// (not the running kernel of this machine).
pub fn debian_kernel() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("read /boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop().expect(
        "no /boot/vmlinuz-*: these tests need Debian's kernel (apt-get install linux-image-amd64)",
    )
}
