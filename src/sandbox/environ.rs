//! The job's environment: cleared, then only the fixed set and the declared values.

use std::path::Path;

use crate::job::{Enforcement, Job};

/// Where Debian and Arch put libfaketime, relative to the root.
const LIBFAKETIME: &[&str] = &[
    "usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "usr/lib/faketime/libfaketime.so.1",
];

pub(crate) const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The exact environment of the job, in order; later `--env` values replace earlier ones.
pub(crate) fn build(job: &Job, host_term: Option<&str>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), host_term.unwrap_or("dumb").into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), "UTC".into()),
    ];
    if let Some(e) = job.clock.source_date_epoch {
        v.push(("SOURCE_DATE_EPOCH".into(), e.to_string()));
    }
    for (k, val) in &job.env {
        v.retain(|(kk, _)| kk != k);
        v.push((k.clone(), val.clone()));
    }
    v
}

/// Pin the wall clock of dynamically linked tools to SOURCE_DATE_EPOCH with the root
/// filesystem's own libfaketime (DESIGN.md decision 4): a container cannot move
/// CLOCK_REALTIME. Static and Go binaries are not affected, and the record says so.
pub(crate) fn faketime(job: &Job, root: &Path, env: &mut Vec<(String, String)>) -> Enforcement {
    let no = |detail: String| Enforcement {
        feature: "faketime".into(),
        enforced: false,
        detail,
    };
    let Some(epoch) = job.clock.source_date_epoch else {
        return no("requested without SOURCE_DATE_EPOCH".into());
    };
    let Some(lib) = LIBFAKETIME.iter().find(|l| root.join(l).is_file()) else {
        return no("the root filesystem has no libfaketime".into());
    };
    let Ok(ts) = jiff::Timestamp::from_second(epoch) else {
        return no(format!("SOURCE_DATE_EPOCH {epoch} is out of range"));
    };
    let when = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    env.retain(|(k, _)| k != "LD_PRELOAD" && k != "FAKETIME");
    env.push(("LD_PRELOAD".into(), format!("/{lib}")));
    // An absolute FAKETIME (no `@`) stops the clock there: a clock that merely started at
    // SOURCE_DATE_EPOCH would stamp SOURCE_DATE_EPOCH+1 into whatever is written after the
    // first second, so the output would depend on how loaded the machine is.
    env.push(("FAKETIME".into(), when.clone()));
    Enforcement {
        feature: "faketime".into(),
        enforced: true,
        detail: format!(
            "wall clock of dynamically linked tools stopped at {when} UTC (/{lib}); static and Go binaries see the real clock"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::RootfsSource;

    #[test]
    fn fixed_set_then_declared() {
        let mut j = Job::new(RootfsSource::Dir("/".into()), vec![]);
        j.clock.source_date_epoch = Some(42);
        j.env.push(("TZ".into(), "Europe/Paris".into()));
        j.env.push(("A".into(), "b".into()));
        let e = build(&j, None);
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "PATH",
                "HOME",
                "TERM",
                "LANG",
                "SOURCE_DATE_EPOCH",
                "TZ",
                "A"
            ]
        );
        assert!(e.contains(&("SOURCE_DATE_EPOCH".into(), "42".into())));
        assert!(e.contains(&("TZ".into(), "Europe/Paris".into())));
    }
}
