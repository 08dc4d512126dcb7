//! A reproduction as a sequence of stages over the other modules. [`reproduce`] reads top to
//! bottom as that sequence; each stage lives in its own file and hands the next a plain
//! value:
//!
//! 1. the release (`release.rs`): tag → release file → source revision, expected hashes;
//! 2. the steps this run executes (`steps.rs`, [`steps::select`]);
//! 3. the workspace: the source revision checked out fresh, and the backend opened;
//! 4. the environment (`environment.rs`): a prepared environment, or the pinned base
//!    unpacked and rolled to its day ([`crate::backend::EnvRoot`]);
//! 5. the build: the remaining steps, one job per command on the backend;
//! 6. the rootfs check (`checks.rs`);
//! 7. the image check (`image.rs`);
//! 8. the drift of the environment from the profile's environment day (`outputs.rs`);
//! 9. the outputs: report, summary, locks, artifacts, attestation (`outputs.rs`).
//!
//! Every input goes through the store and the inputs lock ([`Ledger`]); a failed step
//! still ends in a report (verdict incomplete) saying how far the run got, and so does every
//! other failure after the plan (`stopped.rs`: a fetch error, a job that could not run, a
//! verification error, SIGINT), with the stage and the reason; only bad input exits 2 with
//! nothing written.

pub mod checks;
pub mod dockerfile;
pub mod environment;
pub mod image;
pub mod outputs;
pub mod published;
pub mod release;
pub mod snapshot;
pub mod steps;
pub mod stopped;
pub mod workspace;

use std::path::{Path, PathBuf};

use crate::backend::{Backend, BackendChoice, Container, EnvRoot, MicroVm, Services};
use crate::egress::{Egress, EgressRecord, EgressRule, Policy};
use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::Archive;
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::InputsLock;
use crate::inputs::mirror::MirrorConfig;
use crate::inputs::store::Store;
use crate::plan::profile::PIN_RELEASE_ROOTFS;
use crate::plan::{EgressPolicy, Plan};
use crate::report::{Report, StepRecord};

use steps::JobContext;
pub use stopped::stopped_before;

/// How to run a reproduction.
#[derive(Debug, Clone)]
pub struct Options {
    pub offline: bool,
    /// Roll the environment back to the snapshot day (the normal case). Off, the environment
    /// stays as the base tarball has it: the "later day" a drift investigation compares.
    pub rollback: bool,
    /// Roll the environment to this day (`YYYY/MM/DD`) instead of the snapshot day: the
    /// build then runs with that day's tools, to see what drift does to the output.
    pub env_day: Option<String>,
    pub out: PathBuf,
    /// How progress is shown on stderr (and whether the jobs' output goes to
    /// `OUT/build.log` instead of the terminal): [`crate::progress::Mode`].
    pub progress: crate::progress::Mode,
    pub timeout: Option<std::time::Duration>,
    /// Keep the work directory (environment root and workspace) instead of removing it.
    pub keep_work: bool,
    /// Use (and fill) the store's prepared environments. Off, the base is unpacked and the
    /// environment steps run for this reproduction alone.
    pub use_prepared_envs: bool,
    /// Where the jobs run.
    pub backend: BackendChoice,
    /// Which Dockerfile the image step builds (`--image-from`).
    pub image_from: ImageFrom,
    /// Which package set make-rootfs.sh's pacman is served (`--packages-from`).
    pub packages_from: PackagesFrom,
}

/// Which package set the build installs into the rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackagesFrom {
    /// The snapshot day's repositories, as the archive has them.
    #[default]
    Snapshot,
    /// Exactly the published rootfs' packages (its own pacman database): the snapshot day
    /// is answered by databases made from that set and the archive's `packages/` files
    /// (`published::day_overlay`), for releases built from live mirrors.
    Published,
}

