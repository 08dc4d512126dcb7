//! The qemu command line of one run: `-M microvm`, nothing but what is listed here
//! (`-nodefaults`, `-no-user-config`), no reboot (a guest reboot or panic ends qemu),
//! the serial console and two virtio-serial ports on inherited pipes, virtio-blk disks
//! found by serial, and at most one network card whose only reachable peer is the mirror.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::vm::guest_protocol::GUESTFWD_IP;

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    Kvm,
    Tcg,
}

impl ResolvedAccel {
    pub fn name(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// The inherited file descriptors qemu writes to (fixed numbers, set up before exec).
pub const CONSOLE_FD: i32 = 3;
pub const STDOUT_FD: i32 = 4;
pub const STDERR_FD: i32 = 5;

/// One virtio-blk disk.
#[derive(Debug, Clone)]
pub struct Drive {
    pub path: PathBuf,
    pub serial: String,
    pub read_only: bool,
}

/// Everything the command line is made of.
#[derive(Debug, Clone)]
pub struct Machine {
    pub accel: ResolvedAccel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    /// `-rtc base=` value (UTC, `YYYY-MM-DDTHH:MM:SS`), or None for the host's time.
    pub rtc_base: Option<String>,
    pub drives: Vec<Drive>,
    /// Guest ports forwarded (at [`GUESTFWD_IP`]) to the host mirror, each connection
    /// through a fresh `busybox nc` on the host.
    pub forward: Vec<(u16, SocketAddr)>,
    pub host_busybox: PathBuf,
    /// Whether the job's output ports exist (the KVM probe boots without them).
    pub output_ports: bool,
}

/// The qemu binary: `$REPROBOX_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REPROBOX_QEMU") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Environment(format!(
                "REPROBOX_QEMU={} does not exist",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("qemu-system-x86_64");
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(Error::Environment(
        "qemu-system-x86_64 not found on PATH: the microVM backend needs qemu \
         (apt-get install qemu-system-x86)"
            .into(),
    ))
}

fn fd_path(fd: i32) -> String {
    format!("/proc/self/fd/{fd}")
}

/// The arguments after the program name.
pub fn args(m: &Machine) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(OsString::from(s));
    push("-M");
    push("microvm");
    push("-accel");
    push(m.accel.name());
    if m.accel == ResolvedAccel::Kvm {
        push("-cpu");
        push("host");
    }
    for s in [
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
    ] {
        push(s);
    }
    if m.accel == ResolvedAccel::Tcg {
        // The guest's clock follows the instructions it executes (1 ns each), not the
        // host's load: a build that measures elapsed time (libfaketime's `@` start time,
        // pacman's install date) sees the same on a slow or busy host. Idle time (waiting
        // for the mirror) still passes as on the host (sleep=on).
        push("-icount");
        push("shift=0,sleep=on");
    }
    push("-m");
    push(&format!("{}M", m.memory_mib));
    push("-smp");
    push(&effective_cpus(m.accel, m.cpus).to_string());
    push("-rtc");
    push(&match &m.rtc_base {
        Some(b) => format!("base={b},clock=vm"),
        None => "base=utc,clock=vm".to_owned(),
    });
    push("-chardev");
    push(&format!("file,id=console,path={}", fd_path(CONSOLE_FD)));
    push("-serial");
    push("chardev:console");
    if m.output_ports {
        push("-device");
        push("virtio-serial-device");
        for (id, fd) in [("stdout", STDOUT_FD), ("stderr", STDERR_FD)] {
            push("-chardev");
            push(&format!("file,id={id},path={}", fd_path(fd)));
            push("-device");
            push(&format!("virtserialport,chardev={id},name=reprobox.{id}"));
        }
    }
    for (i, d) in m.drives.iter().enumerate() {
        push("-drive");
        // Paths with commas would need escaping; the caller only uses its own temp dirs.
        push(&format!(
            "if=none,id=d{i},format=raw,file={},readonly={}",
            d.path.display(),
            if d.read_only { "on" } else { "off" }
        ));
        push("-device");
        push(&format!("virtio-blk-device,drive=d{i},serial={}", d.serial));
    }
    if !m.forward.is_empty() {
        let mut net = String::from("user,id=n0,restrict=on,ipv6=off");
        for (port, host) in &m.forward {
            net.push_str(&format!(
                ",guestfwd=tcp:{GUESTFWD_IP}:{port}-cmd:{} nc {} {}",
                m.host_busybox.display(),
                host.ip(),
                host.port()
            ));
        }
        push("-netdev");
        push(&net);
        push("-device");
        push("virtio-net-device,netdev=n0");
    }
    push("-kernel");
    a.push(m.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(m.initrd.clone().into_os_string());
    a.push("-append".into());
    a.push(m.append.clone().into());
    a
}

/// The kernel command line: quiet console on ttyS0, a panic reboots at once (and
/// `-no-reboot` turns that into qemu exiting), reboot by triple fault (microvm has no
/// keyboard controller), the build time for the init, and under TCG the TSC frequency
/// (the kernel's PIT calibration fails on a loaded host and the boot then hangs).
pub fn kernel_append(accel: ResolvedAccel, epoch: Option<i64>) -> String {
    let mut s = String::from("console=ttyS0 quiet loglevel=1 panic=-1 reboot=t rdinit=/init");
    if accel == ResolvedAccel::Tcg {
        // Under -icount the TSC counts virtual nanoseconds: 1 GHz.
        s.push_str(&format!(" tsc_early_khz={ICOUNT_TSC_KHZ}"));
    }
    if let Some(e) = epoch {
        s.push_str(&format!(" reprobox.epoch={e}"));
    }
    s
}

/// The vCPUs qemu is given: under TCG one, because the instruction-counted clock
/// (`-icount`) runs the vCPUs in turn on one host thread anyway, and a second vCPU's
/// bring-up hangs the boot with it.
pub fn effective_cpus(accel: ResolvedAccel, asked: u32) -> u32 {
    match accel {
        ResolvedAccel::Kvm => asked,
        ResolvedAccel::Tcg => 1,
    }
}

/// The guest TSC's rate under TCG with `-icount shift=0`: one tick per virtual ns.
const ICOUNT_TSC_KHZ: u64 = 1_000_000;

/// `-rtc base=` text for a Unix time.
pub fn rtc_base(epoch: i64) -> Result<String> {
    let ts = jiff::Timestamp::from_second(epoch).map_err(|e| {
        Error::bad_input(
            format!("SOURCE_DATE_EPOCH {epoch}"),
            format!("not a representable time: {e}"),
        )
    })?;
    Ok(ts.strftime("%Y-%m-%dT%H:%M:%S").to_string())
}

/// Whether `/dev/kvm` can be opened read-write (necessary, not sufficient: on this
/// project's machines it opens but guests hang, so `Auto` also boots a probe guest).
pub fn kvm_device_usable(dev: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_shape() {
        let m = Machine {
            accel: ResolvedAccel::Tcg,
            memory_mib: 512,
            cpus: 2,
            kernel: "/boot/vmlinuz".into(),
            initrd: "/tmp/i.cpio".into(),
            append: kernel_append(ResolvedAccel::Tcg, Some(1774915200)),
            rtc_base: Some(rtc_base(1774915200).unwrap()),
            drives: vec![Drive {
                path: "/tmp/root.img".into(),
                serial: "reprobox-root".into(),
                read_only: false,
            }],
            forward: vec![(8080, "127.0.0.1:4242".parse().unwrap())],
            host_busybox: "/usr/bin/busybox".into(),
            output_ports: true,
        };
        let a: Vec<String> = args(&m)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = a.join(" ");
        assert!(
            joined.starts_with("-M microvm -accel tcg -nodefaults"),
            "{joined}"
        );
        assert!(a.contains(&"-no-reboot".to_owned()));
        assert!(joined.contains("-icount shift=0,sleep=on"), "{joined}");
        assert!(joined.contains("-smp 1 "), "TCG runs one vCPU: {joined}");
        assert!(m.append.contains("tsc_early_khz=1000000"), "{}", m.append);
        assert!(
            joined.contains("-rtc base=2026-03-31T00:00:00,clock=vm"),
            "{joined}"
        );
        assert!(joined.contains("restrict=on"), "{joined}");
        assert!(
            joined.contains("guestfwd=tcp:10.0.2.100:8080-cmd:/usr/bin/busybox nc 127.0.0.1 4242"),
            "{joined}"
        );
        assert!(joined.contains("serial=reprobox-root"), "{joined}");
        assert!(m.append.contains("reprobox.epoch=1774915200"));
        assert!(m.append.contains("panic=-1"));
    }
}
