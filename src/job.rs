//! The contract between the pipeline and the backends (container sandbox, microVM).
//!
//! A [`Job`] is plain data: what root filesystem, what is mounted where, what runs, with
//! which environment, network, clock and limits. A backend turns it into a running,
//! sealed process and returns a [`JobOutcome`] that states what was actually enforced —
//! the run record never claims an isolation the kernel did not give.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the job's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum RootfsSource {
    /// An existing directory, used in place.
    Dir(PathBuf),
    /// A tar, tar.gz or tar.zst, unpacked safely into a fresh directory that is removed
    /// when the job ends.
    Archive(PathBuf),
}

/// A host path made visible inside the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

/// The job's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// A network namespace with loopback up and nothing else.
    #[default]
    None,
}

/// Capability bounding set of the job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "caps")]
pub enum CapsPolicy {
    /// What nested podman needs (see reference/isolation.md).
    #[default]
    Default,
    /// Drop every capability.
    None,
    /// Exactly these (names like `CAP_SYS_ADMIN` or `sys_admin`).
    List(Vec<String>),
}

/// Landlock rules requested for the job (best effort by the kernel's ABI; the outcome
/// says what was enforced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPolicy {
    pub enabled: bool,
    /// Restrict filesystem writes to `writable` (only for jobs that do not mount:
    /// Landlock filesystem rules make mount and pivot_root fail).
    pub restrict_filesystem: bool,
    /// Paths (inside the job) that may be written when `restrict_filesystem` is on.
    pub writable: Vec<PathBuf>,
    /// TCP ports the job may connect to; empty means none.
    pub tcp_connect: Vec<u16>,
    /// TCP ports the job may bind; empty means none.
    pub tcp_bind: Vec<u16>,
}

impl Default for LandlockPolicy {
    fn default() -> Self {
        LandlockPolicy {
            enabled: true,
            restrict_filesystem: false,
            writable: Vec::new(),
            tcp_connect: Vec::new(),
            tcp_bind: Vec::new(),
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock timeout; the whole process tree is killed when it expires.
    pub timeout: Option<Duration>,
    /// Memory in bytes (cgroup where available, else RLIMIT_AS).
    pub memory: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<u64>,
}

/// A host id range for the job's user namespace (root only): 0 inside → `host_uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub host_uid: u32,
    pub host_gid: u32,
    pub count: u32,
}

/// The job's clock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Clock {
    /// Exported as SOURCE_DATE_EPOCH; the microVM also sets the guest wall clock to it.
    pub source_date_epoch: Option<i64>,
    /// Pin dynamically linked tools' wall clock to SOURCE_DATE_EPOCH with the root
    /// filesystem's own libfaketime (container backend only; DESIGN.md decision 4).
    pub faketime: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub rootfs: RootfsSource,
    /// Mount the root read-only (binds stay as declared).
    pub read_only_root: bool,
    pub binds: Vec<Bind>,
    /// Working directory inside the job.
    pub workdir: PathBuf,
    /// Extra environment on top of the fixed set (PATH, HOME, TERM, LANG, TZ,
    /// SOURCE_DATE_EPOCH).
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub network: NetworkPolicy,
    /// TCP ports on the job's own loopback whose listening sockets are created inside the
    /// job's network namespace and handed back to the host, so a host-side server (the
    /// archive mirror) is reachable from a job that has no network.
    pub listen: Vec<u16>,
    /// UDP ports made the same way (the egress's resolver on 53). The microVM backend
    /// forwards TCP only and ignores these.
    #[serde(default)]
    pub listen_udp: Vec<u16>,
    /// Make every IPv4 address local to the job's namespace (a `local 0.0.0.0/0 dev lo`
    /// route) and listen on 0.0.0.0: a connect to any address on a listened port reaches
    /// the host's server, which refuses and records it (the egress), instead of failing
    /// unseen. Other ports are refused by the kernel at once, as before.
    #[serde(default)]
    pub loopback_catch_all: bool,
    /// Report the job's connects that nothing answers (a TCP connect or a UDP datagram to
    /// an address and port no socket of the job's network listens on) to the backend's
    /// [`UnansweredSink`]: the egress lists them as refusals. The container backend watches
    /// `connect(2)` and `sendto(2)` with an address (seccomp user notification); the microVM
    /// cannot and says so in its enforcement list.
    #[serde(default)]
    pub watch_unanswered: bool,
    pub hostname: String,
    pub clock: Clock,
    pub limits: Limits,
    pub caps: CapsPolicy,
    pub landlock: LandlockPolicy,
    /// The id range to map when running as root; `None` takes root's /etc/subuid and
    /// /etc/subgid entries, else 100000 (65536 ids). Ignored for non-root users, who get
    /// their own subordinate ranges.
    #[serde(default)]
    pub id_map: Option<IdRange>,
    /// The root directory's files are already owned by the job's host ids (a reproduction's
    /// overlay over an idmapped prepared environment), so the sandbox does not idmap it.
    #[serde(default)]
    pub root_premapped: bool,
}

