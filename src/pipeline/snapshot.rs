//! `reprobox run --snapshot DAY`: any command in an Arch environment prepared at an archive
//! day, with the stages of a reproduction that make an environment and nothing else.
//!
//! The environment is the one a reproduction of the profile would build in, at `DAY`: the
//! profile's pinned base (stage 3's `pin_base`), its environment steps (rollback and
//! install) moved to `DAY` by [`steps::select`] as `--env-day` does, and, with
//! `--packages`, one more install step. Stage 4 ([`Run::prepare_environment`]) then takes
//! it from the store's prepared environments or prepares and keeps it; its key covers the
//! base, the day and every step's argv, so another day or another package set is another
//! environment, and the same ones are shared with reproductions. The command then runs as
//! one more job of the run: the mirror on its loopback, the profile's egress, the run's
//! clock (SOURCE_DATE_EPOCH 00:00:00 UTC of `DAY`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::environment::{self, PinnedBase};
use super::steps::{self, JobContext, Selected};
use super::{Options, Run};
use crate::backend::BackendChoice;
use crate::egress::EgressRecord;
use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::{load_repo_db, repo_db_url};
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::InputsLock;
use crate::inputs::store::Store;
use crate::job::{Job, JobOutcome};
use crate::plan::{Isolation, Network, Plan, PlannedStep, Role};
use crate::report::StepRecord;

/// The name of the install step `--packages` adds (in the step records and the recipe).
pub const PACKAGES_STEP: &str = "run-packages";

/// The name of the command's job (egress refusals are recorded under it).
pub const RUN_STEP: &str = "run";

/// What `reprobox run --snapshot` asks for.
pub struct SnapshotRun<'a> {
    /// The archive day, `YYYY/MM/DD` (checked).
    pub day: String,
    /// Extra packages installed after the profile's environment steps.
    pub packages: Vec<String>,
    pub offline: bool,
    pub backend: BackendChoice,
    /// The command's argv.
    pub command: Vec<String>,
    /// Applies the command line's job options (binds, environment, limits…) to the job.
    pub customise: &'a dyn Fn(&mut Job) -> Result<()>,
    /// Called once the environment is ready, just before the command starts (the caller
    /// gives stdout back to the command).
    pub before_command: &'a mut dyn FnMut(),
}

/// What the environment was, for the run record.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotEnvironment {
    pub profile: String,
    /// The archive day the environment was rolled to.
    pub day: String,
    pub packages: Vec<String>,
    pub base: PinnedBase,
    /// The prepared environment's key in `STORE/envs/`, when one was used or made.
    pub prepared: Option<String>,
    /// True when that prepared environment existed before this run (nothing was rolled
    /// back or installed).
    pub reused: bool,
    /// The environment steps, as they ran (or `cached` with the prepared key).
    pub steps: Vec<StepRecord>,
    pub notes: Vec<String>,
    /// The environment lock, exact text (`envlock`).
    pub env_lock: String,
    /// SOURCE_DATE_EPOCH the command saw.
    pub source_date_epoch: i64,
}

/// A finished `run --snapshot`.
pub struct SnapshotOutcome {
    pub outcome: JobOutcome,
    pub environment: SnapshotEnvironment,
    pub egress: Option<EgressRecord>,
    /// Every input of the run: the base, the databases and packages the mirror served.
    pub inputs: InputsLock,
}

/// Fail with exit 2 unless the archive has `day` (its first repository's database): a day
/// before the archive began, in the future, or missing from a local archive.
pub fn check_day_exists(plan: &Plan, fetcher: &Fetcher, day: &str) -> Result<()> {
    let base = super::archive_url(plan);
    let url = repo_db_url(base, day, crate::inputs::archive::DEFAULT_REPOS[0]);
    match load_repo_db(fetcher, &url)? {
        Some(_) => Ok(()),
        None => Err(Error::bad_input(
            format!("--snapshot {day}"),
            format!(
                "the archive {base} has no such day ({url} is not there); expected a day the archive holds"
            ),
        )),
    }
}

