//! The image step's inputs and stage 7, the image check: the Dockerfile's base images
//! pinned by digest and served to the job, the rebuilt image read from the environment's
//! podman, the published one from the registry (or the store), their comparison, and on a
//! difference both saved as archives, compared by the native image diff
//! (`verify::imagediff`, `image-diff.txt`/`.json`) and by diffoci when it is installed.

use std::path::Path;

use serde::Serialize;

use super::Run;
use super::steps::{JobContext, job_for};
use crate::error::{Error, IoContext, Result};
use crate::inputs::images::DigestRef;
use crate::inputs::registry::PublishedImage;
use crate::plan::{PlannedStep, Role, WORKSPACE};
use crate::report::{Check, Status as CheckStatus};

/// The podman global flags and the `-t` tag of an image step's build command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodmanCall {
    pub globals: Vec<String>,
    pub tag: String,
}

impl PodmanCall {
    /// From an argv that runs `podman [GLOBALS] build … -t TAG`.
    pub fn find(argv: &[String]) -> Option<PodmanCall> {
        let p = argv
            .iter()
            .position(|a| a == "podman" || a.ends_with("/podman"))?;
        let b = argv.iter().position(|a| a == "build")?;
        let globals = argv[p + 1..b].to_vec();
        let t = argv.iter().position(|a| a == "-t" || a == "--tag")?;
        Some(PodmanCall {
            globals,
            tag: argv.get(t + 1)?.clone(),
        })
    }

    /// A shell line running `podman GLOBALS ARGS…`.
    fn line(&self, args: &[&str]) -> String {
        let mut argv = vec!["podman".to_string()];
        argv.extend(self.globals.iter().cloned());
        argv.extend(args.iter().map(|a| a.to_string()));
        crate::shell::line(&argv)
    }
}

/// The `-f`/`--file` argument of a `podman build` argv.
pub fn dockerfile_arg(argv: &[String]) -> Option<String> {
    PodmanCall::find(argv)?;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "-f" || a == "--file" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--file=") {
            return Some(v.to_string());
        }
    }
    None
}

/// A path of the job (absolute, or relative to `workdir`) as the host's path in the
/// workspace, which is bound at [`WORKSPACE`].
fn in_workspace(workspace: &Path, workdir: &str, p: &str) -> std::path::PathBuf {
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", workdir.trim_end_matches('/'))
    };
    match abs.strip_prefix(WORKSPACE) {
        Some(rest) => workspace.join(rest.trim_start_matches('/')),
        None => workspace.join(p),
    }
}

/// `FROM` references pinned by digest in a Dockerfile; tags are returned separately (they
/// cannot be pinned, and the report says so).
pub fn from_refs(dockerfile: &str) -> (Vec<DigestRef>, Vec<String>) {
    let mut pinned = Vec::new();
    let mut tags = Vec::new();
    for l in dockerfile.lines() {
        let t = l.trim();
        if !t.to_ascii_uppercase().starts_with("FROM ") {
            continue;
        }
        let Some(img) = t[5..].split_whitespace().find(|w| !w.starts_with("--")) else {
            continue;
        };
        if img == "scratch" {
            continue;
        }
        match DigestRef::parse(img) {
            Some(r) => pinned.push(r),
            None => tags.push(img.to_string()),
        }
    }
    (pinned, tags)
}

/// The registry host a tag reference is pulled from: its own host when it names one
/// (`quay.io/x:1`), else Docker Hub's (a short name such as `alpine:3.23` resolves to
/// `docker.io/library/alpine` through the environment's short-name aliases).
fn tag_registry_host(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    let names_host = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match first {
        _ if !names_host => "registry-1.docker.io".into(),
        "docker.io" | "index.docker.io" => "registry-1.docker.io".into(),
        h => h.to_string(),
    }
}

