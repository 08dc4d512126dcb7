//! The microVM backend: the same [`Job`] inside a qemu `-M microvm` guest with reprobox's
//! own init (top-level `vm/`), its own kernel and its own wall clock set to the build
//! time.
//!
//! One run: the job's root directory becomes an ext4 disk (`disk.rs`, no root privileges
//! needed), every bind its own disk, a per-run initramfs carries busybox, the modules and
//! the job description (`initramfs.rs`, `guest_protocol.rs`), qemu boots it
//! (`qemu.rs`, KVM when it works, else TCG), the job's output streams back live over
//! virtio-serial, its exit status comes back on a status disk, and writable binds are
//! copied back to the host. qemu is killed on every error path, on timeout and on
//! SIGINT/SIGTERM, and dies with reprobox (PR_SET_PDEATHSIG).
//!
//! Differences from the container backend, by design: the whole machine is the sandbox
//! (no namespaces, caps or Landlock inside; the enforcement list says so); changes to the
//! root filesystem stay on the VM's disk and are discarded (only writable binds come
//! back), unless the caller hands over a persistent [`RootDisk`] (a reproduction does: its
//! environment lives on one disk for all its jobs); the timeout covers boot and job and is
//! an error (exit 3), not an outcome.

pub mod disk;
pub mod guest_protocol;
pub mod initramfs;
pub mod kernel;
pub mod qemu;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::job::{Enforcement, Job, JobOutcome, RootfsSource, UnansweredSink};
use guest_protocol::GuestMount;
use kernel::{GuestKernel, KernelSource};
use qemu::{Drive, Machine, ResolvedAccel};

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when a probe guest boots under it, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// How the VM is built (the job says what runs in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOptions {
    /// The guest kernel (a bzImage); None means the snapshot day's `linux` package, which
    /// needs the pipeline and is an error until a caller provides it.
    pub kernel: Option<PathBuf>,
    /// An extra initramfs loaded before reprobox's own (e.g. carrying the modules of a
    /// kernel whose modules are not under the host's /lib/modules).
    pub initrd: Option<PathBuf>,
    /// Guest memory; the job's `limits.memory`, when set, takes precedence.
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: Accel,
    /// The host-side mirror the guest may reach (and nothing else): the job's `listen`
    /// ports (or the mirror's own port) are forwarded to it.
    pub mirror: Option<SocketAddr>,
    /// Explicit forwards, guest 127.0.0.1:PORT → host address, one per port (a
    /// reproduction's mirror and image registry); when set, `mirror` is not used.
    pub forwards: Vec<(u16, SocketAddr)>,
    /// A persistent root disk used in place of a fresh copy of the job's root directory:
    /// what the job changes in its root stays for the next job (a reproduction's
    /// environment).
    pub root_disk: Option<RootDisk>,
    /// Where the guest kernel's modules are (`<dir>/<release>/`), instead of /lib/modules
    /// (a kernel unpacked from a `linux` package).
    pub modules_root: Option<PathBuf>,
    /// Free space on the root and writable bind disks (sparse: costs nothing unused).
    pub disk_headroom_mib: u64,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            kernel: None,
            initrd: None,
            memory_mib: 1024,
            cpus: 2,
            accel: Accel::Auto,
            mirror: None,
            forwards: Vec::new(),
            root_disk: None,
            modules_root: None,
            disk_headroom_mib: 2048,
        }
    }
}

/// An ext4 image of a root directory that several jobs use in turn, writable: the
/// environment of a reproduction, which the rollback changes, the build runs in and podman
/// stores its image in. Made once (`mke2fs -d`, no root privileges); the host reads back
/// only what it needs ([`RootDisk::extract_dir`]) and adds files with
/// [`RootDisk::write_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDisk {
    pub image: PathBuf,
    /// The source tree had a `lost+found` of its own (else the guest removes mke2fs's).
    pub keep_lost_found: bool,
}

impl RootDisk {
    /// Make the disk at `image` from `root` with `headroom_mib` of free space (sparse).
    pub fn create(root: &Path, image: &Path, headroom_mib: u64) -> Result<RootDisk> {
        let md = fs::metadata(root).ctx("stat", root)?;
        if !md.is_dir() {
            return Err(Error::bad_input(
                format!("root filesystem {}", root.display()),
                "expected a directory",
            ));
        }
        disk::make_ext4(root, image, headroom_mib)?;
        Ok(RootDisk {
            image: image.to_path_buf(),
            keep_lost_found: root.join("lost+found").is_dir(),
        })
    }