/// The environment steps of `plan` as a run at `day` executes them, with the `--packages`
/// step last.
pub fn select_env_steps(plan: &Plan, o: &Options, packages: &[String]) -> Selected {
    let mut notes = Vec::new();
    let mut s = steps::select(plan, o, &mut notes);
    s.steps.truncate(s.n_env);
    if !packages.is_empty() {
        let template = s.steps.iter().rev().find(|x| x.role == Role::Install);
        let mut argv = vec![
            "pacman".to_string(),
            "-S".into(),
            "--noconfirm".into(),
            "--needed".into(),
        ];
        argv.extend(packages.iter().cloned());
        s.steps.push(PlannedStep {
            name: PACKAGES_STEP.into(),
            description: "the packages `reprobox run --packages` asked for, from the same day"
                .into(),
            role: Role::Install,
            network: Network::Mirror,
            allow_hosts: Vec::new(),
            isolation: Isolation::Filesystem,
            workdir: "/".into(),
            writable: template.map(|t| t.writable.clone()).unwrap_or_else(|| {
                ["/etc", "/var", "/usr", "/tmp", "/run", "/root"]
                    .iter()
                    .map(|d| d.to_string())
                    .collect()
            }),
            optional: false,
            faketime: template.is_some_and(|t| t.faketime),
            env: Default::default(),
            scratch: Vec::new(),
            commands: vec![argv],
        });
    }
    s.n_env = s.steps.len();
    s.env_first = true;
    s
}

/// The step the command runs as: the mirror and egress on its loopback, the run's clock,
/// and none of the filesystem confinement of a profile's step (it is the user's own job in
/// a root of its own; the capability set is the default one, as for `reprobox run`).
fn command_step() -> PlannedStep {
    PlannedStep {
        name: RUN_STEP.into(),
        description: "the command of `reprobox run --snapshot`".into(),
        role: Role::Build,
        network: Network::Mirror,
        allow_hosts: Vec::new(),
        isolation: Isolation::NestedContainers,
        workdir: "/".into(),
        writable: Vec::new(),
        optional: false,
        faketime: false,
        env: Default::default(),
        scratch: Vec::new(),
        commands: Vec::new(),
    }
}

/// Prepare (or reuse) the environment of `plan` at `r.day` and run `r.command` in it.
pub fn run_at_snapshot(plan: &Plan, store: Store, r: SnapshotRun) -> Result<SnapshotOutcome> {
    let parent = runs_dir(&store);
    std::fs::create_dir_all(&parent).ctx("create", &parent)?;
    let work = tempfile::Builder::new()
        .prefix(".run-")
        .tempdir_in(&parent)
        .ctx("create a work directory in", &parent)?;
    let o = Options {
        offline: r.offline,
        rollback: true,
        env_day: (r.day != plan.env_day).then(|| r.day.clone()),
        out: work.path().to_path_buf(),
        progress: crate::progress::mode(),
        timeout: None,
        keep_work: false,
        use_prepared_envs: true,
        backend: r.backend.clone(),
        image_from: super::ImageFrom::Rebuilt,
        packages_from: super::PackagesFrom::Snapshot,
    };
    let fetcher = Fetcher::new(store.clone(), o.offline)
        .with_progress(o.progress == crate::progress::Mode::Lines)
        .with_names(plan.location_names());
    check_day_exists(plan, &fetcher, &r.day)?;
    let mut run = Run::new(plan, &o, &fetcher);
    let selected = select_env_steps(plan, &o, &r.packages);

    run.phase(&format!(
        "pinning the base root filesystem {}",
        plan.base.url
    ));
    let base = environment::pin_base(plan, &fetcher, &mut run.ledger.inputs)?;
    let workspace = work.path().join("workspace");
    std::fs::create_dir_all(&workspace).ctx("create", &workspace)?;
    let backend = super::open_backend(&mut run, &selected.day, work.path())?;
    let mut ctx = super::job_context(plan, &o, &store, backend, workspace);
    ctx.job_log = run.job_log();
    ctx.scratch_dir = Some(work.path().to_path_buf());
    ctx.services.egress = super::egress_for(plan, None, &store, o.offline)?;

    let env = run.prepare_environment(&mut ctx, &base, &selected, work.path())?;
    let build = run.build(&mut ctx, env, &selected.day)?;
    let env_steps = std::mem::take(&mut run.ledger.steps);
    if let Some(step) = &build.failed {
        // Keep the steps' log (a terminal, `--quiet`): it is all the user has of the
        // failure. The work directory itself goes.
        let log = match &ctx.job_log {
            Some(l) => {
                let kept = parent.join(format!(
                    "{}.log",
                    work.path()
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                ));
                std::fs::copy(l, &kept).ctx("keep the log as", &kept)?;
                format!(" (its output: {})", kept.display())
            }
            None => String::new(),
        };
        drop(ctx);
        drop(work);
        return Err(Error::Environment(format!(
            "the environment of {} at {} could not be prepared: step {step} failed{log}",
            plan.profile, r.day
        )));
    }
    let prepared = ctx.root.prepared().map(|p| p.key.clone());
    let reused = !env_steps.is_empty() && env_steps.iter().all(|s| s.cached.is_some());
    run.lap("environment");

    let job = command_job(&ctx, &r)?;
    ctx.job_log = None;
    run.progress.end();
    (r.before_command)();
    let (outcome, served) = ctx.run_job(RUN_STEP, &job)?;
    run.ledger.inputs.entries.extend(served.entries);
    let egress = ctx.services.egress.as_ref().map(|e| e.record());
    let environment = SnapshotEnvironment {
        profile: plan.profile.clone(),
        day: r.day.clone(),
        packages: r.packages.clone(),
        base,
        prepared,
        reused,
        steps: env_steps,
        notes: std::mem::take(&mut run.ledger.notes),
        env_lock: build.env_lock.to_text(),
        source_date_epoch: plan.source_date_epoch,
    };
    drop(ctx);
    drop(work);
    Ok(SnapshotOutcome {
        outcome,
        environment,
        egress,
        inputs: std::mem::take(&mut run.ledger.inputs),
    })
}

