//! A reproduction as a sequence of steps over the other modules:
//! plan → pinned inputs → environment → sandboxed steps → checks → report.
//!
//! Every stage hands the next a plain value; every input goes through the store and the
//! inputs lock; every failure after the plan still writes a report saying how far it got.

pub mod env;
pub mod envcache;
pub mod microvm;
mod overlay;
pub mod steps;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::envlock::{Drift, EnvLock, ServedPackage};
use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::git::GitSource;
use crate::inputs::images::DigestRef;
use crate::inputs::lock::InputsLock;
use crate::inputs::registry::PublishedImage;
use crate::inputs::store::Store;
use crate::plan::release::Release;
use crate::plan::{Plan, PlannedStep, Role};
use crate::report::attestation::{Statement, Subject};
use crate::report::{Check, Report, StepRecord, Verdict};

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
    /// Progress lines on stderr.
    pub progress: bool,
    pub timeout: Option<std::time::Duration>,
    /// Keep the work directory (environment root and workspace) instead of removing it.
    pub keep_work: bool,
    /// Use (and fill) the store's prepared environments. Off, the base is unpacked and the
    /// environment steps run for this reproduction alone.
    pub env_cache: bool,
    /// Where the jobs run.
    pub backend: BackendChoice,
}

/// The backend a reproduction's jobs run on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The container sandbox.
    #[default]
    Container,
    /// qemu microVMs sharing one root disk.
    Microvm(microvm::MicrovmChoice),
}

/// What a reproduction produced.
pub struct Outcome {
    pub report: Report,
    pub exit_code: i32,
}

fn say(o: &Options, msg: &str) {
    if o.progress {
        eprintln!("reprobox: {msg}");
    }
}

/// The published image: from the registry (online, and kept in the store), or from the
/// store (offline).
fn published_image(
    plan: &Plan,
    fetcher: &Fetcher,
    lock: &mut InputsLock,
) -> Result<PublishedImage> {
    crate::inputs::registry::published_image(
        fetcher,
        lock,
        &plan.expected.registry,
        &plan.expected.image,
        &plan.expected.image_tag,
    )
}

/// `FROM` references pinned by digest in a Dockerfile; tags are returned separately (they
/// cannot be pinned, and the report says so).
fn from_refs(dockerfile: &str) -> (Vec<DigestRef>, Vec<String>) {
    let mut pinned = Vec::new();
    let mut tags = Vec::new();
    for l in dockerfile.lines() {
        let t = l.trim();
        if !t.to_ascii_uppercase().starts_with("FROM ") {
            continue;
        }
        let Some(img) = t[5..].split_whitespace().find(|w| !w.starts_with("--")) else {
            continue;
        };
        if img == "scratch" {
            continue;
        }
        match DigestRef::parse(img) {
            Some(r) => pinned.push(r),
            None => tags.push(img.to_string()),
        }
    }
    (pinned, tags)
}

/// The podman global flags and the `-t` tag of an image step's build command.
fn podman_call(argv: &[String]) -> Option<(Vec<String>, String)> {
    let p = argv
        .iter()
        .position(|a| a == "podman" || a.ends_with("/podman"))?;
    let b = argv.iter().position(|a| a == "build")?;
    let globals = argv[p + 1..b].to_vec();
    let t = argv.iter().position(|a| a == "-t" || a == "--tag")?;
    Some((globals, argv.get(t + 1)?.clone()))
}

#[derive(Debug, Serialize)]
struct LocalImage {
    config_digest: String,
    manifest_digest: Option<String>,
    diff_ids: Vec<String>,
}

fn read_local_image(path: &Path) -> Result<LocalImage> {
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Environment(format!(
            "{}: podman image inspect output: {e}",
            path.display()
        ))
    })?;
    let v = if v.is_array() { v[0].clone() } else { v };
    let id = v["Id"].as_str().unwrap_or_default();
    let config_digest = if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    };
    let diff_ids = v["RootFS"]["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    Ok(LocalImage {
        config_digest,
        manifest_digest: v["Digest"].as_str().map(str::to_string),
        diff_ids,
    })
}

/// A planned step as this run executes it, or `None` when the options skip it: rollback
/// switched off, or environment steps moved to another day (`--env-day`). Says so in the
/// notes.
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
            format!("/repos/{}/", plan.snapshot),
            format!("/repos/{day}/"),
        );
        for c in &mut s.commands {
            for a in c.iter_mut() {
                *a = a.replace(&from, &to);
            }
        }
        notes.push(format!(
            "step {}: the environment was rolled to {day}, not the snapshot day {}",
            step.name, plan.snapshot
        ));
    }
    Some(s)
}

