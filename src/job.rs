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
    /// Make every IPv4 address local to the job's namespace (a `local 0.0.0.0/0 dev lo`
    /// route) and listen on 0.0.0.0: a connect to any address on a listened port reaches
    /// the host's server, which refuses and records it (the egress), instead of failing
    /// unseen. Other ports are refused by the kernel at once, as before.
    #[serde(default)]
    pub loopback_catch_all: bool,
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
            loopback_catch_all: false,
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