/// The command's job: a job of the run's step [`command_step`], without the (empty)
/// workspace, then the command line's options.
fn command_job(ctx: &JobContext, r: &SnapshotRun) -> Result<Job> {
    let mut job = steps::job_for(ctx, &command_step(), r.command.clone());
    job.binds
        .retain(|b| b.dst != Path::new(crate::plan::WORKSPACE));
    (r.customise)(&mut job)?;
    Ok(job)
}

/// Where the runs' work directories go: `STORE/runs` (not `/tmp`, which may be too small
/// for an environment's overlay or a microVM disk).
pub fn runs_dir(store: &Store) -> PathBuf {
    store.root().join("runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(day: Option<&str>) -> Options {
        Options {
            offline: true,
            rollback: true,
            env_day: day.map(str::to_string),
            out: PathBuf::from("/nonexistent"),
            progress: crate::progress::Mode::Off,
            timeout: None,
            keep_work: false,
            use_prepared_envs: true,
            backend: BackendChoice::Container,
            image_from: super::super::ImageFrom::Rebuilt,
            packages_from: super::super::PackagesFrom::Snapshot,
        }
    }

    #[test]
    fn the_environment_steps_move_to_the_day_and_packages_add_one_step() {
        let plan = super::super::test_plan();
        let s = select_env_steps(&plan, &options(Some("2026/06/02")), &[]);
        assert!(s.steps.iter().all(steps::is_env_step));
        assert_eq!(s.n_env, s.steps.len());
        assert_eq!(s.day, "2026/06/02");
        let text = format!("{:?}", s.steps);
        assert!(text.contains("/repos/2026/06/02/"), "{text}");
        assert!(!text.contains(&format!("/repos/{}/", plan.env_day)));

        let p = select_env_steps(
            &plan,
            &options(Some("2026/06/02")),
            &["jq".into(), "git".into()],
        );
        assert_eq!(p.steps.len(), s.steps.len() + 1);
        let last = p.steps.last().unwrap();
        assert_eq!(last.name, PACKAGES_STEP);
        assert_eq!(
            last.commands,
            vec![vec!["pacman", "-S", "--noconfirm", "--needed", "jq", "git"]]
        );
        assert_eq!(p.n_env, p.steps.len());
    }

    #[test]
    fn the_command_job_has_no_workspace_and_takes_the_command_lines_options() {
        use crate::backend::{Container, EnvRoot, Services};
        let ctx = JobContext {
            backend: Box::new(Container),
            root: EnvRoot::Owned(PathBuf::from("/r")),
            workspace: PathBuf::from("/w"),
            services: Services::none(),
            source_date_epoch: 1_779_235_200,
            timeout: None,
            id_map: None,
            scratch: Vec::new(),
            job_log: None,
            nested_podman: None,
            scratch_dir: None,
        };
        let mut before = || {};
        let set = |j: &mut Job| {
            j.workdir = PathBuf::from("/src");
            Ok(())
        };
        let r = SnapshotRun {
            day: "2026/05/20".into(),
            packages: Vec::new(),
            offline: true,
            backend: BackendChoice::Container,
            command: vec!["true".into()],
            customise: &set,
            before_command: &mut before,
        };
        let job = command_job(&ctx, &r).unwrap();
        assert!(job.binds.is_empty(), "{:?}", job.binds);
        assert_eq!(job.workdir, PathBuf::from("/src"));
        assert_eq!(job.clock.source_date_epoch, Some(1_779_235_200));
        assert!(!job.landlock.restrict_filesystem);
    }
}
