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
                &plan.host_locations(),
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
            &self.plan.host_locations(),
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
        let pushed = match (built, &published) {
            (Some(call), Some(p)) if local.is_some() => self.push_rebuilt(ctx, step, call, p)?,
            _ => None,
        };
        self.lap("image push");
        let checks = image_checks(
            &plan.expected_image_ref(),
            published.as_ref(),
            local.as_ref(),
            pushed.as_ref(),
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

    /// The rebuilt image published the way the publisher did: `podman push` by the
    /// environment's own podman, in the manifest type and layer compression the published
    /// manifest shows, to a `dir:` sink in the workspace (nothing leaves the job). Returns
    /// the manifest podman wrote, or `None` (with a note) when the push failed.
    fn push_rebuilt(
        &mut self,
        ctx: &JobContext,
        step: &PlannedStep,
        call: &PodmanCall,
        published: &PublishedImage,
    ) -> Result<Option<PushedManifest>> {
        let format = PushFormat::of(published);
        let (sink, copy) = (".reprobox-pushed", ".reprobox-pushed-manifest.json");
        let mut args = vec!["push".to_string()];
        args.extend(format.args());
        args.push(call.tag.clone());
        args.push(format!("dir:{WORKSPACE}/{sink}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = format!(
            "rm -rf {WORKSPACE}/{sink} {WORKSPACE}/{copy} && {} >&2 && cp {WORKSPACE}/{sink}/manifest.json {WORKSPACE}/{copy}; rc=$?; rm -rf {WORKSPACE}/{sink}; exit $rc",
            call.line(&args)
        );
        self.phase(&format!(
            "pushing the rebuilt image ({})",
            format.describe()
        ));
        let job = job_for(ctx, step, vec!["sh".into(), "-c".into(), cmd]);
        let (out, _) = ctx.run_job(&step.name, &job)?;
        let path = ctx.workspace.join(copy);
        if out.exit_code != 0 {
            self.ledger.notes.push(format!(
                "podman push of {} ({}) to a dir: sink failed (exit {}): the manifest digest users pull could not be rebuilt",
                call.tag,
                format.describe(),
                out.exit_code
            ));
            return Ok(None);
        }
        let bytes = std::fs::read(&path).ctx("read", &path)?;
        let _ = std::fs::remove_file(&path);
        match PushedManifest::parse(&bytes, format) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                self.ledger
                    .notes
                    .push(format!("the manifest podman push wrote is unreadable: {e}"));
                Ok(None)
            }
        }
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
        let pinned = crate::inputs::images::pin(
            self.fetcher,
            &mut self.ledger.inputs,
            registry,
            &r,
            &plan.host_locations(),
        )?;
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

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Layer compression, as a layer descriptor's media type shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// From a layer media type: `…tar+gzip` (OCI), `…diff.tar.gzip` (Docker), `…tar+zstd`;
    /// anything else is taken as uncompressed.
    pub fn of_media_type(t: &str) -> Compression {
        if t.ends_with("+gzip") || t.ends_with(".gzip") {
            Compression::Gzip
        } else if t.ends_with("+zstd") || t.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How the rebuilt image is pushed: the published manifest's type (`--format oci|v2s2`)
/// and its layers' compression (`--compress --compression-format …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushFormat {
    pub docker: bool,
    pub compression: Compression,
}

impl PushFormat {
    /// The format of the published platform manifest (the linux/amd64 entry when the tag
    /// is an index: `PublishedImage` already is that entry).
    pub fn of(p: &PublishedImage) -> PushFormat {
        PushFormat {
            docker: p.media_type == DOCKER_MANIFEST,
            compression: p
                .layer_media_types
                .first()
                .map_or(Compression::Gzip, |t| Compression::of_media_type(t)),
        }
    }

    /// `podman push` arguments.
    pub fn args(self) -> Vec<String> {
        let mut a = vec![
            "--format".to_string(),
            if self.docker { "v2s2" } else { "oci" }.to_string(),
        ];
        match self.compression {
            Compression::Gzip => {
                a.extend(["--compress", "--compression-format", "gzip"].map(String::from))
            }
            Compression::Zstd => {
                a.extend(["--compress", "--compression-format", "zstd"].map(String::from))
            }
            Compression::None => {}
        }
        a
    }

    pub fn describe(self) -> String {
        format!(
            "{} manifest, {} layers",
            if self.docker { "Docker v2s2" } else { "OCI" },
            match self.compression {
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
                Compression::None => "uncompressed",
            }
        )
    }
}

/// The manifest the environment's podman wrote when it pushed the rebuilt image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// sha256 of the manifest's exact bytes.
    pub digest: String,
    pub media_type: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    pub layer_media_types: Vec<String>,
    pub layer_sizes: Vec<u64>,
    /// How it was pushed.
    pub format: PushFormat,
}

