//! Stages 4 and 5 run the profile's steps: one job per command, on the reproduction's
//! backend, with the services the job needs on its loopback. This file turns a planned step
//! into jobs ([`job_for`], pure) and runs lists of steps, keeping their records.

use std::path::{Path, PathBuf};

use super::environment::Environment;
use super::{Options, Run};
use crate::backend::{Backend, EnvRoot, Services};
use crate::envlock::EnvLock;
use crate::error::IoContext;
use crate::error::Result;
use crate::inputs::lock::InputsLock;
use crate::job::{
    Bind, CapsPolicy, Clock, IdRange, Job, JobOutcome, LandlockPolicy, Limits, NestedPodman,
    RootfsSource,
};
use crate::plan::{Isolation, Plan, PlannedStep, Role, WORKSPACE};
use crate::report::StepRecord;

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
pub struct JobContext {
    pub backend: Box<dyn Backend>,
    /// The environment root; it changes kind once (a staging root becomes a prepared one).
    pub root: EnvRoot,
    /// The source checkout, bound at [`WORKSPACE`].
    pub workspace: PathBuf,
    /// The mirror, and the pinned base images once an image step pinned them.
    pub services: Services,
    pub source_date_epoch: i64,
    pub timeout: Option<std::time::Duration>,
    /// The id map of every job (root: the reproduction's range; otherwise the sandbox
    /// maps the user's own subordinate ranges).
    pub id_map: Option<IdRange>,
    /// Extra writable binds every job gets (scratch directories of the run).
    pub scratch: Vec<Bind>,
    /// Where the jobs' stdout and stderr go instead of reprobox's own (`--quiet`, or a
    /// spinner on the terminal): appended to this file while each job runs.
    pub job_log: Option<PathBuf>,
    /// The nested podman's configuration files of the run ([`NestedPodman::write`]), given
    /// to every job of a nested-containers step.
    pub nested_podman: Option<PathBuf>,
    /// Where the steps' scratch directories are made (the run's work directory).
    pub scratch_dir: Option<PathBuf>,
}

impl JobContext {
    /// Run one job on the backend with the services on its loopback; its outcome and every
    /// request the services answered.
    /// With the run's egress, the job gets its CA bundle, hosts file and proxy variables
    /// here, and what it is refused is recorded under `step`. With a job log (a terminal,
    /// or `--quiet`), the job's output goes there while it runs.
    pub fn run_job(&self, step: &str, job: &Job) -> Result<(JobOutcome, InputsLock)> {
        let _to_log = match &self.job_log {
            Some(log) => Some(crate::progress::Redirect::to_file(log)?),
            None => None,
        };
        let Some(egress) = &self.services.egress else {
            return self.backend.run(job, &self.services);
        };
        let mut job = job.clone();
        egress.prepare_job(&mut job, Some(&self.root.dir()))?;
        egress.set_step(Some(step));
        let r = self.backend.run(&job, &self.services);
        egress.set_step(None);
        r
    }

    /// Make the host's copy of `guest_dir` current (see [`Backend::sync_root_dir`]).
    pub fn sync_root_dir(&self, guest_dir: &str) -> Result<()> {
        self.backend.sync_root_dir(&self.root, guest_dir)
    }

    /// Add a file to the environment (see [`Backend::write_root_file`]).
    pub fn write_root_file(&self, guest_path: &str, bytes: &[u8]) -> Result<()> {
        self.backend.write_root_file(&self.root, guest_path, bytes)
    }
}

/// The job for one command of a step: the workspace and scratch binds, a listener for
/// each service, the step's clock, and the step's isolation as capabilities and Landlock.
pub fn job_for(ctx: &JobContext, step: &PlannedStep, argv: Vec<String>) -> Job {
    let mut job = Job::new(RootfsSource::Dir(ctx.root.dir()), argv);
    job.binds.push(Bind {
        src: ctx.workspace.clone(),
        dst: PathBuf::from(WORKSPACE),
        read_only: false,
    });
    job.binds.extend(ctx.scratch.iter().cloned());
    job.workdir = PathBuf::from(&step.workdir);
    job.env
        .extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if step.isolation == Isolation::NestedContainers
        && let Some(dir) = &ctx.nested_podman
    {
        NestedPodman::apply(&mut job, dir);
    }
    job.listen = ctx.services.ports();
    job.listen_udp = ctx.services.udp_ports();
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
    for d in &step.scratch {
        if !writable.iter().any(|w| w == Path::new(d)) {
            writable.push(PathBuf::from(d));
        }
    }
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
    job.id_map = ctx.id_map;
    job.root_premapped = ctx.root.premapped();
    job
}

