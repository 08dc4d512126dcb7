//! `reprobox run`: run one command sealed on a backend (the container sandbox, or a
//! microVM), in a root filesystem given (`--rootfs`) or in an Arch environment prepared at
//! an archive day (`--snapshot`, `pipeline::snapshot`).

use std::path::PathBuf;
use std::time::Duration;

use super::backend::{BackendArgs, BackendKind};
use super::store::StoreArg;
use crate::egress::{Egress, EgressRule};
use crate::error::{Error, Result};
use crate::job::{Bind, CapsPolicy, Job, NetworkPolicy, RootfsSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root filesystem: a directory (used in place) or a tar / tar.gz / tar.zst archive
    /// (unpacked safely into a temporary directory removed afterwards).
    #[arg(
        long,
        value_name = "DIR|FILE",
        required_unless_present = "snapshot",
        conflicts_with = "snapshot"
    )]
    pub rootfs: Option<PathBuf>,
    /// Run in an Arch environment prepared at this archive day (YYYY/MM/DD) instead of
    /// `--rootfs`: the profile's pinned base rolled back to that day, with its environment
    /// steps and `--packages` (kept in the store's prepared environments and reused), the
    /// mirror, the profile's egress and SOURCE_DATE_EPOCH of that day.
    #[arg(long, value_name = "YYYY/MM/DD")]
    pub snapshot: Option<String>,
    /// With --snapshot: the profile whose base, steps and egress make the environment
    /// [default: archlinux-repro].
    #[arg(long, value_name = "PROFILE", requires = "snapshot")]
    pub profile: Option<String>,
    /// With --snapshot: more packages to install from the same day (repeatable, or several
    /// after one --packages).
    #[arg(long, value_name = "PKG", num_args = 1.., requires = "snapshot")]
    pub packages: Vec<String>,
    /// With --snapshot: override a profile location, NAME=URL (repeatable;
    /// REPROBOX_LOCATION_<NAME> works too).
    #[arg(
        short = 'L',
        long = "location",
        value_name = "NAME=URL",
        requires = "snapshot"
    )]
    pub locations: Vec<String>,
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
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Let the job reach HOST (and nothing else) through reprobox: requests for
    /// https://HOST/p or http://HOST/p are answered from URL/p under POLICY: `recorded`
    /// (default; pinned on first use), `pinned=PATH@SHA256[,…]`, `archive` (the archive
    /// mirror's rules) or `registry` (the OCI pull API, digests checked) (repeatable;
    /// docs/egress.md).
    #[arg(long = "egress", value_name = "HOST=URL[:POLICY]")]
    pub egress: Vec<String>,
    /// Every egress answer comes from the store; a miss fails the request, and the run
    /// (exit 3), naming the URL.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub store: StoreArg,
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
        rootfs: None,
        snapshot: None,
        profile: None,
        packages: Vec::new(),
        locations: Vec::new(),
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
        backend: BackendArgs {
            vm_cpus: 2,
            ..BackendArgs::default()
        },
        egress: Vec::new(),
        offline: false,
        store: StoreArg { store: None },
        command: Vec::new(),
    };
    // `--store` comes from the environment too: leave that to clap.
    if std::env::var_os("REPROBOX_STORE").is_some() {
        return None;
    }
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
            "rootfs" => a.rootfs = Some(value.into()),
            "bind" => a.binds.push(value.into()),
            "env" => a.env.push(value.into()),
            "workdir" => a.workdir = value.into(),
            "network" => a.network = value.into(),
            "hostname" => a.hostname = value.into(),
            "source-date-epoch" => a.source_date_epoch = Some(value.parse().ok()?),
            "timeout" => a.timeout = Some(value.parse().ok()?),
            "memory" => a.memory = Some(value.parse().ok()?),
            "caps" => a.caps = value.into(),
            "backend" => a.backend.backend = BackendKind::parse(value)?,
            "kernel" => a.backend.kernel = Some(value.into()),
            "initrd" => a.backend.initrd = Some(value.into()),
            "vm-memory" => a.backend.vm_memory = Some(value.parse().ok()?),
            "vm-cpus" => a.backend.vm_cpus = value.parse().ok()?,
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
    let given = a.rootfs.clone().unwrap_or_default();
    let rootfs = if given.is_dir() {
        RootfsSource::Dir(given)
    } else if given.is_file() {
        RootfsSource::Archive(given)
    } else {
        return Err(Error::bad_input(
            format!("--rootfs {}", given.display()),
            "expected an existing directory or tar/tar.gz/tar.zst file",
        ));
    };
    let mut job = Job::new(rootfs, a.command.clone());
    apply_options(a, &mut job)?;
    // Always a process count limit: a fork bomb in a build must not take the host down.
    job.limits.pids = Some(DEFAULT_PIDS);
    job.caps = match a.caps.as_str() {
        "default" => CapsPolicy::Default,
        "none" => CapsPolicy::None,
        list => CapsPolicy::List(list.split(',').map(|s| s.trim().to_string()).collect()),
    };
    Ok(job)
}

