//! What this host can do, found by trying (`reprobox doctor`), and the few checks
//! `reproduce` and `demo` make before any work ([`preflight`]).
//!
//! Each item is probed for real (namespaces unshared in a forked child, an idmapped mount
//! and an overlay over one made and removed, a KVM guest booted; `sandbox::probe` and
//! `vm`), reported as ok / missing / failed with what it enables and how to get it.
//!
//! Which items a run *requires* ([`required`]):
//! - the container backend (the default; `demo` too): the user, mount, pid, net and time
//!   namespaces (a job's init enters all of them and fails without any one);
//!   - as root: idmapped mounts (a job's root is mounted idmapped: the base's root-owned
//!     files are the job root's) and, when prepared environments are used (not
//!     `--fresh-env`), overlayfs over an idmapped layer (a run's view of a prepared
//!     environment);
//!   - as another user: /etc/subuid and /etc/subgid ranges with newuidmap/newgidmap (the
//!     nested podman of the build needs 65536 ids);
//! - the microVM backend: qemu and the guest's host tools (static busybox, mke2fs,
//!   debugfs); not KVM (TCG is used instead) and not a host kernel (a reproduction boots
//!   the day's `linux` package);
//! - `demo`: root (the test world is built with bwrap, podman and bind mounts) and the
//!   world's host tools.
//!
//! Landlock, the memory cgroup, KVM and the host kernel are reported, never required: the
//! run record says what was not enforced. Nothing is cached: each call probes afresh.

use std::cell::OnceCell;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::sandbox::probe;

/// The JSON document's schema.
pub const SCHEMA: &str = "reprobox.doctor/v1";

/// An item's state on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Tried, and it works.
    Ok,
    /// Not there: a tool, a file, a privilege or a kernel feature is absent.
    Missing,
    /// There, but trying it failed.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Failed => "failed",
        }
    }
}

/// One item's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// Whether `reproduce` (container backend, as this user) needs it.
    pub required: bool,
    /// What it enables.
    pub enables: &'static str,
    /// What was found (the probe's answer, or why it failed).
    pub detail: String,
    /// How to get it; `None` when ok.
    pub remedy: Option<String>,
}

/// The `reprobox.doctor/v1` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub can_reproduce: bool,
    pub checks: Vec<Check>,
}

/// The item names, in the order they are reported.
pub const ITEMS: [&str; 17] = [
    "user-namespace",
    "mount-namespace",
    "pid-namespace",
    "net-namespace",
    "time-namespace",
    "idmapped-mount",
    "overlay-over-idmapped",
    "landlock",
    "seccomp-notify",
    "cgroup",
    "cgroup-v2-delegation",
    "subids",
    "qemu",
    "vm-tools",
    "guest-kernel",
    "kvm",
    "world-tools",
];

/// What a run needs of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Jobs run in the container sandbox.
    pub container: bool,
    /// Jobs run in microVMs.
    pub microvm: bool,
    /// Prepared environments are used (seen through an overlay in the container).
    pub prepared_envs: bool,
    /// The test world is built (`demo`).
    pub world: bool,
}

impl Needs {
    /// Jobs on `backend` (the container sandbox or microVMs), with or without prepared
    /// environments: what `reproduce`, `bisect` and `run` ask of the host.
    pub fn jobs_on(backend: &crate::backend::BackendChoice, prepared_envs: bool) -> Needs {
        let on_vm = matches!(backend, crate::backend::BackendChoice::Microvm(_));
        Needs {
            container: !on_vm,
            microvm: on_vm,
            prepared_envs,
            world: false,
        }
    }

    /// `reprobox reproduce` with its defaults (what `doctor`'s exit code answers).
    pub const REPRODUCE: Needs = Needs {
        container: true,
        microvm: false,
        prepared_envs: true,
        world: false,
    };
    /// `reprobox demo`.
    pub const DEMO: Needs = Needs {
        container: true,
        microvm: false,
        prepared_envs: true,
        world: true,
    };
}

/// Whether item `name` is required for `needs` as root (`root`) or another user.
pub fn required(name: &str, needs: Needs, root: bool) -> bool {
    let container = needs.container;
    match name {
        "user-namespace" | "mount-namespace" | "pid-namespace" | "net-namespace"
        | "time-namespace" => container,
        // Every job of a profile with `[[egress]]` (the real one's) is watched.
        "seccomp-notify" => container,
        "idmapped-mount" => container && root,
        "overlay-over-idmapped" => container && root && needs.prepared_envs,
        "subids" => container && !root,
        "qemu" | "vm-tools" => needs.microvm,
        "world-tools" => needs.world,
        _ => false,
    }
}

