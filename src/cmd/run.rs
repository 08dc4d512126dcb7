//! `reprobox run`: run one command sealed in the container sandbox.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::{Bind, CapsPolicy, Job, NetworkPolicy, RootfsSource};

/// The backends `reprobox run` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunBackend {
    /// Namespaces, pivot_root, narrowed capabilities, Landlock (src/sandbox).
    Container,
    /// A qemu `-M microvm` guest (src/vm): its own kernel and wall clock.
    Microvm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root filesystem: a directory (used in place) or a tar / tar.gz / tar.zst archive
    /// (unpacked safely into a temporary directory removed afterwards).
    #[arg(long, value_name = "DIR|FILE")]
    pub rootfs: PathBuf,
    /// Make a host path visible in the job: SRC:DST, or SRC:DST:ro for read-only.
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Mount the root filesystem read-only (binds keep their own mode).
    #[arg(long)]
    pub read_only: bool,
    /// Working directory inside the job.
    #[arg(long, default_value = "/")]
    pub workdir: PathBuf,
    /// Extra environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Network policy; only `none` (loopback only) exists.
    #[arg(long, default_value = "none", value_name = "none")]
    pub network: String,
    /// Hostname inside the job.
    #[arg(long, default_value = "reprobox")]
    pub hostname: String,
    /// Exported as SOURCE_DATE_EPOCH.
    #[arg(long, value_name = "N")]
    pub source_date_epoch: Option<i64>,
    /// Kill the whole job after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Memory limit in bytes.
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<u64>,
    /// Capability bounding set: default (what nested podman needs), none, or a
    /// comma-separated list (sys_admin,chown,…).
    #[arg(long, default_value = "default", value_name = "default|none|LIST")]
    pub caps: String,
    /// Do not apply Landlock rules.
    #[arg(long)]
    pub no_landlock: bool,
    /// Print the run record (outcome and enforcement list) as JSON on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Where the job runs: the container sandbox, or a qemu microVM with its own kernel and
    /// a wall clock set to SOURCE_DATE_EPOCH.
    #[arg(long, value_enum, default_value = "container")]
    pub backend: RunBackend,
    /// microVM: the guest kernel (bzImage) [default: the host's /boot/vmlinuz-<running
    /// release>, else the newest /boot/vmlinuz-* whose modules are installed].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// microVM: an extra initramfs loaded before reprobox's own (needs --kernel).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// microVM: guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub vm_memory: u64,
    /// microVM: guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub vm_cpus: u32,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    pub command: Vec<String>,
}

/// `reprobox run`'s arguments (those after `run`) in their plain forms, parsed by hand:
/// building the clap command alone costs more than a tenth of a short job's start.
/// Takes `--name value`, `--name=value`, the flags, `-v`/`--verbose`, then `--` and the
/// command. Anything else (help, short options, an unknown or repeated name, a value that
/// is empty, starts with `-` or does not parse, non-UTF-8) gives `None`, and the caller
/// parses with clap, which has the usual messages. Defaults are [`Args`]'s; a test in
/// `cli.rs` checks that both parsers agree.
pub fn parse_plain(args: &[std::ffi::OsString]) -> Option<(u8, Args)> {
    let mut a = Args {
        rootfs: PathBuf::new(),
        binds: Vec::new(),
        read_only: false,
        workdir: "/".into(),
        env: Vec::new(),
        network: "none".into(),
        hostname: "reprobox".into(),
        source_date_epoch: None,
        timeout: None,
        memory: None,
        caps: "default".into(),
        no_landlock: false,
        json: false,
        backend: RunBackend::Container,
        kernel: None,
        initrd: None,
        vm_memory: 1024,
        vm_cpus: 2,
        command: Vec::new(),
    };
    let mut verbose = 0u8;
    let mut given: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let arg = arg.to_str()?;
        if arg == "--" {
            let command = it
                .map(|s| s.to_str().map(String::from))
                .collect::<Option<Vec<_>>>()?;
            if command.is_empty() || !given.contains(&"rootfs") {
                return None;
            }
            a.command = command;
            return Some((verbose, a));
        }
        if arg == "-v" || arg == "--verbose" {
            verbose = verbose.checked_add(1)?;
            continue;
        }
        let (name, inline) = match arg.strip_prefix("--")?.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (&arg[2..], None),
        };
        if !matches!(name, "bind" | "env") {
            if given.contains(&name) {
                return None;
            }
            given.push(name);
        }
        if let Some(flag) = match name {
            "read-only" => Some(&mut a.read_only),
            "no-landlock" => Some(&mut a.no_landlock),
            "json" => Some(&mut a.json),
            _ => None,
        } {
            if inline.is_some() {
                return None;
            }
            *flag = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next()?.to_str()?,
        };
        if value.is_empty() || value.starts_with('-') {
            return None;
        }
        match name {
            "rootfs" => a.rootfs = value.into(),
            "bind" => a.binds.push(value.into()),
            "env" => a.env.push(value.into()),
            "workdir" => a.workdir = value.into(),
            "network" => a.network = value.into(),
            "hostname" => a.hostname = value.into(),
            "source-date-epoch" => a.source_date_epoch = Some(value.parse().ok()?),
            "timeout" => a.timeout = Some(value.parse().ok()?),
            "memory" => a.memory = Some(value.parse().ok()?),
            "caps" => a.caps = value.into(),
            "backend" => {
                a.backend = match value {
                    "container" => RunBackend::Container,
                    "microvm" => RunBackend::Microvm,
                    _ => return None,
                }
            }
            "kernel" => a.kernel = Some(value.into()),
            "initrd" => a.initrd = Some(value.into()),
            "vm-memory" => a.vm_memory = value.parse().ok()?,
            "vm-cpus" => a.vm_cpus = value.parse().ok()?,
            _ => return None,
        }
    }
    None
}

