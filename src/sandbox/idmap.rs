//! The job's user namespace ID map.
//!
//! - Root on the host: 65536 ids, 0 → a host range (the job's `id_map`, else root's
//!   /etc/subuid and /etc/subgid entries, else 100000), written directly.
//! - A non-root user with /etc/subuid and /etc/subgid ranges: 0 → the user's own id, and
//!   1…65535 → the subordinate range, through the setuid `newuidmap`/`newgidmap`.
//! - Otherwise a single-id map (0 → the user's id); nested podman cannot work then, and
//!   the run record says so.

use std::process::Command;

use crate::job::{Enforcement, IdRange};

pub(crate) const COUNT: u32 = 65536;
const DEFAULT_BASE: u32 = 100000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Root {
        uid_base: u32,
        gid_base: u32,
        count: u32,
    },
    Helper {
        uid: u32,
        gid: u32,
        sub_uid: (u32, u32),
        sub_gid: (u32, u32),
    },
    Single {
        uid: u32,
        gid: u32,
        why: String,
    },
}

/// The first range for `user` (name or numeric id) in a subuid/subgid file's text.
pub(crate) fn parse_subid(text: &str, user: &str, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != user && who != id.to_string() {
            return None;
        }
        Some((start.parse().ok()?, count.parse().ok()?))
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

pub(crate) fn on_path(tool: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(tool).exists())
}

/// Decide the map for the calling user.
pub(crate) fn decide(requested: Option<&IdRange>) -> Plan {
    // SAFETY: trivial getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let name = user_name(uid);
    let sub = |file: &str, id: u32| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| parse_subid(&t, &name, id))
    };
    if uid == 0 {
        let (uid_base, gid_base, count) = match requested {
            Some(r) => (r.host_uid, r.host_gid, r.count),
            None => (
                sub("/etc/subuid", uid).map_or(DEFAULT_BASE, |r| r.0),
                sub("/etc/subgid", uid).map_or(DEFAULT_BASE, |r| r.0),
                COUNT,
            ),
        };
        return Plan::Root {
            uid_base,
            gid_base,
            count,
        };
    }
    match (sub("/etc/subuid", uid), sub("/etc/subgid", gid)) {
        (Some(su), Some(sg)) if on_path("newuidmap") && on_path("newgidmap") => Plan::Helper {
            uid,
            gid,
            sub_uid: (su.0, su.1.min(COUNT - 1)),
            sub_gid: (sg.0, sg.1.min(COUNT - 1)),
        },
        (Some(_), Some(_)) => Plan::Single {
            uid,
            gid,
            why: "newuidmap/newgidmap are not installed".into(),
        },
        _ => Plan::Single {
            uid,
            gid,
            why: format!("user {name} has no /etc/subuid and /etc/subgid ranges"),
        },
    }
}

/// Write the map for process `pid` (which has just unshared its user namespace).
pub(crate) fn apply(plan: &Plan, pid: i32) -> Result<(), String> {
    let w = |file: &str, text: String| {
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, &text).map_err(|e| format!("write {p} ({}): {e}", text.trim()))
    };
    match plan {
        Plan::Root {
            uid_base,
            gid_base,
            count,
        } => {
            w("uid_map", format!("0 {uid_base} {count}\n"))?;
            w("gid_map", format!("0 {gid_base} {count}\n"))
        }
        Plan::Helper {
            uid,
            gid,
            sub_uid,
            sub_gid,
        } => {
            let run = |tool: &str, own: u32, sub: (u32, u32)| {
                let out = Command::new(tool)
                    .args([pid.to_string(), "0".into(), own.to_string(), "1".into()])
                    .args(["1".to_string(), sub.0.to_string(), sub.1.to_string()])
                    .output()
                    .map_err(|e| format!("run {tool}: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{tool} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(())
            };
            run("newuidmap", *uid, *sub_uid)?;
            run("newgidmap", *gid, *sub_gid)
        }
        Plan::Single { uid, gid, .. } => {
            w("uid_map", format!("0 {uid} 1\n"))?;
            w("setgroups", "deny".into())?;
            w("gid_map", format!("0 {gid} 1\n"))
        }
    }
}

/// Whether setgroups(2) is allowed inside (it is denied for a single-id map).
pub(crate) fn setgroups_allowed(plan: &Plan) -> bool {
    !matches!(plan, Plan::Single { .. })
}

pub(crate) fn describe(plan: &Plan) -> Enforcement {
    let (enforced, detail) = match plan {
        Plan::Root {
            uid_base,
            gid_base,
            count,
        } => (
            true,
            format!("{count} ids: uid 0 → host {uid_base}, gid 0 → host {gid_base}"),
        ),
        Plan::Helper {
            uid,
            gid,
            sub_uid,
            sub_gid,
        } => (
            true,
            format!(
                "newuidmap/newgidmap: 0 → host {uid}/{gid}, 1…{} → host {}…, gids 1…{} → host {}…",
                sub_uid.1, sub_uid.0, sub_gid.1, sub_gid.0
            ),
        ),
        Plan::Single { uid, why, .. } => (
            false,
            format!(
                "single-id map only (0 → host {uid}): {why}; nested podman cannot work (it needs 65536 ids)"
            ),
        ),
    };
    Enforcement {
        feature: "idmap".into(),
        enforced,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lookup_by_name_or_id() {
        let t = "alice:200000:65536\n1001:300000:1000\n";
        assert_eq!(parse_subid(t, "alice", 1000), Some((200000, 65536)));
        assert_eq!(parse_subid(t, "bob", 1001), Some((300000, 1000)));
        assert_eq!(parse_subid(t, "carol", 1002), None);
    }
}