    /// Replace `dest` (a host directory) with the disk's `guest_dir` as the jobs left it.
    pub fn extract_dir(&self, guest_dir: &str, dest: &Path) -> Result<()> {
        if fs::symlink_metadata(dest).is_ok() {
            fs::remove_dir_all(dest).ctx("remove", dest)?;
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).ctx("create", p)?;
        }
        disk::extract_dir(&self.image, guest_dir, dest)
    }

    /// Write a file into the disk (parents created, an existing file replaced).
    pub fn write_file(&self, guest_path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        disk::write_file(&self.image, guest_path, bytes, mode)
    }
}

/// What a VM run will boot, for the run record: the kernel and the accelerator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MachineInfo {
    pub accel: String,
    pub accel_detail: String,
    pub kernel_release: String,
    pub kernel: PathBuf,
    pub kernel_sha256: String,
    pub memory_mib: u64,
    pub cpus: u32,
}

/// Resolve the kernel and the accelerator `opts` lead to (the same answers [`run`] gets:
/// the KVM probe is made once per process).
pub fn machine_info(opts: &VmOptions) -> Result<MachineInfo> {
    let source = KernelSource::from_options(opts.kernel.as_deref(), opts.initrd.as_deref())?;
    let guest_kernel = select_kernel(&source, opts)?;
    let qemu_bin = qemu::find_qemu()?;
    let busybox = initramfs::find_busybox()?;
    let (accel, accel_detail) = resolve_accel(opts.accel, &qemu_bin, &guest_kernel, &busybox)?;
    Ok(MachineInfo {
        accel: accel.name().into(),
        accel_detail,
        kernel_release: guest_kernel.release.clone(),
        kernel_sha256: crate::digest::sha256_file(&guest_kernel.kernel)?,
        kernel: guest_kernel.kernel,
        memory_mib: opts.memory_mib,
        cpus: qemu::effective_cpus(accel, opts.cpus),
    })
}

/// A kernel of the host (a `/boot/vmlinuz-*` with its modules under `/lib/modules`) seen as
/// a guest kernel: the file, its release and the modules a reprobox guest loads. This is the
/// public face of the backend's kernel and initramfs rules for code that packages a guest
/// kernel elsewhere (the test world makes Arch's `linux` package from it), so that the
/// module list and the way modules are read stay the backend's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKernel {
    /// The bzImage.
    pub kernel: PathBuf,
    /// Its release (`uname -r` in the guest), read from the bzImage header.
    pub release: String,
    /// `/lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// One module the guest init loads, as found in a kernel's modules tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestModule {
    /// Path relative to the modules directory, as in the tree (`kernel/…/x.ko[.zst]`).
    pub path: String,
    /// The module as plain ELF (what busybox `insmod` loads).
    pub elf: Vec<u8>,
}

impl HostKernel {
    /// The newest `/boot/vmlinuz-*` (by name) whose modules are under `/lib/modules`
    /// (Debian's `linux-image-amd64`); an `Environment` error saying how to get one when
    /// there is none.
    pub fn newest() -> Result<HostKernel> {
        let kernel = kernel::newest_boot_kernel()?;
        let bytes = fs::read(&kernel).ctx("read", &kernel)?;
        let release = kernel::bzimage_release(&bytes)
            .ok_or_else(|| Error::Environment(format!("{} is not a bzImage", kernel.display())))?;
        Ok(HostKernel {
            kernel,
            modules_dir: Path::new("/lib/modules").join(&release),
            release,
        })
    }

    /// The modules the guest init loads (dependencies first, built-in ones left out), each
    /// read as plain ELF; a module that is missing is an `Environment` error naming it.
    pub fn guest_modules(&self) -> Result<Vec<GuestModule>> {
        initramfs::resolve_modules(&self.modules_dir, initramfs::GUEST_MODULES)?
            .into_iter()
            .map(|path| {
                let elf = initramfs::module_bytes(&self.modules_dir.join(&path))?;
                Ok(GuestModule { path, elf })
            })
            .collect()
    }
}

fn select_kernel(source: &KernelSource, opts: &VmOptions) -> Result<GuestKernel> {
    match &opts.modules_root {
        Some(m) => kernel::select_with_modules_root(source, m),
        None => kernel::select(source),
    }
}

/// The job as the guest runs it: a `clock.faketime` job gets the root's own libfaketime with
/// the clock stopped at SOURCE_DATE_EPOCH, exactly as in the container (the guest's wall
/// clock alone starts there but runs on, and whatever a build stamps after its first second
/// would differ). `root_dir` is the root filesystem as a host directory, where the library
/// is looked for.
fn with_faketime<'j>(
    job: &'j Job,
    root_dir: Option<&Path>,
) -> (std::borrow::Cow<'j, Job>, Option<Enforcement>) {
    if !job.clock.faketime {
        return (std::borrow::Cow::Borrowed(job), None);
    }
    let mut guest = job.clone();
    let e = match root_dir {
        Some(r) => crate::sandbox::faketime(job, r, &mut guest.env),
        None => Enforcement {
            feature: "faketime".into(),
            enforced: false,
            detail: "the root disk's source directory is not known: libfaketime not looked for"
                .into(),
        },
    };
    (std::borrow::Cow::Owned(guest), Some(e))
}

