//! Stage 4, the build environment: the pinned base root filesystem, unpacked as it is (the
//! sandbox mounts it idmapped, so the base's root is the job's root) and rolled to its day
//! by the environment steps, or taken from the store's prepared environments when the same
//! base went through the same steps before; and a workspace owned by the id the job's root
//! maps to (binds are not idmapped).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Run;
use super::steps::{JobContext, Selected};
use crate::backend::EnvRoot;
use crate::envlock::EnvLock;
use crate::inputs::prepared::{EnvRecipe, PreparedEnv, PreparedEnvs};
use crate::report::StepRecord;
use crate::sandbox::overlay::Overlay;

use crate::error::{Error, IoContext, Result};
use crate::inputs::archive::parse_sha256sums;
use crate::inputs::fetch::Fetcher;
use crate::job::IdRange;
use crate::plan::Plan;

/// The host id range every job of a reproduction maps (0 inside → 100000 outside).
pub const ID_RANGE: IdRange = IdRange {
    host_uid: 100_000,
    host_gid: 100_000,
    count: 65_536,
};

/// What the base was pinned to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PinnedBase {
    pub url: String,
    pub sha256: String,
    pub sha256sums_url: String,
}

/// Pin the base tarball: its sha256 as the base's `sha256sums.txt` lists it.
pub fn pin_base(
    plan: &Plan,
    fetcher: &Fetcher,
    lock: &mut crate::inputs::lock::InputsLock,
) -> Result<PinnedBase> {
    let sums_blob = fetcher.fetch_recorded(lock, &plan.base.sha256sums, None)?;
    let sums = std::fs::read_to_string(&sums_blob.path).ctx("read", &sums_blob.path)?;
    let fname = plan.base.url.rsplit('/').next().unwrap_or_default();
    let table = parse_sha256sums(&sums);
    let sha = table.get(fname).map(|s| s.to_string()).ok_or_else(|| {
        Error::network(
            &plan.base.sha256sums,
            format!("does not list {fname}, so the base cannot be pinned"),
        )
    })?;
    Ok(PinnedBase {
        url: plan.base.url.clone(),
        sha256: sha,
        sha256sums_url: plan.base.sha256sums.clone(),
    })
}

/// Fetch the pinned base and unpack its root filesystem to `root` (which must not exist;
/// its parent must). The workspace's mount point is created in it.
pub fn unpack_base(
    plan: &Plan,
    fetcher: &Fetcher,
    lock: &mut crate::inputs::lock::InputsLock,
    base: &PinnedBase,
    root: &Path,
) -> Result<()> {
    let blob = fetcher.fetch_recorded(lock, &plan.base.url, Some(&base.sha256))?;
    let parent = root.parent().unwrap_or(Path::new("/"));
    let dest = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .ctx("create a directory in", parent)?;
    crate::inputs::unpack::unpack(&blob.path, dest.path())?;
    let tree = match &plan.base.subdir {
        Some(s) => dest.path().join(s),
        None => dest.path().to_path_buf(),
    };
    if !tree.join("usr").is_dir() && !tree.join("bin").exists() {
        return Err(Error::Environment(format!(
            "{}: the base tarball holds no root filesystem at {}",
            plan.base.url,
            plan.base.subdir.as_deref().unwrap_or("its top")
        )));
    }
    std::fs::rename(&tree, root).ctx("move the unpacked base to", root)?;
    // The workspace's mount point.
    let ws = root.join(crate::plan::WORKSPACE.trim_start_matches('/'));
    std::fs::create_dir_all(&ws).ctx("create", &ws)?;
    Ok(())
}

/// The id map every job of a reproduction uses: [`ID_RANGE`] as root; as another user the
/// sandbox maps the user's own subordinate ranges, and the user already owns the workspace.
pub fn id_map() -> Option<IdRange> {
    is_root().then_some(ID_RANGE)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Make a host directory the job's root's own: as root, shift every owner in the tree by
/// the range's base (0 → host_uid), keeping modes (chown clears setuid bits, so they are
/// restored). As another user there is nothing to do.
pub fn give_to_job(root: &Path) -> Result<()> {
    match id_map() {
        Some(range) => shift_ownership(root, range),
        None => Ok(()),
    }
}

fn shift_ownership(root: &Path, range: IdRange) -> Result<()> {
    fn walk(p: &Path, range: IdRange) -> Result<()> {
        let md = std::fs::symlink_metadata(p).ctx("stat", p)?;
        let (uid, gid) = (md.uid(), md.gid());
        if uid < range.count && gid < range.count {
            let nu = uid + range.host_uid;
            let ng = gid + range.host_gid;
            std::os::unix::fs::lchown(p, Some(nu), Some(ng)).ctx("chown", p)?;
            if !md.file_type().is_symlink() && md.mode() & 0o7000 != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                    .ctx("chmod", p)?;
            }
        }
        if md.is_dir() {
            for e in std::fs::read_dir(p).ctx("read directory", p)? {
                walk(&e.ctx("read directory", p)?.path(), range)?;
            }
        }
        Ok(())
    }
    walk(root, range)
}

