//! Stage 6, the rootfs check: the rebuilt tarball's sha256 against the release's, its
//! timestamps against SOURCE_DATE_EPOCH, and on a difference the published tarball fetched
//! and diffed file by file (diffoscope too when installed).

use std::path::Path;

use super::Run;
use crate::error::Result;
use crate::plan::release::Release;
use crate::report::Check;
use crate::verify::audit::LateTimestamp;
use crate::verify::tardiff::FileDiff;

/// What the rootfs check found.
#[derive(Debug, Default)]
pub struct RootfsEvidence {
    pub check: Option<Check>,
    pub late: Vec<LateTimestamp>,
    pub file_diffs: Vec<FileDiff>,
    /// Files kept for external diff tools (names under the output directory).
    pub kept: Vec<String>,
}

impl Run<'_> {
    /// Stage 6 over the rebuilt `rootfs` (which may be missing: the check is then unknown).
    pub fn check_rootfs(&mut self, release: &Release, rootfs: &Path) -> Result<RootfsEvidence> {
        let plan = self.plan;
        self.phase(&format!("checking the rootfs {}", plan.artifacts.rootfs));
        let actual = if rootfs.is_file() {
            Some(crate::digest::sha256_file(rootfs)?)
        } else {
            None
        };
        let mut ev = RootfsEvidence {
            check: Some(Check::compare(
                "rootfs-sha256",
                true,
                Some(release.rootfs_sha256.clone()),
                actual.clone(),
                format!(
                    "expected from {} at {} ({}); actual sha256 of {}/{}",
                    plan.source.release_file,
                    plan.source.tag,
                    release.rootfs_file,
                    plan.artifacts.dir,
                    plan.artifacts.rootfs
                ),
            )),
            ..RootfsEvidence::default()
        };
        let Some(actual) = actual else {
            return Ok(ev);
        };
        ev.late = crate::verify::audit::audit_tarball(rootfs, plan.source_date_epoch)?;
        if actual == release.rootfs_sha256 {
            return Ok(ev);
        }
        let url = plan.expected.rootfs_url.clone();
        self.phase(&format!(
            "rootfs differs: fetching the published one from {url} to compare"
        ));
        match self.fetcher.fetch_recorded(
            &mut self.ledger.inputs,
            &url,
            Some(&release.rootfs_sha256),
        ) {
            Ok(blob) => {
                let a = crate::verify::tarindex::read_index(&blob.path)?;
                let b = crate::verify::tarindex::read_index(rootfs)?;
                ev.file_diffs = crate::verify::tardiff::diff(&a, &b);
                ev.kept = run_diffoscope(&blob.path, rootfs, &self.o.out, &mut self.ledger.notes);
                if ev.file_diffs.is_empty() {
                    self.ledger.notes.push("the two rootfs tarballs hold the same files with the same metadata: the bytes differ in tar layout or compression".into());
                }
            }
            Err(e) => self.ledger.notes.push(format!(
                "could not fetch the published rootfs to compare files: {e}"
            )),
        }
        Ok(ev)
    }
}

/// diffoscope on the two rootfs tarballs, when it is installed: its text and JSON output
/// are kept in the output directory (file names returned).
fn run_diffoscope(
    published: &Path,
    rebuilt: &Path,
    out: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let Some(bin) = crate::verify::on_path("diffoscope") else {
        notes.push("diffoscope is not installed: only reprobox's native file diff was made".into());
        return Vec::new();
    };
    let status = std::process::Command::new(bin)
        .arg("--text")
        .arg(out.join("diffoscope.txt"))
        .arg("--json")
        .arg(out.join("diffoscope.json"))
        .arg(published)
        .arg(rebuilt)
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        // diffoscope: 0 same, 1 different, 2 error.
        Ok(s) if matches!(s.code(), Some(0 | 1)) => {
            vec!["diffoscope.txt".into(), "diffoscope.json".into()]
        }
        Ok(s) => {
            notes.push(format!("diffoscope failed ({s})"));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("diffoscope could not run: {e}"));
            Vec::new()
        }
    }
}