impl Job {
    /// A job with the defaults: no network, hostname `reprobox`, default caps, Landlock on.
    pub fn new(rootfs: RootfsSource, argv: Vec<String>) -> Job {
        Job {
            rootfs,
            read_only_root: false,
            binds: Vec::new(),
            workdir: PathBuf::from("/"),
            env: Vec::new(),
            argv,
            network: NetworkPolicy::None,
            listen: Vec::new(),
            listen_udp: Vec::new(),
            loopback_catch_all: false,
            watch_unanswered: false,
            hostname: "reprobox".into(),
            clock: Clock::default(),
            limits: Limits::default(),
            caps: CapsPolicy::Default,
            landlock: LandlockPolicy::default(),
            id_map: None,
            root_premapped: false,
        }
    }
}

/// A connect (TCP) or datagram (UDP) of a job to an address and port that nothing in the
/// job's network answers, so the kernel refused it (`Job::watch_unanswered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    pub addr: std::net::SocketAddr,
    /// The program that made it (`/proc/PID/comm`).
    pub program: String,
}

/// The enforcement item that says whether a job's [`Unanswered`] attempts were watched
/// (`Job::watch_unanswered`), on either backend.
pub const UNANSWERED_FEATURE: &str = "unanswered-connects";

/// Where a backend hands the [`Unanswered`] attempts of a job, as they happen.
pub type UnansweredSink = std::sync::Arc<dyn Fn(Unanswered) + Send + Sync>;

/// One isolation feature and whether it was enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub feature: String,
    pub enforced: bool,
    /// What was done, or why it could not be.
    pub detail: String,
}

/// What came back from a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// The job's exit status as reprobox returns it (killed by signal N gives 128+N).
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Which backend ran it (`container`, `microvm`).
    pub backend: String,
    /// Every isolation feature requested, and whether the kernel gave it.
    pub enforcement: Vec<Enforcement>,
    pub wall_time_ms: u64,
}

/// The nested podman's configuration for a job that runs containers (a profile step with
/// `isolation = "nested-containers"`), given through podman's own configuration rather than
/// the profile's command line: a `storage.conf` named by `CONTAINERS_STORAGE_CONF` (the
/// `vfs` driver, which needs no overlay inside the sandbox; graph and run roots where
/// reprobox gives scratch space), a `containers.conf.d` drop-in (`cgroupfs`: the job has no
/// systemd; events to a file: no journald), on top of the environment's own containers.conf
/// (whose capability list a replacement would lose), and `BUILDAH_ISOLATION=chroot` (a RUN
/// step cannot create the namespaces of the default OCI isolation inside the sandbox). Both
/// files are written in a directory of the run and bound read-only; nothing is written into
/// the environment but the drop-in's mount point. Works with podman 4.3.1 (Debian 12).
pub struct NestedPodman;

impl NestedPodman {
    /// Where the storage.conf is inside the job.
    pub const JOB_DIR: &'static str = "/run/reprobox-containers";
    /// Where the containers.conf drop-in is bound inside the job.
    pub const CONTAINERS_CONF_DROPIN: &'static str =
        "/etc/containers/containers.conf.d/90-reprobox-nested.conf";
    /// Podman's storage (the run's scratch `/var/lib/containers` where reprobox gives one).
    pub const GRAPHROOT: &'static str = "/var/lib/containers/storage";
    pub const RUNROOT: &'static str = "/run/containers/storage";