/// Which Dockerfile the image step builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFrom {
    /// The Dockerfile the build regenerated (`output/Dockerfile.repro`), whose verify stage
    /// takes the rebuilt rootfs: the whole release is rebuilt.
    #[default]
    Rebuilt,
    /// The release's own Dockerfile.repro at the tag, written into the workspace as
    /// `output/Dockerfile.published`: its verify stage downloads the published rootfs
    /// (through the egress, pinned by the release's hash), so the image is rebuilt from the
    /// published rootfs and image drift is told apart from rootfs drift.
    Published,
}

impl ImageFrom {
    /// What the report says was built.
    pub fn describe(self) -> &'static str {
        match self {
            ImageFrom::Rebuilt => {
                "rebuilt: the Dockerfile the build regenerated, over the rebuilt rootfs"
            }
            ImageFrom::Published => {
                "published: the release's own Dockerfile.repro at the tag (output/Dockerfile.published), whose verify stage downloads the published rootfs"
            }
        }
    }
}

/// The file name the release's Dockerfile is written under for `--image-from published`.
pub const PUBLISHED_DOCKERFILE: &str = "Dockerfile.published";

/// What a reproduction produced. A run that stopped on an error after the plan still has
/// its report (verdict incomplete, written into the output directory); `stopped` is the
/// error, which the caller reports and exits with.
pub struct Outcome {
    pub report: Report,
    pub exit_code: i32,
    pub stopped: Option<Error>,
}