/// The environment lock of `root`, with the sha256 of every package the mirror served.
fn record_env_lock(root: &Path, day: &str, inputs: &InputsLock) -> Result<EnvLock> {
    let served: Vec<ServedPackage> = inputs
        .entries
        .iter()
        .filter(|e| e.url.contains(".pkg.tar"))
        .filter_map(|e| {
            let path = e
                .url
                .split_once("://")
                .map(|(_, r)| r.split_once('/').map(|(_, p)| p).unwrap_or(""))?;
            Some(ServedPackage {
                url_path: format!("/{path}"),
                sha256: e.sha256.clone()?,
            })
        })
        .collect();
    EnvLock::record(root, Some(day), &served)
}

/// Complete an environment lock from the day's repository databases: a package the
/// environment steps did not need to download was not served, but the day's database pins
/// it.
fn complete_env_lock(lock: &mut EnvLock, archive: &crate::inputs::archive::Archive, day: &str) {
    for p in &mut lock.packages {
        if p.sha256.is_none()
            && let Ok(r) = archive.resolve(day, &p.name)
            && r.version == p.version
        {
            p.sha256 = Some(r.sha256);
            p.repo = Some(r.repo);
            p.day = Some(r.day);
        }
    }
}

/// How a run of steps ended.
struct StepsResult {
    /// Every step exited 0 (optional ones included).
    all_ok: bool,
    /// The first required step that failed.
    failed: Option<String>,
}

/// Runs planned steps in order, one sandboxed job per command, and keeps their records.
struct StepRunner<'r> {
    plan: &'r Plan,
    o: &'r Options,
    fetcher: &'r Fetcher,
    inputs: &'r mut InputsLock,
    notes: &'r mut Vec<String>,
    records: &'r mut Vec<StepRecord>,
    image_built: &'r mut Option<(Vec<String>, String)>,
}

impl StepRunner<'_> {
    fn run(
        mut self,
        ctx: &mut steps::StepContext,
        list: &[PlannedStep],
        interrupted: &dyn Fn() -> Result<()>,
    ) -> Result<StepsResult> {
        let o = self.o;
        let mut all_ok = true;
        for step in list {
            interrupted()?;
            if step.role == Role::Image {
                self.pin_images(ctx, step)?;
            }
            say(
                o,
                &format!("step {} ({} command(s))", step.name, step.commands.len()),
            );
            let (rec, lock) = steps::run_step(ctx, step)?;
            self.inputs.entries.extend(lock.entries);
            let code = rec.exit_code;
            self.records.push(rec);
            if code != 0 {
                all_ok = false;
                if step.optional {
                    self.notes.push(format!(
                        "optional step {} failed (exit {code}); going on",
                        step.name
                    ));
                } else {
                    return Ok(StepsResult {
                        all_ok,
                        failed: Some(step.name.clone()),
                    });
                }
            }
        }
        Ok(StepsResult {
            all_ok,
            failed: None,
        })
    }

    /// Before an image step: pin the Dockerfile's base images by digest, serve them on the
    /// job's loopback, and tell the environment's podman where they are.
    fn pin_images(&mut self, ctx: &mut steps::StepContext, step: &PlannedStep) -> Result<()> {
        let plan = self.plan;
        let df = ctx
            .workspace
            .join(&plan.artifacts.dir)
            .join(&plan.source.release_file);
        let dockerfile = std::fs::read_to_string(&df).unwrap_or_default();
        let (refs, tags) = from_refs(&dockerfile);
        for t in tags {
            self.notes.push(format!("base image {t} is a tag, not a digest: it cannot be pinned, and the sandbox cannot pull it"));
        }
        let registry = plan
            .locations
            .get("registry")
            .map(|l| l.url.clone())
            .unwrap_or_default();
        for r in refs {
            say(self.o, &format!("pinning base image {r}"));
            ctx.images.push(crate::inputs::images::pin(
                self.fetcher,
                self.inputs,
                &registry,
                &r,
            )?);
        }
        // Let the environment's podman pull the pinned images from the job's loopback.
        let conf_dir = ctx.root.join("etc/containers/registries.conf.d");
        if !ctx.images.is_empty() {
            let mut conf = String::from(
                "# written by reprobox: pinned base images served on the job's loopback\n",
            );
            for p in &ctx.images {
                conf.push_str(&format!(
                    "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n",
                    p.reference.host
                ));
            }
            let f = conf_dir.join("90-reprobox-pinned.conf");
            steps::write_root_file(
                ctx,
                "/etc/containers/registries.conf.d/90-reprobox-pinned.conf",
                conf.as_bytes(),
            )?;
            if ctx.root_premapped {
                // Host root's files in an overlay over a premapped root are nobody's to the
                // job: give them to the job's root.
                let id = env::ID_RANGE;
                for p in [&conf_dir, &f] {
                    std::os::unix::fs::chown(p, Some(id.host_uid), Some(id.host_gid))
                        .ctx("chown", p)?;
                }
            }
            self.notes.push("reprobox added /etc/containers/registries.conf.d/90-reprobox-pinned.conf to the environment so its podman pulls the pinned base images over plain HTTP from the job's loopback".into());
        }
        *self.image_built = step.commands.iter().find_map(|c| podman_call(c));
        Ok(())
    }
}