/// Why this run does not use the store's prepared environments, or `None` when it does.
/// `on_vm`: the microVM backend (it takes a prepared environment as it is, and needs no
/// root for that); `as_root`: the overlay a container run sees it through needs root.
pub fn prepared_env_refusal(
    use_prepared_envs: bool,
    on_vm: bool,
    as_root: bool,
    env_first: bool,
) -> Option<&'static str> {
    if !use_prepared_envs {
        Some("--fresh-env")
    } else if on_vm {
        None
    } else if !as_root {
        Some(
            "not running as root (the prepared environment is shared through an idmapped overlay, which needs root)",
        )
    } else if !env_first {
        Some("the profile interleaves environment and build steps")
    } else {
        None
    }
}

/// What stage 4 leaves for the build.
pub struct Environment {
    /// The steps still to run in it (all of them when the environment steps were not run
    /// apart, in a root of this run's own).
    pub rest: Vec<crate::plan::PlannedStep>,
    /// The environment lock, when the environment steps are done.
    pub lock: Option<EnvLock>,
    /// The environment step that failed.
    pub failed: Option<String>,
}

impl Run<'_> {
    /// Stage 4: give `ctx` its environment root. A prepared environment of the same recipe
    /// is reused (a hit); else, where prepared environments can be used, the environment
    /// steps run in a staging root that is published once they all succeed; else the base
    /// is unpacked for this run alone and every step runs in it.
    pub fn prepare_environment(
        &mut self,
        ctx: &mut JobContext,
        base: &PinnedBase,
        selected: &Selected,
        work: &Path,
    ) -> Result<Environment> {
        let (plan, o) = (self.plan, self.o);
        let on_vm = matches!(o.backend, crate::backend::BackendChoice::Microvm(_));
        let refusal = prepared_env_refusal(
            o.use_prepared_envs,
            on_vm,
            id_map().is_some(),
            selected.env_first,
        );
        let envs = PreparedEnvs::new(self.fetcher.store().root());
        let recipe = EnvRecipe::new(
            &base.sha256,
            plan.base.subdir.as_deref(),
            Some(&selected.day),
            selected
                .env()
                .iter()
                .map(|s| (s.name.clone(), s.commands.clone()))
                .collect(),
        );
        let rest = selected.steps[selected.n_env..].to_vec();
        let hit = match refusal {
            Some(_) => None,
            None => envs.lookup(&recipe)?,
        };
        if let Some(p) = hit {
            self.say(&format!(
                "environment prepared earlier: {}",
                p.dir.display()
            ));
            for s in selected.env() {
                self.ledger.steps.push(StepRecord {
                    name: s.name.clone(),
                    optional: s.optional,
                    exit_code: 0,
                    wall_time_ms: 0,
                    enforcement: Vec::new(),
                    cached: Some(p.key.clone()),
                    env: s.env.clone(),
                    scratch: Vec::new(),
                    nested_podman: None,
                    produced: Vec::new(),
                });
            }
            let lock = p.env_lock()?;
            self.ledger.notes.push(format!(
                "the environment steps ran earlier, when the prepared environment {} was made from the same base and the same steps; its lock is reused",
                p.key
            ));
            ctx.root = self.root_over(ctx, p, on_vm, work)?;
            return Ok(Environment {
                rest,
                lock: Some(lock),
                failed: None,
            });
        }
        if refusal.is_none() && !on_vm {
            let staging = envs.stage()?;
            self.phase(&format!(
                "unpacking the base root filesystem {}",
                plan.base.url
            ));
            let staged = staging.root();
            unpack_base(plan, self.fetcher, &mut self.ledger.inputs, base, &staged)?;
            self.interrupted()?;
            ctx.root = EnvRoot::Owned(staged.clone());
            let ran = self.run_steps(ctx, selected.env())?;
            let lock = self.env_lock(&staged, &selected.day)?;
            if ran.all_ok {
                let p = envs.publish(staging, &recipe, &lock)?;
                self.say(&format!(
                    "environment prepared and kept: {}",
                    p.dir.display()
                ));
                ctx.root = self.root_over(ctx, p, on_vm, work)?;
            } else {
                // Not kept: build in the staged root itself, and let it go afterwards.
                let r = work.join("base");
                std::fs::rename(&staged, &r).ctx("move the environment to", &r)?;
                drop(staging);
                ctx.root = EnvRoot::Owned(r);
            }
            return Ok(Environment {
                rest,
                lock: Some(lock),
                failed: ran.failed,
            });
        }
        let why = refusal.or(on_vm.then_some(
            "--backend microvm and no environment prepared earlier for this base, day and steps (the microVM prepares its environment on its root disk, which is not kept; a container run as root prepares one and keeps it in the store)",
        ));
        if let Some(why) = why {
            self.ledger.notes.push(format!(
                "the environment was prepared from the base for this run only: {why}"
            ));
        }
        self.phase(&format!(
            "unpacking the base root filesystem {}",
            plan.base.url
        ));
        let r = work.join("base");
        unpack_base(plan, self.fetcher, &mut self.ledger.inputs, base, &r)?;
        self.interrupted()?;
        ctx.root = EnvRoot::Owned(r);
        Ok(Environment {
            rest: selected.steps.clone(),
            lock: None,
            failed: None,
        })
    }

    /// The root a run sees a prepared environment through: as it is on the microVM (only
    /// its root disk is made from it), else a private overlay in the work directory, with
    /// the nested podman's storage and temporary files in plain scratch directories.
    fn root_over(
        &mut self,
        ctx: &mut JobContext,
        prepared: PreparedEnv,
        on_vm: bool,
        work: &Path,
    ) -> Result<EnvRoot> {
        if on_vm {
            return Ok(EnvRoot::Shared(prepared));
        }
        let overlay = Overlay::mount(&prepared.root(), &work.join("env"), ID_RANGE)?;
        ctx.scratch = scratch_binds(overlay.root(), work)?;
        Ok(EnvRoot::Overlay { overlay, prepared })
    }
}