/// Run `job` in a microVM, streaming its stdout/stderr to reprobox's own.
pub fn run(job: &Job, opts: &VmOptions) -> Result<JobOutcome> {
    run_watched(job, opts, None)
}

type Sink = Box<dyn Write + Send>;

/// [`run`], handing the job's connects that nothing answered (`Job::watch_unanswered`, seen
/// by the guest kernel's trace events) to `unanswered` once the guest is done.
pub fn run_watched(
    job: &Job,
    opts: &VmOptions,
    unanswered: Option<&UnansweredSink>,
) -> Result<JobOutcome> {
    run_inner(
        job,
        opts,
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
        unanswered,
    )
}

/// [`run`] with the job's stdout and stderr streamed into the given writers.
pub fn run_with_output(
    job: &Job,
    opts: &VmOptions,
    stdout: Sink,
    stderr: Sink,
) -> Result<JobOutcome> {
    run_inner(job, opts, stdout, stderr, None)
}

fn run_inner(
    job: &Job,
    opts: &VmOptions,
    stdout: Sink,
    stderr: Sink,
    unanswered: Option<&UnansweredSink>,
) -> Result<JobOutcome> {
    let started = Instant::now();
    let _guard = crate::interrupt::Guard::new();
    if opts.cpus == 0 || opts.memory_mib < 64 {
        return Err(Error::bad_input(
            format!("VM options ({} CPUs, {} MiB)", opts.cpus, opts.memory_mib),
            "expected at least 1 CPU and 64 MiB of memory",
        ));
    }
    let source = KernelSource::from_options(opts.kernel.as_deref(), opts.initrd.as_deref())?;
    let guest_kernel = select_kernel(&source, opts)?;
    let qemu_bin = qemu::find_qemu()?;
    let busybox = initramfs::find_busybox()?;

    let scratch = tempfile::Builder::new()
        .prefix("reprobox-vm-")
        .tempdir()
        .map_err(|e| Error::io("create temporary directory", std::env::temp_dir(), e))?;
    let dir = scratch.path();

    let forward = forwards(job, opts);
    let forward_ports: Vec<u16> = forward.iter().map(|(p, _)| *p).collect();

    // Disks: root, binds, status.
    let (root_img, keep_root_lf, root_dir) = root_disk(job, opts, dir)?;
    let (guest_job, faketime) = with_faketime(job, root_dir.as_deref());
    let job = &*guest_job;
    let (mounts, mut drives, copy_back) = bind_disks(job, dir, opts.disk_headroom_mib)?;
    let script = guest_protocol::job_script(job, &mounts, &forward_ports, keep_root_lf)?;
    drives.insert(
        0,
        Drive {
            path: root_img,
            serial: "reprobox-root".into(),
            read_only: false,
        },
    );
    let status_img = dir.join("status.img");
    disk::make_raw(&status_img, disk::STATUS_DISK_BYTES)?;
    drives.push(Drive {
        path: status_img.clone(),
        serial: "reprobox-status".into(),
        read_only: false,
    });

    let initrd = dir.join("initramfs.cpio");
    initramfs::write(
        &initramfs::InitramfsSpec {
            busybox: &busybox,
            modules_dir: guest_kernel.modules_dir.as_deref(),
            job_script: &script,
        },
        &initrd,
    )?;
    let initrd = combine_initrd(&guest_kernel, &initrd, dir)?;

    let (accel, accel_detail) = resolve_accel(opts.accel, &qemu_bin, &guest_kernel, &busybox)?;

    let memory_mib = job
        .limits
        .memory
        .map(|b| b.div_ceil(1 << 20))
        .unwrap_or(opts.memory_mib);
    let epoch = job.clock.source_date_epoch;
    let machine = Machine {
        accel,
        memory_mib,
        cpus: opts.cpus,
        kernel: guest_kernel.kernel.clone(),
        initrd,
        append: qemu::kernel_append(accel, epoch),
        rtc_base: epoch.map(qemu::rtc_base).transpose()?,
        drives,
        forward: forward.clone(),
        host_busybox: busybox.clone(),
        output_ports: true,
    };

    let mut vm = Vm::spawn(&qemu_bin, &machine, Some((stdout, stderr)))?;
    let end = vm.wait(job.limits.timeout, &_guard)?;
    let boot_ms = vm.job_started_ms();
    let console_tail = vm.console_tail();
    drop(vm);

    let status_block = read_head(&status_img, disk::STATUS_DISK_BYTES as usize)?;
    let Some(status) = guest_protocol::parse_status(&status_block) else {
        return Err(guest_failure(&end, &console_tail));
    };
    if let (Some(Ok(seen)), Some(sink)) = (&status.watch, unanswered) {
        for u in seen {
            sink(u.clone());
        }
    }

    for (image, src, is_file) in &copy_back {
        copy_back_bind(image, src, *is_file, dir)?;
    }

    let enforcement = outcome_enforcement(VmFacts {
        job,
        opts,
        accel,
        accel_detail: &accel_detail,
        memory_mib,
        release: &guest_kernel.release,
        forward: &forward,
        faketime,
        boot_ms,
        watch: status.watch.as_ref(),
    });
    Ok(JobOutcome {
        exit_code: status.exit_code,
        signal: None,
        timed_out: false,
        backend: "microvm".into(),
        enforcement,
        wall_time_ms: started.elapsed().as_millis() as u64,
    })
}

