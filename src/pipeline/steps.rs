//! Running one planned step: one sandboxed job per command, with the archive mirror (and
//! pinned base images) served on the job's own loopback. The backend decides where a job
//! runs: the container sandbox (the default), or a microVM (`microvm.rs`) whose root disk
//! persists across the jobs of the reproduction.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::inputs::images::{PinnedImage, PinnedImageServer};
use crate::inputs::lock::InputsLock;
use crate::inputs::mirror::{Mirror, MirrorConfig};
use crate::inputs::store::Store;
use crate::job::{Bind, CapsPolicy, Clock, Job, JobOutcome, LandlockPolicy, Limits, RootfsSource};
use crate::plan::{Isolation, PlannedStep, WORKSPACE};
use crate::report::StepRecord;

/// The mirror's port on the job's loopback (see `plan::MIRROR_URL`).
pub const MIRROR_PORT: u16 = 7878;

/// Capabilities of a step that mounts nothing: the default set without CAP_SYS_ADMIN.
const FILESYSTEM_STEP_CAPS: &[&str] = &[
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "setfcap",
    "net_bind_service",
    "sys_chroot",
    "mknod",
    "audit_write",
];

/// Where a reproduction's jobs run.
pub enum Backend {
    /// The container sandbox (src/sandbox): the environment root is used in place.
    Container,
    /// qemu microVMs (src/vm) sharing one persistent root disk.
    Microvm(Box<super::microvm::MicroVm>),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Container => "container",
            Backend::Microvm(_) => "microvm",
        }
    }
}

/// What every job of a reproduction shares.
pub struct StepContext<'a> {
    pub backend: &'a Backend,
    pub root: PathBuf,
    pub workspace: &'a Path,
    pub store: &'a Store,
    pub upstream: &'a str,
    pub offline: bool,
    pub source_date_epoch: i64,
    /// Base images served on the job's loopback (image steps).
    pub images: Vec<PinnedImage>,
    pub timeout: Option<std::time::Duration>,
    /// The root is an overlay whose files already belong to the job's host ids.
    pub root_premapped: bool,
    /// The root is a prepared environment of the store, shared by every run: nothing is
    /// ever written into it on the host (the microVM backend only makes its root disk from
    /// it; what the run changes lives on that disk).
    pub root_shared: bool,
    /// Extra writable binds every job gets (scratch directories of the run).
    pub scratch: Vec<Bind>,
}

/// Build the job for one command of a step.
pub fn job_for(
    ctx: &StepContext,
    step: &PlannedStep,
    argv: Vec<String>,
    extra_ports: &[u16],
) -> Job {
    let mut job = Job::new(RootfsSource::Dir(ctx.root.clone()), argv);
    job.binds.push(Bind {
        src: ctx.workspace.to_path_buf(),
        dst: PathBuf::from(WORKSPACE),
        read_only: false,
    });
    job.binds.extend(ctx.scratch.iter().cloned());
    job.workdir = PathBuf::from(&step.workdir);
    job.listen = std::iter::once(MIRROR_PORT)
        .chain(extra_ports.iter().copied())
        .collect();
    job.clock = Clock {
        source_date_epoch: Some(ctx.source_date_epoch),
        faketime: step.faketime,
    };
    // A step that mounts nothing gets no CAP_SYS_ADMIN, so Landlock can confine its writes
    // (Landlock filesystem rules and mount exclude each other): DESIGN.md decision 5.
    let confine = step.isolation == Isolation::Filesystem;
    if confine {
        job.caps = CapsPolicy::List(FILESYSTEM_STEP_CAPS.iter().map(|c| c.to_string()).collect());
    }
    let mut writable: Vec<PathBuf> = step.writable.iter().map(PathBuf::from).collect();
    if confine {
        // /dev/null, /dev/tty and /dev/shm are the job's own (a tmpfs of its own nodes).
        writable.push(PathBuf::from("/dev"));
    }
    job.limits = Limits {
        timeout: ctx.timeout,
        memory: None,
        pids: None,
    };
    job.landlock = LandlockPolicy {
        enabled: true,
        restrict_filesystem: confine,
        writable,
        tcp_connect: job.listen.clone(),
        tcp_bind: Vec::new(),
    };
    job.id_map = super::env::id_map();
    job.root_premapped = ctx.root_premapped;
    job
}