impl Run<'_> {
    /// Before an image step: pin the Dockerfile's base images by digest, serve them on the
    /// job's loopback, and tell the environment's podman where they are. Returns the
    /// step's podman call.
    pub(super) fn pin_base_images(
        &mut self,
        ctx: &mut JobContext,
        step: &PlannedStep,
    ) -> Result<Option<PodmanCall>> {
        let plan = self.plan;
        // The Dockerfile the step builds (its `-f`), else the release file's name.
        let df = step
            .commands
            .iter()
            .find_map(|c| dockerfile_arg(c))
            .map(|f| in_workspace(&ctx.workspace, &step.workdir, &f))
            .unwrap_or_else(|| {
                ctx.workspace
                    .join(&plan.artifacts.dir)
                    .join(&plan.source.release_file)
            });
        let dockerfile = std::fs::read_to_string(&df).unwrap_or_default();
        let (refs, tags) = from_refs(&dockerfile);
        for t in tags {
            let host = tag_registry_host(&t);
            let through_egress = plan.egress.iter().any(|e| {
                e.host == host && e.policy == crate::plan::profile::EgressPolicy::Registry
            });
            self.ledger.notes.push(if through_egress {
                format!("base image {t} is a tag, not a digest: the build pulls it through the egress's registry policy for {host}, which resolves the tag once and pins its manifest by digest (an `egress registry` line of inputs.lock); later runs get those bytes")
            } else {
                format!("base image {t} is a tag, not a digest: it cannot be pinned, and the sandbox cannot pull it (no egress registry rule for {host})")
            });
        }
        let registry = plan
            .locations
            .get("registry")
            .map(|l| l.url.clone())
            .unwrap_or_default();
        for r in refs {
            self.phase(&format!("pinning base image {r}"));
            ctx.services.images.push(crate::inputs::images::pin(
                self.fetcher,
                &mut self.ledger.inputs,
                &registry,
                &r,
            )?);
        }
        // Let the environment's podman pull the pinned images from the job's loopback.
        if !ctx.services.images.is_empty() {
            let mut conf = String::from(
                "# written by reprobox: pinned base images served on the job's loopback\n",
            );
            for p in &ctx.services.images {
                conf.push_str(&format!(
                    "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n",
                    p.reference.host
                ));
            }
            ctx.write_root_file(
                "/etc/containers/registries.conf.d/90-reprobox-pinned.conf",
                conf.as_bytes(),
            )?;
            self.ledger.notes.push("reprobox added /etc/containers/registries.conf.d/90-reprobox-pinned.conf to the environment so its podman pulls the pinned base images over plain HTTP from the job's loopback".into());
        }
        Ok(step.commands.iter().find_map(|c| PodmanCall::find(c)))
    }

    /// The published image: from the registry (online, and kept in the store), or from the
    /// store (offline).
    fn published_image(&mut self) -> Result<PublishedImage> {
        let e = &self.plan.expected;
        crate::inputs::registry::published_image(
            self.fetcher,
            &mut self.ledger.inputs,
            &e.registry,
            &e.image,
            &e.image_tag,
        )
    }

    /// Stage 7, with the rebuilt image only when the image step ran and succeeded. Every
    /// expected check is in the report: a profile without an image step gets them as not
    /// run (unknown), so the rootfs alone never makes a reproduction.
    pub(super) fn image_stage(
        &mut self,
        ctx: &JobContext,
        build: &super::steps::Build,
    ) -> Result<(Vec<Check>, Vec<String>)> {
        let plan = self.plan;
        let Some(step) = plan.steps.iter().find(|s| s.role == Role::Image) else {
            return Ok((
                not_run(&plan.expected_image_ref(), "the profile has no image step"),
                Vec::new(),
            ));
        };
        let ran = build.failed.is_none() && self.ledger.steps.iter().any(|r| r.name == step.name);
        let built = build.image.as_ref().filter(|_| ran);
        self.check_image(ctx, step, built)
    }

    /// Stage 7: compare the rebuilt image with the published one. `built`: the image step's
    /// podman call when the step ran and succeeded. Returns the checks and the files kept
    /// for the diff tools.
    pub(super) fn check_image(
        &mut self,
        ctx: &JobContext,
        step: &PlannedStep,
        built: Option<&PodmanCall>,
    ) -> Result<(Vec<Check>, Vec<String>)> {
        let plan = self.plan;
        self.phase(&format!(
            "checking the image against the published {}",
            plan.expected_image_ref()
        ));
        let local = match built {
            Some(call) => self.inspect_rebuilt(ctx, step, call)?,
            None => None,
        };
        self.lap("image inspect");
        let published = match self.published_image() {
            Ok(p) => Some(p),
            Err(e) => {
                self.ledger
                    .notes
                    .push(format!("the published image could not be read: {e}"));
                None
            }
        };
        let checks = image_checks(
            &plan.expected_image_ref(),
            published.as_ref(),
            local.as_ref(),
        );
        let mut kept = Vec::new();
        if let (Some(p), Some(l), Some(call)) = (&published, &local, built)
            && p.config_digest != l.config_digest
        {
            self.phase("image differs: saving both images to compare");
            match self.save_images(ctx, step, call, p) {
                Ok(files) => {
                    kept.extend(files);
                    let out = &self.o.out;
                    let dir = out.join("images");
                    let (published, rebuilt) = (dir.join("published.tar"), dir.join("rebuilt.tar"));
                    // The native diff always; diffoci as well when it is installed.
                    match crate::verify::imagediff::for_report(out, &published, &rebuilt) {
                        Ok((files, summary)) => {
                            kept.extend(files);
                            self.ledger.notes.push(summary);
                        }
                        Err(note) => self.ledger.notes.push(note),
                    }
                    match crate::verify::imagearchive::run_diffoci(out, &published, &rebuilt) {
                        Ok(files) => kept.extend(files),
                        Err(note) => self.ledger.notes.push(note),
                    }
                }
                Err(e) => self
                    .ledger
                    .notes
                    .push(format!("the two images could not be saved to compare: {e}")),
            }
        }
        Ok((checks, kept))
    }

    /// `podman image inspect` of the rebuilt image, in the environment.
    fn inspect_rebuilt(
        &mut self,
        ctx: &JobContext,
        step: &PlannedStep,
        call: &PodmanCall,
    ) -> Result<Option<LocalImage>> {
        let name = ".reprobox-image.json";
        let cmd = format!(
            "{} > {WORKSPACE}/{name}",
            call.line(&["image", "inspect", &call.tag])
        );
        let job = job_for(ctx, step, vec!["sh".into(), "-c".into(), cmd]);
        let (out, _) = ctx.run_job(&step.name, &job)?;
        if out.exit_code == 0 {
            return read_local_image(&ctx.workspace.join(name)).map(Some);
        }
        self.ledger.notes.push(format!(
            "podman image inspect {} failed (exit {})",
            call.tag, out.exit_code
        ));
        Ok(None)
    }

    /// Both images of a failed image check as `docker save` archives in `out/images/`: the
    /// rebuilt one saved by the environment's podman, the published one written from its
    /// blobs, pinned in the store by the manifest digest the registry gave. Returns the file
    /// names.
    fn save_images(
        &mut self,
        ctx: &JobContext,
        step: &PlannedStep,
        call: &PodmanCall,
        published: &PublishedImage,
    ) -> Result<Vec<String>> {
        use crate::verify::imagearchive::{PUBLISHED_NAME, REBUILT_NAME, write_docker_archive};
        let plan = self.plan;
        let dir = self.o.out.join("images");
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let saved = ".reprobox-rebuilt.tar";
        let cmd = format!(
            "{} && {}",
            call.line(&["tag", &call.tag, REBUILT_NAME]),
            call.line(&[
                "save",
                "--format",
                "docker-archive",
                "-o",
                &format!("{WORKSPACE}/{saved}"),
                REBUILT_NAME
            ]),
        );
        let job = job_for(ctx, step, vec!["sh".into(), "-c".into(), cmd]);
        let (outcome, _) = ctx.run_job(&step.name, &job)?;
        if outcome.exit_code != 0 {
            return Err(Error::Environment(format!(
                "podman save of the rebuilt image exited {}",
                outcome.exit_code
            )));
        }
        let rebuilt = dir.join("rebuilt.tar");
        let from = ctx.workspace.join(saved);
        std::fs::rename(&from, &rebuilt).ctx("move the saved image to", &rebuilt)?;
        // The job's root saved it: make it the caller's, like every other output.
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        std::os::unix::fs::chown(&rebuilt, Some(uid), Some(gid)).ctx("chown", &rebuilt)?;

        let registry = &plan.expected.registry;
        let r = DigestRef {
            host: crate::inputs::registry::host_of(registry).to_string(),
            repository: plan.expected.image.clone(),
            digest: published.manifest_digest.clone(),
        };
        let pinned =
            crate::inputs::images::pin(self.fetcher, &mut self.ledger.inputs, registry, &r)?;
        write_docker_archive(
            self.fetcher.store(),
            &pinned,
            PUBLISHED_NAME,
            &dir.join("published.tar"),
        )?;
        Ok(vec![
            "images/published.tar".into(),
            "images/rebuilt.tar".into(),
        ])
    }
}

