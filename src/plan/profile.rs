//! Profiles: one TOML file per reproducible target (`profiles/*.toml`).
//!
//! The schema is documented in `docs/profiles.md`. Every table rejects unknown keys so a
//! typo in a profile is an error naming the key and the file, never a silently ignored
//! setting. Strings may hold `{variables}` (see [`crate::plan::vars`]) that the plan
//! substitutes; `$repo` and `$arch` are pacman's own and pass through untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The schema version this build of reprobox reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Profiles compiled into the binary, so `reprobox plan archlinux-repro …` works from any
/// directory. A file of the same name in a search directory takes precedence.
pub const EMBEDDED: &[(&str, &str)] = &[(
    "archlinux-repro",
    include_str!("../../profiles/archlinux-repro.toml"),
)];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Must equal [`SCHEMA_VERSION`].
    pub schema: u32,
    pub name: String,
    /// One line, shown by `reprobox profiles`.
    pub description: String,
    /// Every external location, by name. Overridable with `--location NAME=URL` or the
    /// environment variable `REPROBOX_LOCATION_<NAME>`.
    pub locations: BTreeMap<String, String>,
    /// The base root filesystem of the build environment.
    pub base: Base,
    /// The rollback of the base to the snapshot day.
    pub rollback: Rollback,
    /// The upstream source.
    pub source: Source,
    /// Where the expected (published) hashes come from.
    pub expected: Expected,
    /// What the build produces.
    pub artifacts: Artifacts,
    /// The steps run inside the build environment, in order.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// The hosts every step's jobs may reach through the hermetic egress (docs/egress.md);
    /// none: the jobs reach the mirror alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressEntry>,
}

/// The value of a pin that is the release's own rootfs sha256 (`Dockerfile.repro`).
pub const PIN_RELEASE_ROOTFS: &str = "release.rootfs_sha256";

/// One `[[egress]]` entry: a host, where its bytes come from, how they are trusted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressEntry {
    /// The host name the build asks for (`archive.archlinux.org`), lowercase.
    pub host: String,
    /// A location name of `[locations]` (overridable like every location) or a URL.
    pub location: String,
    pub policy: EgressPolicy,
    /// `pinned` only: request path (with `{variables}`) → sha256, or
    /// `"release.rootfs_sha256"` for the release's rootfs hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
}

/// How the bytes behind an egress host are trusted (`crate::egress::Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressPolicy {
    Archive,
    Pinned,
    Recorded,
    Registry,
}