/// Run every command of `step`; stop at the first failure. Returns the step's record and
/// every request its jobs made.
pub fn run_step(ctx: &JobContext, step: &PlannedStep) -> Result<(StepRecord, InputsLock)> {
    let mut lock = InputsLock::default();
    let (scratch, scratch_record) = scratch_binds(ctx, step)?;
    let mut record = StepRecord {
        name: step.name.clone(),
        optional: step.optional,
        exit_code: 0,
        wall_time_ms: 0,
        enforcement: Vec::new(),
        cached: None,
        env: step.env.clone(),
        scratch: scratch_record,
        nested_podman: (step.isolation == Isolation::NestedContainers
            && ctx.nested_podman.is_some())
        .then(NestedPodman::record),
        produced: Vec::new(),
    };
    for argv in &step.commands {
        let mut job = job_for(ctx, step, argv.clone());
        job.binds.extend(scratch.iter().cloned());
        let (outcome, served) = ctx.run_job(&step.name, &job)?;
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

/// The step's scratch directories (`scratch` in the profile): an empty directory of the run
/// bound over each one the environment has empty or not at all (container backend), else
/// the environment's own, written in place (Landlock lets the step write it either way).
/// Nothing the environment holds is hidden. Returns the binds and, per directory, how it was
/// given (for the step record).
fn scratch_binds(ctx: &JobContext, step: &PlannedStep) -> Result<(Vec<Bind>, Vec<String>)> {
    let mut binds = Vec::new();
    let mut record = Vec::new();
    for d in &step.scratch {
        let inside = ctx.root.dir().join(d.trim_start_matches('/'));
        let empty = match std::fs::read_dir(&inside) {
            Ok(mut it) => it.next().is_none(),
            Err(_) => !inside.exists(),
        };
        let on_container = ctx.backend.name() == "container";
        match (&ctx.scratch_dir, empty && on_container) {
            (Some(base), true) => {
                let src = base.join(format!(
                    "scratch-{}-{}",
                    step.name,
                    d.trim_matches('/').replace('/', "_")
                ));
                std::fs::create_dir_all(&src).ctx("create", &src)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755))
                    .ctx("chmod", &src)?;
                super::environment::give_to_job(&src)?;
                binds.push(Bind {
                    src,
                    dst: PathBuf::from(d),
                    read_only: false,
                });
                record.push(format!("{d}: an empty directory of the run"));
            }
            _ => record.push(format!(
                "{d}: the environment's own, written in place{}",
                if empty { "" } else { " (it is not empty)" }
            )),
        }
    }
    Ok((binds, record))
}

/// The profile's steps as this run executes them.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Every step this run executes, in order.
    pub steps: Vec<PlannedStep>,
    /// How many of them, from the first, are environment steps (rollback and install).
    pub n_env: usize,
    /// No environment step comes after a build step (prepared environments need this).
    pub env_first: bool,
    /// The day the environment is rolled to.
    pub day: String,
}

impl Selected {
    /// The leading environment steps.
    pub fn env(&self) -> &[PlannedStep] {
        &self.steps[..self.n_env]
    }
}

/// A step that changes the environment rather than building.
pub fn is_env_step(s: &PlannedStep) -> bool {
    matches!(s.role, Role::Rollback | Role::Install)
}

/// The steps of `plan` as the options run them: rollback steps dropped with
/// `--no-rollback`, environment steps moved to `--env-day`. Says so in `notes`.
pub fn select(plan: &Plan, o: &Options, notes: &mut Vec<String>) -> Selected {
    let steps: Vec<PlannedStep> = plan
        .steps
        .iter()
        .filter_map(|s| as_run(plan, o, s, notes))
        .collect();
    let n_env = steps.iter().take_while(|s| is_env_step(s)).count();
    let env_first = steps[n_env..].iter().all(|s| !is_env_step(s));
    Selected {
        steps,
        n_env,
        env_first,
        day: o.env_day.clone().unwrap_or_else(|| plan.env_day.clone()),
    }
}