/// Run every command of `step`; stop at the first failure. Returns the step's record and
/// every request its jobs made.
pub fn run_step(ctx: &StepContext, step: &PlannedStep) -> Result<(StepRecord, InputsLock)> {
    let mut lock = InputsLock::default();
    let mut record = StepRecord {
        name: step.name.clone(),
        optional: step.optional,
        exit_code: 0,
        wall_time_ms: 0,
        enforcement: Vec::new(),
        cached: None,
    };
    let image_ports: Vec<u16> = ctx
        .images
        .iter()
        .filter_map(|i| i.reference.port())
        .collect();
    for argv in &step.commands {
        let job = job_for(ctx, step, argv.clone(), &image_ports);
        let (outcome, served) = run_job(ctx, &job)?;
        lock.entries.extend(served.entries);
        record.wall_time_ms += outcome.wall_time_ms;
        record.exit_code = outcome.exit_code;
        if record.enforcement.is_empty() {
            record.enforcement = outcome.enforcement;
        }
        if outcome.exit_code != 0 {
            break;
        }
    }
    Ok((record, lock))
}

/// Run one job on the reproduction's backend with the mirror on its loopback port
/// [`MIRROR_PORT`] and the pinned images on their registry port; returns its outcome and
/// every request the servers answered.
pub fn run_job(ctx: &StepContext, job: &Job) -> Result<(JobOutcome, InputsLock)> {
    let mut lock = InputsLock::default();
    if let Backend::Microvm(vm) = ctx.backend {
        return vm.run(ctx, job);
    }
    let mut running = crate::sandbox::spawn(job)?;
    let mut mirror = None;
    let mut registry = None;
    for (port, listener) in std::mem::take(&mut running.listeners) {
        if port == MIRROR_PORT {
            mirror = Some(Mirror::serve(
                listener,
                MirrorConfig {
                    store: ctx.store.clone(),
                    upstream: ctx.upstream.to_string(),
                    offline: ctx.offline,
                },
            )?);
        } else if registry.is_none() {
            registry = Some(PinnedImageServer::serve(
                listener,
                ctx.store.clone(),
                &ctx.images,
            )?);
        }
    }
    let outcome = running.wait();
    if let Some(m) = mirror {
        lock.entries.extend(m.stop().entries);
    }
    if let Some(r) = registry {
        lock.entries.extend(r.stop().entries);
    }
    Ok((outcome?, lock))
}

/// Make the host's copy of `guest_dir` (absolute, inside the environment) current before
/// the pipeline reads it: a microVM's changes live on its root disk.
pub fn sync_root_dir(ctx: &StepContext, guest_dir: &str) -> Result<()> {
    match ctx.backend {
        Backend::Container => Ok(()),
        Backend::Microvm(_) if ctx.root_shared => Err(crate::error::Error::Environment(format!(
            "{guest_dir}: the root is a shared prepared environment and is never written on the host"
        ))),
        Backend::Microvm(vm) => vm.sync_out(&ctx.root, guest_dir),
    }
}

/// Add a file to the environment (`guest_path` absolute): in the root directory (unless it
/// is a shared prepared environment), and on the microVM's root disk when there is one.
pub fn write_root_file(ctx: &StepContext, guest_path: &str, bytes: &[u8]) -> Result<()> {
    use crate::error::IoContext;
    if !ctx.root_shared {
        let host = ctx.root.join(guest_path.trim_start_matches('/'));
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        std::fs::write(&host, bytes).ctx("write", &host)?;
    }
    match ctx.backend {
        Backend::Container => Ok(()),
        Backend::Microvm(vm) => vm.write_file(&ctx.root, guest_path, bytes, !ctx.root_shared),
    }
}