impl EgressEntry {
    fn validate(&self, locations: &BTreeMap<String, String>) -> std::result::Result<(), String> {
        let h = &self.host;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if h.len() > 253
            || !h.split('.').all(label_ok)
            || h.split('.').all(|l| l.parse::<u8>().is_ok())
        {
            return Err(format!("egress host {h:?}: expected a lowercase host name"));
        }
        let is_url = ["http://", "https://", "file:///"]
            .iter()
            .any(|p| self.location.starts_with(p));
        if !is_url && !locations.contains_key(&self.location) {
            return Err(format!(
                "egress host {h:?}: location {:?} is neither a URL nor one of [locations] ({})",
                self.location,
                locations.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        match (self.policy, self.pins.is_empty()) {
            (EgressPolicy::Pinned, true) => {
                return Err(format!("egress host {h:?}: policy pinned needs pins"));
            }
            (EgressPolicy::Pinned, false) => {}
            (_, false) => {
                return Err(format!("egress host {h:?}: pins need policy = \"pinned\""));
            }
            (_, true) => {}
        }
        for (path, sha) in &self.pins {
            if !path.starts_with('/') {
                return Err(format!(
                    "egress host {h:?}: pin {path:?} is not a path starting with /"
                ));
            }
            let hex = sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex && sha != PIN_RELEASE_ROOTFS {
                return Err(format!(
                    "egress host {h:?}: pin {path:?} = {sha:?}: expected a sha256 or {PIN_RELEASE_ROOTFS:?}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// URL of the root filesystem tarball (tar, tar.gz or tar.zst).
    pub url: String,
    /// URL of a `sha256sums.txt` listing the tarball's file name; the tarball is pinned by it.
    pub sha256sums: String,
    /// Directory inside the tarball that is the root (`root.x86_64` for Arch bootstraps).
    #[serde(default)]
    pub subdir: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The one `Server =` line of the mirrorlist during the rollback; it names the mirror
    /// reprobox serves to the sandbox, never the internet.
    pub server: String,
    /// Packages the build needs, installed from the snapshot day.
    pub packages: Vec<String>,
    /// Packages installed without their dependencies (`pacman -Sdd`).
    #[serde(default)]
    pub packages_nodeps: Vec<String>,
    /// Packages whose absence does not stop the build (diffoscope, say).
    #[serde(default)]
    pub optional_packages: Vec<String>,
    /// The archive day the environment steps roll to by default (`{env_day}`): the build
    /// day (upstream's CI used the live mirrors of that day) or the snapshot day.
    /// `--env-day` overrides it for one run.
    #[serde(default)]
    pub env_day: EnvDay,
}

/// Which day the build environment is rolled to by default (`[rollback] env_day`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvDay {
    /// The build day, the day of SOURCE_DATE_EPOCH: upstream's CI ran on that day's live
    /// mirrors (the default).
    #[default]
    Build,
    /// The snapshot day (ARCHIVE_SNAPSHOT), the day before the build day.
    Snapshot,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Git remote of the upstream project.
    pub git: String,
    /// The release tag, usually `v{version}`.
    pub tag: String,
    /// The file at the tag that carries the source revision and the expected hashes.
    pub release_file: String,
    /// The label in `release_file` naming the source commit.
    pub revision_label: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// Expected rootfs sha256 comes from this release file (at the tag).
    pub rootfs_from: String,
    /// Where the published rootfs tarball can be downloaded (to diff it file by file).
    pub rootfs_url: String,
    /// Registry base URL of the published image.
    pub registry: String,
    /// Repository of the published image in that registry.
    pub image: String,
    /// Tag of the published image.
    pub image_tag: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// Directory (relative to the workspace) the build writes into.
    pub dir: String,
    /// The files the build must produce there.
    pub files: Vec<String>,
    /// Which of `files` is the root filesystem whose sha256 is compared.
    pub rootfs: String,
}

/// The network a step may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Loopback only.
    None,
    /// Loopback plus reprobox's archive mirror on the job's own loopback.
    Mirror,
    /// The mirror plus an egress proxy limited to `allow_hosts`, every connection logged.
    Egress,
}

/// How a step is isolated (DESIGN.md decision 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// The step mounts nothing: Landlock filesystem rules (writes only to `writable`),
    /// TCP limited to the mirror, no capabilities beyond those of uid 0 in the namespace
    /// minus the dangerous ones.
    Filesystem,
    /// The step runs containers (podman): it must mount, so it gets Landlock network and
    /// scope rules only and the capability set nested podman needs.
    NestedContainers,
}

/// What a step is for; the pipeline acts on it (DESIGN.md's flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Rolls the environment back to the snapshot day (skipped by `--no-rollback`).
    Rollback,
    /// Installs the build tools; the environment lock is recorded after the last of these.
    Install,
    /// Builds the artifacts; the rootfs check follows it.
    Build,
    /// Builds the container image; the image checks follow it.
    Image,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub description: String,
    pub role: Role,
    pub network: Network,
    /// Hosts the egress proxy lets through (only with `network = "egress"`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    pub isolation: Isolation,
    /// Working directory inside the environment.
    #[serde(default = "default_workdir")]
    pub workdir: String,
    /// Paths the step may write (Landlock, for `isolation = "filesystem"`).
    #[serde(default)]
    pub writable: Vec<String>,
    /// A failure of an optional step is recorded, not fatal.
    #[serde(default)]
    pub optional: bool,
    /// Pin the wall clock of dynamically linked tools to SOURCE_DATE_EPOCH with the
    /// environment's own libfaketime (DESIGN.md decision 4).
    #[serde(default)]
    pub faketime: bool,
    /// Environment variables of every command of the step (values are templates), on top of
    /// the job's fixed set (PATH, HOME, TERM, LANG, TZ, SOURCE_DATE_EPOCH).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Directories of the environment (absolute paths, templates) the step writes as
    /// scratch: an empty directory of the run bound there when the environment's own is
    /// empty or absent (nothing is hidden), else the environment's own, written in place;
    /// writable either way, and nothing of them outlives the run's root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<String>,
    /// Command lines (argv vectors), run in order; the first failure stops the step.
    pub run: Vec<Vec<String>>,
}

fn default_workdir() -> String {
    "/".into()
}

/// Where a profile was loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Origin {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Embedded => f.write_str("(built in)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    pub origin: Origin,
    /// sha256 of the profile's exact text, so that a report says which profile decided.
    pub sha256: String,
}

impl Profile {
    /// Parse and validate a profile's text; `source` names it in every error.
    pub fn from_toml(text: &str, source: &str) -> Result<Profile> {
        let p: Profile = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            Error::bad_input(
                format!("profile {source}"),
                format!("invalid profile TOML{at}: {msg}"),
            )
        })?;
        p.validate(source)?;
        Ok(p)
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |m: String| Error::bad_input(format!("profile {source}"), m);
        if self.schema != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema {} is not supported; this reprobox reads schema {SCHEMA_VERSION}",
                self.schema
            )));
        }
        if self.steps.is_empty() {
            return Err(bad("no [[step]] defined".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.steps {
            if !seen.insert(s.name.as_str()) {
                return Err(bad(format!("step name {:?} is used twice", s.name)));
            }
            if s.run.is_empty() || s.run.iter().any(|c| c.is_empty()) {
                return Err(bad(format!("step {:?}: every command needs argv", s.name)));
            }
            if s.network != Network::Egress && !s.allow_hosts.is_empty() {
                return Err(bad(format!(
                    "step {:?}: allow_hosts needs network = \"egress\"",
                    s.name
                )));
            }
            for k in s.env.keys() {
                let ok = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.is_empty()
                    && !k.as_bytes()[0].is_ascii_digit();
                if !ok {
                    return Err(bad(format!(
                        "step {:?}: env {k:?}: expected a variable name (letters, digits, _)",
                        s.name
                    )));
                }
            }
            for d in &s.scratch {
                if !d.starts_with('/') || d == "/" || d.split('/').any(|c| c == "..") {
                    return Err(bad(format!(
                        "step {:?}: scratch {d:?}: expected an absolute directory below /",
                        s.name
                    )));
                }
            }
        }
        for name in self.locations.keys() {
            if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad(format!(
                    "location name {name:?}: expected lowercase letters, digits and _"
                )));
            }
        }
        for (i, e) in self.egress.iter().enumerate() {
            e.validate(&self.locations).map_err(bad)?;
            if self.egress[..i].iter().any(|o| o.host == e.host) {
                return Err(bad(format!("egress host {:?} is listed twice", e.host)));
            }
        }
        if !self.artifacts.files.contains(&self.artifacts.rootfs) {
            return Err(bad(format!(
                "artifacts.rootfs {:?} is not among artifacts.files",
                self.artifacts.rootfs
            )));
        }
        Ok(())
    }

    /// Load a profile by name or path. A PROFILE containing `/` or ending in `.toml` is a
    /// path; otherwise it is looked up in [`search_dirs`], then among the embedded ones.
    pub fn load(spec: &str) -> Result<LoadedProfile> {
        if spec.contains('/') || spec.ends_with(".toml") {
            let path = PathBuf::from(spec);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::bad_input(format!("profile {spec}"), format!("cannot read: {e}"))
            })?;
            let profile = Profile::from_toml(&text, spec)?;
            return Ok(LoadedProfile {
                profile,
                origin: Origin::File(path),
                sha256: crate::digest::sha256_hex(text.as_bytes()),
            });
        }
        for dir in search_dirs() {
            let path = dir.join(format!("{spec}.toml"));
            if path.is_file() {
                let text = std::fs::read_to_string(&path).ctx("read", &path)?;
                let profile = Profile::from_toml(&text, &path.display().to_string())?;
                return Ok(LoadedProfile {
                    profile,
                    origin: Origin::File(path),
                    sha256: crate::digest::sha256_hex(text.as_bytes()),
                });
            }
        }
        if let Some((_, text)) = EMBEDDED.iter().find(|(n, _)| *n == spec) {
            let profile = Profile::from_toml(text, &format!("{spec} (built in)"))?;
            return Ok(LoadedProfile {
                profile,
                origin: Origin::Embedded,
                sha256: crate::digest::sha256_hex(text.as_bytes()),
            });
        }
        let known: Vec<String> = list()?.into_iter().map(|p| p.profile.name).collect();
        Err(Error::bad_input(
            format!("profile {spec:?}"),
            format!(
                "no such profile; {}expected one of: {} (see `reprobox profiles`), or a path to a .toml file",
                crate::suggest::did_you_mean(spec, known.iter().map(String::as_str)),
                known.join(", ")
            ),
        ))
    }
}

