//! Hermetic egress (DESIGN.md decision 2, issue 12): a job's only way out is reprobox, host
//! by host. Each host a job may reach is an [`EgressRule`] mapping it to a location and a
//! [`Policy`]; the run's [`Egress`] serves them on the job's loopback (a forward proxy on
//! [`EGRESS_PROXY_PORT`], and TLS on 443 / plain HTTP on 80 for clients that ignore proxy
//! variables, the job's `/etc/hosts` mapping every listed host to 127.0.0.1), terminating
//! TLS with certificates signed by a CA made for this run alone (`ca.rs`: its key never
//! leaves memory). Everything else is refused at once and listed in [`EgressRecord`].
//!
//! The public part here is configuration and records; the server itself is private
//! (`server.rs`) and started by `backend::Services` for every job.

mod ca;
mod dns;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::{InputsLock, Status};
use crate::inputs::mirror::ArchiveRules;
use crate::inputs::store::{Blob, Store};
use crate::job::{Bind, Job, Unanswered, UnansweredSink};

pub(crate) use dns::DnsListener;
pub use dns::EGRESS_DNS_PORT;
pub(crate) use server::EgressListener;

/// The forward proxy's port on the job's loopback (`HTTPS_PROXY=http://127.0.0.1:3128`);
/// the one definition, next to `inputs::mirror::MIRROR_PORT`.
pub const EGRESS_PROXY_PORT: u16 = 3128;
/// TLS for clients that ignore the proxy: mapped hosts resolve to the job's 127.0.0.1.
pub const EGRESS_HTTPS_PORT: u16 = 443;
/// Plain HTTP for clients that ignore the proxy.
pub const EGRESS_HTTP_PORT: u16 = 80;

/// Where, inside the job, the egress's files (the CA bundle, the hosts file) are bound.
pub const JOB_EGRESS_DIR: &str = "/run/reprobox-egress";

/// The CA bundle paths clients read, by distribution (Debian/Alpine, Arch); each one
/// that is a regular file in the job's root gets the run's bundle bound over it.
pub const CA_BUNDLE_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ca-certificates/extracted/tls-ca-bundle.pem",
];

/// The containers' system configuration (Debian's and Arch's `containers-common`): when
/// it is a regular file in the job's root, the job gets a copy of it whose `[containers]
/// volumes` also bind the run's bundle at [`RUN_CA_BUNDLE_PATH`] into every container
/// podman starts, a `podman build`'s RUN steps included.
pub const CONTAINERS_CONF_PATH: &str = "/usr/share/containers/containers.conf";

/// Where a nested container (a RUN step) gets the run's bundle: Debian's and Alpine's path,
/// and Arch's through its symlink (`/etc/ssl/certs/ca-certificates.crt` →
/// `../../ca-certificates/extracted/tls-ca-bundle.pem`). Only this path: buildah leaves an
/// empty file at a volume's destination when the image lacks it, so every path listed here
/// that an image lacks would appear in that image.
pub const RUN_CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `text` (a containers.conf) with the run's bundle added to `[containers] volumes`, or
/// None when it is not TOML.
fn containers_conf_with_ca(text: &str) -> Option<String> {
    let mut conf: toml::Table = toml::from_str(text).ok()?;
    let containers = conf
        .entry("containers")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()?;
    let volumes = containers
        .entry("volumes")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()?;
    volumes.push(toml::Value::String(format!(
        "{JOB_EGRESS_DIR}/ca-bundle.pem:{RUN_CA_BUNDLE_PATH}:ro"
    )));
    toml::to_string(&conf).ok()
}

/// How the bytes behind a mapped host are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "pins")]
pub enum Policy {
    /// Bytes whose sha256 is known beforehand, per canonical URL (`https://HOST/path`);
    /// other bytes are refused (tampered) and never stored; an unlisted URL is refused.
    Pinned(BTreeMap<String, String>),
    /// Trust on first use: the first online fetch is stored and pinned; later answers are
    /// the pinned bytes, and other bytes upstream are named as drift.
    Recorded,
    /// The archive mirror's rules (`inputs::mirror::ArchiveRules`): packages checked against
    /// the day's database `%SHA256SUM%`, databases and other immutable paths pinned when
    /// first fetched.
    Archive,
    /// The OCI distribution API, pull only, through `inputs::registry` (Docker Hub's
    /// anonymous bearer-token flow answered by reprobox): a tag is resolved once to a
    /// manifest and pinned under its canonical URL (its lock line carries the digest);
    /// manifests by digest and blobs are checked against their digest.
    Registry,
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Pinned(_) => "pinned",
            Policy::Recorded => "recorded",
            Policy::Archive => "archive",
            Policy::Registry => "registry",
        }
    }
}

/// One host a job may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// The name the build asks for (`archive.archlinux.org`), lowercase.
    pub host: String,
    /// Where its bytes come from: `http(s)://…` or `file://…`, without a trailing `/`;
    /// a request for `https://HOST/p` is fetched from `location + /p`.
    pub location: String,
    pub policy: Policy,
}

impl EgressRule {
    /// A rule from a profile's `[[egress]]` entry (host, location URL, policy), checked like
    /// `--egress`; `what` names the entry in the error (exit 2).
    pub fn new(host: &str, location: &str, policy: Policy, what: &str) -> Result<EgressRule> {
        let rule = EgressRule {
            host: host.to_ascii_lowercase(),
            location: location.trim_end_matches('/').to_string(),
            policy,
        };
        rule.validate()
            .map_err(|m| Error::bad_input(what.to_string(), m))?;
        Ok(rule)
    }