/// A planned step as this run executes it, or `None` when the options skip it.
fn as_run(
    plan: &Plan,
    o: &Options,
    step: &PlannedStep,
    notes: &mut Vec<String>,
) -> Option<PlannedStep> {
    if step.role == Role::Rollback && !o.rollback {
        notes.push(format!(
            "step {} skipped: rollback switched off (--no-rollback)",
            step.name
        ));
        return None;
    }
    let mut s = step.clone();
    if let (Some(day), Role::Rollback | Role::Install) = (&o.env_day, step.role) {
        let (from, to) = (
            format!("/repos/{}/", plan.env_day),
            format!("/repos/{day}/"),
        );
        for c in &mut s.commands {
            for a in c.iter_mut() {
                *a = a.replace(&from, &to);
            }
        }
        notes.push(format!(
            "step {}: the environment was rolled to {day} (--env-day), not the profile's day {} ({})",
            step.name, plan.env_day, plan.env_day_reason
        ));
    }
    if step.role == Role::Image && o.image_from == super::ImageFrom::Published {
        let file = &plan.source.release_file;
        let mut changed = false;
        for c in &mut s.commands {
            for a in c.iter_mut() {
                if a == file || a.ends_with(&format!("/{file}")) {
                    let dir = &a[..a.len() - file.len()];
                    *a = format!("{dir}{}", super::PUBLISHED_DOCKERFILE);
                    changed = true;
                }
            }
        }
        notes.push(if changed {
            format!(
                "step {}: --image-from published: it builds the release's own {file} at {} (written as {}/{}), whose verify stage downloads the published rootfs, not the regenerated one over the rebuilt rootfs",
                step.name,
                plan.source.tag,
                plan.artifacts.dir,
                super::PUBLISHED_DOCKERFILE
            )
        } else {
            format!(
                "step {}: --image-from published, but no argument of its commands names {file}: it builds what the profile says",
                step.name
            )
        });
    }
    Some(s)
}

/// How a run of steps ended.
#[derive(Debug, Default)]
pub struct StepsResult {
    /// Every step exited 0 (optional ones included).
    pub all_ok: bool,
    /// The first required step that failed.
    pub failed: Option<String>,
    /// The podman call of the image step that ran, if one did.
    pub image: Option<super::image::PodmanCall>,
}

/// What stage 5 leaves for the checks.
#[derive(Debug)]
pub struct Build {
    /// The environment lock: recorded when the environment steps ended.
    pub env_lock: EnvLock,
    /// The first required step that failed (in the environment or the build).
    pub failed: Option<String>,
    /// The podman call of the image step that ran, if one did.
    pub image: Option<super::image::PodmanCall>,
}

