//! What a reproduction will do, computed without doing any of it.
//!
//! A [`Plan`] is a plain value: the dates derived from the BUILD_VERSION, the profile's
//! locations after overrides, and every step's exact command lines after substitution.
//! Later stages consume it; `reprobox plan` prints it.

pub mod profile;
pub mod release;
pub mod vars;
pub mod version;

use std::collections::BTreeMap;

use serde::Serialize;

pub use profile::{EgressPolicy, EnvDay, Isolation, LoadedProfile, Network, Profile, Role};
use vars::Vars;
pub use version::BuildVersion;

use crate::error::{Error, Result};

/// Where reprobox's archive mirror listens, as seen from inside the job: on the job's own
/// loopback (its network namespace has nothing else), so the address is fixed. A constant
/// string because plans hold it as `&'static str`; its port is checked at compile time
/// against the mirror's own [`MIRROR_PORT`](crate::inputs::mirror::MIRROR_PORT).
pub const MIRROR_URL: &str = "http://127.0.0.1:7878";

const _: () = assert!(
    url_port(MIRROR_URL) == crate::inputs::mirror::MIRROR_PORT as u32,
    "plan::MIRROR_URL must name inputs::mirror::MIRROR_PORT"
);

/// The decimal port at the end of `url` (`http://HOST:PORT`), 0 when there is none; a
/// `const fn` so that [`MIRROR_URL`] can be checked while compiling.
const fn url_port(url: &str) -> u32 {
    let b = url.as_bytes();
    let mut i = b.len();
    let mut port = 0u32;
    let mut scale = 1u32;
    while i > 0 && b[i - 1].is_ascii_digit() && scale <= 10_000 {
        port += (b[i - 1] - b'0') as u32 * scale;
        scale *= 10;
        i -= 1;
    }
    if i == 0 || b[i - 1] != b':' {
        return 0;
    }
    port
}

/// Where the upstream source is checked out inside the build environment.
pub const WORKSPACE: &str = "/build";

/// The JSON schema identifier of `reprobox plan --json`.
pub const PLAN_SCHEMA: &str = "reprobox.plan/v1";

/// Where a location's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocationSource {
    Profile,
    Environment,
    CommandLine,
}