/// Directories searched for `NAME.toml`: `$REPROBOX_PROFILE_PATH` (colon-separated), then
/// `./profiles`.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("REPROBOX_PROFILE_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("profiles"));
    dirs
}

/// Every profile reachable by name, first found wins (as [`Profile::load`] resolves them).
/// A broken file in a search directory is an error: it would shadow its name.
pub fn list() -> Result<Vec<LoadedProfile>> {
    let mut out: Vec<LoadedProfile> = Vec::new();
    for dir in search_dirs() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let stem = stem(&path);
            if out.iter().any(|p| p.profile.name == stem) {
                continue;
            }
            let text = std::fs::read_to_string(&path).ctx("read", &path)?;
            let profile = Profile::from_toml(&text, &path.display().to_string())?;
            out.push(LoadedProfile {
                profile,
                origin: Origin::File(path),
                sha256: crate::digest::sha256_hex(text.as_bytes()),
            });
        }
    }
    for (name, text) in EMBEDDED {
        if !out.iter().any(|p| p.profile.name == *name) {
            out.push(LoadedProfile {
                profile: Profile::from_toml(text, &format!("{name} (built in)"))?,
                origin: Origin::Embedded,
                sha256: crate::digest::sha256_hex(text.as_bytes()),
            });
        }
    }
    Ok(out)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> &'static str {
        EMBEDDED[0].1
    }

    #[test]
    fn the_real_profile_parses() {
        let p = Profile::from_toml(real(), "archlinux-repro.toml").unwrap();
        assert_eq!(p.name, "archlinux-repro");
        assert!(p.rollback.packages.iter().any(|x| x == "podman"));
        assert!(p.rollback.packages_nodeps.iter().any(|x| x == "devtools"));
        assert!(
            p.rollback
                .optional_packages
                .iter()
                .any(|x| x == "diffoscope")
        );
        for loc in ["archive", "git", "registry", "rootfs"] {
            assert!(p.locations.contains_key(loc), "{loc}");
        }
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let text = real().replacen("[base]\n", "[base]\nmirrror = \"x\"\n", 1);
        let e = Profile::from_toml(&text, "profiles/typo.toml").unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(m.contains("mirrror"), "{m}");
        assert!(m.contains("profiles/typo.toml"), "{m}");
        assert!(m.contains("line"), "{m}");
    }

    #[test]
    fn broken_toml_and_wrong_schema_are_bad_input() {
        let e = Profile::from_toml("schema = [", "x.toml").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("x.toml"));
        let text = real().replacen("schema = 1", "schema = 99", 1);
        let e = Profile::from_toml(&text, "y.toml").unwrap_err();
        assert!(e.to_string().contains("schema 99"), "{e}");
    }

    #[test]
    fn the_egress_section_is_checked_naming_the_file() {
        let p = Profile::from_toml(real(), "archlinux-repro.toml").unwrap();
        let hosts: Vec<_> = p.egress.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "archive.archlinux.org",
                "gitlab.archlinux.org",
                "dl-cdn.alpinelinux.org",
                "registry-1.docker.io",
                "auth.docker.io"
            ]
        );
        assert!(p.egress[1].pins.values().all(|v| v == PIN_RELEASE_ROOTFS));
        let entry = |body: &str| format!("{}\n[[egress]]\n{body}\n", real());
        for (body, want) in [
            (
                "host = \"x.example\"\nlocation = \"nowhere\"\npolicy = \"recorded\"",
                "nowhere",
            ),
            (
                "host = \"X_Y\"\nlocation = \"archive\"\npolicy = \"recorded\"",
                "X_Y",
            ),
            (
                "host = \"x.example\"\nlocation = \"archive\"\npolicy = \"pinned\"",
                "needs pins",
            ),
            (
                "host = \"x.example\"\nlocation = \"archive\"\npolicy = \"open\"",
                "open",
            ),
            (
                "host = \"x.example\"\nlocation = \"archive\"\npolicy = \"recorded\"\nport = 1",
                "port",
            ),
            (
                "host = \"x.example\"\nlocation = \"archive\"\npolicy = \"pinned\"\npins = { \"/a\" = \"nothex\" }",
                "nothex",
            ),
            (
                "host = \"x.example\"\nlocation = \"archive\"\npolicy = \"recorded\"\npins = { \"/a\" = \"release.rootfs_sha256\" }",
                "pins need",
            ),
            (
                "host = \"archive.archlinux.org\"\nlocation = \"archive\"\npolicy = \"archive\"",
                "twice",
            ),
        ] {
            let e = Profile::from_toml(&entry(body), "profiles/e.toml").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{body}");
            let m = e.to_string();
            assert!(
                m.contains("profiles/e.toml") && m.contains(want),
                "{body}: {m}"
            );
        }
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let e = Profile::load("no-such-profile").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let m = e.to_string();
        assert!(
            m.contains("no-such-profile") && m.contains("archlinux-repro"),
            "{m}"
        );
        assert!(!m.contains("did you mean"), "{m}");
        let m = Profile::load("archlinux-rpro").unwrap_err().to_string();
        assert!(m.contains("did you mean \"archlinux-repro\"?"), "{m}");
    }
}