impl PushedManifest {
    pub fn parse(bytes: &[u8], format: PushFormat) -> Result<PushedManifest> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Environment(format!("pushed manifest: {e}")))?;
        let layers = v["layers"].as_array().cloned().unwrap_or_default();
        let field = |k: &str| -> Vec<String> {
            layers
                .iter()
                .map(|l| l[k].as_str().unwrap_or_default().to_string())
                .collect()
        };
        Ok(PushedManifest {
            digest: crate::digest::sha256_digest(bytes),
            media_type: v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string(),
            config_digest: v["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            layers: field("digest"),
            layer_media_types: field("mediaType"),
            layer_sizes: layers
                .iter()
                .map(|l| l["size"].as_u64().unwrap_or_default())
                .collect(),
            format,
        })
    }
}

/// Why the pushed manifest's digest differs from the published one. `Ok(cause)`: the
/// difference is known and harmless — the same config and diffIDs (`same_image`), the same
/// manifest type and layer count, and only the layers' compressed bytes differ (their media
/// type, size or digest): the compressor differs, not the content. `Err(why)`: anything else,
/// a real difference.
pub fn manifest_difference(
    published: &PublishedImage,
    pushed: &PushedManifest,
    same_image: bool,
) -> std::result::Result<String, String> {
    if published.media_type != pushed.media_type {
        return Err(format!(
            "the manifest types differ: published {}, pushed {}",
            published.media_type, pushed.media_type
        ));
    }
    if published.config_digest != pushed.config_digest {
        return Err(format!(
            "the manifests name different configs: published {}, pushed {}",
            published.config_digest, pushed.config_digest
        ));
    }
    if !same_image {
        return Err("the images differ (config digest or diffIDs)".into());
    }
    if published.layers.len() != pushed.layers.len() {
        return Err(format!(
            "the layer counts differ: published {}, pushed {}",
            published.layers.len(),
            pushed.layers.len()
        ));
    }
    let types: Vec<usize> = (0..pushed.layers.len())
        .filter(|&i| published.layer_media_types.get(i) != pushed.layer_media_types.get(i))
        .collect();
    let sizes: Vec<usize> = (0..pushed.layers.len())
        .filter(|&i| published.layer_sizes.get(i) != pushed.layer_sizes.get(i))
        .collect();
    let digests: Vec<usize> = (0..pushed.layers.len())
        .filter(|&i| published.layers.get(i) != pushed.layers.get(i))
        .collect();
    if digests.is_empty() {
        return Err(
            "the manifests differ beyond their config and layers (annotations or serialization)"
                .into(),
        );
    }
    let what = if let Some(&i) = types.first() {
        format!(
            "layer {i}'s media type is {} published, {} pushed",
            published.layer_media_types[i], pushed.layer_media_types[i]
        )
    } else if let Some(&i) = sizes.first() {
        format!(
            "layer {i} compresses to {} bytes published, {} pushed",
            published.layer_sizes[i], pushed.layer_sizes[i]
        )
    } else {
        format!(
            "layer {} compresses to other bytes of the same size",
            digests[0]
        )
    };
    Ok(format!(
        "{what}, over the same diffIDs ({} of {} layers' compressed bytes differ): the compressor differs, not the content",
        digests.len(),
        pushed.layers.len()
    ))
}

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
            true,
            None,
            None,
            format!("not run: {why} (published {image_ref})"),
        )
    })
    .collect()
}

