//! Where a job runs: the one seam between what a job is (`job.rs`) and the two places that
//! can run it, the container sandbox (`container.rs` over `src/sandbox`) and a microVM
//! session (`microvm.rs` over `src/vm`).
//!
//! `reprobox run` and `reprobox reproduce` both go through [`Backend`]; the servers a job
//! reaches on its loopback ([`Services`]: the archive mirror, the pinned base images) are
//! wired once, in `services.rs`, for both backends: the container creates their listening
//! sockets inside the job's network namespace, the microVM binds them on the host and
//! forwards the guest's loopback ports to them.
//!
//! The pipeline reads and writes the environment root only through
//! [`Backend::sync_root_dir`] and [`Backend::write_root_file`]: on the microVM the
//! environment lives on the VM's root disk once the first job ran, and a prepared
//! environment of the store ([`EnvRoot::Shared`]) is never written on the host.

pub mod container;
pub mod microvm;
mod services;

use std::path::{Path, PathBuf};

pub use services::{Services, Serving};

use crate::error::{Error, IoContext, Result};
use crate::inputs::lock::InputsLock;
use crate::inputs::prepared::PreparedEnv;
use crate::job::{Job, JobOutcome};
use crate::sandbox::overlay::Overlay;

pub use container::Container;
pub use microvm::{MicroVm, MicrovmChoice};

/// Where the user asked the jobs to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The container sandbox.
    #[default]
    Container,
    /// qemu microVMs.
    Microvm(MicrovmChoice),
}

/// A place that runs jobs.
pub trait Backend {
    /// `container` or `microvm`, as the run record and report say.
    fn name(&self) -> &'static str;

    /// Run `job` with `services` answering on the job's loopback ports (`job.listen`).
    /// Returns the job's outcome and every request the services answered.
    fn run(&self, job: &Job, services: &Services) -> Result<(JobOutcome, InputsLock)>;

    /// Make the host's copy of `guest_dir` (absolute, inside the environment) of `root`
    /// current before the caller reads it.
    fn sync_root_dir(&self, root: &EnvRoot, guest_dir: &str) -> Result<()>;

    /// Add a file to the environment (`guest_path` absolute) so that the next job sees it.
    fn write_root_file(&self, root: &EnvRoot, guest_path: &str, bytes: &[u8]) -> Result<()>;

    /// The run record's account of the machine (the microVM's kernel and accelerator).
    fn record(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The environment root a reproduction's jobs run in: one of three kinds, each with its
/// own rule for what may be written where.
pub enum EnvRoot {
    /// Unpacked (and rolled to its day) for this run alone, in its work directory: the
    /// run may write it in place.
    Owned(PathBuf),
    /// A private overlay over a prepared environment of the store (the container backend,
    /// as root): writes land in the overlay's upper layer, and the root's files already
    /// belong to the job's host ids (`Job::root_premapped`). Unmounted when dropped.
    Overlay {
        overlay: Overlay,
        prepared: PreparedEnv,
    },
    /// A prepared environment used as it is (the microVM makes its root disk from it): it
    /// is never written on the host; what the run changes lives on the VM's disk.
    Shared(PreparedEnv),
}

impl EnvRoot {
    /// The host directory the jobs' root is made from.
    pub fn dir(&self) -> PathBuf {
        match self {
            EnvRoot::Owned(p) => p.clone(),
            EnvRoot::Overlay { overlay, .. } => overlay.root().to_path_buf(),
            EnvRoot::Shared(p) => p.root(),
        }
    }

    /// The prepared environment this root shows, if any.
    pub fn prepared(&self) -> Option<&PreparedEnv> {
        match self {
            EnvRoot::Owned(_) => None,
            EnvRoot::Overlay { prepared, .. } | EnvRoot::Shared(prepared) => Some(prepared),
        }
    }

    /// The root's files already belong to the job's host ids (an overlay over an idmapped
    /// lower layer): the sandbox must not idmap it again.
    pub fn premapped(&self) -> bool {
        matches!(self, EnvRoot::Overlay { .. })
    }

    /// Nothing may be written into the host directory.
    pub fn shared(&self) -> bool {
        matches!(self, EnvRoot::Shared(_))
    }
}

/// Write `bytes` at `guest_path` under the host directory `dir`, creating parents; returns
/// the host path.
fn write_under(dir: &Path, guest_path: &str, bytes: &[u8]) -> Result<PathBuf> {
    let host = dir.join(guest_path.trim_start_matches('/'));
    if let Some(parent) = host.parent() {
        std::fs::create_dir_all(parent).ctx("create", parent)?;
    }
    std::fs::write(&host, bytes).ctx("write", &host)?;
    Ok(host)
}

/// The refusal to write a shared prepared environment on the host.
fn shared_refusal(root: &EnvRoot, path: &str) -> Error {
    Error::Environment(format!(
        "{path}: the root {} is a shared prepared environment and is never written on the host",
        root.dir().display()
    ))
}

/// Open the backend the user chose for one `reprobox run` job (a microVM without a
/// `--kernel` boots the host's kernel).
pub fn for_run(choice: &BackendChoice) -> Result<Box<dyn Backend>> {
    Ok(match choice {
        BackendChoice::Container => Box::new(Container),
        BackendChoice::Microvm(c) => Box::new(MicroVm::for_run(c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_root_is_written_in_place_and_is_neither_premapped_nor_shared() {
        let t = tempfile::tempdir().unwrap();
        let root = EnvRoot::Owned(t.path().to_path_buf());
        assert!(!root.premapped() && !root.shared() && root.prepared().is_none());
        Container
            .write_root_file(&root, "/etc/containers/x.conf", b"x")
            .unwrap();
        assert_eq!(
            std::fs::read(t.path().join("etc/containers/x.conf")).unwrap(),
            b"x"
        );
        // The container's environment is its directory: nothing to bring back.
        Container
            .sync_root_dir(&root, "/var/lib/pacman/local")
            .unwrap();
    }

    #[test]
    fn a_shared_prepared_root_is_refused_by_the_container() {
        let t = tempfile::tempdir().unwrap();
        let p = PreparedEnv {
            key: "k".into(),
            dir: t.path().to_path_buf(),
        };
        let root = EnvRoot::Shared(p);
        assert!(root.shared() && !root.premapped());
        assert_eq!(root.dir(), t.path().join("root"));
        let e = Container
            .write_root_file(&root, "/etc/x", b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never written on the host"), "{e}");
        assert!(!t.path().join("root/etc/x").exists());
    }
}