fn enables(name: &str) -> &'static str {
    match name {
        "user-namespace" => {
            "the container sandbox: a job's own ids (root inside, unprivileged outside)"
        }
        "mount-namespace" => "the container sandbox: a job's own root and mounts",
        "pid-namespace" => "the container sandbox: a job's own processes, all killed with it",
        "net-namespace" => "the container sandbox: no network but loopback",
        "time-namespace" => "the container sandbox: a job's uptime starts at 0",
        "idmapped-mount" => {
            "a job's root owned as the base has it (root-owned files are the job root's)"
        }
        "overlay-over-idmapped" => {
            "prepared environments: later runs reuse the rolled-back environment instead of unpacking and rolling back again"
        }
        "landlock" => {
            "Landlock rules in jobs (filesystem writes, TCP ports, signal and socket scopes)"
        }
        "seccomp-notify" => {
            "the egress's record of a container job's connects that nothing answers (every job of a profile with [[egress]], run --egress)"
        }
        "cgroup" => "--memory as a real memory limit (else RLIMIT_AS, address space)",
        "cgroup-v2-delegation" => {
            "the nested podman's cgroupfs manager on a cgroup v2 host (reprobox's own limits use the v1 memory controller; on a v2-only host --memory falls back to RLIMIT_AS)"
        }
        "subids" => "reproducing as a non-root user (65536 ids for the nested podman)",
        "qemu" => "--backend microvm",
        "vm-tools" => "--backend microvm: the guest's init and root disks",
        "guest-kernel" => "`run --backend microvm` without --kernel; the KVM probe",
        "kvm" => "fast microVMs (hardware virtualization)",
        "world-tools" => "the test world (`reprobox demo`, `world build`)",
        _ => "",
    }
}

fn remedy(name: &str, root: bool) -> String {
    let s = match name {
        "user-namespace" => {
            "enable user namespaces (sysctl user.max_user_namespaces=15000; on Debian kernels also kernel.unprivileged_userns_clone=1); in a container, run it with a seccomp profile that allows unshare (e.g. --privileged)"
        }
        "mount-namespace" | "pid-namespace" | "net-namespace" => {
            "a kernel with this namespace (CONFIG_*_NS); in a container, allow unshare (e.g. --privileged)"
        }
        "time-namespace" => {
            "Linux >= 5.6 with CONFIG_TIME_NS; in a container, allow unshare (e.g. --privileged)"
        }
        "idmapped-mount" if !root => {
            "run as root (as another user the sandbox maps subordinate ids and needs no idmapped mount)"
        }
        "idmapped-mount" => {
            "Linux >= 5.12 and a temporary directory and store on a filesystem that supports idmapped mounts (ext4, xfs, btrfs; tmpfs from 6.3)"
        }
        "overlay-over-idmapped" if !root => {
            "run as root (as another user no prepared environment is overlaid)"
        }
        "overlay-over-idmapped" => {
            "Linux >= 5.19 with overlayfs (modprobe overlay); or reproduce with --fresh-env (no prepared environments)"
        }
        "landlock" => {
            "Linux >= 5.13 with landlock in the lsm= boot parameter (CONFIG_SECURITY_LANDLOCK); jobs run without it otherwise and the run record says so"
        }
        "seccomp-notify" => {
            "Linux >= 5.5 with CONFIG_SECCOMP_FILTER; in a container, a seccomp profile that allows seccomp(2) (e.g. --privileged); a process already under a user-notification filter (reprobox inside a reprobox job) cannot load another"
        }
        "cgroup" => {
            "run as root with a writable cgroup v1 memory hierarchy (/sys/fs/cgroup/memory); --memory falls back to RLIMIT_AS otherwise"
        }
        "cgroup-v2-delegation" => {
            "mount the unified hierarchy (cgroup_no_v1=all or systemd.unified_cgroup_hierarchy=1) and delegate a subtree to reprobox's user (systemd: Delegate=yes)"
        }
        "subids" => {
            "give the user ranges and install the helpers: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER; apt-get install -y --no-install-recommends uidmap"
        }
        "qemu" => "apt-get install -y --no-install-recommends qemu-system-x86",
        "guest-kernel" => {
            "apt-get install -y --no-install-recommends linux-image-amd64, or pass --kernel PATH"
        }
        "kvm" => {
            "TCG will be used (slower; instruction-counted); for KVM, a host with working hardware virtualization and /dev/kvm readable and writable"
        }
        _ => "",
    };
    s.to_string()
}

