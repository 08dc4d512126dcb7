//! Running one planned step: one sandboxed job per command, with the archive mirror (and
//! pinned base images) served on the job's own loopback.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::inputs::images::{ImageServer, PinnedImage};
use crate::inputs::lock::InputsLock;
use crate::inputs::mirror::{Mirror, MirrorConfig};
use crate::inputs::store::Store;
use crate::job::{Bind, CapsPolicy, Clock, Job, LandlockPolicy, Limits, RootfsSource};
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

/// What every job of a reproduction shares.
pub struct StepContext<'a> {
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
        let mut running = crate::sandbox::spawn(&job)?;
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
                registry = Some(ImageServer::serve(
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
        let outcome = outcome?;
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