/// The rebuilt image as the environment's podman describes it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LocalImage {
    pub config_digest: String,
    pub manifest_digest: Option<String>,
    pub diff_ids: Vec<String>,
}

/// Parse `podman image inspect` output (an array of one, or the object).
pub fn parse_local_image(text: &str, what: &str) -> Result<LocalImage> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::Environment(format!("{what}: podman image inspect output: {e}")))?;
    let v = if v.is_array() { v[0].clone() } else { v };
    let id = v["Id"].as_str().unwrap_or_default();
    let config_digest = if id.starts_with("sha256:") {
        id.to_string()
    } else {
        format!("sha256:{id}")
    };
    let diff_ids = v["RootFS"]["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    Ok(LocalImage {
        config_digest,
        manifest_digest: v["Digest"].as_str().map(str::to_string),
        diff_ids,
    })
}

fn read_local_image(path: &Path) -> Result<LocalImage> {
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    parse_local_image(&text, &path.display().to_string())
}

/// Why the manifest digests differ when the config digest and the diffIDs are the same.
pub const MANIFEST_COMPRESSION_CAUSE: &str =
    "the local manifest lists uncompressed layers; the registry's lists compressed ones";

/// The image checks when they could not be made at all (`why`): each is unknown, with its
/// reason, so that the verdict cannot be `reproduced` without them.
pub fn not_run(image_ref: &str, why: &str) -> Vec<Check> {
    [
        "image-config-digest",
        "image-diff-ids",
        "image-manifest-digest",
    ]
    .into_iter()
    .map(|name| {
        Check::compare(
            name,
            name != "image-manifest-digest",
            None,
            None,
            format!("not run: {why} (published {image_ref})"),
        )
    })
    .collect()
}