/// Probes the items of `names` (in [`ITEMS`] order), as root or not (`root`), for `needs`.
pub fn run_checks(names: &[&str], needs: Needs, root: bool) -> Vec<Check> {
    let ns: OnceCell<Vec<(&str, std::io::Result<()>)>> = OnceCell::new();
    let range = crate::pipeline::environment::ID_RANGE;
    let mut out = Vec::new();
    for name in ITEMS.iter().copied().filter(|n| names.contains(n)) {
        let (status, detail, remedy_text): (Status, String, Option<String>) = match name {
            n if n.ends_with("-namespace") => {
                let all = ns.get_or_init(|| {
                    let wanted: Vec<&str> = names
                        .iter()
                        .filter_map(|n| n.strip_suffix("-namespace"))
                        .collect();
                    probe::namespaces(&wanted)
                });
                let short = n.trim_end_matches("-namespace");
                match all.iter().find(|(k, _)| *k == short).map(|(_, r)| r) {
                    Some(Ok(())) => (
                        Status::Ok,
                        format!("unshare(CLONE_NEW{}) works", flag_name(short)),
                        None,
                    ),
                    Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => (
                        Status::Missing,
                        format!("unshare: {e} (the kernel lacks it)"),
                        None,
                    ),
                    Some(Err(e)) => (Status::Failed, format!("unshare: {e}"), None),
                    None => (Status::Failed, "not probed".into(), None),
                }
            }
            "idmapped-mount" | "overlay-over-idmapped" if !root => (
                Status::Missing,
                "needs root; not used as another user".into(),
                None,
            ),
            "idmapped-mount" => found(probe::idmapped_mount(range)),
            "overlay-over-idmapped" => found(probe::overlay_over_idmapped(range)),
            "landlock" => match probe::landlock_abi() {
                Ok((v, crate_abi)) => (
                    Status::Ok,
                    format!("ABI {v} (the landlock crate uses {crate_abi})"),
                    None,
                ),
                Err(e) => (Status::Missing, e, None),
            },
            "seccomp-notify" => found(probe::seccomp_notify()),
            "cgroup" => match probe::cgroup() {
                Ok(d) => (Status::Ok, d, None),
                Err(e) => (Status::Missing, e, None),
            },
            "cgroup-v2-delegation" => match probe::cgroup_v2_delegation() {
                Ok(d) => (Status::Ok, d, None),
                Err(e) => (Status::Missing, e, None),
            },
            "subids" => match probe::subids() {
                Ok(d) => (Status::Ok, d, None),
                Err(e) => (Status::Missing, e, None),
            },
            "qemu" => match crate::vm::qemu::find_qemu() {
                Ok(p) => (Status::Ok, p.display().to_string(), None),
                Err(e) => (Status::Missing, e.to_string(), None),
            },
            "vm-tools" => vm_tools(),
            "guest-kernel" => match crate::vm::kernel::host_kernel() {
                Ok(p) => (Status::Ok, p.display().to_string(), None),
                Err(e) => (Status::Missing, e.to_string(), None),
            },
            "kvm" => kvm(),
            "world-tools" => world_tools(),
            _ => (Status::Failed, "unknown item".into(), None),
        };
        out.push(Check {
            name,
            status,
            required: required(name, needs, root),
            enables: enables(name),
            remedy: (status != Status::Ok)
                .then(|| remedy_text.unwrap_or_else(|| remedy(name, root))),
            detail,
        });
    }
    out
}

fn found(r: std::result::Result<String, String>) -> (Status, String, Option<String>) {
    match r {
        Ok(d) => (Status::Ok, d, None),
        Err(e) => (Status::Failed, e, None),
    }
}

