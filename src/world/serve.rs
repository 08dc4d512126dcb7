//! Serving the world on 127.0.0.1: a small static HTTP server for `archive/` (at `/`,
//! archive.archlinux.org), `gitlab/` (at `/gitlab/`, gitlab.archlinux.org: the repository by
//! git's dumb HTTP protocol, the package registry's files) and `alpine/` (at `/alpine/`, the
//! Alpine CDN), plus Debian's docker-registry over `registry/` (Docker Hub), which asks for
//! Docker Hub's bearer tokens, and their token service at `/auth/token` (auth.docker.io,
//! `world::hub_auth`). Everything stops when the returned `WorldServers` is dropped.
//!
//! The world has a "today" ([`serve_at`]): its package registry answers 404 for a release
//! more than 60 days older (`gitlab::package_expired`), as upstream's registry cleanup does.
//! By default it is the archive's last day (`archive/repos/last`), within 60 days of the
//! world's release, so the release's rootfs is served.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::error::{Error, IoContext, Result};
use crate::world::{registry, tools};

/// Ports to listen on; 0 picks a free one.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub archive: u16,
    pub registry: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            archive: crate::inputs::mirror::MIRROR_PORT,
            registry: 7879,
        }
    }
}

/// The running servers; dropping it stops them.
#[derive(Debug)]
pub struct WorldServers {
    pub archive_url: String,
    pub rootfs_url: String,
    pub registry_url: String,
    pub git_url: String,
    pub gitlab_url: String,
    pub alpine_url: String,
    /// Docker Hub's auth host (`…/auth`: its token service at `…/auth/token`), whose tokens
    /// the world's registry asks for.
    pub hub_auth_url: String,
    stop: Arc<AtomicBool>,
    http_addr: std::net::SocketAddr,
    http: Option<JoinHandle<()>>,
    registry: Option<Child>,
}

impl WorldServers {
    /// Every location the world serves, as (profile location name, URL).
    pub fn locations(&self) -> Vec<(&'static str, String)> {
        vec![
            ("archive", self.archive_url.clone()),
            ("rootfs", self.rootfs_url.clone()),
            ("registry", self.registry_url.clone()),
            ("git", self.git_url.clone()),
            ("gitlab", self.gitlab_url.clone()),
            ("alpine", self.alpine_url.clone()),
            ("hub_auth", self.hub_auth_url.clone()),
        ]
    }