/// The image checks: config digest and diffIDs decide, the manifest digest is evidence.
/// A side that could not be read makes a check unknown. A manifest digest that differs
/// while both decisive checks pass has a known, harmless cause (layer compression).
pub fn image_checks(
    image_ref: &str,
    published: Option<&PublishedImage>,
    local: Option<&LocalImage>,
) -> Vec<Check> {
    let src = format!("published {image_ref}; rebuilt by the image step");
    let mut checks = vec![
        Check::compare(
            "image-config-digest",
            true,
            published.map(|p| p.config_digest.clone()),
            local.map(|l| l.config_digest.clone()),
            src.clone(),
        ),
        // An empty list is no evidence: it makes that side unknown, never an equal pair.
        Check::compare(
            "image-diff-ids",
            true,
            published
                .filter(|p| !p.diff_ids.is_empty())
                .map(|p| p.diff_ids.join(",")),
            local
                .filter(|l| !l.diff_ids.is_empty())
                .map(|l| l.diff_ids.join(",")),
            src,
        ),
        Check::compare(
            "image-manifest-digest",
            false,
            published.map(|p| p.manifest_digest.clone()),
            local.and_then(|l| l.manifest_digest.clone()),
            format!(
                "published {image_ref} from the registry; rebuilt: podman's local manifest (evidence only: it depends on layer compression)"
            ),
        ),
    ];
    mark_known_causes(&mut checks);
    checks
}