/// Ports the job reaches the host on, at 127.0.0.1 inside the guest, and where each goes
/// on the host.
fn forwards(job: &Job, opts: &VmOptions) -> Vec<(u16, SocketAddr)> {
    if !opts.forwards.is_empty() {
        opts.forwards.clone()
    } else {
        match opts.mirror {
            None => Vec::new(),
            Some(m) if job.listen.is_empty() => vec![(m.port(), m)],
            Some(m) => job.listen.iter().map(|p| (*p, m)).collect(),
        }
    }
}

/// The root disk (the session's persistent one, or one made from the job's root now),
/// whether its root directory has lost+found, and the root as a host directory (where the
/// job's libfaketime is looked for).
fn root_disk(job: &Job, opts: &VmOptions, dir: &Path) -> Result<(PathBuf, bool, Option<PathBuf>)> {
    // The root filesystem as a host directory too: where the job's libfaketime is looked for.
    Ok(match &opts.root_disk {
        Some(d) => (
            d.image.clone(),
            d.keep_lost_found,
            match &job.rootfs {
                RootfsSource::Dir(p) => Some(p.clone()),
                _ => None,
            },
        ),
        None => {
            let r = disk::rootfs_dir(&job.rootfs, dir)?;
            let img = dir.join("root.img");
            disk::make_ext4(&r, &img, opts.disk_headroom_mib)?;
            (img, r.join("lost+found").is_dir(), Some(r))
        }
    })
}

/// A writable bind copied back to its host source after the job: (disk image, source,
/// the source is a file).
type CopyBack = (PathBuf, PathBuf, bool);

/// One ext4 disk per bind (a file bind: a disk holding that file alone), the guest's
/// mounts for them, and the writable ones to copy back afterwards.
fn bind_disks(
    job: &Job,
    dir: &Path,
    headroom_mib: u64,
) -> Result<(Vec<GuestMount>, Vec<Drive>, Vec<CopyBack>)> {
    let mut mounts = Vec::new();
    let mut drives = Vec::new();
    let mut copy_back = Vec::new();
    for (i, b) in job.binds.iter().enumerate() {
        let md = fs::metadata(&b.src).map_err(|e| {
            Error::bad_input(
                format!("bind source {}", b.src.display()),
                format!("must exist ({e})"),
            )
        })?;
        let dst = b
            .dst
            .to_str()
            .filter(|s| s.starts_with('/'))
            .ok_or_else(|| {
                Error::bad_input(
                    format!("bind destination {}", b.dst.display()),
                    "an absolute UTF-8 path inside the job",
                )
            })?;
        let serial = format!("reprobox-b{i}");
        let image = dir.join(format!("bind{i}.img"));
        let headroom = if b.read_only { 0 } else { headroom_mib };
        if md.is_dir() {
            disk::make_ext4(&b.src, &image, headroom)?;
        } else {
            let stage = dir.join(format!("bind{i}-stage"));
            fs::create_dir(&stage).ctx("create", &stage)?;
            fs::copy(&b.src, stage.join("file")).ctx("copy", &b.src)?;
            disk::make_ext4(&stage, &image, headroom)?;
        }
        mounts.push(GuestMount {
            serial: serial.clone(),
            dst: dst.to_owned(),
            is_file: !md.is_dir(),
            read_only: b.read_only,
        });
        if !b.read_only {
            copy_back.push((image.clone(), b.src.clone(), !md.is_dir()));
        }
        drives.push(Drive {
            path: image,
            serial,
            read_only: b.read_only,
        });
    }
    Ok((mounts, drives, copy_back))
}

/// What a guest run decided, for its enforcement list.
struct VmFacts<'a> {
    job: &'a Job,
    opts: &'a VmOptions,
    accel: ResolvedAccel,
    accel_detail: &'a str,
    memory_mib: u64,
    release: &'a str,
    forward: &'a [(u16, SocketAddr)],
    faketime: Option<Enforcement>,
    boot_ms: Option<u128>,
    /// The unanswered-connect watch, when the job asked for it.
    watch: Option<&'a std::result::Result<Vec<crate::job::Unanswered>, String>>,
}

