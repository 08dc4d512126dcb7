//! The build environment: the pinned base root filesystem, unpacked as it is (the sandbox
//! mounts it idmapped, so the base's root is the job's root), and a workspace owned by the
//! id the job's root maps to (binds are not idmapped).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