/// The manifest digests differ for a known, harmless reason when the config digest and the
/// diffIDs both pass (the same image, its layers compressed or not): say so in the check.
/// With a decisive check failed or unknown, the difference stays unexplained.
fn mark_known_causes(checks: &mut [Check]) {
    let decisive_pass = checks
        .iter()
        .filter(|c| c.decisive)
        .all(|c| c.status == CheckStatus::Pass);
    for c in checks.iter_mut() {
        if decisive_pass && c.name == "image-manifest-digest" && c.status == CheckStatus::Fail {
            c.known_cause = Some(MANIFEST_COMPRESSION_CAUSE.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_pulled_from_its_host_or_docker_hub() {
        assert_eq!(tag_registry_host("alpine:3.23"), "registry-1.docker.io");
        assert_eq!(
            tag_registry_host("library/alpine:3.23"),
            "registry-1.docker.io"
        );
        assert_eq!(
            tag_registry_host("docker.io/library/alpine:3.23"),
            "registry-1.docker.io"
        );
        assert_eq!(tag_registry_host("quay.io/a/b:1"), "quay.io");
        assert_eq!(tag_registry_host("127.0.0.1:5000/a:1"), "127.0.0.1:5000");
    }
    use crate::report::Status;

    #[test]
    fn podman_call_takes_the_globals_before_build_and_the_tag() {
        let argv: Vec<String> = [
            "podman",
            "--storage-driver",
            "vfs",
            "build",
            "--no-cache",
            "-t",
            "repro:1",
            ".",
        ]
        .map(String::from)
        .to_vec();
        let c = PodmanCall::find(&argv).unwrap();
        assert_eq!(c.globals, ["--storage-driver", "vfs"]);
        assert_eq!(c.tag, "repro:1");
        assert_eq!(
            c.line(&["image", "inspect", "repro:1"]),
            "podman --storage-driver vfs image inspect repro:1"
        );
        assert!(PodmanCall::find(&["make".to_string()]).is_none());
        let real: Vec<String> = "podman build --no-cache -f output/Dockerfile.repro -t x output/"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(
            dockerfile_arg(&real).as_deref(),
            Some("output/Dockerfile.repro")
        );
        assert_eq!(
            in_workspace(Path::new("/h/ws"), "/build", "output/Dockerfile.repro"),
            Path::new("/h/ws/output/Dockerfile.repro")
        );
        assert_eq!(
            in_workspace(Path::new("/h/ws"), "/", "/build/output/D"),
            Path::new("/h/ws/output/D")
        );
    }

    #[test]
    fn from_lines_split_into_digests_and_tags_and_scratch_is_skipped() {
        let df = "FROM --platform=linux/amd64 127.0.0.1:5000/alpine@sha256:0123456789012345678901234567890123456789012345678901234567890123 AS verify\nRUN true\nfrom alpine:3.23\nFROM scratch\n";
        let (pinned, tags) = from_refs(df);
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        assert_eq!(pinned[0].repository, "alpine");
        assert_eq!(tags, ["alpine:3.23"]);
    }

    #[test]
    fn local_image_from_inspect_output_and_the_checks_it_makes() {
        let l = parse_local_image(
            r#"[{"Id":"abc","Digest":"sha256:m","RootFS":{"Layers":["sha256:l1","sha256:l2"]}}]"#,
            "inspect.json",
        )
        .unwrap();
        assert_eq!(l.config_digest, "sha256:abc");
        assert_eq!(l.diff_ids, ["sha256:l1", "sha256:l2"]);
        let e = parse_local_image("not json", "inspect.json").unwrap_err();
        assert!(e.to_string().contains("inspect.json"), "{e}");

        // A profile without an image step: the image checks are in the report, not run, and
        // a passing rootfs alone is not a reproduction.
        let rootfs = Check::compare(
            "rootfs-sha256",
            true,
            Some("a".into()),
            Some("a".into()),
            String::new(),
        );
        let mut all = vec![rootfs];
        all.extend(not_run("r/i:t", "the profile has no image step"));
        assert_eq!(all.len(), 4);
        assert!(all[1..].iter().all(|c| {
            c.status == Status::Unknown
                && c.evidence
                    .starts_with("not run: the profile has no image step")
        }));
        assert_eq!(
            crate::report::Verdict::of(&all),
            crate::report::Verdict::Incomplete
        );

        // Two empty diffID lists are not equal evidence: unknown, and so never reproduced.
        let empty = parse_local_image(r#"{"Id":"abc"}"#, "inspect.json").unwrap();
        assert!(empty.diff_ids.is_empty());
        let published = PublishedImage {
            reference: "r/i:t".into(),
            manifest_digest: "sha256:m".into(),
            index_digest: None,
            config_digest: empty.config_digest.clone(),
            diff_ids: Vec::new(),
            layers: Vec::new(),
            labels: Default::default(),
        };
        let checks = image_checks("r/i:t", Some(&published), Some(&empty));
        let ids = checks.iter().find(|c| c.name == "image-diff-ids").unwrap();
        assert_eq!(ids.status, Status::Unknown, "{ids:?}");
        assert_eq!(
            crate::report::Verdict::of(&checks),
            crate::report::Verdict::Incomplete
        );

        // Nothing published: every check is unknown, never a pass, and nothing is explained.
        let checks = image_checks("r/i:t", None, Some(&l));
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(|c| c.status == Status::Unknown));
        assert_eq!(
            checks.iter().filter(|c| c.decisive).count(),
            2,
            "the manifest digest is evidence only"
        );
        assert!(checks.iter().all(|c| c.known_cause.is_none()));
    }

    fn compare(name: &str, decisive: bool, e: &str, a: &str) -> Check {
        Check::compare(
            name,
            decisive,
            Some(e.into()),
            Some(a.into()),
            String::new(),
        )
    }

    #[test]
    fn a_manifest_digest_differing_under_a_same_image_is_known_and_harmless() {
        let same = |n| compare(n, true, "x", "x");
        let mut checks = vec![
            same("image-config-digest"),
            same("image-diff-ids"),
            compare("image-manifest-digest", false, "sha256:gz", "sha256:raw"),
        ];
        mark_known_causes(&mut checks);
        assert_eq!(
            checks[2].known_cause.as_deref(),
            Some(MANIFEST_COMPRESSION_CAUSE)
        );
        assert!(
            checks[2]
                .outcome()
                .starts_with("differs (known, harmless: ")
        );
        assert!(!checks[2].outcome().contains("FAIL"));

        // The config digest differs: the manifest's difference is not explained away.
        let mut checks = vec![
            compare("image-config-digest", true, "x", "y"),
            same("image-diff-ids"),
            compare("image-manifest-digest", false, "sha256:gz", "sha256:raw"),
        ];
        mark_known_causes(&mut checks);
        assert_eq!(checks[2].known_cause, None);
        assert_eq!(
            checks[2].outcome(),
            "differs (evidence only, not part of the verdict)"
        );

        // Equal manifests need no cause.
        let mut checks = vec![
            same("image-config-digest"),
            same("image-diff-ids"),
            same("image-manifest-digest"),
        ];
        mark_known_causes(&mut checks);
        assert_eq!(checks[2].known_cause, None);
    }
}
