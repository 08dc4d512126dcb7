//! The report of a run that stopped: once the plan is made, every failure (a fetch error, a
//! job that could not run, a verification error, SIGINT) still ends in `report.json` and
//! `summary.txt` with the verdict `incomplete`, the stage it stopped at and why, and what
//! the run had learnt by then ([`Reached`]). Bad input is the exception: it exits 2 with
//! nothing written, as everywhere else.
//!
//! `reproduce` runs its stages through one function and hands any error here, so no `?` in
//! a stage can skip the report.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::report::{Check, Verdict};
use crate::verify::tardiff::FileDiff;

use super::workspace::WorkspaceRecord;
use super::{Outcome, Run, outputs};

/// How far a run got: what each stage hands the report when it ends, so that a failure in a
/// later stage can still say it.
#[derive(Debug, Default)]
pub struct Reached {
    /// The stage running now (`host checks` and `store` before the first, `release`,
    /// `workspace`, `environment`, `build`, `rootfs check`, `image check`, `drift`,
    /// `outputs`, `clean up`).
    pub stage: &'static str,
    pub source_revision: Option<String>,
    pub environment_day: Option<String>,
    pub workspace: WorkspaceRecord,
    pub backend: Option<&'static str>,
    pub microvm: Option<serde_json::Value>,
    pub failed_step: Option<String>,
    pub checks: Vec<Check>,
    pub file_diffs: Vec<FileDiff>,
    pub file_diffs_source: Option<String>,
    pub external_diffs: Vec<String>,
    /// The run's egress once it exists: a run that stops before the steps are over still
    /// reports what it refused and fetched.
    pub egress: Option<std::sync::Arc<crate::egress::Egress>>,
}

/// Where and why the run stopped, as the report records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stopped {
    /// The stage that failed ([`Reached::stage`]).
    pub stage: String,
    /// The error, as reprobox prints it.
    pub error: String,
    /// The exit code the run ends with (3, or 130 when interrupted).
    pub exit_code: i32,
}

/// The checks a verdict needs: a stopped run lists each it did not make as unknown.
const EXPECTED_CHECKS: [&str; 4] = [
    "rootfs-sha256",
    "image-config-digest",
    "image-diff-ids",
    "image-manifest-digest",
];

/// The run stopped with `e`: bad input is returned as it is (exit 2, nothing written);
/// anything else writes the incomplete report and returns it with the error.
pub(super) fn stopped(run: &mut Run, e: Error) -> Result<Outcome> {
    let outcome = write_stopped(run.plan, run.o, &mut run.ledger, e);
    run.progress.end();
    outcome
}

/// A run that stopped before its first stage, at `stage` (the host checks, opening the
/// store): the same report, with nothing reached. An output directory that is a file is
/// bad input first, as for a run.
pub fn stopped_before(
    plan: &crate::plan::Plan,
    o: &super::Options,
    stage: &'static str,
    e: Error,
) -> Result<Outcome> {
    crate::error::dir_or_absent(&o.out, "output directory")?;
    let mut ledger = super::Ledger::default();
    ledger.reached.stage = stage;
    write_stopped(plan, o, &mut ledger, e)
}

fn write_stopped(
    plan: &crate::plan::Plan,
    o: &super::Options,
    ledger: &mut super::Ledger,
    e: Error,
) -> Result<Outcome> {
    if matches!(e, Error::BadInput { .. }) {
        return Err(e);
    }
    let report = report_of(plan, o, ledger, &e);
    if let Err(w) = write(&o.out, &report, &ledger.inputs) {
        // The run's own error is the one to show; the report's failure goes with it.
        tracing::error!("the report of the stopped run could not be written: {w}");
        return Err(e);
    }
    Ok(Outcome {
        exit_code: e.exit_code(),
        report,
        stopped: Some(e),
    })
}

/// The incomplete report of a run that stopped with `e`.
fn report_of(
    plan: &crate::plan::Plan,
    o: &super::Options,
    ledger: &mut super::Ledger,
    e: &Error,
) -> crate::report::Report {
    let reached = std::mem::take(&mut ledger.reached);
    let stage = if reached.stage.is_empty() {
        "release"
    } else {
        reached.stage
    };
    let why = format!("the run stopped at stage {stage}: {e}");
    let mut checks = reached.checks;
    for name in EXPECTED_CHECKS {
        if !checks.iter().any(|c| c.name == name) {
            checks.push(Check::compare(
                name,
                true,
                None,
                None,
                format!("not run: {why}"),
            ));
        }
    }
    let mut notes = std::mem::take(&mut ledger.notes);
    notes.push(why);
    let mut report = outputs::assemble_report(
        plan,
        outputs::Findings {
            environment_day: reached
                .environment_day
                .unwrap_or_else(|| plan.env_day.clone()),
            image_from: o.image_from,
            backend: reached.backend.unwrap_or(match o.backend {
                crate::backend::BackendChoice::Container => "container",
                crate::backend::BackendChoice::Microvm(_) => "microvm",
            }),
            microvm: reached.microvm,
            source_revision: reached.source_revision,
            workspace: reached.workspace,
            failed_step: reached.failed_step,
            checks,
            file_diffs: reached.file_diffs,
            file_diffs_source: reached.file_diffs_source,
            drift: Vec::new(),
            late: Vec::new(),
            steps: std::mem::take(&mut ledger.steps),
            external_diffs: reached.external_diffs,
            notes,
            egress: ledger
                .egress
                .take()
                .or_else(|| reached.egress.map(|e| e.record())),
            published_packages: ledger.published_packages.take(),
        },
    );
    report.verdict = Verdict::Incomplete;
    report.stopped = Some(Stopped {
        stage: stage.to_string(),
        error: e.to_string(),
        exit_code: e.exit_code(),
    });
    report
}