/// The nested podman's storage and temporary files (the build's heaviest writes) go to
/// plain directories of the run rather than through the overlay: both start empty in a
/// prepared environment, and nothing of them outlives the run. Only over an empty directory:
/// never hide what the environment holds.
fn scratch_binds(root: &Path, work: &Path) -> Result<Vec<crate::job::Bind>> {
    let mut binds = Vec::new();
    for (dir, dst, mode) in [
        ("containers", "/var/lib/containers", 0o700),
        ("var-tmp", "/var/tmp", 0o1777),
    ] {
        let inside = root.join(dst.trim_start_matches('/'));
        if std::fs::read_dir(&inside).is_ok_and(|mut d| d.next().is_some()) {
            continue;
        }
        let src = work.join(dir);
        std::fs::create_dir_all(&src).ctx("create", &src)?;
        give_to_job(&src)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode)).ctx("chmod", &src)?;
        binds.push(crate::job::Bind {
            src,
            dst: PathBuf::from(dst),
            read_only: false,
        });
    }
    Ok(binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_environments_are_refused_for_a_reason_the_report_can_name() {
        assert_eq!(
            prepared_env_refusal(false, false, true, true),
            Some("--fresh-env")
        );
        assert_eq!(
            prepared_env_refusal(false, true, true, true),
            Some("--fresh-env")
        );
        // The microVM reads one without root.
        assert_eq!(prepared_env_refusal(true, true, false, false), None);
        assert!(
            prepared_env_refusal(true, false, false, true)
                .unwrap()
                .contains("not running as root")
        );
        assert!(
            prepared_env_refusal(true, false, true, false)
                .unwrap()
                .contains("interleaves")
        );
        assert_eq!(prepared_env_refusal(true, false, true, true), None);
    }

    #[test]
    fn scratch_binds_only_over_empty_directories() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("var/lib/containers/storage")).unwrap();
        std::fs::create_dir_all(root.join("var/tmp")).unwrap();
        let binds = scratch_binds(&root, t.path()).unwrap();
        assert_eq!(binds.len(), 1, "{binds:?}");
        assert_eq!(binds[0].dst, PathBuf::from("/var/tmp"));
        assert!(t.path().join("var-tmp").is_dir());
    }
}