    /// Parse `--egress HOST=URL[:POLICY]`; POLICY is `recorded` (the default), `archive`,
    /// `registry` or `pinned=PATH@SHA256[,PATH@SHA256…]`.
    pub fn parse(s: &str) -> Result<EgressRule> {
        let bad = |msg: String| Error::bad_input(format!("--egress {s}"), msg);
        let (host, rest) = s
            .split_once('=')
            .ok_or_else(|| bad("expected HOST=URL[:POLICY]".into()))?;
        let host = host.to_ascii_lowercase();
        let (location, policy) = match rest.rsplit_once(':') {
            Some((loc, "recorded")) => (loc, Policy::Recorded),
            Some((loc, "archive")) => (loc, Policy::Archive),
            Some((loc, "registry")) => (loc, Policy::Registry),
            Some((loc, p)) if p == "pinned" || p.starts_with("pinned=") => {
                (loc, Policy::Pinned(parse_pins(&host, p).map_err(bad)?))
            }
            _ => match rest.split_once(":pinned=") {
                // A pinned path may itself hold a ':'.
                Some((loc, pins)) => (
                    loc,
                    Policy::Pinned(parse_pins(&host, &format!("pinned={pins}")).map_err(bad)?),
                ),
                None => (rest, Policy::Recorded),
            },
        };
        let rule = EgressRule {
            host,
            location: location.trim_end_matches('/').to_string(),
            policy,
        };
        rule.validate().map_err(bad)?;
        Ok(rule)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let h = &self.host;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if h.len() > 253 || !h.split('.').all(label_ok) {
            return Err(format!("{h:?} is not a host name"));
        }
        if h.parse::<std::net::IpAddr>().is_ok() || h.split('.').all(|l| l.parse::<u8>().is_ok()) {
            return Err(format!("{h:?} is an IP address; egress maps host names"));
        }
        if h == "localhost" {
            return Err("localhost is the job's own".into());
        }
        let l = &self.location;
        let rest = l
            .strip_prefix("https://")
            .or_else(|| l.strip_prefix("http://"))
            .map(|r| r.split('/').next().unwrap_or(""))
            .or_else(|| l.strip_prefix("file:///").map(|_| "file"));
        match rest {
            Some(authority) if !authority.is_empty() && !l.contains(char::is_whitespace) => {
                port_ok(authority).map_err(|port| {
                    format!(
                        "location {l:?}: {port:?} is not a port (a mistyped policy? expected :recorded, :archive, :registry or :pinned=PATH@SHA256)"
                    )
                })
            }
            _ => Err(format!(
                "location {l:?} is not an http://, https:// or file:/// URL"
            )),
        }
    }

    /// The canonical URL of a request for `path` (with its query) on this host, as the
    /// build asked for it.
    pub fn canonical(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.host)
    }
}

/// An URL authority's port, when it has one, is a number (`host`, `host:8080`, `[::1]:80`);
/// otherwise the text after the host's `:` is returned. A policy the parser did not know
/// stays in the location, and is caught here rather than taken for part of the URL.
fn port_ok(authority: &str) -> std::result::Result<(), String> {
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => authority.find(':').map_or("", |i| &authority[i..]),
    };
    match after_host.strip_prefix(':') {
        None if after_host.is_empty() => Ok(()),
        Some(p) if p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(after_host.trim_start_matches(':').to_string()),
    }
}

fn parse_pins(host: &str, p: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let list = p
        .strip_prefix("pinned=")
        .ok_or("pinned needs its URLs: pinned=PATH@SHA256[,PATH@SHA256…]")?;
    let mut pins = BTreeMap::new();
    for item in list.split(',') {
        let (path, sha) = item
            .rsplit_once('@')
            .ok_or_else(|| format!("{item:?}: expected PATH@SHA256"))?;
        if !path.starts_with('/') {
            return Err(format!("{path:?}: a pinned path starts with /"));
        }
        if !crate::inputs::store::is_sha256(sha) {
            return Err(format!("{sha:?} is not a sha256 (64 lowercase hex digits)"));
        }
        pins.insert(format!("https://{host}{path}"), sha.to_string());
    }
    Ok(pins)
}

/// One refused attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The host (or address) the job tried to reach, `-` when it named none.
    pub host: String,
    pub port: u16,
    /// What was attempted (`CONNECT example.org:443`, `GET http://…`, `TLS`).
    pub what: String,
    pub reason: String,
    /// The step whose job made the attempt (a reproduction; `run` has one job and none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// A `recorded` URL whose upstream bytes are no longer the pinned ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub url: String,
    /// What was pinned, and served.
    pub pinned: String,
    /// What upstream sent this time.
    pub upstream: String,
}

/// A `pinned` URL whose bytes did not match (nothing was stored; the job got 502).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tampered {
    pub url: String,
    pub expected: String,
    pub actual: String,
}

/// Everything the egress did in a run (every job): the run record's and the report's
/// `egress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    /// The run's CA certificate (PEM), the one the jobs trusted. Never its key.
    pub ca_certificate: String,
    pub rules: Vec<EgressRule>,
    /// One entry per (canonical URL, status), as in the inputs lock.
    #[serde(serialize_with = "lock_text")]
    pub requests: InputsLock,
    pub refusals: Vec<Refusal>,
    pub drift: Vec<Drift>,
    pub tampered: Vec<Tampered>,
}

fn lock_text<S: serde::Serializer>(l: &InputsLock, s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(l.entries.len()))?;
    for e in &l.entries {
        seq.serialize_element(&serde_json::json!({
            "url": e.url,
            "policy": e.policy,
            "status": e.status.as_str(),
            "sha256": e.sha256,
            "bytes": e.bytes,
            "requests": e.requests,
        }))?;
    }
    seq.end()
}