#[derive(Debug, Clone, Serialize)]
pub struct Location {
    pub url: String,
    pub from: LocationSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedBase {
    pub url: String,
    pub sha256sums: String,
    pub subdir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedRollback {
    pub server: String,
    pub packages: Vec<String>,
    pub packages_nodeps: Vec<String>,
    pub optional_packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedSource {
    pub git: String,
    pub tag: String,
    pub release_file: String,
    pub revision_label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedExpected {
    pub rootfs_from: String,
    pub rootfs_url: String,
    pub registry: String,
    pub image: String,
    pub image_tag: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub name: String,
    pub description: String,
    pub role: Role,
    pub network: Network,
    pub allow_hosts: Vec<String>,
    pub isolation: Isolation,
    pub workdir: String,
    pub writable: Vec<String>,
    pub optional: bool,
    pub faketime: bool,
    /// The step's environment variables, after substitution (every command of the step).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Scratch directories of the step (see [`profile::Step::scratch`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<String>,
    /// The exact argv of every command, after substitution.
    pub commands: Vec<Vec<String>>,
}

impl PlannedStep {
    /// What the network policy means, in one line.
    pub fn network_summary(&self) -> String {
        match self.network {
            Network::None => "none (loopback only)".into(),
            Network::Mirror => format!("mirror only (loopback + reprobox mirror at {MIRROR_URL})"),
            Network::Egress => format!(
                "mirror + egress proxy to {} (every connection logged)",
                self.allow_hosts.join(", ")
            ),
        }
    }

    /// What isolation the step gets (DESIGN.md decision 5), in one line.
    pub fn isolation_summary(&self) -> String {
        let ns = "namespaces user+mount+pid+net+uts+ipc+cgroup+time, pivot_root, no_new_privs";
        match self.isolation {
            Isolation::Filesystem => format!(
                "{ns}; capabilities: default minus mount; Landlock: writes only to {}, TCP only to the mirror",
                if self.writable.is_empty() {
                    "nothing".to_string()
                } else {
                    self.writable.join(" ")
                }
            ),
            Isolation::NestedContainers => format!(
                "{ns}; capabilities: the set nested podman needs; Landlock: TCP and scopes only (filesystem rules forbid mount); podman configured by reprobox: storage.conf (vfs) through CONTAINERS_STORAGE_CONF, a containers.conf.d drop-in (cgroupfs, file events), BUILDAH_ISOLATION=chroot"
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub profile: String,
    pub profile_origin: profile::Origin,
    /// sha256 of the profile's text (in the report; not in the plan's own output, which is
    /// about what will happen).
    #[serde(skip)]
    pub profile_sha256: String,
    pub version: BuildVersion,
    /// `YYYY-MM-DD`.
    pub build_day: String,
    /// `YYYY/MM/DD`, the ARCHIVE_SNAPSHOT.
    pub snapshot: String,
    /// `YYYY/MM/DD`, the archive day the environment steps roll to (`{env_day}`): the build
    /// day or the snapshot day, as the profile's `[rollback] env_day` says.
    pub env_day: String,
    /// Why the environment is rolled to that day, in words.
    pub env_day_reason: String,
    pub source_date_epoch: i64,
    pub created: String,
    pub tag: String,
    pub locations: BTreeMap<String, Location>,
    pub mirror: &'static str,
    pub workspace: &'static str,
    pub base: PlannedBase,
    pub rollback: PlannedRollback,
    pub source: PlannedSource,
    pub expected: PlannedExpected,
    pub artifacts: profile::Artifacts,
    pub steps: Vec<PlannedStep>,
    /// The hosts every job may reach through the egress (the profile's `[[egress]]`), its
    /// locations resolved after overrides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<PlannedEgress>,
}

impl Plan {
    /// Each egress host and the location that stands for it (after overrides): where
    /// reprobox's own clients reach a host a server names, such as the token realm
    /// `https://auth.docker.io/token` of Docker Hub's challenge.
    pub fn host_locations(&self) -> Vec<(String, String)> {
        self.egress
            .iter()
            .map(|e| (e.host.clone(), e.location.clone()))
            .collect()
    }

    /// (location, canonical URL `https://HOST`) of each egress host: what reprobox itself
    /// fetches from under a location (the bootstrap, the published image, the git remote) is
    /// named by the real host's URL (`Fetcher::with_names`), so a store filled through one
    /// location replays through another.
    pub fn location_names(&self) -> Vec<(String, String)> {
        self.egress
            .iter()
            .map(|e| (e.location.clone(), format!("https://{}", e.host)))
            .collect()
    }

    /// `url` named by its canonical URL ([`Plan::location_names`]).
    pub fn canonical_url(&self, url: &str) -> String {
        crate::inputs::fetch::canonical_name(&self.location_names(), url).into_owned()
    }
}

/// One egress host of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedEgress {
    pub host: String,
    /// The location's URL (after `--location` and the environment).
    pub location: String,
    /// The location's name when the profile names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_name: Option<String>,
    pub policy: profile::EgressPolicy,
    /// Canonical URL (`https://HOST/path`) → sha256 or
    /// [`profile::PIN_RELEASE_ROOTFS`] (resolved once the release is known).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
}

/// Location overrides from the command line, `NAME=URL`.
pub fn parse_location_override(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::bad_input(
            format!("--location {s:?}"),
            "expected NAME=URL, for example archive=http://127.0.0.1:8080",
        )),
    }
}

fn check_url(name: &str, url: &str, from: &str) -> Result<()> {
    let ok = ["http://", "https://", "file://"]
        .iter()
        .any(|p| url.starts_with(p) && url.len() > p.len());
    if ok && !url.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(Error::bad_input(
            format!("location {name} ({from}) {url:?}"),
            "expected an http://, https:// or file:// URL",
        ))
    }
}

impl Plan {
    /// Build the plan. `cli_overrides` come from `--location`; the environment's
    /// `REPROBOX_LOCATION_<NAME>` is read here too (the command line wins).
    pub fn new(
        loaded: &LoadedProfile,
        version: &BuildVersion,
        cli_overrides: &[(String, String)],
    ) -> Result<Plan> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("REPROBOX_LOCATION_")
                    .map(|n| (n.to_ascii_lowercase(), v))
            })
            .collect();
        Self::with_overrides(loaded, version, &env, cli_overrides)
    }