/// The run record's list of what a microVM job enforced, and what it did not.
fn outcome_enforcement(f: VmFacts) -> Vec<Enforcement> {
    let VmFacts {
        job,
        opts,
        accel,
        accel_detail,
        memory_mib,
        release,
        forward,
        faketime,
        boot_ms,
        watch,
    } = f;
    let epoch = job.clock.source_date_epoch;
    let mut enforcement = vec![
        Enforcement {
            feature: "microvm".into(),
            enforced: true,
            detail: format!(
                "qemu -M microvm, accel {} ({accel_detail}{}), {} MiB, {} CPUs, kernel {}",
                accel.name(),
                if accel == ResolvedAccel::Tcg {
                    "; instruction-counted guest clock, -icount shift=0"
                } else {
                    ""
                },
                memory_mib,
                qemu::effective_cpus(accel, opts.cpus),
                release
            ),
        },
        Enforcement {
            feature: "network".into(),
            enforced: true,
            detail: if forward.is_empty() {
                "no network device: loopback only".into()
            } else {
                let list: Vec<String> = forward
                    .iter()
                    .map(|(p, h)| format!("127.0.0.1:{p} → host {h}"))
                    .collect();
                format!(
                    "user networking with restrict=on; only {} reachable",
                    list.join(", ")
                )
            },
        },
        Enforcement {
            feature: "wall-clock".into(),
            enforced: epoch.is_some(),
            detail: match epoch {
                Some(e) => format!("guest wall clock set to {e} by the init, RTC base too"),
                None => "no SOURCE_DATE_EPOCH: guest clock starts at the host's time".into(),
            },
        },
        Enforcement {
            feature: "read-only-root".into(),
            enforced: job.read_only_root,
            detail: if opts.root_disk.is_some() {
                "root disk persists across the jobs of this run: changes stay for the next job"
                    .into()
            } else {
                "root disk is a copy; changes to it are discarded".into()
            },
        },
    ];
    enforcement.extend(faketime);
    if let Some(ms) = boot_ms {
        enforcement.push(Enforcement {
            feature: "microvm-boot".into(),
            enforced: true,
            detail: format!("job started {ms} ms after qemu was spawned"),
        });
    }
    if job.watch_unanswered {
        enforcement.push(Enforcement {
            feature: crate::job::UNANSWERED_FEATURE.into(),
            enforced: matches!(watch, Some(Ok(_))),
            detail: match watch {
                Some(Ok(_)) => "the guest kernel's trace events (sock:inet_sock_set_state from \
                                SYN_SENT to CLOSE, icmp:icmp_send port unreachable): refused \
                                connects and datagrams are recorded"
                    .into(),
                Some(Err(why)) => format!("not watched: {why}"),
                None => "not watched: the guest's init said nothing of it".into(),
            },
        });
    }
    for f in ["capabilities", "landlock", "namespaces"] {
        enforcement.push(Enforcement {
            feature: f.into(),
            enforced: false,
            detail: "not applied inside the guest: the virtual machine is the boundary".into(),
        });
    }
    enforcement
}

fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path).ctx("open", path)?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let r = f.read(&mut buf[got..]).ctx("read", path)?;
        if r == 0 {
            break;
        }
        got += r;
    }
    buf.truncate(got);
    Ok(buf)
}

/// A caller-supplied initrd goes first, reprobox's after it: the kernel unpacks
/// concatenated archives in order, so reprobox's `/init` wins.
fn combine_initrd(k: &GuestKernel, ours: &Path, dir: &Path) -> Result<PathBuf> {
    let Some(extra) = &k.initrd else {
        return Ok(ours.to_path_buf());
    };
    let out = dir.join("initrd-combined");
    let mut w = fs::File::create(&out).ctx("create", &out)?;
    let mut a = fs::File::open(extra).ctx("open", extra)?;
    std::io::copy(&mut a, &mut w).ctx("copy", extra)?;
    // Align to 4 bytes between archives.
    let len = w.metadata().ctx("stat", &out)?.len();
    let pad = (4 - len % 4) % 4;
    w.write_all(&vec![0u8; pad as usize]).ctx("write", &out)?;
    let mut b = fs::File::open(ours).ctx("open", ours)?;
    std::io::copy(&mut b, &mut w).ctx("copy", ours)?;
    Ok(out)
}

fn copy_back_bind(image: &Path, src: &Path, is_file: bool, scratch: &Path) -> Result<()> {
    let out = tempfile::Builder::new()
        .prefix("out-")
        .tempdir_in(scratch)
        .ctx("create temporary directory", scratch)?;
    disk::extract_ext4(image, out.path(), false)?;
    if is_file {
        let f = out.path().join("file");
        fs::copy(&f, src).ctx("copy back to", src)?;
        return Ok(());
    }
    // cp -a keeps modes, owners, times and links; files the job deleted stay on the host.
    let mut from = out.path().as_os_str().to_owned();
    from.push("/.");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(src)
        .status()
        .ctx("run cp for", src)?;
    if !st.success() {
        return Err(Error::Sandbox(format!(
            "copying the guest's writes back to {} failed ({st})",
            src.display()
        )));
    }
    Ok(())
}