    /// The files, by name, with their exact text.
    pub fn files() -> [(&'static str, String); 2] {
        [
            (
                "storage.conf",
                format!(
                    "# written by reprobox for a nested-containers step (docs/profiles.md)\n\
                     [storage]\n\
                     driver = \"vfs\"\n\
                     graphroot = \"{}\"\n\
                     runroot = \"{}\"\n",
                    Self::GRAPHROOT,
                    Self::RUNROOT
                ),
            ),
            (
                "containers.conf",
                "# written by reprobox for a nested-containers step (docs/profiles.md)\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n"
                    .to_string(),
            ),
        ]
    }

    /// The variables that point podman (and buildah) at the files, and the isolation.
    pub fn env() -> Vec<(String, String)> {
        vec![
            (
                "CONTAINERS_STORAGE_CONF".into(),
                format!("{}/storage.conf", Self::JOB_DIR),
            ),
            ("BUILDAH_ISOLATION".into(), "chroot".into()),
        ]
    }

    /// Write the files into `dir` (created if needed).
    pub fn write(dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, text) in Self::files() {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(())
    }

    /// Give `job` the configuration written in `host_dir` by [`NestedPodman::write`]: the
    /// directory bound read-only at [`NestedPodman::JOB_DIR`], the containers.conf drop-in
    /// at [`NestedPodman::CONTAINERS_CONF_DROPIN`], and the variables (replacing any of the
    /// same name).
    pub fn apply(job: &mut Job, host_dir: &std::path::Path) {
        job.binds.push(Bind {
            src: host_dir.to_path_buf(),
            dst: PathBuf::from(Self::JOB_DIR),
            read_only: true,
        });
        job.binds.push(Bind {
            src: host_dir.join("containers.conf"),
            dst: PathBuf::from(Self::CONTAINERS_CONF_DROPIN),
            read_only: true,
        });
        for (k, v) in Self::env() {
            job.env.retain(|(ek, _)| *ek != k);
            job.env.push((k, v));
        }
    }

    /// The configuration as the run record states it: each file's text and the variables.
    pub fn record() -> serde_json::Value {
        let files: serde_json::Map<String, serde_json::Value> = Self::files()
            .into_iter()
            .map(|(n, t)| {
                let at = match n {
                    "containers.conf" => Self::CONTAINERS_CONF_DROPIN.to_string(),
                    _ => format!("{}/{n}", Self::JOB_DIR),
                };
                (at, t.into())
            })
            .collect();
        let env: serde_json::Map<String, serde_json::Value> = Self::env()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        serde_json::json!({ "files": files, "env": env })
    }
}

#[cfg(test)]
mod nested_podman_tests {
    use super::*;

    #[test]
    fn nested_podman_gets_its_files_bound_read_only_and_the_variables() {
        let t = tempfile::tempdir().unwrap();
        NestedPodman::write(t.path()).unwrap();
        let storage = std::fs::read_to_string(t.path().join("storage.conf")).unwrap();
        assert!(storage.contains("driver = \"vfs\""), "{storage}");
        let conf = std::fs::read_to_string(t.path().join("containers.conf")).unwrap();
        assert!(conf.contains("cgroup_manager = \"cgroupfs\""), "{conf}");
        let mut job = Job::new(RootfsSource::Dir("/r".into()), vec!["podman".into()]);
        job.env.push(("BUILDAH_ISOLATION".into(), "oci".into()));
        NestedPodman::apply(&mut job, t.path());
        assert_eq!(job.binds.len(), 2);
        assert!(job.binds.iter().all(|b| b.read_only));
        assert_eq!(job.binds[0].dst, PathBuf::from(NestedPodman::JOB_DIR));
        assert_eq!(
            job.binds[1].dst,
            PathBuf::from("/etc/containers/containers.conf.d/90-reprobox-nested.conf")
        );
        assert!(!job.env.iter().any(|(k, _)| k == "CONTAINERS_CONF"));
        let iso: Vec<_> = job
            .env
            .iter()
            .filter(|(k, _)| k == "BUILDAH_ISOLATION")
            .collect();
        assert_eq!(
            iso,
            [&("BUILDAH_ISOLATION".to_string(), "chroot".to_string())]
        );
        assert!(
            job.env.iter().any(|(k, v)| k == "CONTAINERS_STORAGE_CONF"
                && v == "/run/reprobox-containers/storage.conf")
        );
        let r = NestedPodman::record();
        assert!(r["files"]["/run/reprobox-containers/storage.conf"].is_string());
        assert!(r["files"][NestedPodman::CONTAINERS_CONF_DROPIN].is_string());
    }
}