/// `report.json`, `summary.txt` and the inputs lock of what was fetched so far, each
/// written whole then renamed. The environment lock and the attestation are not written (a
/// stopped run has no complete record to attest); those of an earlier run in the same
/// directory are removed, so that none is taken for this run's.
fn write(
    out: &Path,
    report: &crate::report::Report,
    inputs: &crate::inputs::lock::InputsLock,
) -> Result<()> {
    std::fs::create_dir_all(out).ctx("create", out)?;
    for stale in ["env.lock", "attestation.json"] {
        let p = out.join(stale);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &p, e));
            }
            _ => {}
        }
    }
    outputs::write_atomic(&out.join("inputs.lock"), inputs.to_string().as_bytes())?;
    let json = serde_json::to_string_pretty(report).expect("plain JSON");
    outputs::write_atomic(&out.join("report.json"), json.as_bytes())?;
    outputs::write_atomic(&out.join("summary.txt"), report.summary().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_report(e: Error, reached: Reached) -> crate::report::Report {
        let plan = super::super::test_plan();
        let t = tempfile::tempdir().unwrap();
        let store = crate::inputs::store::Store::open(t.path()).unwrap();
        let fetcher = crate::inputs::fetch::Fetcher::new(store, true);
        let o = super::super::test_options(t.path().join("out"));
        let mut run = Run::new(&plan, &o, &fetcher);
        run.ledger.reached = reached;
        run.ledger.notes.push("earlier note".into());
        report_of(&plan, &o, &mut run.ledger, &e)
    }

    #[test]
    fn a_stopped_run_is_incomplete_names_the_stage_and_lists_every_check() {
        let pass = Check::compare(
            "rootfs-sha256",
            true,
            Some("a".into()),
            Some("a".into()),
            String::new(),
        );
        let t = tempfile::tempdir().unwrap();
        let store = crate::inputs::store::Store::open(t.path()).unwrap();
        let plan = super::super::test_plan();
        let egress = super::super::egress_for(&plan, Some(&"ab".repeat(32)), &store, true).unwrap();
        let r = run_report(
            Error::network("http://127.0.0.1:9/v2/x", "connection refused"),
            Reached {
                stage: "image check",
                source_revision: Some("34b8748".into()),
                checks: vec![pass],
                egress,
                ..Default::default()
            },
        );
        // The egress's record, although the steps never handed it over.
        let eg = r.egress.as_ref().expect("the egress record");
        assert!(eg.ca_certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(r.verdict, Verdict::Incomplete);
        let s = r.stopped.as_ref().unwrap();
        assert_eq!(s.stage, "image check");
        assert_eq!(s.exit_code, 3);
        assert!(s.error.contains("http://127.0.0.1:9/v2/x"), "{s:?}");
        assert_eq!(r.source_revision.as_deref(), Some("34b8748"));
        // The check made stays; every other expected one is unknown, with the reason.
        for name in EXPECTED_CHECKS {
            let c = r.checks.iter().find(|c| c.name == name).unwrap();
            if name == "rootfs-sha256" {
                assert_eq!(c.status, crate::report::Status::Pass);
            } else {
                assert_eq!(c.status, crate::report::Status::Unknown, "{c:?}");
                assert!(c.evidence.contains("stopped at stage image check"), "{c:?}");
            }
        }
        assert_eq!(r.notes[0], "earlier note");
        assert!(r.notes.last().unwrap().contains("connection refused"));
        let summary = r.summary();
        assert!(summary.contains("INCOMPLETE"), "{summary}");
        assert!(
            summary.contains("stopped at stage image check"),
            "{summary}"
        );
    }

    #[test]
    fn an_interrupted_run_keeps_its_exit_code_and_bad_input_writes_nothing() {
        let r = run_report(Error::Interrupted, Reached::default());
        assert_eq!(r.stopped.as_ref().unwrap().exit_code, 130);
        assert_eq!(r.stopped.as_ref().unwrap().stage, "release");
        assert_eq!(r.source_revision, None);

        let plan = super::super::test_plan();
        let t = tempfile::tempdir().unwrap();
        let store = crate::inputs::store::Store::open(t.path()).unwrap();
        let fetcher = crate::inputs::fetch::Fetcher::new(store, true);
        let out = t.path().join("out");
        let o = super::super::test_options(out.clone());
        let mut run = Run::new(&plan, &o, &fetcher);
        let e = stopped(&mut run, Error::bad_input("v1", "a tag"))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(!out.exists(), "bad input wrote {}", out.display());
        // Any other error writes the report, and removes an earlier run's attestation.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("attestation.json"), "{}").unwrap();
        let done = stopped(&mut run, Error::Environment("x".into())).unwrap();
        assert_eq!(done.exit_code, 3);
        assert!(done.stopped.is_some());
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(v["verdict"], "incomplete");
        assert_eq!(v["stopped"]["error"], "environment: x");
        assert!(out.join("summary.txt").is_file());
        assert!(out.join("inputs.lock").is_file());
        assert!(!out.join("attestation.json").exists());
        // Before the first stage (the host checks): the same report, at that stage.
        let before =
            stopped_before(&plan, &o, "host checks", Error::Environment("y".into())).unwrap();
        assert_eq!(before.report.stopped.unwrap().stage, "host checks");
        let file = t.path().join("a-file");
        std::fs::write(&file, "mine").unwrap();
        let o = super::super::test_options(file.clone());
        let e = stopped_before(&plan, &o, "host checks", Error::Environment("y".into()))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }
}
