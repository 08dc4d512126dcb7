//! Landlock, best effort by the kernel's ABI. Filesystem rules (writes only beneath the
//! declared writable paths) are applied only to jobs that cannot mount: Landlock makes
//! mount(2) fail for a restricted process. TCP bind/connect rules and scopes (signals,
//! abstract sockets) apply to every job. What the kernel enforced is returned so the run
//! record can say it.

use std::path::PathBuf;

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::job::Enforcement;

pub(crate) struct Request {
    pub restrict_fs: bool,
    pub writable: Vec<PathBuf>,
    pub tcp_connect: Vec<u16>,
    pub tcp_bind: Vec<u16>,
}

fn status(s: &RulesetStatus) -> (bool, &'static str) {
    match s {
        RulesetStatus::FullyEnforced => (true, "fully enforced"),
        RulesetStatus::PartiallyEnforced => (true, "partially enforced (older ABI)"),
        RulesetStatus::NotEnforced => (false, "not enforced: the kernel lacks Landlock"),
    }
}

/// Apply the rules to the calling process (after NO_NEW_PRIVS).
pub(crate) fn apply(req: &Request) -> Result<Vec<Enforcement>, String> {
    let abi = ABI::V6;
    let mut out = Vec::new();
    let e = |s: ::landlock::RulesetError| format!("landlock: {s}");
    let mut rs = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
    if req.restrict_fs {
        rs = rs.handle_access(AccessFs::from_write(abi)).map_err(e)?;
    }
    rs = rs
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(e)?
        .scope(Scope::from_all(abi))
        .map_err(e)?;
    let mut created = rs.create().map_err(e)?;
    if req.restrict_fs {
        for p in &req.writable {
            match PathFd::new(p) {
                Ok(fd) => {
                    created = created
                        .add_rule(PathBeneath::new(fd, AccessFs::from_write(abi)))
                        .map_err(e)?;
                }
                Err(err) => return Err(format!("landlock: writable path {}: {err}", p.display())),
            }
        }
    }
    for p in &req.tcp_connect {
        created = created
            .add_rule(NetPort::new(*p, AccessNet::ConnectTcp))
            .map_err(e)?;
    }
    for p in &req.tcp_bind {
        created = created
            .add_rule(NetPort::new(*p, AccessNet::BindTcp))
            .map_err(e)?;
    }
    let st = created.restrict_self().map_err(e)?;
    let (ok, how) = status(&st.ruleset);
    let ports = |v: &[u16]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    if req.restrict_fs {
        let w: Vec<String> = req
            .writable
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        out.push(Enforcement {
            feature: "landlock-filesystem".into(),
            enforced: ok,
            detail: format!("{how}; writes only beneath {}", w.join(", ")),
        });
    } else {
        out.push(Enforcement {
            feature: "landlock-filesystem".into(),
            enforced: false,
            detail: "not applied: the job may mount (CAP_SYS_ADMIN kept) and Landlock filesystem rules forbid mount".into(),
        });
    }
    out.push(Enforcement {
        feature: "landlock-network".into(),
        enforced: ok,
        detail: format!(
            "{how}; TCP connect to ports {}, bind to ports {}",
            ports(&req.tcp_connect),
            ports(&req.tcp_bind)
        ),
    });
    out.push(Enforcement {
        feature: "landlock-scope".into(),
        enforced: ok,
        detail: format!("{how}; signals and abstract unix sockets confined to the job"),
    });
    Ok(out)
}