/// The job options of the command line that apply to both kinds of root: binds, working
/// directory, read-only root, environment, network, hostname, clock, timeout, memory,
/// Landlock. (The capability set and the process limit are set by the caller: a
/// `--snapshot` job keeps the run's unless `--caps` says otherwise.)
fn apply_options(a: &Args, job: &mut Job) -> Result<()> {
    let binds = a
        .binds
        .iter()
        .map(|b| parse_bind(b))
        .collect::<Result<Vec<_>>>()?;
    job.binds.extend(binds);
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
    if a.source_date_epoch.is_some() || a.snapshot.is_none() {
        job.clock.source_date_epoch = a.source_date_epoch;
    }
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
    job.landlock.enabled = !a.no_landlock;
    Ok(())
}

/// The run's egress from `--egress` (none without it), checked before any work.
pub fn egress_from_args(a: &Args) -> Result<Option<Egress>> {
    let rules = a
        .egress
        .iter()
        .map(|s| EgressRule::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if rules.is_empty() {
        if a.offline {
            return Err(Error::bad_input(
                "--offline",
                "applies to the egress; give --egress HOST=URL",
            ));
        }
        return Ok(None);
    }
    Ok(Some(Egress::new(rules, a.store.open()?, a.offline)?))
}

pub fn execute(a: Args) -> Result<i32> {
    if a.snapshot.is_some() {
        return execute_snapshot(a);
    }
    let mut job = job_from_args(&a)?;
    let choice = a.backend.choice(crate::backend::microvm::RUN_MEMORY_MIB)?;
    let egress = egress_from_args(&a)?.map(std::sync::Arc::new);
    if let Some(eg) = &egress {
        // An archive root is unpacked by the backend: only the variables and the egress
        // directory then (its own bundle and /etc/hosts are not bound over).
        let root = match &job.rootfs {
            RootfsSource::Dir(d) => Some(d.clone()),
            RootfsSource::Archive(_) => None,
        };
        eg.prepare_job(&mut job, root.as_deref())?;
    }
    let services = crate::backend::Services {
        egress: egress.clone(),
        ..crate::backend::Services::none()
    };
    job.listen = services.ports();
    job.listen_udp = services.udp_ports();
    let backend = crate::backend::for_run(&choice)?;
    let (outcome, lock) = backend.run(&job, &services)?;
    for e in outcome.enforcement.iter().filter(|e| !e.enforced) {
        tracing::info!("not enforced: {}: {}", e.feature, e.detail);
    }
    let record = egress.as_ref().map(|e| e.record());
    if a.json {
        // The outcome's own fields first, in their order, then what the egress adds.
        #[derive(serde::Serialize)]
        struct RunRecord<'a> {
            #[serde(flatten)]
            outcome: &'a crate::job::JobOutcome,
            #[serde(skip_serializing_if = "Option::is_none")]
            egress: Option<&'a crate::egress::EgressRecord>,
            #[serde(skip_serializing_if = "Option::is_none")]
            inputs_lock: Option<String>,
        }
        let rec = RunRecord {
            outcome: &outcome,
            egress: record.as_ref(),
            inputs_lock: record.as_ref().map(|_| lock.to_string()),
        };
        println!(
            "{}",
            serde_json::to_string(&rec).expect("the run record serialises")
        );
    }
    if let Some(r) = &record {
        warn_egress(r);
        if let Some(t) = r.tampered.first() {
            return Err(Error::Tampered {
                what: t.url.clone(),
                expected: t.expected.clone(),
                actual: t.actual.clone(),
            });
        }
        if a.offline
            && let Some(m) = r.requests.misses().next()
        {
            return Err(Error::network(
                &m.url,
                "offline, and the store does not hold it (egress)",
            ));
        }
    }
    Ok(outcome.exit_code)
}

/// What the egress refused and where upstream drifted, one warning line each (the run
/// record under `--json` has them all as data).
fn warn_egress(r: &crate::egress::EgressRecord) {
    for x in &r.refusals {
        let host = if x.host.contains(':') {
            format!("[{}]", x.host)
        } else {
            x.host.clone()
        };
        tracing::warn!(
            "egress refused {} ({host}:{}): {}",
            x.what,
            x.port,
            x.reason
        );
    }
    for d in &r.drift {
        tracing::warn!(
            "egress drift: {} is pinned as {}, upstream sent {}",
            d.url,
            d.pinned,
            d.upstream
        );
    }
}