fn flag_name(short: &str) -> &'static str {
    match short {
        "user" => "USER",
        "mount" => "NS",
        "pid" => "PID",
        "net" => "NET",
        "time" => "TIME",
        _ => "?",
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn vm_tools() -> (Status, String, Option<String>) {
    let mut missing: Vec<(&str, &str)> = Vec::new();
    if crate::vm::initramfs::find_busybox().is_err() {
        missing.push(("busybox", "busybox-static"));
    }
    for t in ["mke2fs", "debugfs"] {
        if on_path(t).is_none() {
            missing.push((t, "e2fsprogs"));
        }
    }
    if missing.is_empty() {
        return (Status::Ok, "busybox, mke2fs, debugfs".into(), None);
    }
    (
        Status::Missing,
        format!("{} not found", names_of(&missing)),
        Some(crate::world::tools::apt_install_command(
            missing.iter().map(|(_, p)| *p),
        )),
    )
}

fn world_tools() -> (Status, String, Option<String>) {
    let missing = crate::world::tools::missing_host_tools();
    if missing.is_empty() {
        return (
            Status::Ok,
            crate::world::tools::HOST_TOOLS
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", "),
            None,
        );
    }
    (
        Status::Missing,
        format!("{} not found", names_of(&missing)),
        Some(crate::world::tools::apt_install_command(
            missing.iter().map(|(_, p)| *p),
        )),
    )
}

fn names_of(tools: &[(&str, &str)]) -> String {
    tools.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
}

/// Boot a tiny guest under KVM with the host's kernel (the microVM backend's own probe,
/// bounded by its 10 s timeout).
fn kvm() -> (Status, String, Option<String>) {
    let dev = std::path::Path::new("/dev/kvm");
    if !dev.exists() {
        return (
            Status::Missing,
            "/dev/kvm does not exist; TCG will be used".into(),
            None,
        );
    }
    let kernel = match crate::vm::kernel::host_kernel() {
        Ok(k) => k,
        Err(e) => {
            return (
                Status::Missing,
                format!("no guest kernel to try KVM with ({e}); TCG will be used"),
                None,
            );
        }
    };
    let opts = crate::vm::VmOptions {
        kernel: Some(kernel),
        accel: crate::vm::Accel::Auto,
        ..Default::default()
    };
    match crate::vm::machine_info(&opts) {
        Ok(m) if m.accel == "kvm" => (Status::Ok, m.accel_detail, None),
        Ok(m) if !crate::vm::qemu::kvm_device_usable(dev) => {
            (Status::Missing, m.accel_detail, None)
        }
        Ok(m) => (Status::Failed, m.accel_detail, None),
        Err(e) => (
            Status::Missing,
            format!("cannot try KVM: {e}; TCG will be used"),
            None,
        ),
    }
}

/// Every item, probed: the doctor's report (`can_reproduce`: every item `reproduce` needs
/// with its defaults, as this user, is ok).
pub fn report() -> Report {
    let root = is_root();
    let checks = run_checks(&ITEMS, Needs::REPRODUCE, root);
    Report {
        schema: SCHEMA,
        can_reproduce: can_run(&checks),
        checks,
    }
}

/// Every required item is ok.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| !c.required || c.status == Status::Ok)
}

/// Probe only what `needs` requires (no KVM boot: a few ms) and fail, before any work, with
/// the first item that is not ok: one line naming it, what was found and its remedy (an
/// `Environment` error, exit 3).
pub fn preflight(needs: Needs) -> Result<()> {
    let started = std::time::Instant::now();
    let root = is_root();
    if needs.world && !root {
        return Err(Error::Environment(
            "doctor: root missing: building the test world needs root (bwrap with full capabilities, podman, bind mounts); to get it: run as root (sudo scripts/demo)".into(),
        ));
    }
    let names: Vec<&str> = ITEMS
        .iter()
        .copied()
        .filter(|n| required(n, needs, root))
        .collect();
    let checks = run_checks(&names, needs, root);
    tracing::debug!(
        "doctor: {} required checks in {:.1} ms",
        checks.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    match checks.iter().find(|c| c.status != Status::Ok) {
        None => Ok(()),
        Some(c) => Err(Error::Environment(refusal(c))),
    }
}

/// The one line a run stops with when a required item is not ok.
pub fn refusal(c: &Check) -> String {
    format!(
        "doctor: {} {}: {}; needed for {}; to get it: {} (`reprobox doctor` lists everything)",
        c.name,
        c.status.as_str(),
        c.detail,
        c.enables,
        c.remedy.as_deref().unwrap_or("")
    )
}

/// The human report: one aligned line per item, then the verdict.
pub fn render(r: &Report) -> String {
    let w = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in &r.checks {
        s.push_str(&format!(
            "{:<7} {:<w$} {:<8} {}; enables {}",
            c.status.as_str(),
            c.name,
            if c.required { "required" } else { "" },
            c.detail,
            c.enables,
        ));
        if let Some(rem) = &c.remedy {
            s.push_str(&format!("; to get it: {rem}"));
        }
        s.push('\n');
    }
    let blocking: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.required && c.status != Status::Ok)
        .map(|c| c.name)
        .collect();
    if r.can_reproduce {
        s.push_str("reprobox reproduce can run here (container backend).\n");
    } else {
        s.push_str(&format!(
            "reprobox reproduce cannot run here: {} not ok.\n",
            blocking.join(", ")
        ));
    }
    s
}