/// The run's egress: rules, CA, the TLS configurations of the mapped hosts, the store and
/// what was done. Made once per run and shared by all its jobs (`backend::Services`).
pub struct Egress {
    rules: Vec<EgressRule>,
    ca: ca::RunCa,
    /// The TLS configuration per mapped host (CONNECT) and one choosing by SNI (port 443).
    tls: HashMap<String, Arc<rustls::ServerConfig>>,
    fetcher: Fetcher,
    offline: bool,
    /// The archive mirror's rules per host of an `archive` rule.
    archives: HashMap<String, ArchiveRules>,
    /// Canonical URL → pinned blob, as checked in this run (`recorded`).
    checked: Mutex<HashMap<String, Blob>>,
    record: Mutex<EgressRecord>,
    /// The step whose job is running (a reproduction runs its jobs one at a time).
    step: Mutex<Option<String>>,
    /// (kind, attempt, step) of the attempts a client repeats that were refused so far
    /// (`dns` NAME (TYPE): a resolver's retries and search-list repeats; `tcp`/`udp`
    /// ADDRESS: an unanswered connect's retries): each is recorded once.
    refused_once: Mutex<std::collections::HashSet<(&'static str, String, Option<String>)>>,
    /// The jobs' own host names (`Job::hostname`): in their hosts file, and answered
    /// 127.0.0.1 by the resolver, never refused (a tool that resolves its machine's name).
    local_names: Mutex<std::collections::HashSet<String>>,
    /// The run's temporary directory holding the job's CA bundle and hosts file.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("rules", &self.rules)
            .field("offline", &self.offline)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// The run's egress over `store`. Refuses (exit 2) two rules for one host, and the
    /// policies not supported yet.
    pub fn new(rules: Vec<EgressRule>, store: Store, offline: bool) -> Result<Egress> {
        for (i, r) in rules.iter().enumerate() {
            if rules[..i].iter().any(|o| o.host == r.host) {
                return Err(Error::bad_input(
                    format!("egress rule for {}", r.host),
                    "the host is mapped twice",
                ));
            }
        }
        let mut archives = HashMap::new();
        for r in rules.iter().filter(|r| r.policy == Policy::Archive) {
            let fetcher = Fetcher::new(store.clone(), offline).with_progress(false);
            let canonical = r.canonical("https", "");
            archives.insert(
                r.host.clone(),
                ArchiveRules::new(fetcher, &r.location, &canonical)?,
            );
        }
        let provider = Arc::new(server_provider());
        let ca = ca::RunCa::new()?;
        let mut tls = HashMap::new();
        for r in &rules {
            let leaf = ca.leaf(&r.host, &provider)?;
            let config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Environment(format!("egress TLS: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(server::Fixed(leaf)));
            let mut config = config;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config.ignore_client_order = true;
            tls.insert(r.host.clone(), Arc::new(config));
        }
        let dir = tempfile::Builder::new()
            .prefix("reprobox-egress-")
            .tempdir()
            .ctx("create a temporary directory in", std::env::temp_dir())?;
        let record = EgressRecord {
            ca_certificate: ca.pem(),
            rules: rules.clone(),
            ..EgressRecord::default()
        };
        Ok(Egress {
            rules,
            ca,
            tls,
            fetcher: Fetcher::new(store, offline).with_progress(false),
            offline,
            archives,
            checked: Mutex::new(HashMap::new()),
            record: Mutex::new(record),
            step: Mutex::new(None),
            refused_once: Mutex::new(Default::default()),
            local_names: Mutex::new(Default::default()),
            dir,
        })
    }

    pub fn rules(&self) -> &[EgressRule] {
        &self.rules
    }

    /// Answer one archive day of every `archive` rule from `overlay` (`reproduce
    /// --packages-from published`); called before the egress serves a job. Returns how many
    /// rules took it (0: the profile maps no archive host, nothing would be served from it).
    pub fn set_archive_overlay(
        &mut self,
        overlay: std::sync::Arc<crate::inputs::mirror::ArchiveOverlay>,
    ) -> usize {
        for r in self.archives.values_mut() {
            r.set_overlay(overlay.clone());
        }
        self.archives.len()
    }

    /// The run's CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Everything done so far, over every job of the run.
    pub fn record(&self) -> EgressRecord {
        self.record.lock().expect("not poisoned").clone()
    }

    /// The TCP ports the egress serves on a job's loopback (the resolver's last).
    pub fn ports() -> [u16; 4] {
        [
            EGRESS_PROXY_PORT,
            EGRESS_HTTPS_PORT,
            EGRESS_HTTP_PORT,
            EGRESS_DNS_PORT,
        ]
    }

    /// The UDP ports the egress serves on a job's loopback (the resolver's).
    pub fn udp_ports() -> [u16; 1] {
        [EGRESS_DNS_PORT]
    }

    /// Give `job` (whose root directory is `root`) the egress: the CA bundle (the root's own
    /// bundle plus the run's CA) and a hosts file mapping the listed hosts to 127.0.0.1,
    /// written in the run's temporary directory and bound read-only over the paths clients
    /// read (nothing is written into the root), and the proxy and CA variables. The caller
    /// adds the listeners (`Services::ports`).
    /// Without `root` (a root the backend unpacks itself) only the variables and the
    /// egress directory are given.
    /// Nothing is bound over a root file the job may write (under a directory of
    /// `job.landlock.writable`: the rollback and install steps' `/etc`, `/usr`): a package
    /// upgrade there (`ca-certificates`, `filesystem`'s `/etc/hosts`, `containers-common`)
    /// replaces or rewrites those files, which fails on a read-only bind, or leaves the
    /// environment with the old file under it. Such a job reaches the egress through the
    /// variables (`SSL_CERT_FILE`, `CURL_CA_BUNDLE`, the proxy) alone.
    pub fn prepare_job(&self, job: &mut Job, root: Option<&Path>) -> Result<()> {
        let dir = self.dir.path();
        let writable = job.landlock.writable.clone();
        let file_in = |p: &str| {
            root.filter(|_| !writable.iter().any(|w| Path::new(p).starts_with(w)))
                .and_then(|r| regular_file_in(r, p))
        };
        // The root's own bundle is read even where it is not bound over.
        let root_file = |p: &str| root.and_then(|r| regular_file_in(r, p));
        let mut bundle = CA_BUNDLE_PATHS
            .iter()
            .find_map(|p| root_file(p).and_then(|h| std::fs::read(h).ok()))
            .unwrap_or_default();
        if !bundle.is_empty() && !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(self.ca.pem().as_bytes());
        let bundle_path = dir.join("ca-bundle.pem");
        std::fs::write(&bundle_path, &bundle).ctx("write", &bundle_path)?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        let me = job.hostname.to_ascii_lowercase();
        if !me.is_empty() && me != "localhost" && self.rule(&me).is_none() {
            hosts.push_str(&format!("127.0.0.1\t{me}\n"));
            self.local_names.lock().expect("not poisoned").insert(me);
        }
        for r in &self.rules {
            hosts.push_str(&format!("127.0.0.1\t{}\n", r.host));
        }
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).ctx("write", &hosts_path)?;
        // The resolver on the job's loopback (`dns.rs`). `use-vc`: glibc asks over TCP,
        // which the microVM's guest forwards like the other ports (qemu forwards no UDP);
        // musl and Go ignore it and ask over UDP, which the container backend serves.
        let resolv_path = dir.join("resolv.conf");
        std::fs::write(&resolv_path, RESOLV_CONF).ctx("write", &resolv_path)?;
        job.binds.push(Bind {
            src: dir.to_path_buf(),
            dst: JOB_EGRESS_DIR.into(),
            read_only: true,
        });
        for p in CA_BUNDLE_PATHS {
            if file_in(p).is_some() {
                job.binds.push(Bind {
                    src: bundle_path.clone(),
                    dst: p.into(),
                    read_only: true,
                });
            }
        }
        // RUN containers of a nested `podman build`: the root's own containers.conf, with
        // the bundle added to `[containers] volumes`, bound over it (docs/egress.md).
        if let Some(conf) = file_in(CONTAINERS_CONF_PATH) {
            let text = std::fs::read_to_string(&conf).unwrap_or_default();
            if let Some(ours) = containers_conf_with_ca(&text) {
                let p = dir.join("containers.conf");
                std::fs::write(&p, ours).ctx("write", &p)?;
                job.binds.push(Bind {
                    src: p,
                    dst: CONTAINERS_CONF_PATH.into(),
                    read_only: true,
                });
            }
        }
        if file_in("/etc/hosts").is_some() {
            job.binds.push(Bind {
                src: hosts_path,
                dst: "/etc/hosts".into(),
                read_only: true,
            });
        }
        if file_in("/etc/resolv.conf").is_some() {
            job.binds.push(Bind {
                src: resolv_path,
                dst: "/etc/resolv.conf".into(),
                read_only: true,
            });
        }
        // A connect to a raw address reaches the egress's listeners and is refused there
        // (and recorded) rather than failing unseen.
        job.loopback_catch_all = true;
        // A connect to a port nothing listens on is refused by the kernel; the backend
        // reports it (`unanswered_sink`).
        job.watch_unanswered = true;
        let in_job = format!("{JOB_EGRESS_DIR}/ca-bundle.pem");
        let proxy = format!("http://127.0.0.1:{EGRESS_PROXY_PORT}");
        for (k, v) in [
            ("SSL_CERT_FILE", in_job.as_str()),
            ("CURL_CA_BUNDLE", in_job.as_str()),
            ("HTTPS_PROXY", proxy.as_str()),
            ("HTTP_PROXY", proxy.as_str()),
            ("https_proxy", proxy.as_str()),
            ("http_proxy", proxy.as_str()),
            ("NO_PROXY", "localhost,127.0.0.1"),
            ("no_proxy", "localhost,127.0.0.1"),
        ] {
            job.env.retain(|(ek, _)| ek != k);
            job.env.push((k.into(), v.into()));
        }
        Ok(())
    }

    /// Name the step whose jobs run from now on, for the refusals they make.
    pub fn set_step(&self, step: Option<&str>) {
        *self.step.lock().expect("not poisoned") = step.map(str::to_string);
    }

    /// `localhost` or a job's own host name.
    fn is_local_name(&self, name: &str) -> bool {
        name == "localhost"
            || self
                .local_names
                .lock()
                .expect("not poisoned")
                .contains(name)
    }

    fn rule(&self, host: &str) -> Option<&EgressRule> {
        self.rules.iter().find(|r| r.host == host)
    }

    fn refuse(&self, host: &str, port: u16, what: String, reason: &str) {
        tracing::info!("egress: refused {what} ({host}:{port}): {reason}");
        let step = self.step.lock().expect("not poisoned").clone();
        self.record
            .lock()
            .expect("not poisoned")
            .refusals
            .push(Refusal {
                host: host.to_string(),
                port,
                what,
                reason: reason.to_string(),
                step,
            });
    }

    /// Where a backend hands the connects and datagrams of a job that nothing answered
    /// (another port of a raw address, a nameserver named by address): each is a refusal,
    /// recorded once per protocol, address and step (a client's retries are one attempt).
    pub fn unanswered_sink(self: &Arc<Self>) -> UnansweredSink {
        let egress = Arc::clone(self);
        Arc::new(move |u: Unanswered| egress.refuse_unanswered(&u))
    }

    /// Whether `attempt` of `kind` is refused for the first time in the running step.
    fn first_refusal(&self, kind: &'static str, attempt: String) -> bool {
        let step = self.step.lock().expect("not poisoned").clone();
        self.refused_once
            .lock()
            .expect("not poisoned")
            .insert((kind, attempt, step))
    }

    fn refuse_unanswered(&self, u: &Unanswered) {
        if !self.first_refusal(u.proto, u.addr.to_string()) {
            return;
        }
        let what = match u.proto {
            "tcp" => format!("TCP connect to {} ({})", u.addr, u.program),
            _ => format!("UDP datagram to {} ({})", u.addr, u.program),
        };
        self.refuse(
            &u.addr.ip().to_string(),
            u.addr.port(),
            what,
            "nothing in the job's network answers there (the egress has its own ports alone)",
        );
    }

    /// A DNS lookup of an unlisted name (answered NXDOMAIN), recorded once per name, query
    /// type and step.
    fn refuse_lookup(&self, name: &str, qtype: &str) {
        if self.first_refusal("dns", format!("{name} ({qtype})")) {
            self.refuse(
                name,
                EGRESS_DNS_PORT,
                format!("DNS lookup {name} ({qtype})"),
                "not a mapped host name",
            );
        }
    }

    fn note(
        &self,
        lock: &Mutex<InputsLock>,
        policy: &str,
        status: Status,
        url: &str,
        b: Option<&Blob>,
    ) {
        let blob = b.map(|b| (b.sha256.as_str(), b.size));
        lock.lock()
            .expect("not poisoned")
            .record_egress(policy, status, url, blob);
        self.record
            .lock()
            .expect("not poisoned")
            .requests
            .record_egress(policy, status, url, blob);
    }

    /// Answer a request for `canonical` (`path` with its query, on `rule`'s host) under the
    /// rule's policy, recording it in `lock` and the run's record.
    fn answer(
        &self,
        rule: &EgressRule,
        canonical: &str,
        path: &str,
        lock: &Mutex<InputsLock>,
    ) -> Answer {
        let upstream = format!("{}{path}", rule.location);
        let policy = rule.policy.name();
        let answer = match &rule.policy {
            Policy::Pinned(pins) => self.pinned(pins, canonical, &upstream),
            Policy::Recorded => self.recorded(canonical, &upstream),
            Policy::Archive => self.archive(&self.archives[&rule.host], canonical, path),
            Policy::Registry => self.registry(rule, canonical, path),
        };
        match &answer {
            Answer::Blob(b, status) | Answer::Oci(b, status, _) => {
                self.note(lock, policy, *status, canonical, Some(b))
            }
            Answer::ApiBase => {}
            Answer::Refused { status, reason, .. } => {
                tracing::warn!("egress: {canonical}: {reason}");
                self.note(lock, policy, *status, canonical, None)
            }
        }
        answer
    }

    fn pinned(&self, pins: &BTreeMap<String, String>, canonical: &str, upstream: &str) -> Answer {
        let key = canonical.split('?').next().unwrap_or(canonical);
        let Some(sha) = pins.get(key) else {
            return Answer::Refused {
                code: 403,
                status: Status::Miss,
                reason: "not a pinned URL of this host".into(),
            };
        };
        match self.fetcher.try_fetch(upstream, Some(sha), true) {
            Ok(Some((b, outcome))) => {
                if outcome == crate::inputs::fetch::Outcome::Fetched {
                    self.pin(&b, canonical);
                }
                Answer::Blob(b, status_of(outcome))
            }
            Ok(None) if self.offline => offline_miss(),
            Ok(None) => Answer::Refused {
                code: 404,
                status: Status::Miss,
                reason: "upstream has no such file".into(),
            },
            Err(e) => self.failed(canonical, e),
        }
    }

    /// Upstream answers `canonical` with other bytes than the pin (`pinned`): logged and
    /// recorded as drift; the job gets the pinned bytes. `what` says what upstream did.
    fn note_drift(&self, canonical: &str, pinned: &str, upstream: &str, what: &str) {
        tracing::warn!("egress: drift: {canonical} was pinned as {pinned}, {what} {upstream}");
        self.record.lock().expect("not poisoned").drift.push(Drift {
            url: canonical.to_string(),
            pinned: pinned.to_string(),
            upstream: upstream.to_string(),
        });
    }

    /// A failed fetch: bytes that were not the expected ones are listed as tampered.
    fn failed(&self, canonical: &str, e: Error) -> Answer {
        let Error::Tampered {
            expected, actual, ..
        } = e
        else {
            return upstream_error(e);
        };
        self.record
            .lock()
            .expect("not poisoned")
            .tampered
            .push(Tampered {
                url: canonical.to_string(),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        Answer::Refused {
            code: 502,
            status: Status::Tampered,
            reason: format!("tampered: expected sha256 {expected}, got {actual}"),
        }
    }

    /// The archive mirror's rules, for the path without its query.
    fn archive(&self, rules: &ArchiveRules, canonical: &str, path: &str) -> Answer {
        let path = path.split('?').next().unwrap_or(path);
        match rules.resolve(path) {
            Ok(Some((b, outcome))) => Answer::Blob(b, status_of(outcome)),
            Ok(None) if self.offline => offline_miss(),
            Ok(None) => Answer::Refused {
                code: 404,
                status: Status::Miss,
                reason: "upstream has no such file".into(),
            },
            Err(e) => self.failed(canonical, e),
        }
    }

    fn recorded(&self, canonical: &str, upstream: &str) -> Answer {
        if let Some(b) = self.checked.lock().expect("not poisoned").get(canonical) {
            return Answer::Blob(b.clone(), Status::Hit);
        }
        let pin = match self.fetcher.store().lookup_url(canonical) {
            Ok(p) => p,
            Err(e) => return upstream_error(e),
        };
        if self.offline {
            return match pin {
                Some(b) => Answer::Blob(b, Status::Hit),
                None => offline_miss(),
            };
        }
        let (served, status) = match (self.fetcher.try_fetch(upstream, None, false), pin) {
            (Ok(Some((b, _))), None) => {
                self.pin(&b, canonical);
                (b, Status::Fetched)
            }
            (Ok(Some((b, _))), Some(p)) => {
                if b.sha256 != p.sha256 {
                    self.note_drift(canonical, &p.sha256, &b.sha256, "upstream now sends");
                }
                (p, Status::Fetched)
            }
            (Ok(None), Some(p)) => {
                tracing::warn!("egress: {canonical}: upstream has it no more; serving the pin");
                (p, Status::Hit)
            }
            (Err(e), Some(p)) => {
                tracing::warn!("egress: {canonical}: {e}; serving the pin");
                (p, Status::Hit)
            }
            (Ok(None), None) => {
                return Answer::Refused {
                    code: 404,
                    status: Status::Miss,
                    reason: "upstream has no such file".into(),
                };
            }
            (Err(e), None) => return upstream_error(e),
        };
        self.checked
            .lock()
            .expect("not poisoned")
            .insert(canonical.to_string(), served.clone());
        Answer::Blob(served, status)
    }

    /// The Distribution API's pull routes (the query is ignored): `/v2/` answered here; a
    /// manifest by tag resolved once (the pin under its canonical URL, like `recorded`: an
    /// online run that finds the tag moved names the drift and serves the pin); a manifest
    /// or blob by digest checked against it.
    fn registry(&self, rule: &EgressRule, canonical: &str, path: &str) -> Answer {
        use crate::inputs::registry::{self, RegistryClient, Route};
        let path = path.split('?').next().unwrap_or(path);
        let canonical = canonical.split('?').next().unwrap_or(canonical);
        let Some(route) = registry::route(path) else {
            return Answer::Refused {
                code: 404,
                status: Status::Miss,
                reason: "not a Distribution API pull route".into(),
            };
        };
        let repository = match route {
            Route::Base => return Answer::ApiBase,
            Route::Manifest { repository, .. } | Route::Blob { repository, .. } => repository,
        };
        // Docker Hub's challenge names `https://auth.docker.io/token`: asked at the location
        // of that host's rule, like every mapped host, never at the real one.
        let realms: Vec<(String, String)> = self
            .rules
            .iter()
            .map(|r| (r.host.clone(), r.location.clone()))
            .collect();
        let client = RegistryClient::new(&self.fetcher, &rule.location, repository)
            .with_realm_locations(&realms);
        let mut scratch = InputsLock::default();
        let outcome =
            |scratch: &InputsLock| scratch.entries.last().map_or(Status::Hit, |e| e.status);
        let failed = |e: Error| match e {
            Error::Tampered { .. } => self.failed(canonical, e),
            _ if self.offline => offline_miss(),
            _ => upstream_error(e),
        };
        let stored = |sha: &str| self.fetcher.store().blob(sha);
        match route {
            Route::Blob { digest, .. } => match client.blob(&mut scratch, digest) {
                Ok(b) => Answer::Oci(b, outcome(&scratch), "application/octet-stream".into()),
                Err(e) => failed(e),
            },
            Route::Manifest {
                reference: digest, ..
            } if digest.starts_with("sha256:") => match client.manifest(&mut scratch, digest) {
                Ok((_, bytes)) => match stored(&digest["sha256:".len()..]) {
                    Some(b) => {
                        Answer::Oci(b, outcome(&scratch), registry::manifest_media_type(&bytes))
                    }
                    None => upstream_error(Error::network(canonical, "not in the store")),
                },
                Err(e) => failed(e),
            },
            Route::Manifest { reference, .. } => self.registry_tag(&client, canonical, reference),
            Route::Base => Answer::ApiBase,
        }
    }

    /// A manifest by tag: resolved once per run, pinned under `canonical`.
    fn registry_tag(
        &self,
        client: &crate::inputs::registry::RegistryClient<'_>,
        canonical: &str,
        tag: &str,
    ) -> Answer {
        let typed = |b: Blob, status: Status| -> Answer {
            let media = std::fs::read(&b.path)
                .map(|bytes| crate::inputs::registry::manifest_media_type(&bytes))
                .unwrap_or_default();
            Answer::Oci(b, status, media)
        };
        if let Some(b) = self.checked.lock().expect("not poisoned").get(canonical) {
            return typed(b.clone(), Status::Hit);
        }
        let pin = match self.fetcher.store().lookup_url(canonical) {
            Ok(p) => p,
            Err(e) => return upstream_error(e),
        };
        if self.offline {
            return match pin {
                Some(b) => typed(b, Status::Hit),
                None => offline_miss(),
            };
        }
        let mut scratch = InputsLock::default();
        let now = client
            .manifest_by_tag(&mut scratch, tag)
            .map(|(_, bytes)| crate::digest::sha256_hex(&bytes))
            .and_then(|sha| {
                self.fetcher
                    .store()
                    .blob(&sha)
                    .ok_or_else(|| Error::network(canonical, "the manifest is not in the store"))
            });
        let (served, status) = match (now, pin) {
            (Ok(b), None) => {
                self.pin(&b, canonical);
                (b, Status::Fetched)
            }
            (Ok(b), Some(p)) => {
                if b.sha256 != p.sha256 {
                    self.note_drift(canonical, &p.sha256, &b.sha256, "the tag now names");
                }
                (p, Status::Fetched)
            }
            (Err(e), Some(p)) => {
                tracing::warn!("egress: {canonical}: {e}; serving the pin");
                (p, Status::Hit)
            }
            (Err(e), None) => return self.failed(canonical, e),
        };
        self.checked
            .lock()
            .expect("not poisoned")
            .insert(canonical.to_string(), served.clone());
        typed(served, status)
    }

    /// Name `b` in the store's origin index under the canonical URL (the pin).
    fn pin(&self, b: &Blob, canonical: &str) {
        if let Err(e) = self.fetcher.store().record(b, canonical) {
            tracing::warn!("egress: cannot record {canonical} in the store's index: {e}");
        }
    }
}

/// The job's `/etc/resolv.conf`: the egress's resolver alone, over TCP for glibc.
pub const RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions use-vc\n";

/// A regular file at `guest` (absolute) inside `root`, not reached through a symlink out of
/// it: its host path.
fn regular_file_in(root: &Path, guest: &str) -> Option<PathBuf> {
    let host = root.join(guest.trim_start_matches('/'));
    let md = std::fs::symlink_metadata(&host).ok()?;
    let real = host.canonicalize().ok()?;
    let root = root.canonicalize().ok()?;
    (md.is_file() && real.starts_with(&root) && real == host.canonicalize().ok()?).then_some(host)
}

fn status_of(o: crate::inputs::fetch::Outcome) -> Status {
    match o {
        crate::inputs::fetch::Outcome::Hit => Status::Hit,
        crate::inputs::fetch::Outcome::Fetched => Status::Fetched,
    }
}

fn offline_miss() -> Answer {
    Answer::Refused {
        code: 502,
        status: Status::Miss,
        reason: "offline, and the store does not hold it".into(),
    }
}

fn upstream_error(e: Error) -> Answer {
    Answer::Refused {
        code: 502,
        status: Status::Miss,
        reason: e.to_string(),
    }
}

/// What a request gets.
enum Answer {
    Blob(Blob, Status),
    /// A Distribution API body: its media type, and its digest as `Docker-Content-Digest`.
    Oci(Blob, Status, String),
    /// The Distribution API's version check (`/v2/`).
    ApiBase,
    Refused {
        code: u16,
        status: Status,
        reason: String,
    },
}

/// rustls's ring provider with AES-128-GCM preferred (the server's order, not the client's).
/// OpenSSL clients (curl, pacman's libcurl, wrk) list AES-256-GCM first; on a connection
/// that never leaves the machine AES-128-GCM is as safe, and its 10 rounds instead of 14
/// are paid twice for every body byte (the egress encrypts, the job's client decrypts).
fn server_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::{TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS13_AES_128_GCM_SHA256};
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|cs| {
        !matches!(
            cs.suite(),
            TLS13_AES_128_GCM_SHA256 | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        )
    });
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_their_policies() {
        let r = EgressRule::parse("Archive.ArchLinux.org=http://127.0.0.1:8080/").unwrap();
        assert_eq!(r.host, "archive.archlinux.org");
        assert_eq!(r.location, "http://127.0.0.1:8080");
        assert_eq!(r.policy, Policy::Recorded);
        let r = EgressRule::parse("a.example=https://mirror.example:8443/x:archive").unwrap();
        assert_eq!(r.location, "https://mirror.example:8443/x");
        assert_eq!(r.policy, Policy::Archive);
        let r = EgressRule::parse("r.example=http://127.0.0.1:5000:registry").unwrap();
        assert_eq!(r.policy, Policy::Registry);
        let sha = "ab".repeat(32);
        let r = EgressRule::parse(&format!(
            "g.example=http://127.0.0.1:9/base:pinned=/a/b.tar@{sha},/c:d@{sha}"
        ))
        .unwrap();
        assert_eq!(r.location, "http://127.0.0.1:9/base");
        let Policy::Pinned(p) = &r.policy else {
            panic!()
        };
        assert_eq!(p.get("https://g.example/a/b.tar"), Some(&sha));
        assert_eq!(p.get("https://g.example/c:d"), Some(&sha));
        assert_eq!(r.canonical("https", "/x?y"), "https://g.example/x?y");
    }

    #[test]
    fn a_containers_conf_gets_the_bundle_among_its_volumes() {
        let ours = format!("{JOB_EGRESS_DIR}/ca-bundle.pem:{RUN_CA_BUNDLE_PATH}:ro");
        let parse = |t: &str| -> toml::Table { toml::from_str(t).unwrap() };
        // Debian's: every key commented out under [containers].
        let c = parse(
            &containers_conf_with_ca("# c\n[containers]\n#volumes = []\n[engine]\nx = 1\n")
                .unwrap(),
        );
        assert_eq!(c["containers"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(c["containers"]["volumes"][0].as_str(), Some(ours.as_str()));
        assert_eq!(c["engine"]["x"].as_integer(), Some(1));
        // The root's own volumes are kept; a missing table is made.
        let c = parse(&containers_conf_with_ca("[containers]\nvolumes = [\"/a:/b\"]\n").unwrap());
        assert_eq!(c["containers"]["volumes"].as_array().unwrap().len(), 2);
        let c = parse(&containers_conf_with_ca("").unwrap());
        assert_eq!(c["containers"]["volumes"][0].as_str(), Some(ours.as_str()));
        assert!(containers_conf_with_ca("[containers\n").is_none());
    }

    #[test]
    fn bad_rules_are_named() {
        for bad in [
            "nohost",
            "=http://x",
            "1.1.1.1=http://x",
            "a_b.example=http://x",
            "a.example=ftp://x",
            "a.example=http://",
            "a.example=http://x:pinned",
            "a.example=http://x:pinned=/p@nothex",
            "a.example=http://x:pinned=p@".to_string().leak(),
            "localhost=http://x",
            "a.example=http://127.0.0.1:1:archvie",
            "a.example=http://x:bogus",
            "a.example=http://x:99999",
            "a.example=http://[::1]:x",
        ] {
            let e = EgressRule::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let e = EgressRule::parse("a.example=http://127.0.0.1:1:archvie").unwrap_err();
        assert!(e.to_string().contains("mistyped policy"), "{e}");
        for good in [
            "a.example=http://[::1]:80",
            "a.example=http://[::1]",
            "a.example=https://m.example/p:q",
        ] {
            assert!(EgressRule::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn every_policy_is_served_and_a_host_is_mapped_once() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let rules: Vec<_> = ["archive", "registry", "recorded"]
            .iter()
            .enumerate()
            .map(|(i, p)| EgressRule::parse(&format!("h{i}.example=http://127.0.0.1:1:{p}")))
            .collect::<Result<_>>()
            .unwrap();
        assert!(Egress::new(rules, store.clone(), false).is_ok());
        let r = EgressRule::parse("a.example=http://127.0.0.1:1").unwrap();
        let e = Egress::new(vec![r.clone(), r], store, false).unwrap_err();
        assert!(e.to_string().contains("mapped twice"), "{e}");
    }

    #[test]
    fn a_job_gets_binds_and_variables_and_the_root_is_not_written() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("s")).unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), "ROOTS\n").unwrap();
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        std::fs::create_dir_all(root.join("usr/share/containers")).unwrap();
        let conf = "[containers]\n#volumes = []\n";
        std::fs::write(root.join("usr/share/containers/containers.conf"), conf).unwrap();
        let r = EgressRule::parse("a.example=http://127.0.0.1:1").unwrap();
        let eg = Egress::new(vec![r], store, false).unwrap();
        let mut job = Job::new(
            crate::job::RootfsSource::Dir(root.clone()),
            vec!["true".into()],
        );
        eg.prepare_job(&mut job, Some(&root)).unwrap();
        let dsts: Vec<_> = job
            .binds
            .iter()
            .map(|b| b.dst.display().to_string())
            .collect();
        assert_eq!(
            dsts,
            [
                JOB_EGRESS_DIR,
                "/etc/ssl/certs/ca-certificates.crt",
                CONTAINERS_CONF_PATH,
                "/etc/hosts",
                "/etc/resolv.conf"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&job.binds[4].src).unwrap(),
            RESOLV_CONF
        );
        let ours = std::fs::read_to_string(&job.binds[2].src).unwrap();
        assert!(
            ours.contains(
                "/run/reprobox-egress/ca-bundle.pem:/etc/ssl/certs/ca-certificates.crt:ro"
            ),
            "{ours}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/share/containers/containers.conf")).unwrap(),
            conf
        );
        assert!(job.binds.iter().all(|b| b.read_only));
        let bundle = std::fs::read_to_string(&job.binds[1].src).unwrap();
        assert!(bundle.starts_with("ROOTS\n-----BEGIN CERTIFICATE-----"));
        assert!(bundle.ends_with(&eg.ca_pem()));
        assert!(!bundle.contains("PRIVATE KEY"));
        let hosts = std::fs::read_to_string(&job.binds[3].src).unwrap();
        assert!(hosts.contains("127.0.0.1\ta.example\n"));
        assert!(hosts.contains("127.0.0.1\treprobox\n"), "{hosts}");
        assert!(eg.is_local_name("reprobox"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
            "ROOTS\n"
        );
        let env: HashMap<_, _> = job.env.iter().cloned().collect();
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["SSL_CERT_FILE"], "/run/reprobox-egress/ca-bundle.pem");
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1");
        // A job that may write /etc and /usr (an install step) gets no bind over those
        // files: the variables and the egress directory alone, its bundle the root's + CA.
        let mut install = Job::new(
            crate::job::RootfsSource::Dir(root.clone()),
            vec!["true".into()],
        );
        install.landlock.writable = vec!["/etc".into(), "/usr".into(), "/var".into()];
        eg.prepare_job(&mut install, Some(&root)).unwrap();
        let dsts: Vec<_> = install.binds.iter().map(|b| b.dst.clone()).collect();
        assert_eq!(dsts, [PathBuf::from(JOB_EGRESS_DIR)]);
        let bundle = std::fs::read_to_string(install.binds[0].src.join("ca-bundle.pem")).unwrap();
        assert!(bundle.starts_with("ROOTS\n") && bundle.ends_with(&eg.ca_pem()));
        let env: HashMap<_, _> = install.env.iter().cloned().collect();
        assert_eq!(env["CURL_CA_BUNDLE"], "/run/reprobox-egress/ca-bundle.pem");
        // An absolute symlink out of the root is never bound over.
        std::fs::remove_file(root.join("etc/hosts")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("etc/hosts")).unwrap();
        assert!(regular_file_in(&root, "/etc/hosts").is_none());
    }
}
