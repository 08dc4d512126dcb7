//! The job's capability bounding set. The job runs as root of its user namespace; the
//! bounding set decides which of that root's capabilities survive execve. The default is
//! exactly what nested `podman build --isolation chroot` needs (reference/isolation.md).

use std::str::FromStr;

use caps::{CapSet, Capability};

use crate::error::{Error, Result};
use crate::job::CapsPolicy;

/// Capabilities nested podman needs; everything else (SYS_MODULE, SYS_TIME, SYS_BOOT,
/// NET_ADMIN, SYS_PTRACE, SYS_RAWIO…) is dropped.
pub(crate) const DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_MKNOD,
    Capability::CAP_AUDIT_WRITE,
];

/// The set to keep for a policy; a bad name is the user's error.
pub(crate) fn resolve(policy: &CapsPolicy) -> Result<caps::CapsHashSet> {
    Ok(match policy {
        CapsPolicy::Default => DEFAULT.iter().copied().collect(),
        CapsPolicy::None => caps::CapsHashSet::new(),
        CapsPolicy::List(names) => {
            let mut s = caps::CapsHashSet::new();
            for n in names {
                let up = n.trim().to_ascii_uppercase();
                let full = if up.starts_with("CAP_") {
                    up
                } else {
                    format!("CAP_{up}")
                };
                let c = Capability::from_str(&full).map_err(|_| {
                    Error::bad_input(
                        format!("--caps {n}"),
                        "expected default, none, or a comma-separated list of capability names like sys_admin,chown",
                    )
                })?;
                s.insert(c);
            }
            s
        }
    })
}

/// Narrow the bounding set to `keep` (and clear ambient caps). Runs in the job's child.
/// Every capability the kernel knows is dropped by number (one prctl each, no reads),
/// including ones newer than this program: the kernel answers EINVAL past its last one.
pub(crate) fn apply(keep: &caps::CapsHashSet) -> std::result::Result<(), String> {
    let keep: u64 = keep.iter().fold(0, |m, c| m | 1u64 << c.index());
    for i in 0..64u32 {
        if keep & (1u64 << i) != 0 {
            continue;
        }
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(i), 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!("drop capability {i} from the bounding set: {e}"));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient caps: {e}"))?;
    if keep == 0 {
        for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            caps::clear(None, set).map_err(|e| format!("clear {set:?} caps: {e}"))?;
        }
    }
    Ok(())
}

pub(crate) fn describe(keep: &caps::CapsHashSet) -> String {
    if keep.is_empty() {
        "bounding set empty".into()
    } else {
        let mut v: Vec<String> = keep.iter().map(|c| c.to_string().to_lowercase()).collect();
        v.sort();
        format!("bounding set: {}", v.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_prefix() {
        let s = resolve(&CapsPolicy::List(vec![
            "sys_admin".into(),
            "CAP_CHOWN".into(),
        ]))
        .unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.contains(&Capability::CAP_SYS_ADMIN));
        let e = resolve(&CapsPolicy::List(vec!["fly".into()])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            !resolve(&CapsPolicy::Default)
                .unwrap()
                .contains(&Capability::CAP_SYS_MODULE)
        );
    }
}