/// The image checks, each decisive: the config digest, the diffIDs, and the manifest
/// digest of the rebuilt image pushed the way the publisher pushed (`pushed`) against the
/// published one. A side that could not be read makes a check unknown. A manifest digest
/// that differs only because the layers' compressed bytes differ, over the same config and
/// diffIDs, has a known, harmless cause (the compressor): that check alone is then not
/// part of the verdict.
pub fn image_checks(
    image_ref: &str,
    published: Option<&PublishedImage>,
    local: Option<&LocalImage>,
    pushed: Option<&PushedManifest>,
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
    ];
    let same_image = checks.iter().all(|c| c.status == CheckStatus::Pass);
    let how = pushed.map_or_else(
        || "the rebuilt image could not be pushed".to_string(),
        |m| {
            format!(
                "rebuilt: pushed by the environment's podman ({}) to a dir: sink of the job",
                m.format.describe()
            )
        },
    );
    let mut manifest = Check::compare(
        "image-manifest-digest",
        true,
        published.map(|p| p.manifest_digest.clone()),
        pushed.map(|m| m.digest.clone()),
        format!("published {image_ref} from the registry; {how}"),
    );
    match (manifest.status, published, pushed) {
        (CheckStatus::Pass, _, _) => manifest
            .evidence
            .push_str(": the rebuilt image is the one users pull, digest for digest"),
        (CheckStatus::Fail, Some(p), Some(m)) => match manifest_difference(p, m, same_image) {
            Ok(cause) => {
                manifest.decisive = false;
                manifest.known_cause = Some(cause);
            }
            Err(why) => manifest.evidence.push_str(&format!(": {why}")),
        },
        _ => {}
    }
    checks.push(manifest);
    checks
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
            media_type: OCI_MANIFEST.into(),
            layer_media_types: Vec::new(),
            layer_sizes: Vec::new(),
            labels: Default::default(),
        };
        let checks = image_checks("r/i:t", Some(&published), Some(&empty), None);
        let ids = checks.iter().find(|c| c.name == "image-diff-ids").unwrap();
        assert_eq!(ids.status, Status::Unknown, "{ids:?}");
        assert_eq!(
            crate::report::Verdict::of(&checks),
            crate::report::Verdict::Incomplete
        );

        // Nothing published: every check is unknown, never a pass, and nothing is explained.
        let checks = image_checks("r/i:t", None, Some(&l), None);
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(|c| c.status == Status::Unknown));
        assert_eq!(
            checks.iter().filter(|c| c.decisive).count(),
            3,
            "the manifest digest decides too"
        );
        assert!(checks.iter().all(|c| c.known_cause.is_none()));
    }

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

    fn published(media_type: &str, layer_type: &str, sizes: &[u64]) -> PublishedImage {
        PublishedImage {
            reference: "r/i:t".into(),
            manifest_digest: "sha256:published".into(),
            index_digest: None,
            config_digest: "sha256:cfg".into(),
            diff_ids: vec!["sha256:d1".into(), "sha256:d2".into()],
            layers: vec!["sha256:l1".into(), "sha256:l2".into()],
            media_type: media_type.into(),
            layer_media_types: vec![layer_type.into(); 2],
            layer_sizes: sizes.to_vec(),
            labels: Default::default(),
        }
    }

    /// The manifest podman would write for `p`'s layers, with `edit` applied.
    fn pushed(p: &PublishedImage, edit: impl FnOnce(&mut serde_json::Value)) -> PushedManifest {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": p.media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": p.config_digest, "size": 1},
            "layers": (0..p.layers.len()).map(|i| serde_json::json!({
                "mediaType": p.layer_media_types[i], "digest": p.layers[i], "size": p.layer_sizes[i]
            })).collect::<Vec<_>>(),
        });
        edit(&mut v);
        PushedManifest::parse(&serde_json::to_vec(&v).unwrap(), PushFormat::of(p)).unwrap()
    }

    fn local(p: &PublishedImage) -> LocalImage {
        LocalImage {
            config_digest: p.config_digest.clone(),
            manifest_digest: Some("sha256:uncompressed".into()),
            diff_ids: p.diff_ids.clone(),
        }
    }

    fn manifest_check(checks: &[Check]) -> &Check {
        checks
            .iter()
            .find(|c| c.name == "image-manifest-digest")
            .unwrap()
    }

    #[test]
    fn the_push_follows_the_published_manifest_type_and_compression() {
        let oci = published(OCI_MANIFEST, GZ, &[10, 20]);
        assert_eq!(
            PushFormat::of(&oci).args(),
            [
                "--format",
                "oci",
                "--compress",
                "--compression-format",
                "gzip"
            ]
        );
        let docker = published(
            DOCKER_MANIFEST,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &[10, 20],
        );
        assert_eq!(
            PushFormat::of(&docker).args(),
            [
                "--format",
                "v2s2",
                "--compress",
                "--compression-format",
                "gzip"
            ]
        );
        assert_eq!(
            PushFormat::of(&published(OCI_MANIFEST, ZST, &[1, 2])).compression,
            Compression::Zstd
        );
        let plain = published(
            OCI_MANIFEST,
            "application/vnd.oci.image.layer.v1.tar",
            &[1, 2],
        );
        assert_eq!(PushFormat::of(&plain).args(), ["--format", "oci"]);
        assert_eq!(
            PushFormat::of(&docker).describe(),
            "Docker v2s2 manifest, gzip layers"
        );
    }

    #[test]
    fn the_pushed_manifest_digest_decides_and_a_pass_says_users_pull_it() {
        let p = published(OCI_MANIFEST, GZ, &[10, 20]);
        let mut m = pushed(&p, |_| {});
        let bytes_digest = m.digest.clone();
        assert!(bytes_digest.starts_with("sha256:") && bytes_digest.len() == 71);
        // The same bytes as published: a pass, decisive, that says so.
        m.digest = p.manifest_digest.clone();
        let checks = image_checks("r/i:t", Some(&p), Some(&local(&p)), Some(&m));
        let c = manifest_check(&checks);
        assert_eq!(c.status, Status::Pass);
        assert!(c.decisive);
        assert!(
            c.evidence
                .ends_with("the rebuilt image is the one users pull, digest for digest"),
            "{}",
            c.evidence
        );
        assert_eq!(
            crate::report::Verdict::of(&checks),
            crate::report::Verdict::Reproduced
        );
        // Not pushed: unknown, and so never reproduced.
        let checks = image_checks("r/i:t", Some(&p), Some(&local(&p)), None);
        assert_eq!(manifest_check(&checks).status, Status::Unknown);
        assert_eq!(
            crate::report::Verdict::of(&checks),
            crate::report::Verdict::Incomplete
        );
    }

    #[test]
    fn other_compressed_bytes_of_the_same_layers_are_known_and_harmless() {
        let p = published(OCI_MANIFEST, GZ, &[10, 20]);
        // Another compressor: zstd layers, other digests and sizes.
        let m = pushed(&p, |v| {
            v["layers"][1]["mediaType"] = ZST.into();
            v["layers"][1]["digest"] = "sha256:z2".into();
            v["layers"][1]["size"] = 19.into();
        });
        let checks = image_checks("r/i:t", Some(&p), Some(&local(&p)), Some(&m));
        let c = manifest_check(&checks);
        assert_eq!(c.status, Status::Fail);
        assert!(!c.decisive);
        let cause = c.known_cause.as_deref().unwrap();
        assert!(
            cause.contains(&format!(
                "layer 1's media type is {GZ} published, {ZST} pushed"
            )),
            "{cause}"
        );
        assert!(
            cause.ends_with("the compressor differs, not the content"),
            "{cause}"
        );
        assert!(c.outcome().starts_with("differs (known, harmless: "));
        assert_eq!(
            crate::report::Verdict::of(&checks),
            crate::report::Verdict::Reproduced
        );
        // Same type, another size (another gzip level).
        let m = pushed(&p, |v| {
            v["layers"][0]["digest"] = "sha256:g1".into();
            v["layers"][0]["size"] = 11.into();
        });
        let cause = manifest_difference(&p, &m, true).unwrap();
        assert!(
            cause.starts_with("layer 0 compresses to 10 bytes published, 11 pushed"),
            "{cause}"
        );
        // Same type and size, other bytes.
        let m = pushed(&p, |v| v["layers"][0]["digest"] = "sha256:g1".into());
        assert!(
            manifest_difference(&p, &m, true)
                .unwrap()
                .contains("other bytes of the same size")
        );
    }

    #[test]
    fn any_other_manifest_difference_is_a_failure_with_its_reason() {
        let p = published(OCI_MANIFEST, GZ, &[10, 20]);
        let fails = |m: &PushedManifest, l: &LocalImage, why: &str| {
            let checks = image_checks("r/i:t", Some(&p), Some(l), Some(m));
            let c = manifest_check(&checks);
            assert_eq!(c.status, Status::Fail, "{c:?}");
            assert!(c.decisive, "{c:?}");
            assert_eq!(c.known_cause, None);
            assert_eq!(c.outcome(), "differs");
            assert!(c.evidence.contains(why), "{why}: {}", c.evidence);
            assert_eq!(
                crate::report::Verdict::of(&checks),
                crate::report::Verdict::Differs
            );
        };
        // Another manifest type.
        let m = pushed(&p, |v| v["mediaType"] = DOCKER_MANIFEST.into());
        fails(&m, &local(&p), "the manifest types differ");
        // Another config (another image): the layers' bytes explain nothing.
        let mut other = local(&p);
        other.config_digest = "sha256:other".into();
        let m = pushed(&p, |v| {
            v["config"]["digest"] = "sha256:other".into();
            v["layers"][0]["digest"] = "sha256:x".into();
        });
        fails(&m, &other, "the manifests name different configs");
        // The same config but other diffIDs (the rebuilt side's inspect says so).
        let mut other = local(&p);
        other.diff_ids[1] = "sha256:dx".into();
        let m = pushed(&p, |v| v["layers"][1]["digest"] = "sha256:x".into());
        fails(&m, &other, "the images differ");
        // An extra layer.
        let m = pushed(&p, |v| {
            let extra = v["layers"][0].clone();
            v["layers"].as_array_mut().unwrap().push(extra);
        });
        fails(&m, &local(&p), "the layer counts differ");
        // The same config and layers: an annotation.
        let m = pushed(&p, |v| v["annotations"] = serde_json::json!({"a": "b"}));
        fails(&m, &local(&p), "annotations or serialization");
    }
}