/// Both images of a failed image check as `docker save` archives in `out/images/`
/// (`globals` and `tag`: the image step's podman global flags and `-t`): the rebuilt one
/// saved by the environment's podman, the published one written from its blobs, pinned in
/// the store by the manifest digest the registry gave. Returns the file names.
#[allow(clippy::too_many_arguments)]
fn save_images(
    plan: &Plan,
    ctx: &steps::StepContext,
    step: &PlannedStep,
    globals: &[String],
    tag: &str,
    published: &PublishedImage,
    fetcher: &Fetcher,
    inputs: &mut InputsLock,
    out: &Path,
) -> Result<Vec<String>> {
    use crate::verify::imagearchive::{PUBLISHED_NAME, REBUILT_NAME, write_docker_archive};
    let dir = out.join("images");
    std::fs::create_dir_all(&dir).ctx("create", &dir)?;
    let mut podman = vec!["podman".to_string()];
    podman.extend(globals.iter().cloned());
    let podman = crate::plan::shell_line(&podman);
    let saved = ".reprobox-rebuilt.tar";
    let cmd = format!(
        "{podman} tag {tag} {REBUILT_NAME} && {podman} save --format docker-archive -o {}/{saved} {REBUILT_NAME}",
        crate::plan::WORKSPACE,
        tag = crate::plan::shell_line(&[tag.to_string()]),
    );
    let job = steps::job_for(ctx, step, vec!["sh".into(), "-c".into(), cmd], &[]);
    let (outcome, _) = steps::run_job(ctx, &job)?;
    if outcome.exit_code != 0 {
        return Err(Error::Environment(format!(
            "podman save of the rebuilt image exited {}",
            outcome.exit_code
        )));
    }
    let rebuilt = dir.join("rebuilt.tar");
    let from = ctx.workspace.join(saved);
    std::fs::rename(&from, &rebuilt).ctx("move the saved image to", &rebuilt)?;
    // The job's root saved it: make it the caller's, like every other output.
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    std::os::unix::fs::chown(&rebuilt, Some(uid), Some(gid)).ctx("chown", &rebuilt)?;

    let registry = &plan.expected.registry;
    let host = registry
        .split_once("://")
        .map_or(registry.as_str(), |(_, r)| r)
        .trim_end_matches('/')
        .to_string();
    let r = DigestRef {
        host,
        repository: plan.expected.image.clone(),
        digest: published.manifest_digest.clone(),
    };
    let pinned = crate::inputs::images::pin(fetcher, inputs, registry, &r)?;
    write_docker_archive(
        fetcher.store(),
        &pinned,
        PUBLISHED_NAME,
        &dir.join("published.tar"),
    )?;
    Ok(vec![
        "images/published.tar".into(),
        "images/rebuilt.tar".into(),
    ])
}

/// diffoscope on the two rootfs tarballs, when it is installed: its text and JSON output
/// are kept in the output directory (file names returned).
fn run_diffoscope(
    published: &Path,
    rebuilt: &Path,
    out: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let Some(bin) = crate::verify::on_path("diffoscope") else {
        notes.push("diffoscope is not installed: only reprobox's native file diff was made".into());
        return Vec::new();
    };
    let status = std::process::Command::new(bin)
        .arg("--text")
        .arg(out.join("diffoscope.txt"))
        .arg("--json")
        .arg(out.join("diffoscope.json"))
        .arg(published)
        .arg(rebuilt)
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        // diffoscope: 0 same, 1 different, 2 error.
        Ok(s) if matches!(s.code(), Some(0 | 1)) => {
            vec!["diffoscope.txt".into(), "diffoscope.json".into()]
        }
        Ok(s) => {
            notes.push(format!("diffoscope failed ({s})"));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("diffoscope could not run: {e}"));
            Vec::new()
        }
    }
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

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-reprobox");
    std::fs::write(&tmp, bytes).ctx("write", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename into", path)
}