impl Run<'_> {
    /// The profile's artifacts as they lie in the workspace: (file name, path).
    fn artifact_paths(&self, ctx: &JobContext) -> Vec<(String, PathBuf)> {
        let dir = ctx.workspace.join(&self.plan.artifacts.dir);
        self.plan
            .artifacts
            .files
            .iter()
            .map(|f| (f.clone(), dir.join(f)))
            .collect()
    }

    /// Stage 5: run what is left of the steps after stage 4 (unless an environment step
    /// failed there). The environment lock is recorded once the last environment step
    /// among them ran, or at the end when stage 4 did not record it.
    pub fn build(&mut self, ctx: &mut JobContext, env: Environment, day: &str) -> Result<Build> {
        let mut env_lock = env.lock;
        let mut failed = env.failed;
        let mut image = None;
        if failed.is_none() {
            let last_env = env.rest.iter().rposition(is_env_step);
            let artifacts = self.artifact_paths(ctx);
            for (i, step) in env.rest.iter().enumerate() {
                let before: Vec<bool> = artifacts.iter().map(|(_, p)| p.exists()).collect();
                let r = self.run_steps(ctx, std::slice::from_ref(step))?;
                let produced = artifacts
                    .iter()
                    .zip(&before)
                    .filter(|((_, p), existed)| !**existed && p.exists())
                    .map(|((name, _), _)| name.clone())
                    .collect();
                if let Some(record) = self.ledger.steps.last_mut() {
                    record.produced = produced;
                }
                image = r.image.or(image);
                if r.failed.is_some() {
                    failed = r.failed;
                    break;
                }
                if Some(i) == last_env {
                    ctx.sync_root_dir("/var/lib/pacman/local")?;
                    env_lock = Some(self.env_lock(&ctx.root.dir(), day)?);
                }
            }
        }
        super::note_unpinned_clocks(&mut self.ledger);
        if let Some(egress) = &ctx.services.egress {
            let record = egress.record();
            super::note_egress(&record, &mut self.ledger.notes);
            self.ledger.egress = Some(record);
        }
        let env_lock = match env_lock {
            Some(l) => l,
            None => {
                ctx.sync_root_dir("/var/lib/pacman/local")?;
                let mut l = EnvLock::record(&ctx.root.dir(), Some(day), &[])?;
                super::outputs::complete_env_lock(&mut l, |name| {
                    self.archive.resolve(day, name).ok()
                });
                l
            }
        };
        if let Some(s) = &failed {
            self.ledger
                .notes
                .push(format!("step {s} failed: the build did not complete"));
        }
        Ok(Build {
            env_lock,
            failed,
            image,
        })
    }

    /// `--image-from published`: the release's own file, as the tag holds it, into the
    /// workspace's output directory as [`super::PUBLISHED_DOCKERFILE`], owned like the
    /// rest of the workspace.
    fn write_published_dockerfile(&mut self, ctx: &JobContext) -> Result<()> {
        let dir = ctx.workspace.join(&self.plan.artifacts.dir);
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let path = dir.join(super::PUBLISHED_DOCKERFILE);
        std::fs::write(&path, &self.release_text).ctx("write", &path)?;
        if ctx.backend.name() == "container" {
            super::environment::give_to_job(&path)?;
        }
        Ok(())
    }

    /// Run `list` in order, one job per command, keeping each step's record, its requests
    /// and notes; an image step first gets its base images pinned and served. Stops at the
    /// first required step that fails.
    pub fn run_steps(&mut self, ctx: &mut JobContext, list: &[PlannedStep]) -> Result<StepsResult> {
        let mut result = StepsResult {
            all_ok: true,
            ..StepsResult::default()
        };
        for step in list {
            self.interrupted()?;
            if step.role == Role::Image {
                if self.o.image_from == super::ImageFrom::Published {
                    self.write_published_dockerfile(ctx)?;
                }
                result.image = self.pin_base_images(ctx, step)?;
            }
            self.phase(&format!(
                "step {} ({} command(s))",
                step.name,
                step.commands.len()
            ));
            let (rec, lock) = run_step(ctx, step)?;
            self.ledger.inputs.entries.extend(lock.entries);
            let code = rec.exit_code;
            self.ledger.steps.push(rec);
            if code != 0 {
                result.all_ok = false;
                if step.optional {
                    self.ledger.notes.push(format!(
                        "optional step {} failed (exit {code}); going on",
                        step.name
                    ));
                } else {
                    result.failed = Some(step.name.clone());
                    return Ok(result);
                }
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Container;
    use crate::inputs::mirror::{MIRROR_PORT, MirrorConfig};

    fn options() -> Options {
        Options {
            offline: true,
            rollback: true,
            env_day: None,
            out: PathBuf::from("/nonexistent"),
            progress: crate::progress::Mode::Off,
            timeout: None,
            keep_work: false,
            use_prepared_envs: true,
            backend: Default::default(),
            image_from: Default::default(),
            packages_from: Default::default(),
        }
    }

    fn ctx(root: EnvRoot) -> JobContext {
        let store = crate::inputs::store::Store::open(tempfile::tempdir().unwrap().keep()).unwrap();
        JobContext {
            backend: Box::new(Container),
            root,
            workspace: PathBuf::from("/work/ws"),
            services: Services {
                mirror: Some(MirrorConfig {
                    store: store.clone(),
                    upstream: "http://127.0.0.1:1".into(),
                    canonical: None,
                    offline: true,
                }),
                images: Vec::new(),
                store: Some(store),
                egress: None,
            },
            source_date_epoch: 1_779_062_400,
            timeout: Some(std::time::Duration::from_secs(9)),
            id_map: Some(super::super::environment::ID_RANGE),
            scratch: Vec::new(),
            job_log: None,
            nested_podman: None,
            scratch_dir: None,
        }
    }

    #[test]
    fn the_real_profiles_steps_keep_their_order_and_the_environment_steps_come_first() {
        let plan = super::super::test_plan();
        let mut notes = Vec::new();
        let s = select(&plan, &options(), &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(s.steps.len(), plan.steps.len());
        assert!(s.n_env >= 1 && s.env_first, "{s:?}");
        assert_eq!(s.day, plan.env_day);
        assert_ne!(
            plan.env_day, plan.snapshot,
            "the real profile rolls to the build day"
        );
        assert!(s.env().iter().all(is_env_step));
    }

    #[test]
    fn no_rollback_drops_rollback_steps_and_env_day_rewrites_the_archive_day() {
        let plan = super::super::test_plan();
        let mut notes = Vec::new();
        let o = Options {
            rollback: false,
            ..options()
        };
        let s = select(&plan, &o, &mut notes);
        assert!(s.steps.iter().all(|s| s.role != Role::Rollback));
        assert!(
            notes.iter().any(|n| n.contains("--no-rollback")),
            "{notes:?}"
        );

        let mut notes = Vec::new();
        let o = Options {
            env_day: Some("2026/06/01".into()),
            ..options()
        };
        let s = select(&plan, &o, &mut notes);
        assert_eq!(s.day, "2026/06/01");
        let text = format!("{:?}", s.env());
        assert!(text.contains("/repos/2026/06/01/"), "{text}");
        assert!(
            !text.contains(&format!("/repos/{}/", plan.env_day)),
            "{text}"
        );
        assert!(notes.iter().any(|n| n.contains("not the profile's day")));
    }

    #[test]
    fn image_from_published_builds_the_releases_own_dockerfile() {
        let plan = super::super::test_plan();
        let image = |o: &Options| {
            let mut notes = Vec::new();
            let s = select(&plan, o, &mut notes);
            (
                s.steps.into_iter().find(|s| s.role == Role::Image).unwrap(),
                notes,
            )
        };
        let (rebuilt, notes) = image(&options());
        assert!(notes.is_empty(), "{notes:?}");
        assert!(rebuilt.commands[0].contains(&"output/Dockerfile.repro".to_string()));
        let (published, notes) = image(&Options {
            image_from: super::super::ImageFrom::Published,
            ..options()
        });
        assert!(
            published.commands[0].contains(&"output/Dockerfile.published".to_string()),
            "{:?}",
            published.commands
        );
        assert!(!format!("{:?}", published.commands).contains("Dockerfile.repro"));
        assert!(
            notes.iter().any(|n| n.contains("--image-from published")),
            "{notes:?}"
        );
    }

    #[test]
    fn the_make_step_gets_build_version_and_a_writable_pacman_cache() {
        let plan = super::super::test_plan();
        let c = ctx(EnvRoot::Owned(PathBuf::from("/nonexistent-root")));
        let make = plan.steps.iter().find(|s| s.name == "make").unwrap();
        let job = job_for(&c, make, vec!["true".into()]);
        assert!(
            job.env
                .contains(&("BUILD_VERSION".into(), "20260518.0.532496".into()))
        );
        assert!(!job.env.iter().any(|(k, _)| k == "CI_COMMIT_SHA"));
        assert!(!job.clock.faketime);
        assert!(
            job.landlock
                .writable
                .contains(&PathBuf::from("/var/cache/pacman/pkg"))
        );
        // An environment without the directory: an empty scratch directory of the run.
        let t = tempfile::tempdir().unwrap();
        let c = JobContext {
            scratch_dir: Some(t.path().to_path_buf()),
            ..ctx(EnvRoot::Owned(t.path().join("root")))
        };
        let (binds, record) = scratch_binds(&c, make).unwrap();
        assert_eq!(binds.len(), 1, "{record:?}");
        assert_eq!(binds[0].dst, PathBuf::from("/var/cache/pacman/pkg"));
        assert!(binds[0].src.is_dir());
        // One that holds files: written in place, nothing hidden.
        std::fs::create_dir_all(t.path().join("root/var/cache/pacman/pkg")).unwrap();
        std::fs::write(
            t.path().join("root/var/cache/pacman/pkg/x.pkg.tar.zst"),
            "x",
        )
        .unwrap();
        let (binds, record) = scratch_binds(&c, make).unwrap();
        assert!(binds.is_empty());
        assert!(record[0].contains("written in place"), "{record:?}");
    }

    #[test]
    fn a_nested_containers_step_gets_reproboxs_podman_configuration() {
        let plan = super::super::test_plan();
        let c = JobContext {
            nested_podman: Some(PathBuf::from("/work/nested-podman")),
            ..ctx(EnvRoot::Owned(PathBuf::from("/work/root")))
        };
        let image = plan.steps.iter().find(|s| s.role == Role::Image).unwrap();
        let job = job_for(&c, image, image.commands[0].clone());
        assert!(
            job.env
                .contains(&("BUILDAH_ISOLATION".into(), "chroot".into()))
        );
        assert!(
            job.binds
                .iter()
                .any(|b| b.dst == Path::new(NestedPodman::JOB_DIR))
        );
        // Upstream's command exactly: no storage, cgroup, events or isolation flag.
        let argv = image.commands[0].join(" ");
        assert!(argv.starts_with("podman build --no-cache --source-date-epoch=1779062400 --rewrite-timestamp -f output/Dockerfile.repro"), "{argv}");
        for flag in [
            "--storage-driver",
            "--cgroup-manager",
            "--events-backend",
            "--isolation",
        ] {
            assert!(!argv.contains(flag), "{argv}");
        }
        let make = plan.steps.iter().find(|s| s.name == "make").unwrap();
        let job = job_for(&c, make, vec!["true".into()]);
        assert!(!job.env.iter().any(|(k, _)| k == "BUILDAH_ISOLATION"));
    }

    #[test]
    fn the_environment_steps_may_write_the_files_the_egress_binds_over_the_others_not() {
        // `Egress::prepare_job` binds nothing over a root file under the job's writable
        // directories: the rollback and install steps' package upgrades replace them.
        let plan = super::super::test_plan();
        let c = ctx(EnvRoot::Owned(PathBuf::from("/work/root")));
        let files = crate::egress::CA_BUNDLE_PATHS.iter().copied().chain([
            "/etc/hosts",
            "/etc/resolv.conf",
            crate::egress::CONTAINERS_CONF_PATH,
        ]);
        for step in &plan.steps {
            let job = job_for(&c, step, vec!["true".into()]);
            let env_step = matches!(step.role, Role::Rollback | Role::Install);
            for f in files.clone() {
                let covered = job
                    .landlock
                    .writable
                    .iter()
                    .any(|w| Path::new(f).starts_with(w));
                assert_eq!(covered, env_step, "step {}, {f}", step.name);
            }
        }
    }

    #[test]
    fn a_filesystem_step_loses_sys_admin_and_is_confined_by_landlock() {
        let plan = super::super::test_plan();
        let c = ctx(EnvRoot::Owned(PathBuf::from("/work/root")));
        for step in &plan.steps {
            let job = job_for(&c, step, vec!["true".into()]);
            assert_eq!(job.rootfs, RootfsSource::Dir(PathBuf::from("/work/root")));
            assert_eq!(job.binds[0].dst, PathBuf::from(WORKSPACE));
            assert_eq!(job.listen, vec![MIRROR_PORT]);
            assert_eq!(job.landlock.tcp_connect, vec![MIRROR_PORT]);
            assert_eq!(job.clock.source_date_epoch, Some(1_779_062_400));
            assert_eq!(job.clock.faketime, step.faketime);
            assert_eq!(job.limits.timeout, Some(std::time::Duration::from_secs(9)));
            assert!(!job.root_premapped);
            match step.isolation {
                Isolation::Filesystem => {
                    let CapsPolicy::List(caps) = &job.caps else {
                        panic!("{:?}", job.caps)
                    };
                    assert!(!caps.iter().any(|c| c == "sys_admin"), "{caps:?}");
                    assert!(job.landlock.restrict_filesystem);
                    assert!(job.landlock.writable.contains(&PathBuf::from("/dev")));
                }
                _ => {
                    assert_eq!(job.caps, CapsPolicy::Default, "{}", step.name);
                    assert!(!job.landlock.restrict_filesystem);
                }
            }
        }
    }
}
