//! A reproduction's jobs in microVMs (`--backend microvm`): the guest kernel (by default the
//! `linux` package of the environment's day, from the archive), one persistent root disk
//! for the whole reproduction, and the mirror and pinned-image registry on host listeners
//! that the guest reaches through qemu's forwards at the same loopback ports a container
//! job uses.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::inputs::archive::Archive;
use crate::inputs::fetch::Fetcher;
use crate::inputs::images::PinnedImageServer;
use crate::inputs::lock::InputsLock;
use crate::inputs::mirror::{Mirror, MirrorConfig};
use crate::job::{Job, JobOutcome};
use crate::vm::{self, RootDisk, VmOptions};

use super::steps::{MIRROR_PORT, StepContext};

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicrovmChoice {
    /// `--kernel`; None: the `linux` package of the environment's day.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub memory_mib: u64,
    pub cpus: u32,
}

impl Default for MicrovmChoice {
    fn default() -> Self {
        MicrovmChoice {
            kernel: None,
            initrd: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 2,
        }
    }
}

/// Guest memory of a reproduction's VMs: podman builds in them.
pub const DEFAULT_MEMORY_MIB: u64 = 2048;

/// Free space on the environment's root disk (sparse: only what is written costs).
const ROOT_HEADROOM_MIB: u64 = 16 * 1024;

/// Where the guest kernel came from.
#[derive(Debug, Clone, Serialize)]
pub struct KernelOrigin {
    /// `package` (the archive's `linux` of the day) or `path` (`--kernel`).
    pub kind: String,
    /// The package URL, or the path given.
    pub source: String,
    /// The package's version and sha256 (from the day's database), for `package`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_sha256: Option<String>,
}

/// The run record's account of the machine.
#[derive(Debug, Clone, Serialize)]
pub struct VmRecord {
    pub accel: String,
    pub accel_detail: String,
    pub kernel_release: String,
    pub kernel_sha256: String,
    pub kernel_origin: KernelOrigin,
    pub memory_mib: u64,
    pub cpus: u32,
    pub root_disk: String,
}

/// The microVM backend of one reproduction.
pub struct MicroVm {
    opts: VmOptions,
    disk_image: PathBuf,
    disk: RefCell<Option<RootDisk>>,
    pub record: VmRecord,
}

impl MicroVm {
    /// Resolve the kernel (fetching and unpacking the day's `linux` package when none was
    /// given) and the accelerator. `work` is the reproduction's work directory.
    pub fn prepare(
        choice: &MicrovmChoice,
        archive_url: &str,
        day: &str,
        fetcher: &Fetcher,
        lock: &mut InputsLock,
        work: &Path,
    ) -> Result<MicroVm> {
        let mut opts = VmOptions {
            memory_mib: choice.memory_mib,
            cpus: choice.cpus,
            disk_headroom_mib: 2048,
            ..VmOptions::default()
        };
        let origin = match &choice.kernel {
            Some(k) => {
                opts.kernel = Some(k.clone());
                opts.initrd = choice.initrd.clone();
                KernelOrigin {
                    kind: "path".into(),
                    source: k.display().to_string(),
                    package_version: None,
                    package_sha256: None,
                }
            }
            None => {
                if let Some(i) = &choice.initrd {
                    return Err(Error::bad_input(
                        format!("--initrd {}", i.display()),
                        "--initrd needs --kernel PATH (a bzImage) as well",
                    ));
                }
                let archive = Archive::new(archive_url, fetcher).with_repos(vec!["core".into()]);
                let p = archive.resolve(day, "linux").map_err(|e| {
                    Error::Environment(format!(
                        "the guest kernel (the `linux` package of {day} in core): {e}; \
                         pass --kernel PATH to choose one"
                    ))
                })?;
                let blob = fetcher.fetch_recorded(lock, &p.url, Some(&p.sha256))?;
                let k = vm::kernel::from_package(&blob.path, &work.join("guest-kernel"))?;
                opts.kernel = Some(k.kernel);
                opts.modules_root = Some(k.modules_root);
                KernelOrigin {
                    kind: "package".into(),
                    source: p.url.clone(),
                    package_version: Some(p.version.clone()),
                    package_sha256: Some(p.sha256.clone()),
                }
            }
        };
        let info = vm::machine_info(&opts)?;
        Ok(MicroVm {
            disk_image: work.join("root.img"),
            disk: RefCell::new(None),
            record: VmRecord {
                accel: info.accel,
                accel_detail: info.accel_detail,
                kernel_release: info.kernel_release,
                kernel_sha256: info.kernel_sha256,
                kernel_origin: origin,
                memory_mib: info.memory_mib,
                cpus: info.cpus,
                root_disk: "one ext4 disk made from the environment root (mke2fs -d) before \
                            the first job and used by every job of the reproduction"
                    .into(),
            },
            opts,
        })
    }