impl Outcome {
    /// The outcome of a run that went to its end, or the error it stopped with (its report
    /// already written).
    pub fn or_stopped(self) -> Result<Outcome> {
        match self.stopped {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// What a reproduction accumulates as it goes: every input request, every note for the
/// reader, every step's record.
#[derive(Debug, Default)]
pub struct Ledger {
    pub inputs: InputsLock,
    pub notes: Vec<String>,
    pub steps: Vec<StepRecord>,
    /// What the egress did, once the steps are over (a profile with `[[egress]]`).
    pub egress: Option<EgressRecord>,
    /// The package set served with `--packages-from published`.
    pub published_packages: Option<published::PublishedPackages>,
    /// How far the run got: what the report of a run that stops says.
    pub reached: stopped::Reached,
}

/// One reproduction in progress: what every stage reads (the plan, the options, the
/// fetcher and the archive client) and what they add to (the ledger).
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub o: &'a Options,
    pub fetcher: &'a Fetcher,
    /// The archive the plan names; its day databases are parsed once per run.
    pub archive: Archive<'a>,
    pub ledger: Ledger,
    /// The release file's text at the tag (stage 1): the image step builds it with
    /// `--image-from published`.
    pub release_text: String,
    /// Phases and lines on stderr.
    pub progress: crate::progress::Progress,
    guard: crate::interrupt::Guard,
    clock: PhaseClock,
}

impl<'a> Run<'a> {
    fn new(plan: &'a Plan, o: &'a Options, fetcher: &'a Fetcher) -> Run<'a> {
        Run {
            plan,
            o,
            fetcher,
            archive: Archive::new(archive_url(plan), fetcher),
            ledger: Ledger::default(),
            release_text: String::new(),
            progress: crate::progress::Progress::new(o.progress),
            // SIGINT/SIGTERM from here on are recorded, not fatal: a running job is killed
            // by its backend, and between steps `interrupted` returns, dropping (removing)
            // the work directory on the way out.
            guard: crate::interrupt::Guard::new(),
            clock: PhaseClock::start(),
        }
    }

    /// A line of information on stderr (above the spinner on a terminal).
    pub fn say(&self, msg: &str) {
        self.progress.say(msg);
    }

    /// A new phase of the run begins: a spinner on a terminal, a line otherwise.
    pub fn phase(&self, msg: &str) {
        self.progress.phase(msg);
    }

    /// `Interrupted` once SIGINT or SIGTERM arrived.
    pub fn interrupted(&self) -> Result<()> {
        match self.guard.pending() {
            Some(_) => Err(Error::Interrupted),
            None => Ok(()),
        }
    }

    /// Where the jobs' own output goes when it does not go to the terminal (`--quiet`, a
    /// spinner): `OUT/build.log`, started empty.
    fn job_log(&self) -> Option<PathBuf> {
        let log = self
            .progress
            .wants_job_log()
            .then(|| self.o.out.join("build.log"))?;
        let _ = std::fs::remove_file(&log);
        self.say(&format!("the build's own output goes to {}", log.display()));
        Some(log)
    }

    /// End a phase of the run's wall time (debug log).
    pub fn lap(&mut self, phase: &str) {
        self.clock.lap(phase);
    }
}

/// The archive location of the plan (empty when the profile names none).
pub(crate) fn archive_url(plan: &Plan) -> &str {
    plan.locations
        .get("archive")
        .map(|l| l.url.as_str())
        .unwrap_or_default()
}

/// Run the reproduction of `plan` with the store at `store`. Once the plan is made, a run
/// that stops on an error still writes its report (`stopped.rs`); bad input exits 2 with
/// nothing written.
pub fn reproduce(plan: &Plan, store: Store, o: &Options) -> Result<Outcome> {
    crate::error::dir_or_absent(&o.out, "output directory")?;
    // Fetch's own progress (bars on a terminal, lines otherwise) only with plain lines: a
    // spinner holds the terminal, and the phase it shows covers the fetch.
    let fetcher = Fetcher::new(store.clone(), o.offline)
        .with_progress(o.progress == crate::progress::Mode::Lines)
        .with_names(plan.location_names());
    let mut run = Run::new(plan, o, &fetcher);
    // Every `?` of the stages ends here: the work directory is gone (dropped on the way
    // out) before the report of the stopped run is written.
    match stages(&mut run, store) {
        Ok(outcome) => Ok(outcome),
        Err(e) => stopped::stopped(&mut run, e),
    }
}

/// The nine stages, in order; `run.ledger.reached` follows them for the report of a run
/// that stops.
fn stages(run: &mut Run, store: Store) -> Result<Outcome> {
    let (plan, o, fetcher) = (run.plan, run.o, run.fetcher);
    // 1. The release.
    run.ledger.reached.stage = "release";
    run.phase(&format!(
        "release {} from {}",
        plan.source.tag, plan.source.git
    ));
    let git = release::git_source(plan, &store);
    let release = release::fetch(plan, &git, o.offline)?;
    run.release_text = release.text.clone();
    run.ledger.reached.source_revision = Some(release.release.source_revision.clone());
    run.lap("release");

    // 2. The steps this run executes.
    let selected = steps::select(plan, o, &mut run.ledger.notes);
    run.ledger.reached.environment_day = Some(selected.day.clone());

    // 3. The work directory, the pinned base, the workspace and the backend.
    run.ledger.reached.stage = "workspace";
    std::fs::create_dir_all(&o.out).ctx("create", &o.out)?;
    let work = tempfile::Builder::new()
        .prefix(".reprobox-work-")
        .tempdir_in(&o.out)
        .ctx("create a work directory in", &o.out)?;
    let job_log = run.job_log();
    run.phase(&format!(
        "pinning the base root filesystem {}",
        plan.base.url
    ));
    let base = environment::pin_base(plan, fetcher, &mut run.ledger.inputs)?;
    let workspace = work.path().join("workspace");
    run.phase(&format!("checking out {}", release.release.source_revision));
    git.checkout(&release.release.source_revision, &workspace)?;
    let checkout = workspace::verify(plan, &workspace, &release.release.source_revision)?;
    run.ledger.notes.extend(workspace::notes(&checkout));
    run.ledger.reached.workspace = checkout.clone();
    run.lap("checkout");
    let backend = open_backend(run, &selected.day, work.path())?;
    run.ledger.reached.backend = Some(backend.name());
    run.ledger.reached.microvm = backend.record();
    if o.backend == BackendChoice::Container {
        // Binds are not idmapped in the container: the workspace goes to the mapped root.
        // (The guest's root is the host's 0: there it stays as checked out.)
        environment::give_to_job(&workspace)?;
    }
    // Declared after `work`: dropped (its overlay unmounted) before the work directory goes.
    let mut ctx = job_context(plan, o, &store, backend, workspace);
    ctx.job_log = job_log;
    ctx.scratch_dir = Some(work.path().to_path_buf());
    ctx.nested_podman = nested_podman_config(plan, work.path())?;
    ctx.services.egress = egress_for(
        plan,
        Some(&release.release.rootfs_sha256),
        &store,
        o.offline,
    )?;
    if o.packages_from == PackagesFrom::Published {
        run.serve_published_set(&mut ctx, &release.release)?;
    }
    run.ledger.reached.egress = ctx.services.egress.clone();

    // 4. The environment.
    run.ledger.reached.stage = "environment";
    let env = run.prepare_environment(&mut ctx, &base, &selected, work.path())?;
    run.lap("environment");

    // 5. The build: what is left of the steps.
    run.ledger.reached.stage = "build";
    let build = run.build(&mut ctx, env, &selected.day)?;
    run.ledger.reached.failed_step = build.failed.clone();
    run.lap("build steps");

    // 6. The rootfs check.
    run.ledger.reached.stage = "rootfs check";
    let built = ctx.workspace.join(&plan.artifacts.dir);
    let rootfs = run.check_rootfs(&release.release, &built.join(&plan.artifacts.rootfs))?;
    let mut checks = vec![workspace::check(&checkout)];
    checks.extend(rootfs.check);
    checks.extend(rootfs.published);
    checks.push(run.check_dockerfile(&release, &built, &checks));
    let mut external_diffs = rootfs.kept;
    let reached = &mut run.ledger.reached;
    reached.checks = checks.clone();
    reached.file_diffs = rootfs.file_diffs.clone();
    reached.file_diffs_source = rootfs.source.clone();
    reached.external_diffs = external_diffs.clone();
    run.lap("rootfs checks");

    // 7. The image check.
    run.ledger.reached.stage = "image check";
    let (image_checks, kept) = run.image_stage(&ctx, &build)?;
    checks.extend(image_checks);
    external_diffs.extend(kept);
    run.ledger.reached.checks = checks.clone();
    run.ledger.reached.external_diffs = external_diffs.clone();
    run.lap("image checks");

    // 8. The drift of the environment from the profile's environment day.
    run.ledger.reached.stage = "drift";
    run.phase(&format!(
        "comparing the environment with the packages of {}",
        plan.env_day
    ));
    let drift = run.drift(&build.env_lock);
    run.lap("drift");

    // 9. The report and the outputs.
    run.ledger.reached.stage = "outputs";
    run.phase(&format!("writing the report into {}", o.out.display()));
    let report = outputs::assemble_report(
        plan,
        outputs::Findings {
            environment_day: selected.day.clone(),
            image_from: o.image_from,
            backend: ctx.backend.name(),
            microvm: ctx.backend.record(),
            source_revision: Some(release.release.source_revision.clone()),
            workspace: checkout,
            failed_step: build.failed,
            checks,
            file_diffs: rootfs.file_diffs,
            file_diffs_source: rootfs.source,
            drift,
            late: rootfs.late,
            steps: std::mem::take(&mut run.ledger.steps),
            external_diffs,
            notes: std::mem::take(&mut run.ledger.notes),
            egress: run.ledger.egress.take(),
            published_packages: run.ledger.published_packages.take(),
        },
    );
    outputs::write_outputs(
        plan,
        &o.out,
        &report,
        &build.env_lock,
        &run.ledger.inputs,
        &outputs::Provenance {
            release: &release,
            base: &base,
            pinned_images: &ctx.services.images,
            prepared: ctx.root.prepared(),
            built: &built,
        },
    )?;
    run.lap("outputs");
    // A failure from here on still replaces the report just written with the stopped
    // run's (incomplete): the run did not end cleanly.
    run.ledger.reached.stage = "clean up";
    run.phase("cleaning up the work directory");
    finish(run, ctx.root, work)?;
    run.progress.end();
    let exit_code = report.verdict.exit_code();
    Ok(Outcome {
        report,
        exit_code,
        stopped: None,
    })
}

/// The nested podman's configuration (`job::NestedPodman`), written into the work directory
/// when a step of the plan runs nested containers.
fn nested_podman_config(plan: &Plan, work: &Path) -> Result<Option<PathBuf>> {
    if !plan
        .steps
        .iter()
        .any(|s| s.isolation == crate::plan::Isolation::NestedContainers)
    {
        return Ok(None);
    }
    let dir = work.join("nested-podman");
    crate::job::NestedPodman::write(&dir).ctx("write the nested podman configuration in", &dir)?;
    Ok(Some(dir))
}

/// What every job of the reproduction shares; its root is set by stage 4.
fn job_context(
    plan: &Plan,
    o: &Options,
    store: &Store,
    backend: Box<dyn Backend>,
    workspace: PathBuf,
) -> JobContext {
    JobContext {
        backend,
        root: EnvRoot::Owned(PathBuf::new()),
        workspace,
        services: Services {
            mirror: Some(MirrorConfig {
                store: store.clone(),
                upstream: archive_url(plan).to_string(),
                canonical: Some(plan.canonical_url(archive_url(plan))),
                offline: o.offline,
            }),
            images: Vec::new(),
            store: Some(store.clone()),
            egress: None,
        },
        source_date_epoch: plan.source_date_epoch,
        timeout: o.timeout,
        id_map: environment::id_map(),
        scratch: Vec::new(),
        job_log: None,
        nested_podman: None,
        scratch_dir: None,
    }
}

/// The reproduction's egress when the profile has an `[[egress]]` section: one for every
/// job of the run (one CA, one record). A pin on the release's rootfs takes its sha256;
/// without a release (`run --snapshot`) such pins are left out.
fn egress_for(
    plan: &Plan,
    rootfs_sha256: Option<&str>,
    store: &Store,
    offline: bool,
) -> Result<Option<std::sync::Arc<Egress>>> {
    if plan.egress.is_empty() {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for e in &plan.egress {
        let policy = match e.policy {
            EgressPolicy::Archive => Policy::Archive,
            EgressPolicy::Recorded => Policy::Recorded,
            EgressPolicy::Registry => Policy::Registry,
            EgressPolicy::Pinned => Policy::Pinned(
                e.pins
                    .iter()
                    .filter_map(|(url, sha)| {
                        let sha = if sha == PIN_RELEASE_ROOTFS {
                            rootfs_sha256?
                        } else {
                            sha
                        };
                        Some((url.clone(), sha.to_string()))
                    })
                    .collect(),
            ),
        };
        let what = format!("profile {}, egress {}", plan.profile, e.host);
        rules.push(EgressRule::new(&e.host, &e.location, policy, &what)?);
    }
    Ok(Some(std::sync::Arc::new(Egress::new(
        rules,
        store.clone(),
        offline,
    )?)))
}

/// The report's account of what the egress refused, saw drift on, or found tampered.
fn note_egress(r: &EgressRecord, notes: &mut Vec<String>) {
    for x in &r.refusals {
        notes.push(format!(
            "egress: step {} was refused {} ({}:{}): {}",
            x.step.as_deref().unwrap_or("-"),
            x.what,
            x.host,
            x.port,
            x.reason
        ));
    }
    for d in &r.drift {
        notes.push(format!(
            "egress: drift: {} is pinned as {}, upstream now sends {} (the pinned bytes were used)",
            d.url, d.pinned, d.upstream
        ));
    }
    for t in &r.tampered {
        notes.push(format!(
            "egress: tampered: {} should have sha256 {}, upstream sent {} (refused, nothing stored)",
            t.url, t.expected, t.actual
        ));
    }
}

/// Open the backend the options name; a microVM resolves its guest kernel for the
/// environment's day now.
fn open_backend(run: &mut Run, day: &str, work: &Path) -> Result<Box<dyn Backend>> {
    match &run.o.backend {
        BackendChoice::Container => Ok(Box::new(Container)),
        BackendChoice::Microvm(choice) => {
            run.phase("microVM backend: resolving the guest kernel");
            let vm = MicroVm::for_reproduction(
                choice,
                archive_url(run.plan),
                day,
                run.fetcher,
                &mut run.ledger.inputs,
                work,
            )?;
            if let Some(r) = &vm.record {
                run.say(&format!(
                    "microVM: kernel {} ({}), accel {} ({})",
                    r.kernel_release, r.kernel_origin.source, r.accel, r.accel_detail
                ));
            }
            Ok(Box::new(vm))
        }
    }
}

/// A note for every step whose clock should have been pinned and was not.
pub(crate) fn note_unpinned_clocks(ledger: &mut Ledger) {
    for r in &ledger.steps {
        if let Some(e) = r
            .enforcement
            .iter()
            .find(|e| e.feature == "faketime" && !e.enforced)
        {
            ledger.notes.push(format!(
                "step {}: the clock was not pinned ({}): dynamically linked tools saw the real wall clock",
                r.name, e.detail
            ));
        }
    }
}

/// Unmount the environment, then remove the work directory (or keep it with
/// `--keep-work`, saying where the environment's changes are).
fn finish(run: &mut Run, root: EnvRoot, work: tempfile::TempDir) -> Result<()> {
    let dir = root.dir();
    let kind = match &root {
        EnvRoot::Overlay { prepared, .. } => Some(prepared.root()),
        _ => None,
    };
    let shared = root.shared();
    drop(root);
    run.lap("unmount");
    if run.o.keep_work {
        let kept = work.keep();
        let env = match kind {
            Some(base) => format!(
                "the build's changes in {}, over the prepared environment {}",
                kept.join("env/upper").display(),
                base.display()
            ),
            None if shared => format!(
                "the environment was the prepared {}, unchanged; the run's changes were on the VM's root disk",
                dir.display()
            ),
            None => format!("env root: {}", dir.display()),
        };
        run.say(&format!("work directory kept: {} ({env})", kept.display()));
    } else {
        drop(work);
    }
    run.lap("clean up");
    Ok(())
}

#[test]
fn the_real_profile_gets_its_egress_with_the_release_rootfs_pinned() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let sha = "ab".repeat(32);
    let eg = egress_for(&test_plan(), Some(&sha), &store, true)
        .unwrap()
        .unwrap();
    let rules = eg.rules();
    assert_eq!(rules.len(), 5);
    let Policy::Pinned(pins) = &rules[1].policy else {
        panic!("{:?}", rules[1])
    };
    assert_eq!(
        pins.get("https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/20260518.0.532496/repro-20260518.0.532496.tar.zst"),
        Some(&sha)
    );
    assert_eq!(rules[0].location, "https://archive.archlinux.org");
    assert_eq!(rules[3].policy, Policy::Registry);
}

/// Options of a plain container run into `out`, with no progress shown: what the stages'
/// unit tests use.
#[cfg(test)]
fn test_options(out: PathBuf) -> Options {
    Options {
        offline: true,
        rollback: true,
        env_day: None,
        out,
        progress: crate::progress::Mode::Off,
        timeout: None,
        keep_work: false,
        use_prepared_envs: true,
        backend: BackendChoice::Container,
        image_from: ImageFrom::Rebuilt,
        packages_from: PackagesFrom::Snapshot,
    }
}

/// The real profile's plan for a real release (no I/O): what the stages' unit tests use.
#[cfg(test)]
fn test_plan() -> Plan {
    let lp = crate::plan::profile::Profile::load("archlinux-repro").unwrap();
    let v = crate::plan::version::BuildVersion::parse("20260518.0.532496").unwrap();
    Plan::with_overrides(&lp, &v, &[], &[]).unwrap()
}

/// Where a reproduction's wall time goes outside its jobs, at debug level
/// (`REPROBOX_LOG=reprobox::pipeline=debug`): what the overhead benchmark's ratio is made of.
struct PhaseClock {
    last: std::time::Instant,
}

impl PhaseClock {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, phase: &str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            phase,
            ms = (now - self.last).as_secs_f64() * 1e3,
            "phase done"
        );
        self.last = now;
    }
}
