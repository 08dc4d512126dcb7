//! The microVM backend: each job in a qemu `-M microvm` guest (`src/vm`) with its own
//! kernel and wall clock. For a reproduction ([`MicroVm::for_reproduction`]) the guest
//! kernel is by default the `linux` package of the environment's day, from the archive, and
//! one root disk persists across the reproduction's jobs; for `reprobox run`
//! ([`MicroVm::for_run`]) the default is the host's kernel and each job's root disk is its
//! own. The services a job reaches are served on host listeners that the guest reaches
//! through qemu's forwards at the same loopback ports a container job uses.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Backend, EnvRoot, Services};
use crate::error::{Error, Result};
use crate::inputs::archive::Archive;
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::InputsLock;
use crate::job::{Job, JobOutcome, RootfsSource};
use crate::vm::kernel::KernelSource;
use crate::vm::{self, RootDisk, VmOptions};

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicrovmChoice {
    /// `--kernel`; None: the `linux` package of the environment's day (a reproduction) or
    /// the host's kernel (`reprobox run`).
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

/// Guest memory of a `reprobox run` job.
pub const RUN_MEMORY_MIB: u64 = 1024;

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

/// A microVM session: the guest kernel and machine, and for a reproduction the root disk
/// every job boots with.
pub struct MicroVm {
    opts: VmOptions,
    /// Where the reproduction's persistent root disk goes; `None`: each job's own.
    disk_image: Option<PathBuf>,
    disk: RefCell<Option<RootDisk>>,
    /// The run record's account of the machine (a reproduction's).
    pub record: Option<VmRecord>,
}

impl MicroVm {
    /// The session of one `reprobox run` job: the given kernel, else the host's.
    pub fn for_run(choice: &MicrovmChoice) -> Result<MicroVm> {
        let (kernel, initrd) =
            match KernelSource::from_options(choice.kernel.as_deref(), choice.initrd.as_deref())? {
                KernelSource::Path { kernel, initrd } => (kernel, initrd),
                KernelSource::SnapshotPackage => (vm::kernel::host_kernel()?, None),
            };
        Ok(MicroVm {
            opts: VmOptions {
                kernel: Some(kernel),
                initrd,
                memory_mib: choice.memory_mib,
                cpus: choice.cpus,
                ..VmOptions::default()
            },
            disk_image: None,
            disk: RefCell::new(None),
            record: None,
        })
    }

    /// The session of one reproduction: resolve the kernel (fetching and unpacking the
    /// day's `linux` package when none was given) and the accelerator. `work` is the
    /// reproduction's work directory, where the root disk is made at the first job.
    pub fn for_reproduction(
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
        let source =
            KernelSource::from_options(choice.kernel.as_deref(), choice.initrd.as_deref())?;
        let origin = match source {
            KernelSource::Path { kernel: k, initrd } => {
                let source = k.display().to_string();
                opts.kernel = Some(k);
                opts.initrd = initrd;
                KernelOrigin {
                    kind: "path".into(),
                    source,
                    package_version: None,
                    package_sha256: None,
                }
            }
            KernelSource::SnapshotPackage => {
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
            disk_image: Some(work.join("root.img")),
            disk: RefCell::new(None),
            record: Some(VmRecord {
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
            }),
            opts,
        })
    }

    /// The reproduction's root disk, made from `root` at the first job.
    fn disk(&self, image: &Path, root: &Path) -> Result<RootDisk> {
        let mut d = self.disk.borrow_mut();
        if d.is_none() {
            *d = Some(RootDisk::create(root, image, ROOT_HEADROOM_MIB)?);
        }
        Ok(d.clone().expect("made above"))
    }
}

impl Backend for MicroVm {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn run(&self, job: &Job, services: &Services) -> Result<(JobOutcome, InputsLock)> {
        let mut listeners = Vec::new();
        let mut forwards: Vec<(u16, SocketAddr)> = Vec::new();
        for &port in &job.listen {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| {
                Error::Sandbox(format!("listener on 127.0.0.1 for guest port {port}: {e}"))
            })?;
            let a = l
                .local_addr()
                .map_err(|e| Error::Sandbox(format!("listener for guest port {port}: {e}")))?;
            forwards.push((port, a));
            listeners.push((port, l, Some(SocketAddr::from(([127, 0, 0, 1], port)))));
        }
        // qemu forwards TCP alone: the guest's resolver is reached over TCP 53 (`use-vc`).
        let serving = services.start(listeners, Vec::new())?;
        let mut opts = self.opts.clone();
        opts.forwards = forwards;
        if let Some(image) = &self.disk_image {
            let RootfsSource::Dir(root) = &job.rootfs else {
                return Err(Error::Environment(
                    "a reproduction's microVM job needs its environment root as a directory".into(),
                ));
            };
            opts.root_disk = Some(self.disk(image, root)?);
        }
        // The egress lists what nothing in the guest's network answered among its refusals.
        let sink = services.egress.as_ref().map(|e| e.unanswered_sink());
        let outcome = vm::run_watched(job, &opts, sink.as_ref());
        let served = serving.stop();
        Ok((outcome?, served))
    }

    /// Bring the disk's `guest_dir` back into the host's root directory (what the pipeline
    /// reads there, e.g. the pacman database for the environment lock). Before the first
    /// job the host copy is current already.
    fn sync_root_dir(&self, root: &EnvRoot, guest_dir: &str) -> Result<()> {
        if root.shared() {
            return Err(super::shared_refusal(root, guest_dir));
        }
        if let Some(d) = self.disk.borrow().as_ref() {
            let dir = root.dir();
            d.extract_dir(guest_dir, &dir.join(guest_dir.trim_start_matches('/')))?;
        }
        Ok(())
    }

    /// A file the host adds to the environment: into the root directory (unless it is a
    /// shared prepared environment) and onto the root disk. Before the first job the disk
    /// is not made yet: a file written into the root directory reaches it when it is made
    /// from there; a shared root is never written, so the disk is made from it now and the
    /// file written onto it.
    fn write_root_file(&self, root: &EnvRoot, guest_path: &str, bytes: &[u8]) -> Result<()> {
        let dir = root.dir();
        if !root.shared() {
            super::write_under(&dir, guest_path, bytes)?;
        }
        let Some(image) = &self.disk_image else {
            return Ok(());
        };
        let made = self.disk.borrow().clone();
        match made {
            Some(d) => d.write_file(guest_path, bytes, 0o644),
            None if !root.shared() => Ok(()),
            None => self.disk(image, &dir)?.write_file(guest_path, bytes, 0o644),
        }
    }

    fn record(&self) -> Option<serde_json::Value> {
        self.record
            .as_ref()
            .map(|r| serde_json::to_value(r).expect("plain JSON"))
    }
}
