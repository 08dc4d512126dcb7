//! The job's environment: cleared, then only the fixed set and the declared values.

use crate::job::Job;

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