    /// An `Authorization` value for pulling `repository` from the world's registry: an
    /// anonymous token from the world's token service, as a Docker Hub client gets one.
    pub fn pull_authorization(&self, repository: &str) -> Result<String> {
        let url = format!(
            "{}/token?service={}&scope=repository:{repository}:pull",
            self.hub_auth_url,
            crate::world::hub_auth::SERVICE
        );
        let body = ureq::get(&url)
            .call()
            .map_err(|e| Error::network(&url, e.to_string()))?
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::network(&url, e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| Error::network(&url, e.to_string()))?;
        v["token"]
            .as_str()
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| Error::network(&url, "no token in the answer"))
    }

    /// The `REPROBOX_LOCATION_*` exports.
    pub fn exports(&self) -> String {
        self.locations()
            .iter()
            .map(|(k, v)| format!("export REPROBOX_LOCATION_{}={v}\n", k.to_uppercase()))
            .collect()
    }

    /// The same as `--location` flags.
    pub fn location_flags(&self) -> String {
        self.locations()
            .iter()
            .map(|(k, v)| format!("--location {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for WorldServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.http_addr);
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        if let Some(mut c) = self.registry.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// Serves the world in `dir` (built by `world::build`) on the given ports of 127.0.0.1, on
/// the world's own today (the archive's last day).
pub fn serve(dir: &Path, ports: Ports) -> Result<WorldServers> {
    serve_at(dir, ports, None)
}

/// [`serve`] with the world's today set: `None` is the archive's last day
/// (`archive/repos/last`); the package registry answers 404 for a release more than 60 days
/// before today, as upstream's cleanup leaves it.
pub fn serve_at(
    dir: &Path,
    ports: Ports,
    today: Option<jiff::civil::Date>,
) -> Result<WorldServers> {
    let not_a_world = |dir: &Path, why: &str| {
        Error::bad_input(
            dir.display().to_string(),
            format!(
                "not a built test world ({why}); run `reprobox world build {}` first",
                dir.display()
            ),
        )
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_a_world(dir, "no such directory"),
        _ => Error::io("resolve", dir, e),
    })?;
    for sub in ["archive", "gitlab", "alpine", "registry"] {
        if !dir.join(sub).exists() {
            return Err(not_a_world(&dir, &format!("no {sub}/")));
        }
    }
    let mut roots = Roots::of(&dir);
    let tokens = crate::world::hub_auth::TokenService::new()?;
    roots.today = match today {
        Some(d) => Some(d),
        None => archive_last_day(&dir.join("archive")),
    };
    let bare = crate::world::gitlab::bare_repo(&dir.join("gitlab"));
    crate::world::gitlab::update_server_info(&bare)?;
    let listener = TcpListener::bind(("127.0.0.1", ports.archive)).map_err(|e| {
        Error::Environment(format!(
            "world serve: cannot listen on 127.0.0.1:{}: {e}",
            ports.archive
        ))
    })?;
    let http_addr = listener.local_addr().ctx("listen", "127.0.0.1")?;
    let stop = Arc::new(AtomicBool::new(false));
    let reg_port = if ports.registry == 0 {
        free_port()?
    } else {
        ports.registry
    };
    let work = dir.join("work");
    std::fs::create_dir_all(&work).ctx("create directory", &work)?;
    let auth = tokens.registry_config(&work.join(format!("registry-token-{reg_port}.pem")))?;
    roots.tokens = Some(tokens);
    let roots = Arc::new(roots);
    let stop2 = stop.clone();
    let http = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(c) = conn {
                let roots = roots.clone();
                std::thread::spawn(move || {
                    let _ = handle(c, &roots);
                });
            }
        }
    });

    let reg_bin = tools::require("docker-registry", "docker-registry")?;
    let cfg = work.join(format!("registry-serve-{reg_port}.yml"));
    let text = registry::config_text(&dir.join("registry"), &format!("127.0.0.1:{reg_port}"));
    std::fs::write(&cfg, text + &auth).ctx("write", &cfg)?;
    let mut child = Command::new(reg_bin)
        .arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::Environment(format!("world serve: cannot start docker-registry: {e}"))
        })?;
    let registry_url = format!("http://127.0.0.1:{reg_port}");
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", reg_port)).is_ok() {
            up = true;
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::Environment(format!(
                "world serve: docker-registry exited ({st}); is 127.0.0.1:{reg_port} in use?"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Environment(format!(
            "world serve: docker-registry did not listen on 127.0.0.1:{reg_port}"
        )));
    }
    let base = format!("http://{http_addr}");
    let gitlab = format!("{base}/gitlab");
    Ok(WorldServers {
        archive_url: base.clone(),
        rootfs_url: format!("{gitlab}/{}", crate::world::gitlab::PACKAGES_PATH),
        git_url: format!("{gitlab}/{}", crate::world::gitlab::REPO_PATH),
        gitlab_url: gitlab,
        alpine_url: format!("{base}/alpine"),
        hub_auth_url: format!("{base}/auth"),
        registry_url,
        stop,
        http_addr,
        http: Some(http),
        registry: Some(child),
    })
}

/// The day `archive/repos/last` points at (`YYYY/MM/DD`), if it is one.
fn archive_last_day(archive: &Path) -> Option<jiff::civil::Date> {
    let target = std::fs::read_link(archive.join("repos").join("last")).ok()?;
    jiff::civil::Date::strptime("%Y/%m/%d", target.to_str()?).ok()
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).ctx("listen", "127.0.0.1:0")?;
    Ok(l.local_addr().ctx("listen", "127.0.0.1:0")?.port())
}