    /// The root disk, made from `root` at the first job.
    fn disk(&self, root: &Path) -> Result<RootDisk> {
        let mut d = self.disk.borrow_mut();
        if d.is_none() {
            *d = Some(RootDisk::create(root, &self.disk_image, ROOT_HEADROOM_MIB)?);
        }
        Ok(d.clone().expect("made above"))
    }

    /// Run one job: the mirror (and the pinned images' registry) on host listeners the
    /// guest reaches at the job's loopback ports.
    pub fn run(&self, ctx: &StepContext, job: &Job) -> Result<(JobOutcome, InputsLock)> {
        let mut lock = InputsLock::default();
        let mut forwards: Vec<(u16, SocketAddr)> = Vec::new();
        let mut mirror = None;
        let mut registry = None;
        let bind = |what: &str| {
            let l = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::Sandbox(format!("{what} listener on 127.0.0.1: {e}")))?;
            let a = l
                .local_addr()
                .map_err(|e| Error::Sandbox(format!("{what} listener: {e}")))?;
            Ok::<_, Error>((l, a))
        };
        for &port in &job.listen {
            if port == MIRROR_PORT {
                let (l, a) = bind("mirror")?;
                mirror = Some(Mirror::serve(
                    l,
                    MirrorConfig {
                        store: ctx.store.clone(),
                        upstream: ctx.upstream.to_string(),
                        offline: ctx.offline,
                    },
                )?);
                forwards.push((port, a));
            } else if registry.is_none() && !ctx.images.is_empty() {
                let (l, a) = bind("image registry")?;
                let shown = SocketAddr::from(([127, 0, 0, 1], port));
                registry = Some(PinnedImageServer::serve_as(
                    l,
                    ctx.store.clone(),
                    &ctx.images,
                    Some(shown),
                )?);
                forwards.push((port, a));
            }
        }
        let mut opts = self.opts.clone();
        opts.forwards = forwards;
        opts.root_disk = Some(self.disk(&ctx.root)?);
        let outcome = vm::run(job, &opts);
        if let Some(m) = mirror {
            lock.entries.extend(m.stop().entries);
        }
        if let Some(r) = registry {
            lock.entries.extend(r.stop().entries);
        }
        Ok((outcome?, lock))
    }

    /// Bring the disk's `guest_dir` back into the host's root directory (what the pipeline
    /// reads there, e.g. the pacman database for the environment lock). Before the first
    /// job the host copy is current already.
    pub fn sync_out(&self, root: &Path, guest_dir: &str) -> Result<()> {
        if let Some(d) = self.disk.borrow().as_ref() {
            d.extract_dir(guest_dir, &root.join(guest_dir.trim_start_matches('/')))?;
        }
        Ok(())
    }

    /// A file the host adds to the environment, onto the root disk. Before the first job
    /// the disk is not made yet: a file already written into the root directory
    /// (`in_root_dir`) reaches it when it is made from there; otherwise (a shared prepared
    /// root is never written) the disk is made from `root` now and the file written onto it.
    pub fn write_file(
        &self,
        root: &Path,
        guest_path: &str,
        bytes: &[u8],
        in_root_dir: bool,
    ) -> Result<()> {
        let made = self.disk.borrow().clone();
        match made {
            Some(d) => d.write_file(guest_path, bytes, 0o644),
            None if in_root_dir => Ok(()),
            None => self.disk(root)?.write_file(guest_path, bytes, 0o644),
        }
    }
}