/// How qemu ended.
#[derive(Debug)]
struct VmEnd {
    status: std::process::ExitStatus,
    qemu_stderr: String,
}

fn guest_failure(end: &VmEnd, console: &[String]) -> Error {
    let tail: Vec<&str> = console
        .iter()
        .rev()
        .take(12)
        .rev()
        .map(String::as_str)
        .collect();
    if let Some(line) = console
        .iter()
        .find(|l| l.contains("Kernel panic") || l.contains("kernel BUG"))
    {
        return Error::Sandbox(format!("guest kernel panic: {}", line.trim()));
    }
    if let Some(line) = console.iter().find(|l| l.contains("reprobox-init: FAILED")) {
        return Error::Sandbox(format!(
            "guest init failed before the job ran: {}",
            line.trim()
        ));
    }
    Error::Sandbox(format!(
        "the guest ended without reporting the job's status (qemu {}{}); last console lines: {}",
        end.status,
        if end.qemu_stderr.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", end.qemu_stderr.trim())
        },
        tail.join(" | ")
    ))
}

/// A running qemu, killed (with its process group) and reaped when dropped.
struct Vm {
    child: Option<Child>,
    spawned: Instant,
    console: Arc<Mutex<Console>>,
    readers: Vec<mpsc::Receiver<()>>,
    qemu_stderr: Arc<Mutex<String>>,
}

#[derive(Default)]
struct Console {
    tail: VecDeque<String>,
    job_started: Option<Instant>,
    marker: Option<(String, Instant)>,
}