fn is_root() -> bool {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, status: Status, required: bool) -> Check {
        Check {
            name,
            status,
            required,
            enables: enables(name),
            detail: "found".into(),
            remedy: (status != Status::Ok).then(|| remedy(name, true)),
        }
    }

    #[test]
    fn required_items_follow_backend_user_and_purpose() {
        let req = |needs, root| -> Vec<&str> {
            ITEMS
                .iter()
                .copied()
                .filter(|n| required(n, needs, root))
                .collect()
        };
        let ns = [
            "user-namespace",
            "mount-namespace",
            "pid-namespace",
            "net-namespace",
            "time-namespace",
        ];
        let mut root = ns.to_vec();
        root.extend(["idmapped-mount", "overlay-over-idmapped", "seccomp-notify"]);
        assert_eq!(req(Needs::REPRODUCE, true), root);
        let mut user = ns.to_vec();
        user.extend(["seccomp-notify", "subids"]);
        assert_eq!(req(Needs::REPRODUCE, false), user);
        let fresh = Needs {
            prepared_envs: false,
            ..Needs::REPRODUCE
        };
        assert!(!req(fresh, true).contains(&"overlay-over-idmapped"));
        let vm = Needs {
            container: false,
            microvm: true,
            ..Needs::REPRODUCE
        };
        assert_eq!(req(vm, true), ["qemu", "vm-tools"]);
        assert!(req(Needs::DEMO, true).contains(&"world-tools"));
        // Never required: what the run record reports as not enforced, or TCG replaces.
        for needs in [Needs::REPRODUCE, Needs::DEMO, vm] {
            for root in [true, false] {
                for n in ["landlock", "cgroup", "kvm", "guest-kernel"] {
                    assert!(!required(n, needs, root), "{n}");
                }
            }
        }
    }

    #[test]
    fn every_item_says_what_it_enables_and_how_to_get_it() {
        for n in ITEMS {
            assert!(!enables(n).is_empty(), "{n}");
            if !matches!(n, "vm-tools" | "world-tools") {
                assert!(!remedy(n, true).is_empty(), "{n}");
                assert!(!remedy(n, false).is_empty(), "{n}");
            }
        }
    }

    #[test]
    fn human_lines_are_aligned_and_name_the_blocking_items() {
        let r = Report {
            schema: SCHEMA,
            can_reproduce: false,
            checks: vec![
                check("user-namespace", Status::Ok, true),
                check("kvm", Status::Failed, false),
                check("idmapped-mount", Status::Missing, true),
            ],
        };
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ok      user-namespace required found; enables "));
        assert!(lines[1].starts_with("failed  kvm                     found; enables "));
        assert!(lines[1].contains("; to get it: TCG will be used"));
        assert!(lines[2].starts_with("missing idmapped-mount required found;"));
        assert!(!lines[0].contains("to get it"));
        assert_eq!(
            lines[3],
            "reprobox reproduce cannot run here: idmapped-mount not ok."
        );
        assert!(can_run(&r.checks[..2]));
        assert!(!can_run(&r.checks));
    }

    #[test]
    fn json_has_the_schema_fields() {
        let r = Report {
            schema: SCHEMA,
            can_reproduce: true,
            checks: vec![check("landlock", Status::Ok, false)],
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], "reprobox.doctor/v1");
        assert_eq!(v["can_reproduce"], true);
        let c = &v["checks"][0];
        for k in ["name", "status", "enables", "detail", "remedy", "required"] {
            assert!(c.get(k).is_some(), "{k}");
        }
        assert_eq!(c["status"], "ok");
        assert!(c["remedy"].is_null());
    }

    #[test]
    fn refusal_is_one_line_with_the_remedy() {
        let c = check("overlay-over-idmapped", Status::Failed, true);
        let line = refusal(&c);
        assert!(!line.contains('\n'));
        assert!(line.starts_with("doctor: overlay-over-idmapped failed: found;"));
        assert!(line.contains("to get it: Linux >= 5.19"));
    }
}