/// `reprobox run --snapshot DAY`: the environment of the profile at DAY (prepared, or taken
/// from the store), then the command in it (`pipeline::snapshot`). The command's exit code
/// is reprobox's; while the environment is prepared, stdout goes to stderr, so that stdout
/// holds the command's output only (and, with `--json`, the run record last).
fn execute_snapshot(a: Args) -> Result<i32> {
    let raw = a.snapshot.clone().unwrap_or_default();
    let day = crate::inputs::archive::parse_day(&raw).map_err(|_| {
        Error::bad_input(
            format!("--snapshot {raw}"),
            "expected an archive day as YYYY/MM/DD, a real date",
        )
    })?;
    let version = snapshot_version(&day)?;
    let plan = super::plan::make_plan(
        a.profile.as_deref().unwrap_or(DEFAULT_PROFILE),
        &version,
        &a.locations,
    )?;
    if !a.egress.is_empty() {
        return Err(Error::bad_input(
            "--egress",
            "does not apply with --snapshot: the job gets the profile's [[egress]] rules (override their locations with --location)",
        ));
    }
    for p in &a.packages {
        if p.is_empty() || p.starts_with('-') || p.contains(char::is_whitespace) {
            return Err(Error::bad_input(
                format!("--packages {p:?}"),
                "expected package names",
            ));
        }
    }
    let choice = a.backend.choice(crate::backend::microvm::RUN_MEMORY_MIB)?;
    crate::doctor::preflight(crate::doctor::Needs::jobs_on(&choice, true))?;
    let store = a.store.open()?;
    let customise = |job: &mut Job| -> Result<()> {
        apply_options(&a, job)?;
        if a.caps != "default" {
            job.caps = match a.caps.as_str() {
                "none" => CapsPolicy::None,
                list => CapsPolicy::List(list.split(',').map(|s| s.trim().to_string()).collect()),
            };
        }
        job.limits.pids = Some(DEFAULT_PIDS);
        Ok(())
    };
    let mut stdout_to_stderr = Some(crate::progress::Redirect::stdout_to_stderr()?);
    let mut before = || drop(stdout_to_stderr.take());
    let done = crate::pipeline::snapshot::run_at_snapshot(
        &plan,
        store,
        crate::pipeline::snapshot::SnapshotRun {
            day: day.clone(),
            packages: a.packages.clone(),
            offline: a.offline,
            backend: choice,
            command: a.command.clone(),
            customise: &customise,
            before_command: &mut before,
        },
    )?;
    for e in done.outcome.enforcement.iter().filter(|e| !e.enforced) {
        tracing::info!("not enforced: {}: {}", e.feature, e.detail);
    }
    if let Some(r) = &done.egress {
        warn_egress(r);
    }
    if a.json {
        #[derive(serde::Serialize)]
        struct SnapshotRecord<'a> {
            #[serde(flatten)]
            outcome: &'a crate::job::JobOutcome,
            environment: &'a crate::pipeline::snapshot::SnapshotEnvironment,
            #[serde(skip_serializing_if = "Option::is_none")]
            egress: Option<&'a crate::egress::EgressRecord>,
            inputs_lock: String,
        }
        let rec = SnapshotRecord {
            outcome: &done.outcome,
            environment: &done.environment,
            egress: done.egress.as_ref(),
            inputs_lock: done.inputs.to_string(),
        };
        println!(
            "{}",
            serde_json::to_string(&rec).expect("the run record serialises")
        );
    }
    Ok(done.outcome.exit_code)
}

/// The profile `run --snapshot` uses without `--profile`.
pub const DEFAULT_PROFILE: &str = "archlinux-repro";

/// The build version whose build day is `day` (`YYYYMMDD.0.0`): the plan of a run at `day`
/// is the plan of a release built that day (its base the bootstrap of the day before's
/// month, SOURCE_DATE_EPOCH 00:00:00 UTC of the day).
pub fn snapshot_version(day: &str) -> Result<String> {
    let v = format!("{}.0.0", day.replace('/', ""));
    crate::plan::version::BuildVersion::parse(&v).map_err(|_| {
        Error::bad_input(
            format!("--snapshot {day}"),
            format!(
                "is before the archive's first day {}",
                crate::plan::version::ARCHIVE_FIRST_DAY.strftime("%Y/%m/%d")
            ),
        )
    })?;
    Ok(v)
}