const CONSOLE_TAIL: usize = 200;

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two new descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Sandbox(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

impl Vm {
    fn spawn(qemu_bin: &Path, m: &Machine, sinks: Option<(Sink, Sink)>) -> Result<Vm> {
        let (con_r, con_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let fds = [
            (con_w.as_raw_fd(), qemu::CONSOLE_FD),
            (out_w.as_raw_fd(), qemu::STDOUT_FD),
            (err_w.as_raw_fd(), qemu::STDERR_FD),
        ];
        let mut cmd = Command::new(qemu_bin);
        cmd.args(qemu::args(m))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Its own process group: a terminal's ^C reaches reprobox, which kills
                // the group (qemu and the host-side nc it spawns) itself.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut high = [0i32; 3];
                for (i, (src, _)) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, (_, dst)) in fds.iter().enumerate() {
                    if libc::dup2(high[i], *dst) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Environment(format!("cannot start {}: {e}", qemu_bin.display())))?;
        let spawned = Instant::now();
        drop((con_w, out_w, err_w));

        let console = Arc::new(Mutex::new(Console::default()));
        let mut readers = Vec::new();
        {
            let console = Arc::clone(&console);
            readers.push(reader_thread(con_r, move |r| {
                for line in BufReader::new(r).split(b'\n').map_while(|l| l.ok()) {
                    let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if line.starts_with("reprobox-init:") {
                        tracing::info!(target: "reprobox::vm::guest", "{line}");
                    } else {
                        tracing::debug!(target: "reprobox::vm::guest", "{line}");
                    }
                    let mut c = console.lock().unwrap_or_else(|p| p.into_inner());
                    if line.contains("reprobox-init: job-start") {
                        c.job_started = Some(Instant::now());
                    }
                    if line.contains("reprobox-probe-ok") {
                        c.marker = Some((line.clone(), Instant::now()));
                    }
                    if c.tail.len() == CONSOLE_TAIL {
                        c.tail.pop_front();
                    }
                    c.tail.push_back(line);
                }
            }));
        }
        if let Some((mut so, mut se)) = sinks {
            readers.push(reader_thread(out_r, move |mut r| {
                copy_live(&mut r, &mut so);
            }));
            readers.push(reader_thread(err_r, move |mut r| {
                copy_live(&mut r, &mut se);
            }));
        }
        let qemu_stderr = Arc::new(Mutex::new(String::new()));
        if let Some(e) = child.stderr.take() {
            let qs = Arc::clone(&qemu_stderr);
            readers.push(reader_thread(OwnedFd::from(e), move |mut e| {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                *qs.lock().unwrap_or_else(|p| p.into_inner()) = s;
            }));
        }
        Ok(Vm {
            child: Some(child),
            spawned,
            console,
            readers,
            qemu_stderr,
        })
    }

    /// Wait for qemu to exit; kill it on timeout or interrupt.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        guard: &crate::interrupt::Guard,
    ) -> Result<VmEnd> {
        let deadline = timeout.map(|t| self.spawned + t);
        let child = self.child.as_mut().expect("running");
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.drain_readers();
                    let qemu_stderr = self
                        .qemu_stderr
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    return Ok(VmEnd {
                        status,
                        qemu_stderr,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Sandbox(format!("waiting for qemu: {e}"))),
            }
            if guard.pending().is_some() {
                self.kill();
                return Err(Error::Interrupted);
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                self.kill();
                return Err(Error::Sandbox(format!(
                    "the job timed out after {} s (boot included); the VM was killed",
                    timeout.unwrap_or_default().as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (briefly) for the output readers to reach end of file, so the last bytes of
    /// the job's output are written before run() returns.
    fn drain_readers(&mut self) {
        let until = Instant::now() + Duration::from_secs(3);
        for r in self.readers.drain(..) {
            let left = until.saturating_duration_since(Instant::now());
            let _ = r.recv_timeout(left);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // SAFETY: signalling the process group of our own child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            self.drain_readers();
        }
    }

    fn job_started_ms(&self) -> Option<u128> {
        let c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        c.job_started
            .map(|t| t.duration_since(self.spawned).as_millis())
    }

    fn marker(&self) -> Option<(String, Instant)> {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .marker
            .clone()
    }

    fn console_tail(&self) -> Vec<String> {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tail
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn reader_thread(fd: OwnedFd, f: impl FnOnce(fs::File) + Send + 'static) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f(fs::File::from(fd));
        let _ = tx.send(());
    });
    rx
}

fn copy_live(r: &mut fs::File, w: &mut Sink) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = w.flush();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// KVM probe results per (qemu, kernel): (KVM works, why).
type ProbeCache = HashMap<(PathBuf, PathBuf), (bool, String)>;

/// The accelerator to use and why.
fn resolve_accel(
    want: Accel,
    qemu_bin: &Path,
    k: &GuestKernel,
    busybox: &Path,
) -> Result<(ResolvedAccel, String)> {
    match want {
        Accel::Tcg => Ok((ResolvedAccel::Tcg, "requested".into())),
        Accel::Kvm => Ok((ResolvedAccel::Kvm, "requested".into())),
        Accel::Auto => {
            static CACHE: OnceLock<Mutex<ProbeCache>> = OnceLock::new();
            let cache = CACHE.get_or_init(Default::default);
            let key = (qemu_bin.to_path_buf(), k.kernel.clone());
            if let Some((ok, why)) = cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
            {
                return Ok((
                    if ok {
                        ResolvedAccel::Kvm
                    } else {
                        ResolvedAccel::Tcg
                    },
                    why,
                ));
            }
            let (ok, why) = probe_kvm(qemu_bin, k, busybox)?;
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (ok, why.clone()));
            Ok((
                if ok {
                    ResolvedAccel::Kvm
                } else {
                    ResolvedAccel::Tcg
                },
                why,
            ))
        }
    }
}

/// How long a probe guest gets to boot under KVM (a working KVM boots in about 1 s).
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Try KVM by booting a guest that prints a marker and reboots: `/dev/kvm` opening is
/// not enough (on this project's machines it opens, but guests never run).
pub fn probe_kvm(qemu_bin: &Path, k: &GuestKernel, busybox: &Path) -> Result<(bool, String)> {
    let dev = Path::new("/dev/kvm");
    if !qemu::kvm_device_usable(dev) {
        return Ok((false, "/dev/kvm cannot be opened read-write: TCG".into()));
    }
    let dir = tempfile::Builder::new()
        .prefix("reprobox-kvm-probe-")
        .tempdir()
        .map_err(|e| Error::io("create temporary directory", std::env::temp_dir(), e))?;
    let mut cpio = initramfs::Cpio::new();
    cpio.dir("dev");
    let bb = fs::read(busybox).ctx("read", busybox)?;
    cpio.file("bin/busybox", 0o755, &bb);
    cpio.file(
        "init",
        0o755,
        b"#!/bin/busybox sh\necho reprobox-probe-ok\n/bin/busybox reboot -f\n",
    );
    let initrd = dir.path().join("probe.cpio");
    fs::write(&initrd, cpio.finish()).ctx("write", &initrd)?;
    let m = Machine {
        accel: ResolvedAccel::Kvm,
        memory_mib: 256,
        cpus: 1,
        kernel: k.kernel.clone(),
        initrd,
        append: qemu::kernel_append(ResolvedAccel::Kvm, None),
        rtc_base: None,
        drives: Vec::new(),
        forward: Vec::new(),
        host_busybox: busybox.to_path_buf(),
        output_ports: false,
    };
    let mut vm = Vm::spawn(qemu_bin, &m, None)?;
    let deadline = Instant::now() + KVM_PROBE_TIMEOUT;
    loop {
        if vm.marker().is_some() {
            return Ok((true, "a probe guest booted under KVM".into()));
        }
        let child = vm.child.as_mut().expect("running");
        if let Ok(Some(st)) = child.try_wait() {
            vm.child = None;
            vm.drain_readers();
            if vm.marker().is_some() {
                return Ok((true, "a probe guest booted under KVM".into()));
            }
            let err = vm
                .qemu_stderr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Ok((
                false,
                format!("KVM probe failed (qemu {st}: {err}); fell back to TCG"),
            ));
        }
        if Instant::now() >= deadline {
            vm.kill();
            return Ok((
                false,
                format!(
                    "KVM probe guest did not boot within {} s; fell back to TCG",
                    KVM_PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn host_kernel_guest_modules_follow_the_backends_list() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path();
        // Everything but virtio_net is built in; virtio_net needs failover first.
        std::fs::write(
            m.join("modules.builtin"),
            "kernel/virtio_mmio.ko\nkernel/virtio_blk.ko\nkernel/virtio_console.ko\n\
             kernel/crc32c_generic.ko\nkernel/ext4.ko\n",
        )
        .unwrap();
        std::fs::write(
            m.join("modules.dep"),
            "kernel/net/virtio_net.ko.zst: kernel/net/failover.ko\nkernel/net/failover.ko:\n",
        )
        .unwrap();
        std::fs::create_dir_all(m.join("kernel/net")).unwrap();
        std::fs::write(m.join("kernel/net/failover.ko"), b"\x7fELF failover").unwrap();
        std::fs::write(
            m.join("kernel/net/virtio_net.ko.zst"),
            zstd::encode_all(&b"\x7fELF virtio_net"[..], 3).unwrap(),
        )
        .unwrap();
        let host = HostKernel {
            kernel: m.join("vmlinuz"),
            release: "9.9.9-test".into(),
            modules_dir: m.to_path_buf(),
        };
        let got = host.guest_modules().unwrap();
        assert_eq!(
            got,
            vec![
                GuestModule {
                    path: "kernel/net/failover.ko".into(),
                    elf: b"\x7fELF failover".to_vec()
                },
                GuestModule {
                    path: "kernel/net/virtio_net.ko.zst".into(),
                    elf: b"\x7fELF virtio_net".to_vec()
                },
            ]
        );
        std::fs::write(m.join("modules.builtin"), "").unwrap();
        let e = host.guest_modules().unwrap_err();
        assert!(e.to_string().contains("virtio_mmio"), "{e}");
    }

    #[test]
    fn newest_host_kernel_has_its_modules_or_says_how_to_get_one() {
        match HostKernel::newest() {
            Ok(k) => {
                assert!(k.kernel.starts_with("/boot"), "{k:?}");
                assert_eq!(k.modules_dir, Path::new("/lib/modules").join(&k.release));
                assert!(k.modules_dir.join("modules.dep").is_file(), "{k:?}");
            }
            Err(e) => assert!(e.to_string().contains("--kernel PATH"), "{e}"),
        }
    }

    #[test]
    fn faketime_jobs_get_the_roots_libfaketime_with_a_stopped_clock() {
        let root = tempfile::tempdir().unwrap();
        let lib = "usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
        std::fs::create_dir_all(root.path().join(lib).parent().unwrap()).unwrap();
        std::fs::write(root.path().join(lib), b"").unwrap();
        let mut job = Job::new(
            RootfsSource::Dir(root.path().to_path_buf()),
            vec!["make".into()],
        );
        job.clock.source_date_epoch = Some(1774915200);
        job.env.push(("LD_PRELOAD".into(), "/elsewhere.so".into()));

        // Not asked for: the job goes to the guest as it is.
        let (g, e) = with_faketime(&job, Some(root.path()));
        assert!(matches!(g, Cow::Borrowed(_)) && e.is_none());

        job.clock.faketime = true;
        let (g, e) = with_faketime(&job, Some(root.path()));
        let e = e.unwrap();
        assert!(e.enforced && e.feature == "faketime", "{e:?}");
        let script = guest_protocol::job_script(&g, &[], &[], false).unwrap();
        assert!(script.contains(&format!("LD_PRELOAD=/{lib}")), "{script}");
        // Stopped (absolute), not started (`@`), at SOURCE_DATE_EPOCH.
        assert!(script.contains("FAKETIME=2026-03-31 00:00:00"), "{script}");
        assert!(!script.contains("elsewhere"), "{script}");

        // No library in the root, or no root directory known: recorded as not enforced.
        let bare = tempfile::tempdir().unwrap();
        assert!(!with_faketime(&job, Some(bare.path())).1.unwrap().enforced);
        assert!(!with_faketime(&job, None).1.unwrap().enforced);
    }
}