    /// [`Plan::new`] with the environment's overrides given explicitly (tests).
    pub fn with_overrides(
        loaded: &LoadedProfile,
        version: &BuildVersion,
        env_overrides: &[(String, String)],
        cli_overrides: &[(String, String)],
    ) -> Result<Plan> {
        let p = &loaded.profile;
        let ctx = format!("profile {}", loaded.origin);
        let mut locations: BTreeMap<String, Location> = p
            .locations
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Location {
                        url: v.trim_end_matches('/').to_string(),
                        from: LocationSource::Profile,
                    },
                )
            })
            .collect();
        for (list, from, label) in [
            (
                env_overrides,
                LocationSource::Environment,
                "REPROBOX_LOCATION_",
            ),
            (cli_overrides, LocationSource::CommandLine, "--location "),
        ] {
            for (k, v) in list {
                let Some(slot) = locations.get_mut(k) else {
                    return Err(Error::bad_input(
                        format!(
                            "{label}{}",
                            if from == LocationSource::Environment {
                                k.to_ascii_uppercase()
                            } else {
                                k.clone()
                            }
                        ),
                        format!(
                            "profile {} has no location {k:?}; {}expected one of: {}",
                            p.name,
                            crate::suggest::did_you_mean(k, p.locations.keys().map(String::as_str)),
                            p.locations.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                check_url(k, v, label.trim())?;
                *slot = Location {
                    url: v.trim_end_matches('/').to_string(),
                    from,
                };
            }
        }
        for (k, l) in &locations {
            check_url(k, &l.url, "profile")?;
        }

        let mut vars = Vars::new();
        for (k, l) in &locations {
            vars.set(k.clone(), l.url.clone());
        }
        vars.set("version", version.as_str());
        vars.set(
            "build_day",
            version.build_day().strftime("%Y%m%d").to_string(),
        );
        vars.set("snapshot", version.snapshot_path());
        let (env_day, env_day_reason) = match p.rollback.env_day {
            EnvDay::Build => (
                version.build_day_path(),
                "the build day: upstream's CI used the live mirrors of that day",
            ),
            EnvDay::Snapshot => (
                version.snapshot_path(),
                "the snapshot day: the profile's [rollback] env_day = \"snapshot\"",
            ),
        };
        vars.set("env_day", env_day.clone());
        vars.set("source_date_epoch", version.source_date_epoch().to_string());
        vars.set("created", version.created());
        vars.set("tag", version.tag());
        vars.set("iso_month", version.iso_month());
        vars.set("mirror", MIRROR_URL);
        vars.set("workspace", WORKSPACE);

        let rollback = PlannedRollback {
            server: vars.expand(&p.rollback.server, &format!("{ctx}, rollback.server"))?,
            packages: p.rollback.packages.clone(),
            packages_nodeps: p.rollback.packages_nodeps.clone(),
            optional_packages: p.rollback.optional_packages.clone(),
        };
        vars.set("rollback_server", rollback.server.clone());
        vars.set_list("rollback_packages", rollback.packages.clone());
        vars.set_list("rollback_packages_nodeps", rollback.packages_nodeps.clone());
        vars.set_list(
            "rollback_optional_packages",
            rollback.optional_packages.clone(),
        );

        let x = |s: &str, field: &str| vars.expand(s, &format!("{ctx}, {field}"));
        let base = PlannedBase {
            url: x(&p.base.url, "base.url")?,
            sha256sums: x(&p.base.sha256sums, "base.sha256sums")?,
            subdir: p.base.subdir.clone(),
        };
        let source = PlannedSource {
            git: x(&p.source.git, "source.git")?,
            tag: x(&p.source.tag, "source.tag")?,
            release_file: x(&p.source.release_file, "source.release_file")?,
            revision_label: p.source.revision_label.clone(),
        };
        let expected = PlannedExpected {
            rootfs_from: x(&p.expected.rootfs_from, "expected.rootfs_from")?,
            rootfs_url: x(&p.expected.rootfs_url, "expected.rootfs_url")?,
            registry: x(&p.expected.registry, "expected.registry")?,
            image: x(&p.expected.image, "expected.image")?,
            image_tag: x(&p.expected.image_tag, "expected.image_tag")?,
        };
        let mut steps = Vec::new();
        for s in &p.steps {
            let sctx = format!("{ctx}, step {}", s.name);
            let commands = s
                .run
                .iter()
                .map(|argv| vars.expand_argv(argv, &sctx))
                .collect::<Result<Vec<_>>>()?;
            steps.push(PlannedStep {
                name: s.name.clone(),
                description: s.description.clone(),
                role: s.role,
                network: s.network,
                allow_hosts: s.allow_hosts.clone(),
                isolation: s.isolation,
                workdir: vars.expand(&s.workdir, &sctx)?,
                writable: s
                    .writable
                    .iter()
                    .map(|w| vars.expand(w, &sctx))
                    .collect::<Result<_>>()?,
                optional: s.optional,
                faketime: s.faketime,
                env: s
                    .env
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), vars.expand(v, &format!("{sctx}, env {k}"))?)))
                    .collect::<Result<_>>()?,
                scratch: s
                    .scratch
                    .iter()
                    .map(|d| vars.expand(d, &sctx))
                    .collect::<Result<_>>()?,
                commands,
            });
        }
        let mut egress = Vec::new();
        for e in &p.egress {
            let ectx = format!("{ctx}, egress {}", e.host);
            let (location, location_name) = match locations.get(&e.location) {
                Some(l) => (l.url.clone(), Some(e.location.clone())),
                None => (e.location.clone(), None),
            };
            let mut pins = BTreeMap::new();
            for (path, sha) in &e.pins {
                let path = vars.expand(path, &ectx)?;
                pins.insert(format!("https://{}{path}", e.host), sha.clone());
            }
            egress.push(PlannedEgress {
                host: e.host.clone(),
                location: location.trim_end_matches('/').to_string(),
                location_name,
                policy: e.policy,
                pins,
            });
        }
        Ok(Plan {
            schema: PLAN_SCHEMA,
            profile: p.name.clone(),
            profile_origin: loaded.origin.clone(),
            profile_sha256: loaded.sha256.clone(),
            version: version.clone(),
            build_day: version.build_day().to_string(),
            snapshot: version.snapshot_path(),
            env_day,
            env_day_reason: env_day_reason.to_string(),
            source_date_epoch: version.source_date_epoch(),
            created: version.created(),
            tag: version.tag(),
            locations,
            mirror: MIRROR_URL,
            workspace: WORKSPACE,
            base,
            rollback,
            source,
            expected,
            artifacts: p.artifacts.clone(),
            steps,
            egress,
        })
    }

    /// The published image reference, `registry/image:tag` without the URL scheme.
    pub fn expected_image_ref(&self) -> String {
        let host = self
            .expected
            .registry
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.expected.registry);
        format!("{host}/{}:{}", self.expected.image, self.expected.image_tag)
    }

    /// The human rendering of `reprobox plan`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "profile            {} ({})",
            self.profile, self.profile_origin
        );
        let _ = writeln!(o, "build version      {}", self.version);
        let _ = writeln!(o, "build day          {}", self.build_day);
        let _ = writeln!(
            o,
            "snapshot day       {} (ARCHIVE_SNAPSHOT: the archive day make builds the rootfs from)",
            self.snapshot
        );
        let _ = writeln!(
            o,
            "environment day    {} ({}; --env-day overrides)",
            self.env_day, self.env_day_reason
        );
        let _ = writeln!(o, "SOURCE_DATE_EPOCH  {}", self.source_date_epoch);
        let _ = writeln!(o, "created            {}", self.created);
        let _ = writeln!(o, "release tag        {}", self.tag);
        let _ = writeln!(o, "\nlocations");
        for (k, l) in &self.locations {
            let from = match l.from {
                LocationSource::Profile => "profile",
                LocationSource::Environment => "environment",
                LocationSource::CommandLine => "command line",
            };
            let _ = writeln!(o, "  {k:<10} {}  [{from}]", l.url);
        }
        let _ = writeln!(o, "\ninputs");
        let _ = writeln!(o, "  base rootfs      {}", self.base.url);
        let _ = writeln!(o, "  pinned by        {}", self.base.sha256sums);
        if let Some(sub) = &self.base.subdir {
            let _ = writeln!(o, "  root inside      {sub}/");
        }
        let _ = writeln!(
            o,
            "  source           {} at tag {}",
            self.source.git, self.source.tag
        );
        let _ = writeln!(
            o,
            "  source revision  label {} of {} at the tag",
            self.source.revision_label, self.source.release_file
        );
        let _ = writeln!(o, "\nrollback");
        let _ = writeln!(o, "  mirrorlist       Server = {}", self.rollback.server);
        let _ = writeln!(o, "  packages         {}", self.rollback.packages.join(" "));
        if !self.rollback.packages_nodeps.is_empty() {
            let _ = writeln!(
                o,
                "  without deps     {}",
                self.rollback.packages_nodeps.join(" ")
            );
        }
        if !self.rollback.optional_packages.is_empty() {
            let _ = writeln!(
                o,
                "  optional         {}",
                self.rollback.optional_packages.join(" ")
            );
        }
        if !self.egress.is_empty() {
            let _ = writeln!(
                o,
                "\negress (every job reaches these hosts through reprobox; anything else is refused)"
            );
            for e in &self.egress {
                let policy = match e.policy {
                    EgressPolicy::Archive => "archive",
                    EgressPolicy::Pinned => "pinned",
                    EgressPolicy::Recorded => "recorded",
                    EgressPolicy::Registry => "registry",
                };
                let _ = writeln!(o, "  {:<24} {policy:<9} {}", e.host, e.location);
                for (url, sha) in &e.pins {
                    let _ = writeln!(o, "    pinned {url} @ {sha}");
                }
            }
        }
        let _ = writeln!(
            o,
            "\nsteps (in the build environment, workspace {})",
            self.workspace
        );
        for (i, s) in self.steps.iter().enumerate() {
            let opt = if s.optional { " (optional)" } else { "" };
            let role = match s.role {
                Role::Rollback => "rollback",
                Role::Install => "install",
                Role::Build => "build",
                Role::Image => "image",
            };
            let _ = writeln!(
                o,
                "  {}. {}{} [{role}] — {}",
                i + 1,
                s.name,
                opt,
                s.description
            );
            let _ = writeln!(o, "     network    {}", s.network_summary());
            let _ = writeln!(o, "     isolation  {}", s.isolation_summary());
            if s.faketime {
                let _ = writeln!(
                    o,
                    "     clock      dynamically linked tools see SOURCE_DATE_EPOCH (libfaketime of the environment)"
                );
            }
            for (k, v) in &s.env {
                let _ = writeln!(o, "     env        {k}={v}");
            }
            for d in &s.scratch {
                let _ = writeln!(
                    o,
                    "     scratch    {d} (writable; an empty directory of the run when the environment's is empty)"
                );
            }
            let _ = writeln!(o, "     workdir    {}", s.workdir);
            for c in &s.commands {
                let _ = writeln!(o, "     $ {}", crate::shell::line(c));
            }
        }
        let _ = writeln!(
            o,
            "\nartifacts          {}/{{{}}}",
            self.artifacts.dir,
            self.artifacts.files.join(",")
        );
        let _ = writeln!(o, "\nchecks");
        let _ = writeln!(
            o,
            "  rootfs sha256    {}/{} vs the sha256 in the release {}",
            self.artifacts.dir, self.artifacts.rootfs, self.expected.rootfs_from
        );
        let _ = writeln!(
            o,
            "  published rootfs {} (diffed file by file on a mismatch)",
            self.expected.rootfs_url
        );
        let _ = writeln!(
            o,
            "  image            config digest and diffIDs vs {} (manifest digest as evidence)",
            self.expected_image_ref()
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cli: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Plan> {
        let lp = Profile::load("archlinux-repro")?;
        let v = BuildVersion::parse("20260518.0.532496")?;
        let o = |x: &[(&str, &str)]| {
            x.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        Plan::with_overrides(&lp, &v, &o(env), &o(cli))
    }

    #[test]
    fn substitutes_dates_and_locations() {
        let p = plan(&[], &[]).unwrap();
        assert_eq!(p.snapshot, "2026/05/17");
        assert_eq!(
            p.base.url,
            "https://archive.archlinux.org/iso/2026.05.01/archlinux-bootstrap-2026.05.01-x86_64.tar.zst"
        );
        // The environment is rolled to the build day; make builds from the snapshot day.
        assert_eq!(p.env_day, "2026/05/18");
        assert!(
            p.env_day_reason.starts_with("the build day"),
            "{}",
            p.env_day_reason
        );
        assert_eq!(
            p.rollback.server,
            "http://127.0.0.1:7878/repos/2026/05/18/$repo/os/$arch"
        );
        let make = p.steps.iter().find(|s| s.name == "make").unwrap();
        assert_eq!(
            make.commands[0],
            [
                "make",
                "ARCHIVE_SNAPSHOT=2026/05/17",
                "SOURCE_DATE_EPOCH=1779062400",
                &*format!("{WORKSPACE}/output/Dockerfile.repro")
            ]
        );
        // Upstream CI's BUILD_VERSION, never CI_COMMIT_SHA; no faketime (pacman >= 7.1).
        assert_eq!(
            make.env.get("BUILD_VERSION").map(String::as_str),
            Some("20260518.0.532496")
        );
        assert!(!make.env.contains_key("CI_COMMIT_SHA"));
        assert!(!make.faketime);
        assert_eq!(make.scratch, ["/var/cache/pacman/pkg"]);
        assert_eq!(
            make.commands[1],
            [
                "scripts/make-dockerfile.sh",
                "repro.tar.zst",
                "repro",
                "output/",
                "true",
                "repro",
                "1779062400"
            ]
        );
        let install = p.steps.iter().find(|s| s.name == "install").unwrap();
        assert_eq!(
            install.commands[0],
            [
                "pacman",
                "-S",
                "--noconfirm",
                "--needed",
                "git",
                "make",
                "fakechroot",
                "fakeroot",
                "podman"
            ]
        );
        assert_eq!(
            p.expected_image_ref(),
            "registry-1.docker.io/archlinux/archlinux:repro-20260518.0.532496"
        );
    }

    #[test]
    fn env_day_snapshot_keeps_the_environment_on_the_snapshot_day() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("snapshot-env.toml");
        let text = include_str!("../../profiles/archlinux-repro.toml");
        assert!(text.contains("env_day = \"build\""));
        std::fs::write(
            &f,
            text.replace("env_day = \"build\"", "env_day = \"snapshot\""),
        )
        .unwrap();
        let lp = Profile::load(f.to_str().unwrap()).unwrap();
        let v = BuildVersion::parse("20260331.0.1").unwrap();
        let p = Plan::with_overrides(&lp, &v, &[], &[]).unwrap();
        assert_eq!(p.env_day, p.snapshot);
        assert!(
            p.rollback.server.contains("/repos/2026/03/30/"),
            "{}",
            p.rollback.server
        );
        assert!(p.env_day_reason.contains("env_day = \"snapshot\""));
    }

    #[test]
    fn mirror_url_names_the_mirrors_port() {
        assert_eq!(
            MIRROR_URL,
            format!("http://127.0.0.1:{}", crate::inputs::mirror::MIRROR_PORT)
        );
        assert_eq!(url_port("http://127.0.0.1:7878"), 7878);
        assert_eq!(url_port("http://h:1"), 1);
        assert_eq!(url_port("http://h"), 0);
        assert_eq!(url_port("http://h:123456"), 0);
        assert_eq!(url_port("7878"), 0);
    }

    #[test]
    fn egress_locations_follow_their_overrides() {
        let p = plan(
            &[("gitlab", "http://127.0.0.1:9/")],
            &[("hub_auth", "http://127.0.0.1:8")],
        )
        .unwrap();
        let at = |h: &str| p.egress.iter().find(|e| e.host == h).unwrap();
        assert_eq!(at("gitlab.archlinux.org").location, "http://127.0.0.1:9");
        assert_eq!(at("auth.docker.io").location, "http://127.0.0.1:8");
        assert_eq!(
            at("archive.archlinux.org").location_name.as_deref(),
            Some("archive")
        );
        // The pin names the canonical URL, whatever the location.
        assert!(at("gitlab.archlinux.org").pins.keys().all(|u| u.starts_with(
            "https://gitlab.archlinux.org/api/v4/projects/10185/packages/generic/rootfs/20260518.0.532496/"
        )));
    }

    #[test]
    fn overrides_command_line_beats_environment() {
        let p = plan(
            &[("archive", "http://127.0.0.1:9/")],
            &[
                ("archive", "http://127.0.0.1:8"),
                ("git", "file:///srv/up.git"),
            ],
        )
        .unwrap();
        assert_eq!(p.locations["archive"].url, "http://127.0.0.1:9");
        assert_eq!(p.locations["archive"].from, LocationSource::CommandLine);
        assert_eq!(p.locations["git"].from, LocationSource::Environment);
        assert_eq!(p.source.git, "file:///srv/up.git");
        assert!(p.base.url.starts_with("http://127.0.0.1:9/iso/2026.05.01/"));
    }

    #[test]
    fn bad_overrides_are_named() {
        let e = plan(&[("archiv", "http://x")], &[]).unwrap_err();
        assert!(
            e.to_string().contains("archiv") && e.exit_code() == 2,
            "{e}"
        );
        assert!(e.to_string().contains("did you mean \"archive\"?"), "{e}");
        let e = plan(&[("archive", "ftp://x")], &[]).unwrap_err();
        assert!(e.to_string().contains("ftp://x"), "{e}");
        assert!(parse_location_override("archive").is_err());
        assert!(parse_location_override("=x").is_err());
    }
}
