//! The container backend: each job in a fresh sandbox (`src/sandbox`), its services served
//! on listening sockets created inside the job's own network namespace.

use super::{Backend, EnvRoot, Services};
use crate::error::{IoContext, Result};
use crate::inputs::lock::InputsLock;
use crate::job::{Job, JobOutcome};

/// The container sandbox. The environment root is used in place.
pub struct Container;

impl Backend for Container {
    fn name(&self) -> &'static str {
        "container"
    }

    fn run(&self, job: &Job, services: &Services) -> Result<(JobOutcome, InputsLock)> {
        // The egress lists what nothing in the job's network answered among its refusals.
        let sink = services.egress.as_ref().map(|e| e.unanswered_sink());
        let mut running = crate::sandbox::spawn_watched(job, sink)?;
        let listeners = std::mem::take(&mut running.listeners)
            .into_iter()
            .map(|(port, l)| (port, l, None))
            .collect();
        // Started only once the job's sockets exist; a failure to start kills the job
        // (dropping `running`).
        let udp = std::mem::take(&mut running.udp_sockets);
        let serving = services.start(listeners, udp)?;
        let outcome = running.wait();
        let served = serving.stop();
        Ok((outcome?, served))
    }

    fn sync_root_dir(&self, _root: &EnvRoot, _guest_dir: &str) -> Result<()> {
        // The job wrote the host directory itself.
        Ok(())
    }

    fn write_root_file(&self, root: &EnvRoot, guest_path: &str, bytes: &[u8]) -> Result<()> {
        match root {
            EnvRoot::Shared(_) => Err(super::shared_refusal(root, guest_path)),
            EnvRoot::Owned(dir) => super::write_under(dir, guest_path, bytes).map(drop),
            EnvRoot::Overlay { overlay, .. } => {
                let host = super::write_under(overlay.root(), guest_path, bytes)?;
                // Host root's files in an overlay over a premapped root are nobody's to the
                // job: give what was written (the file and the directories up to the first
                // one the environment had) to the job's root.
                let range = overlay.range();
                let mut p = host.as_path();
                loop {
                    let md = std::fs::symlink_metadata(p).ctx("stat", p)?;
                    use std::os::unix::fs::MetadataExt;
                    if md.uid() != 0 || p == overlay.root() {
                        break;
                    }
                    std::os::unix::fs::chown(p, Some(range.host_uid), Some(range.host_gid))
                        .ctx("chown", p)?;
                    match p.parent() {
                        Some(parent) => p = parent,
                        None => break,
                    }
                }
                Ok(())
            }
        }
    }
}