/// The process count limit of every `reprobox run` job.
pub const DEFAULT_PIDS: u64 = 16384;

/// Parse `SRC:DST[:ro]`.
pub fn parse_bind(s: &str) -> Result<Bind> {
    let bad = || {
        Error::bad_input(
            format!("--bind {s}"),
            "expected SRC:DST or SRC:DST:ro with absolute paths",
        )
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [a, b] => (*a, *b, false),
        [a, b, "ro"] => (*a, *b, true),
        [a, b, "rw"] => (*a, *b, false),
        _ => return Err(bad()),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        return Err(bad());
    }
    Ok(Bind {
        src: src.into(),
        dst: dst.into(),
        read_only: ro,
    })
}

/// Turn the arguments into a [`Job`] (all validation that needs no I/O).
pub fn job_from_args(a: &Args) -> Result<Job> {
    let rootfs = if a.rootfs.is_dir() {
        RootfsSource::Dir(a.rootfs.clone())
    } else if a.rootfs.is_file() {
        RootfsSource::Archive(a.rootfs.clone())
    } else {
        return Err(Error::bad_input(
            format!("--rootfs {}", a.rootfs.display()),
            "expected an existing directory or tar/tar.gz/tar.zst file",
        ));
    };
    let mut job = Job::new(rootfs, a.command.clone());
    job.binds = a
        .binds
        .iter()
        .map(|b| parse_bind(b))
        .collect::<Result<_>>()?;
    job.workdir = a.workdir.clone();
    job.read_only_root = a.read_only;
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::bad_input(format!("--env {e}"), "expected K=V"))?;
        job.env.push((k.into(), v.into()));
    }
    job.network = match a.network.as_str() {
        "none" => NetworkPolicy::None,
        other => {
            return Err(Error::bad_input(
                format!("--network {other}"),
                "expected none",
            ));
        }
    };
    if a.hostname.is_empty() || a.hostname.len() > 64 {
        return Err(Error::bad_input(
            format!("--hostname {}", a.hostname),
            "expected 1 to 64 characters",
        ));
    }
    job.hostname = a.hostname.clone();
    job.clock.source_date_epoch = a.source_date_epoch;
    if let Some(t) = a.timeout {
        if !(t > 0.0 && t.is_finite()) {
            return Err(Error::bad_input(
                format!("--timeout {t}"),
                "expected a positive number of seconds",
            ));
        }
        job.limits.timeout = Some(Duration::from_secs_f64(t));
    }
    job.limits.memory = a.memory;
    // Always a process count limit: a fork bomb in a build must not take the host down.
    job.limits.pids = Some(DEFAULT_PIDS);
    job.caps = match a.caps.as_str() {
        "default" => CapsPolicy::Default,
        "none" => CapsPolicy::None,
        list => CapsPolicy::List(list.split(',').map(|s| s.trim().to_string()).collect()),
    };
    job.landlock.enabled = !a.no_landlock;
    Ok(job)
}

pub fn execute(a: Args) -> Result<i32> {
    let job = job_from_args(&a)?;
    let vm_flags = a.kernel.is_some() || a.initrd.is_some();
    let outcome = match a.backend {
        RunBackend::Container => {
            if vm_flags {
                return Err(Error::bad_input(
                    "--kernel/--initrd",
                    "only with --backend microvm",
                ));
            }
            crate::sandbox::run(&job)?
        }
        RunBackend::Microvm => {
            let kernel = match (&a.kernel, &a.initrd) {
                (Some(k), _) => k.clone(),
                (None, Some(i)) => {
                    return Err(Error::bad_input(
                        format!("--initrd {}", i.display()),
                        "--initrd needs --kernel PATH (a bzImage) as well",
                    ));
                }
                (None, None) => crate::vm::kernel::host_kernel()?,
            };
            let opts = crate::vm::VmOptions {
                kernel: Some(kernel),
                initrd: a.initrd.clone(),
                memory_mib: a.vm_memory,
                cpus: a.vm_cpus,
                ..Default::default()
            };
            crate::vm::run(&job, &opts)?
        }
    };
    for e in outcome.enforcement.iter().filter(|e| !e.enforced) {
        tracing::info!("not enforced: {}: {}", e.feature, e.detail);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&outcome).expect("outcome serialises")
        );
    }
    Ok(outcome.exit_code)
}