/// Run the reproduction of `plan` with the store at `store`.
pub fn reproduce(plan: &Plan, store: Store, o: &Options) -> Result<Outcome> {
    // SIGINT/SIGTERM from here on are recorded, not fatal: a running job is killed by its
    // backend, and between steps the check below returns, dropping (removing) the work
    // directory on the way out.
    let guard = crate::interrupt::Guard::new();
    let interrupted = || -> Result<()> {
        match guard.pending() {
            Some(_) => Err(Error::Interrupted),
            None => Ok(()),
        }
    };
    crate::error::dir_or_absent(&o.out, "output directory")?;
    let mut clock = PhaseClock::start();
    let fetcher = Fetcher::new(store.clone(), o.offline).with_progress(o.progress);
    let mut inputs = InputsLock::default();
    let mut notes: Vec<String> = Vec::new();

    // 1. The release: tag → release file → source revision and expected hashes.
    say(
        o,
        &format!("release {} from {}", plan.source.tag, plan.source.git),
    );
    let git = GitSource::new(store.root(), &plan.source.git);
    if o.offline {
        if !git.is_cached() {
            return Err(Error::network(
                &plan.source.git,
                "offline and the store holds no copy of the repository",
            ));
        }
    } else {
        git.fetch()?;
    }
    let tag_commit = git.resolve(&plan.source.tag)?;
    let text = git.show(&tag_commit, &plan.source.release_file)?;
    let text = String::from_utf8(text).map_err(|_| {
        Error::bad_input(
            format!("{} at {}", plan.source.release_file, plan.source.tag),
            "not UTF-8 text",
        )
    })?;
    let release = Release::parse(
        &text,
        &format!("{} at {}", plan.source.release_file, plan.source.tag),
    )?;
    let disagreements = release.check_against(&plan.version);
    if !disagreements.is_empty() {
        let d: Vec<String> = disagreements
            .iter()
            .map(|d| format!("{} is {:?}, expected {:?}", d.field, d.release, d.plan))
            .collect();
        return Err(Error::bad_input(
            format!(
                "release {} at {}",
                plan.source.release_file, plan.source.tag
            ),
            format!("disagrees with the plan: {}", d.join("; ")),
        ));
    }

    clock.lap("release");
    // 2. The environment: the pinned base, rolled to its day by the environment steps —
    //    taken from the store's prepared environments when the same base went through the
    //    same steps before (root only: seen through an overlay), else unpacked afresh.
    std::fs::create_dir_all(&o.out).ctx("create", &o.out)?;
    let work = tempfile::Builder::new()
        .prefix(".reprobox-work-")
        .tempdir_in(&o.out)
        .ctx("create a work directory in", &o.out)?;
    let base = env::pin_base(plan, &fetcher, &mut inputs)?;
    let env_day = o.env_day.clone().unwrap_or_else(|| plan.snapshot.clone());
    let planned: Vec<PlannedStep> = plan
        .steps
        .iter()
        .filter_map(|s| as_run(plan, o, s, &mut notes))
        .collect();
    let is_env = |s: &PlannedStep| matches!(s.role, Role::Rollback | Role::Install);
    let n_env = planned.iter().take_while(|s| is_env(s)).count();
    let env_first = planned[n_env..].iter().all(|s| !is_env(s));
    let archive_url = plan
        .locations
        .get("archive")
        .map(|l| l.url.clone())
        .unwrap_or_default();
    let archive = crate::inputs::archive::Archive::new(&archive_url, &fetcher);

    // 3. The source tree of the release's revision, in a fresh workspace (the environment
    //    steps' jobs bind it too).
    let workspace = work.path().join("workspace");
    git.checkout(&release.source_revision, &workspace)?;
    clock.lap("checkout");
    let backend = match &o.backend {
        // Binds are not idmapped in the container: the workspace goes to the mapped root.
        BackendChoice::Container => {
            env::give_to_job(&workspace)?;
            steps::Backend::Container
        }
        // The guest's root is the host's 0: the workspace stays as checked out.
        BackendChoice::Microvm(choice) => {
            say(o, "microVM backend: resolving the guest kernel");
            let vm = microvm::MicroVm::prepare(
                choice,
                &archive_url,
                &env_day,
                &fetcher,
                &mut inputs,
                work.path(),
            )?;
            say(
                o,
                &format!(
                    "microVM: kernel {} ({}), accel {} ({})",
                    vm.record.kernel_release,
                    vm.record.kernel_origin.source,
                    vm.record.accel,
                    vm.record.accel_detail
                ),
            );
            steps::Backend::Microvm(Box::new(vm))
        }
    };
    let mut ctx = steps::StepContext {
        backend: &backend,
        root: work.path().to_path_buf(),
        workspace: &workspace,
        store: &store,
        upstream: plan
            .locations
            .get("archive")
            .map(|l| l.url.as_str())
            .unwrap_or(""),
        offline: o.offline,
        source_date_epoch: plan.source_date_epoch,
        images: Vec::new(),
        timeout: o.timeout,
        root_premapped: false,
        root_shared: false,
        scratch: Vec::new(),
    };
    let mut records: Vec<StepRecord> = Vec::new();
    let mut env_lock: Option<EnvLock> = None;
    let mut failed_step: Option<String> = None;
    let mut image_built: Option<(Vec<String>, String)> = None;
    // Run a list of steps, recording into this run's inputs, notes, records and image.
    macro_rules! run_steps {
        ($list:expr) => {
            StepRunner {
                plan,
                o,
                fetcher: &fetcher,
                inputs: &mut inputs,
                notes: &mut notes,
                records: &mut records,
                image_built: &mut image_built,
            }
            .run(&mut ctx, $list, &interrupted)
        };
    }
    // The microVM backend takes a prepared environment as it is (its root disk is made from
    // the prepared root, read only, which needs no root), but cannot prepare one: what its
    // environment steps change lives on the VM's root disk, not in a directory to publish.
    let on_vm = matches!(o.backend, BackendChoice::Microvm(_));
    let cache_why_not = if !o.env_cache {
        Some("--fresh-env")
    } else if on_vm {
        None
    } else if env::id_map().is_none() {
        Some(
            "not running as root (the prepared environment is shared through an idmapped overlay, which needs root)",
        )
    } else if !env_first {
        Some("the profile interleaves environment and build steps")
    } else {
        None
    };
    let cache = envcache::EnvCache::new(store.root());
    let recipe = envcache::EnvRecipe::new(
        &base.sha256,
        plan.base.subdir.as_deref(),
        Some(&env_day),
        &planned[..n_env],
    );
    let mut rest = &planned[..];
    // The prepared environment this run builds on: published earlier (a hit), or prepared
    // now by running the environment steps in a staging directory and published.
    let mut prepared: Option<envcache::Prepared> = None;
    // Without one: the root this run unpacked (and, unless it failed, rolled) itself.
    let mut own_root: Option<PathBuf> = None;
    let hit = match cache_why_not {
        Some(_) => None,
        None => cache.lookup(&recipe)?,
    };
    if let Some(p) = hit {
        say(
            o,
            &format!("environment prepared earlier: {}", p.dir.display()),
        );
        for s in &planned[..n_env] {
            records.push(StepRecord {
                name: s.name.clone(),
                optional: s.optional,
                exit_code: 0,
                wall_time_ms: 0,
                enforcement: Vec::new(),
                cached: Some(p.key.clone()),
            });
        }
        env_lock = Some(p.env_lock()?);
        notes.push(format!(
            "the environment steps ran earlier, when the prepared environment {} was made from the same base and the same steps; its lock is reused",
            p.key
        ));
        prepared = Some(p);
        rest = &planned[n_env..];
    } else if cache_why_not.is_none() && !on_vm {
        let staging = cache.stage()?;
        say(o, &format!("base root filesystem {}", plan.base.url));
        env::unpack_base(plan, &fetcher, &mut inputs, &base, &staging.root())?;
        interrupted()?;
        let staged_root = staging.root();
        ctx.root = staged_root.clone();
        let ok = run_steps!(&planned[..n_env])?;
        let mut lock = record_env_lock(&staged_root, &env_day, &inputs)?;
        complete_env_lock(&mut lock, &archive, &env_day);
        if ok.all_ok {
            let p = cache.publish(staging, &recipe, &lock)?;
            say(
                o,
                &format!("environment prepared and kept: {}", p.dir.display()),
            );
            prepared = Some(p);
        } else {
            // Not kept: build in the staged root itself, and let it go afterwards.
            let r = work.path().join("base");
            std::fs::rename(&staged_root, &r).ctx("move the environment to", &r)?;
            drop(staging);
            own_root = Some(r);
            failed_step = ok.failed;
        }
        env_lock = Some(lock);
        rest = &planned[n_env..];
    } else {
        let why = cache_why_not.or(on_vm.then_some(
            "--backend microvm and no environment prepared earlier for this base, day and steps (the microVM prepares its environment on its root disk, which is not kept; a container run as root prepares one and keeps it in the store)",
        ));
        if let Some(why) = why {
            notes.push(format!(
                "the environment was prepared from the base for this run only: {why}"
            ));
        }
        say(o, &format!("base root filesystem {}", plan.base.url));
        let r = work.path().join("base");
        env::unpack_base(plan, &fetcher, &mut inputs, &base, &r)?;
        interrupted()?;
        own_root = Some(r);
    }
    clock.lap("environment");
    // Declared after `work` so that it is unmounted before the work directory is removed.
    // The microVM reads a prepared root as it is (only to make its root disk): no overlay.
    let overlay = match &prepared {
        Some(_) if on_vm => None,
        Some(p) => Some(overlay::Overlay::mount(
            &p.root(),
            &work.path().join("env"),
            env::ID_RANGE,
        )?),
        None => None,
    };
    let root = match (&overlay, own_root, &prepared) {
        (Some(ov), _, _) => ov.root().to_path_buf(),
        (None, Some(r), _) => r,
        (None, None, Some(p)) => p.root(),
        (None, None, None) => unreachable!("every branch above gives a root"),
    };
    ctx.root_premapped = overlay.is_some();
    ctx.root_shared = overlay.is_none() && prepared.is_some();
    if overlay.is_some() {
        // The nested podman's storage and temporary files (the build's heaviest writes)
        // go to plain directories of the run rather than through the overlay: both start
        // empty in a prepared environment, and nothing of them outlives the run.
        for (dir, dst, mode) in [
            ("containers", "/var/lib/containers", 0o700),
            ("var-tmp", "/var/tmp", 0o1777),
        ] {
            // Only over an empty directory: never hide what the environment holds.
            let inside = root.join(dst.trim_start_matches('/'));
            if std::fs::read_dir(&inside).is_ok_and(|mut d| d.next().is_some()) {
                continue;
            }
            let src = work.path().join(dir);
            std::fs::create_dir_all(&src).ctx("create", &src)?;
            env::give_to_job(&src)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode))
                .ctx("chmod", &src)?;
            ctx.scratch.push(crate::job::Bind {
                src,
                dst: PathBuf::from(dst),
                read_only: false,
            });
        }
    }
    ctx.root = root.clone();

    clock.lap("overlay");
    if failed_step.is_none() {
        let last_env = rest.iter().rposition(is_env);
        for (i, step) in rest.iter().enumerate() {
            let r = run_steps!(std::slice::from_ref(step))?;
            if let Some(f) = r.failed {
                failed_step = Some(f);
                break;
            }
            if Some(i) == last_env {
                steps::sync_root_dir(&ctx, "/var/lib/pacman/local")?;
                let mut lock = record_env_lock(&root, &env_day, &inputs)?;
                complete_env_lock(&mut lock, &archive, &env_day);
                env_lock = Some(lock);
            }
        }
    }
    clock.lap("build steps");
    for r in &records {
        if let Some(e) = r
            .enforcement
            .iter()
            .find(|e| e.feature == "faketime" && !e.enforced)
        {
            notes.push(format!(
                "step {}: the clock was not pinned ({}): dynamically linked tools saw the real wall clock",
                r.name, e.detail
            ));
        }
    }
    let env_lock = match env_lock {
        Some(l) => l,
        None => {
            steps::sync_root_dir(&ctx, "/var/lib/pacman/local")?;
            let mut l = EnvLock::record(&root, Some(&env_day), &[])?;
            complete_env_lock(&mut l, &archive, &env_day);
            l
        }
    };

    // 4. Checks.
    let out_dir = workspace.join(&plan.artifacts.dir);
    let rootfs = out_dir.join(&plan.artifacts.rootfs);
    let mut checks = Vec::new();
    let mut file_diffs = Vec::new();
    let mut external_diffs = Vec::new();
    let mut late = Vec::new();
    if let Some(s) = &failed_step {
        notes.push(format!("step {s} failed: the build did not complete"));
    }
    let actual_rootfs = if rootfs.is_file() {
        Some(crate::verify::sha256_file(&rootfs)?)
    } else {
        None
    };
    checks.push(Check::compare(
        "rootfs-sha256",
        true,
        Some(release.rootfs_sha256.clone()),
        actual_rootfs.clone(),
        format!(
            "expected from {} at {} ({}); actual sha256 of {}/{}",
            plan.source.release_file,
            plan.source.tag,
            release.rootfs_file,
            plan.artifacts.dir,
            plan.artifacts.rootfs
        ),
    ));
    if actual_rootfs.is_some() {
        late = crate::verify::audit::audit_tarball(&rootfs, plan.source_date_epoch)?;
    }
    if actual_rootfs.is_some() && actual_rootfs.as_deref() != Some(release.rootfs_sha256.as_str()) {
        let url = plan.expected.rootfs_url.clone();
        say(
            o,
            &format!("rootfs differs: fetching the published one from {url} to compare"),
        );
        match fetcher.fetch_recorded(&mut inputs, &url, Some(&release.rootfs_sha256)) {
            Ok(blob) => {
                let a = crate::verify::tarindex::read_index(&blob.path)?;
                let b = crate::verify::tarindex::read_index(&rootfs)?;
                file_diffs = crate::verify::tardiff::diff(&a, &b);
                external_diffs.extend(run_diffoscope(&blob.path, &rootfs, &o.out, &mut notes));
                if file_diffs.is_empty() {
                    notes.push("the two rootfs tarballs hold the same files with the same metadata: the bytes differ in tar layout or compression".into());
                }
            }
            Err(e) => notes.push(format!(
                "could not fetch the published rootfs to compare files: {e}"
            )),
        }
    }

    clock.lap("rootfs checks");
    // Image checks: only for a profile with an image step, and the rebuilt image only when
    // that step ran and succeeded.
    let image_step = plan.steps.iter().find(|s| s.role == Role::Image);
    let image_step_ok = image_step
        .is_some_and(|step| failed_step.is_none() && records.iter().any(|r| r.name == step.name));
    let mut local = None;
    if image_step_ok
        && let Some(step) = image_step
        && let Some((globals, tag)) = &image_built
    {
        let inspect = workspace.join(".reprobox-image.json");
        let mut argv = vec!["podman".to_string()];
        argv.extend(globals.iter().cloned());
        argv.extend(["image".into(), "inspect".into(), tag.clone()]);
        let cmd = format!(
            "{} > /build/.reprobox-image.json",
            crate::plan::shell_line(&argv)
        );
        let job = steps::job_for(&ctx, step, vec!["sh".into(), "-c".into(), cmd], &[]);
        let (out, _) = steps::run_job(&ctx, &job)?;
        if out.exit_code == 0 {
            local = Some(read_local_image(&inspect)?);
        } else {
            notes.push(format!(
                "podman image inspect {tag} failed (exit {})",
                out.exit_code
            ));
        }
    }
    clock.lap("image inspect");
    let published = if image_step.is_some() {
        match published_image(plan, &fetcher, &mut inputs) {
            Ok(p) => Some(p),
            Err(e) => {
                notes.push(format!("the published image could not be read: {e}"));
                None
            }
        }
    } else {
        None
    };
    if image_step.is_some() {
        let src = format!(
            "published {}; rebuilt by the image step",
            plan.expected_image_ref()
        );
        checks.push(Check::compare(
            "image-config-digest",
            true,
            published.as_ref().map(|p| p.config_digest.clone()),
            local.as_ref().map(|l| l.config_digest.clone()),
            src.clone(),
        ));
        checks.push(Check::compare(
            "image-diff-ids",
            true,
            published.as_ref().map(|p| p.diff_ids.join(",")),
            local.as_ref().map(|l| l.diff_ids.join(",")),
            src.clone(),
        ));
        checks.push(Check::compare(
            "image-manifest-digest",
            false,
            published.as_ref().map(|p| p.manifest_digest.clone()),
            local.as_ref().and_then(|l| l.manifest_digest.clone()),
            "depends on layer compression: podman's local manifest has uncompressed layers, the registry's compressed ones".into(),
        ));
    }
    if let (Some(p), Some(l), Some(step), Some((globals, tag))) =
        (&published, &local, image_step, &image_built)
        && p.config_digest != l.config_digest
    {
        say(o, "image differs: saving both images to compare");
        match save_images(
            plan,
            &ctx,
            step,
            globals,
            tag,
            p,
            &fetcher,
            &mut inputs,
            &o.out,
        ) {
            Ok(files) => {
                external_diffs.extend(files);
                let dir = o.out.join("images");
                match crate::verify::imagearchive::run_diffoci(
                    &o.out,
                    &dir.join("published.tar"),
                    &dir.join("rebuilt.tar"),
                ) {
                    Ok(files) => external_diffs.extend(files),
                    Err(note) => notes.push(note),
                }
            }
            Err(e) => notes.push(format!("the two images could not be saved to compare: {e}")),
        }
    }

    clock.lap("image checks");
    // 5. The environment lock completed from the day's repository databases (a package the
    //    rollback did not need to download was not served, but the day's database pins it),
    //    and the drift against the snapshot day.
    let mut drift: Vec<Drift> = Vec::new();
    for p in &env_lock.packages {
        match archive.resolve(&plan.snapshot, &p.name) {
            Ok(r) if r.version != p.version => drift.push(Drift {
                name: p.name.clone(),
                a: Some(r.version),
                b: Some(p.version.clone()),
            }),
            Ok(_) => {}
            Err(e) if e.exit_code() == 2 => {}
            Err(e) => {
                notes.push(format!(
                    "could not resolve the snapshot day's version of {}: {e}",
                    p.name
                ));
            }
        }
    }

    clock.lap("drift");
    let verdict = if failed_step.is_some() {
        Verdict::Incomplete
    } else {
        Verdict::of(&checks)
    };
    let report = Report {
        schema: crate::report::REPORT_SCHEMA,
        reprobox_version: env!("CARGO_PKG_VERSION"),
        profile: plan.profile.clone(),
        version: plan.version.to_string(),
        snapshot: plan.snapshot.clone(),
        source_date_epoch: plan.source_date_epoch,
        backend: backend.name().into(),
        microvm: match &backend {
            steps::Backend::Microvm(vm) => {
                Some(serde_json::to_value(&vm.record).expect("plain JSON"))
            }
            steps::Backend::Container => None,
        },
        source_revision: Some(release.source_revision.clone()),
        verdict,
        checks,
        file_diffs,
        environment_drift: drift,
        late_timestamps: late,
        steps: records,
        external_diffs,
        notes,
    };

    // 6. Outputs.
    let arts = o.out.join("artifacts");
    std::fs::create_dir_all(&arts).ctx("create", &arts)?;
    let mut subjects = Vec::new();
    for f in &plan.artifacts.files {
        let src = out_dir.join(f);
        if src.is_file() {
            let dst = arts.join(f);
            std::fs::copy(&src, &dst).ctx("copy into", &dst)?;
            subjects.push(Subject::sha256(
                f.clone(),
                crate::verify::sha256_file(&dst)?,
            ));
        }
    }
    let env_text = env_lock.to_text();
    let inputs_text = inputs.to_string();
    write_atomic(&o.out.join("env.lock"), env_text.as_bytes())?;
    write_atomic(&o.out.join("inputs.lock"), inputs_text.as_bytes())?;
    let json = serde_json::to_string_pretty(&report).expect("plain JSON");
    write_atomic(&o.out.join("report.json"), json.as_bytes())?;
    write_atomic(&o.out.join("summary.txt"), report.summary().as_bytes())?;
    let statement = Statement::new(
        subjects,
        serde_json::json!({
            "plan": plan,
            "release": { "tag": plan.source.tag, "tag_commit": tag_commit, "source_revision": release.source_revision, "rootfs_sha256": release.rootfs_sha256 },
            "base": base,
            "verdict": report.verdict,
            "checks": report.checks,
            "environment_lock": env_text,
            "inputs_lock": inputs_text,
            "steps": report.steps,
            "pinned_images": ctx.images,
            "backend": report.backend,
            "microvm": report.microvm,
            "prepared_environment": prepared.as_ref().map(|p| serde_json::json!({
                "key": p.key,
                "recipe": p.meta().ok().map(|m| m.recipe),
            })),
        }),
    );
    write_atomic(
        &o.out.join("attestation.json"),
        serde_json::to_string_pretty(&statement)
            .expect("plain JSON")
            .as_bytes(),
    )?;
    clock.lap("outputs");
    // Unmount before the work directory goes (or is kept: then env/upper holds what the
    // build changed on top of the prepared environment).
    let prepared_root = overlay.as_ref().map(|ov| ov.lower_source().to_path_buf());
    drop(overlay);
    clock.lap("unmount");
    if o.keep_work {
        let kept = work.keep();
        let env = match &prepared_root {
            Some(base) => format!(
                "the build's changes in {}, over the prepared environment {}",
                kept.join("env/upper").display(),
                base.display()
            ),
            None if ctx.root_shared => format!(
                "the environment was the prepared {}, unchanged; the run's changes were on the VM's root disk",
                root.display()
            ),
            None => format!("env root: {}", root.display()),
        };
        say(
            o,
            &format!("work directory kept: {} ({env})", kept.display()),
        );
    } else {
        drop(work);
    }
    clock.lap("clean up");
    let exit_code = report.verdict.exit_code();
    Ok(Outcome { report, exit_code })
}