/// URL prefixes and the directories served under them; the first prefix that matches wins,
/// so the archive's `/` comes last.
struct Roots {
    mounts: Vec<(&'static str, PathBuf)>,
    /// The world's today: the package registry's cleanup is applied against it (none: every
    /// package is served).
    today: Option<jiff::civil::Date>,
    /// Docker Hub's token service, at `/auth/token`.
    tokens: Option<crate::world::hub_auth::TokenService>,
}

impl Roots {
    /// gitlab.archlinux.org's files at `/gitlab/`, the Alpine CDN's at `/alpine/`, the
    /// archive at `/`.
    fn of(dir: &Path) -> Roots {
        Roots {
            mounts: vec![
                ("/gitlab/", dir.join("gitlab")),
                ("/alpine/", dir.join("alpine")),
                ("/", dir.join("archive")),
            ],
            today: None,
            tokens: None,
        }
    }
}

/// Maps a URL path to a file under one of the roots, refusing anything that escapes it.
fn resolve(roots: &Roots, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("");
    let path = percent_decode(path)?;
    if let (Some(today), Some(rest)) = (roots.today, path.strip_prefix("/gitlab/"))
        && crate::world::gitlab::package_expired(rest, today)
    {
        return None;
    }
    let (root, rest) = roots
        .mounts
        .iter()
        .find_map(|(prefix, root)| path.strip_prefix(prefix).map(|r| (root, r)))?;
    if rest
        .split('/')
        .any(|c| c == ".." || c.starts_with('.') && c.len() > 1 && c != ".")
        && !rest.is_empty()
    {
        // Hidden files (markers, temp files) and parent references are never served.
        return None;
    }
    let p = root.join(rest);
    let canon = std::fs::canonicalize(&p).ok()?;
    let root_c = std::fs::canonicalize(root).ok()?;
    if !canon.starts_with(&root_c) || !canon.is_file() {
        return None;
    }
    Some(canon)
}

/// The query of a request for Docker Hub's token service (`/auth/token?…`).
fn token_query(url_path: &str) -> Option<&str> {
    let (path, query) = url_path.split_once('?').unwrap_or((url_path, ""));
    (path == "/auth/token").then_some(query)
}

/// The archive's directory listing, as archive.archlinux.org's nginx autoindex gives it
/// (`<a href="NAME/">`), for a path under `/repos/` that ends in `/`: how a client learns
/// which days exist (`reprobox bisect`). Hidden entries are left out; other directories
/// are not listed.
fn listing(roots: &Roots, url_path: &str) -> Option<String> {
    let path = url_path.split(['?', '#']).next().unwrap_or("");
    let path = percent_decode(path)?;
    let rest = path
        .strip_prefix("/repos/")
        .map(|r| r.trim_end_matches('/'))?;
    if !path.ends_with('/') || rest.split('/').any(|c| c == ".." || c.starts_with('.')) {
        return None;
    }
    let (_, archive) = roots.mounts.iter().find(|(p, _)| *p == "/")?;
    let dir = archive.join("repos").join(rest);
    let canon = std::fs::canonicalize(&dir).ok()?;
    if !canon.starts_with(std::fs::canonicalize(archive).ok()?) || !canon.is_dir() {
        return None;
    }
    let mut names: Vec<String> = std::fs::read_dir(&canon)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let dir = e.path().is_dir();
            (!n.starts_with('.')).then(|| if dir { format!("{n}/") } else { n })
        })
        .collect();
    names.sort();
    let mut html = format!(
        "<html>\r\n<head><title>Index of {path}</title></head>\r\n<body>\r\n<h1>Index of {path}</h1><hr><pre><a href=\"../\">../</a>\r\n"
    );
    for n in names {
        html.push_str(&format!("<a href=\"{n}\">{n}</a>\r\n"));
    }
    html.push_str("</pre><hr></body>\r\n</html>\r\n");
    Some(html)
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An answer made in memory (`body` sent for GET, not for HEAD), the connection closed.
fn answer(
    w: &mut TcpStream,
    method: &str,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method == "GET" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

fn handle(c: TcpStream, roots: &Roots) -> std::io::Result<()> {
    let mut reader = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut w = c;
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 2 || !(parts[0] == "GET" || parts[0] == "HEAD") {
        return w.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if let (Some(tokens), Some(query)) = (&roots.tokens, token_query(parts[1])) {
        let now = jiff::Timestamp::now().as_second();
        let (status, body) = match tokens.answer(query, now) {
            Ok(json) => ("200 OK", json),
            Err(e) => (
                "400 Bad Request",
                serde_json::json!({"details": e.to_string()}).to_string(),
            ),
        };
        return answer(&mut w, parts[0], status, "application/json", &body);
    }
    match resolve(roots, parts[1]) {
        None => match listing(roots, parts[1]) {
            Some(html) => answer(&mut w, parts[0], "200 OK", "text/html", &html),
            None => w.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
        },
        Some(p) => {
            let mut f = std::fs::File::open(&p)?;
            let len = f.metadata()?.len();
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )?;
            if parts[0] == "GET" {
                std::io::copy(&mut f, &mut w)?;
            }
            w.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_their_root_and_hidden_files_are_not_served() {
        let t = tempfile::tempdir().unwrap();
        let mk = |p: &str| {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        };
        mk("archive/repos/a/core.db.tar.gz");
        mk("archive/repos/a/.complete");
        mk("gitlab/api/v4/projects/p/packages/generic/rootfs/1/r.tar.zst");
        mk("gitlab/archlinux/archlinux-docker.git/HEAD");
        mk("alpine/v3.23/main/x86_64/APKINDEX.tar.gz");
        mk("secret");
        std::os::unix::fs::symlink("core.db.tar.gz", t.path().join("archive/repos/a/core.db"))
            .unwrap();
        std::os::unix::fs::symlink("../../secret", t.path().join("archive/repos/escape")).unwrap();
        let roots = Roots::of(t.path());
        assert!(resolve(&roots, "/repos/a/core.db").is_some());
        assert!(resolve(&roots, "/repos/a/core.db.tar.gz?x=1").is_some());
        assert!(
            resolve(
                &roots,
                "/gitlab/api/v4/projects/p/packages/generic/rootfs/1/r.tar.zst"
            )
            .is_some()
        );
        assert!(resolve(&roots, "/gitlab/archlinux/archlinux-docker.git/HEAD").is_some());
        assert!(resolve(&roots, "/alpine/v3.23/main/x86_64/APKINDEX.tar.gz").is_some());
        // The package registry's cleanup, against the world's today.
        let pkg = "/gitlab/api/v4/projects/10185/packages/generic/rootfs/20260520.0.1/r.tar.zst";
        mk("gitlab/api/v4/projects/10185/packages/generic/rootfs/20260520.0.1/r.tar.zst");
        let mut at = Roots::of(t.path());
        assert!(resolve(&at, pkg).is_some(), "no today: served");
        at.today = Some(jiff::civil::date(2026, 7, 19));
        assert!(resolve(&at, pkg).is_some(), "60 days later: served");
        at.today = Some(jiff::civil::date(2026, 7, 20));
        assert!(resolve(&at, pkg).is_none(), "61 days later: gone");
        assert!(resolve(&at, "/gitlab/archlinux/archlinux-docker.git/HEAD").is_some());
        for bad in [
            "/repos/a/.complete",
            "/../secret",
            "/%2e%2e/secret",
            "/repos/escape",
            "/repos/a",
            "/gitlab/../secret",
            "/alpine/%2e%2e/secret",
        ] {
            assert!(resolve(&roots, bad).is_none(), "{bad} resolved");
        }
        let l = listing(&roots, "/repos/").unwrap();
        assert!(l.contains("<a href=\"a/\">a/</a>"), "{l}");
        let l = listing(&roots, "/repos/a/").unwrap();
        assert!(l.contains("href=\"core.db\""), "{l}");
        assert!(!l.contains(".complete"), "{l}");
        for bad in [
            "/repos/a",
            "/repos/../",
            "/repos/escape/",
            "/gitlab/",
            "/repos/nope/",
        ] {
            assert!(listing(&roots, bad).is_none(), "{bad} listed");
        }
    }
}
