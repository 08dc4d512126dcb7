//! The test world end to end — the world made from the real upstream (issue 13): `world::build`
//! makes a complete world and a second build reuses every part; world.json agrees with what
//! is on disk (the release upstream's CI jobs made, its rootfs in gitlab's package registry,
//! the images in the registry, every real tag in the world's repository); `serve` serves
//! every host and refuses what it must; the CLI fails cleanly on bad input and missing tools;
//! the real profile plans the world's release against the served world. Needs root and the
//! real upstream's bundles (CI is root): without them these tests fail with the reason, they
//! never skip. The world is the shared one of tests/reproduce_common (built once per machine).

use std::path::Path;
use std::process::Command;

mod reproduce_common;

use reprobox::world::{self as w, Release, alpine, gitlab, registry};
use reproduce_common::{locations, serve, sh, upstream_dir, world};

/// The real releases branch's head in the bundle: the parent of the world's release commit.
const BUNDLE_RELEASES_HEAD: &str = "b470c1d860164f60ab0d2c0eed8993962f9a8d3a";
const VERSION: &str = "20260520.0.1";

fn git(bare: &Path, args: &str) -> String {
    sh(&format!("git --git-dir '{}' {args}", bare.display()))
        .trim()
        .to_string()
}

fn bundle() -> std::path::PathBuf {
    upstream_dir().join("archlinux-docker.bundle")
}

/// `reprobox world SUB DIR` (serve on free ports); callers add the rest.
fn world_cmd(sub: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.args(["world", sub]).arg(dir);
    if sub == "serve" {
        c.args(["--archive-port", "0", "--registry-port", "0"]);
    }
    c
}

fn get(url: &str) -> Vec<u8> {
    let mut r = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.body_mut()
        .with_config()
        .limit(1 << 31)
        .read_to_vec()
        .unwrap()
}

/// Whether a registry answers at all at `base` (`/v2/`: 200, or 401 asking for a token).
fn registry_answers(base: &str) -> bool {
    match ureq::get(&format!("{base}/v2/")).call() {
        Ok(_) => true,
        Err(ureq::Error::StatusCode(c)) => c == 401,
        Err(_) => false,
    }
}

/// GET `url` with `authorization`, or without: (status, `WWW-Authenticate`,
/// `Docker-Content-Digest`, body).
fn registry_get(
    url: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, Option<String>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url).header(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    );
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let mut r = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (auth, digest) = (h("WWW-Authenticate"), h("Docker-Content-Digest"));
    let body = r.body_mut().read_to_vec().unwrap();
    (r.status().as_u16(), auth, digest, body)
}

/// The URL of the first bootstrap's sha256sums.txt on the served archive.
fn sums_url(m: &w::UpstreamWorld, archive: &str) -> String {
    let path = m.arch["bootstraps"][0]["path"].as_str().unwrap();
    let dir = path.rsplit_once('/').unwrap().0;
    format!("{archive}/{dir}/sha256sums.txt")
}

fn sha256(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}

#[test]
fn world_is_complete_and_a_second_build_reuses_it() {
    let (dir, m) = world();
    assert_eq!(m.schema, w::SCHEMA);
    assert_eq!(m.release, Release::world());
    assert_eq!(m.release.version, VERSION);
    for f in [".release-complete", "world.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // A second build finds every part complete: it makes nothing and returns the same
    // manifest (seconds, not the release's minutes).
    let t = std::time::Instant::now();
    let up = upstream_dir();
    let again = w::build(
        dir,
        &up.join("archlinux-docker.bundle"),
        &up.join("devtools.bundle"),
    )
    .unwrap();
    assert_eq!(&again, m);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(120),
        "the second build took {:?}",
        t.elapsed()
    );
    assert_eq!(&w::load(dir).unwrap(), m);
}

/// `world build DIR` without `--upstream` finds the bundle (`$REPROBOX_UPSTREAM_DIR`, else
/// `../shared/upstream` beside the current directory: a relative path) and reuses the world.
#[test]
fn cli_build_finds_the_bundle_and_reuses_the_world() {
    let (dir, m) = world();
    let out = world_cmd("build", dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("world {VERSION} built in {}", dir.display())),
        "{text}"
    );
    assert!(text.contains(&m.rootfs.sha256), "{text}");
    assert_eq!(&w::load(dir).unwrap(), m);
}

#[test]
fn world_json_agrees_with_the_release_on_disk() {
    let (dir, m) = world();
    let gitlab_root = dir.join("gitlab");
    let bare = gitlab::bare_repo(&gitlab_root);

    // The tag is the release commit pre-release made on `releases`, on top of the bundle's.
    assert_eq!(m.tag, format!("v{VERSION}"));
    assert_eq!(
        git(&bare, &format!("rev-parse 'v{VERSION}^{{commit}}'")),
        m.tag_commit
    );
    // The next-day release (docs/world.md) is the next commit on `releases`, the head.
    let next = m
        .next_day
        .as_ref()
        .expect("world.json has the next-day release");
    assert_eq!(git(&bare, "rev-parse refs/heads/releases"), next.tag_commit);
    assert_eq!(
        git(&bare, &format!("rev-parse '{}^'", next.tag_commit)),
        m.tag_commit
    );
    assert_eq!(
        git(&bare, &format!("rev-parse '{}^{{commit}}'", next.tag)),
        next.tag_commit
    );
    assert_eq!(
        git(&bare, &format!("rev-parse '{}^'", m.tag_commit)),
        BUNDLE_RELEASES_HEAD
    );
    assert_eq!(
        git(&bare, &format!("log -1 --format=%s {}", m.tag_commit)),
        format!("Release {VERSION}")
    );

    // Its Dockerfile.repro downloads the world's rootfs from gitlab's package registry,
    // pinned by its sha256; no local COPY of a rootfs.
    let df = git(&bare, &format!("show {}:Dockerfile.repro", m.tag_commit));
    let rootfs_file = format!("repro-{VERSION}.tar.zst");
    assert_eq!(
        m.rootfs.url,
        format!(
            "https://gitlab.archlinux.org/{}/{VERSION}/{rootfs_file}",
            gitlab::PACKAGES_PATH
        )
    );
    assert!(
        df.lines()
            .any(|l| l.starts_with("RUN curl -sOJL") && l.contains(&m.rootfs.url)),
        "{df}"
    );
    assert!(
        df.contains(&format!("{}  {rootfs_file}", m.rootfs.sha256)),
        "{df}"
    );
    assert!(
        !df.lines()
            .any(|l| l.starts_with("COPY") && l.contains(".tar.zst")),
        "{df}"
    );
    assert!(
        df.contains("LABEL org.opencontainers.image.title=\"Arch Linux repro Image\""),
        "{df}"
    );
    assert!(
        df.contains(&format!(
            "LABEL org.opencontainers.image.revision=\"{}\"",
            m.release.source_revision
        )),
        "{df}"
    );

    // The rootfs and its .SHA256 in the package registry.
    let pkg = gitlab::package_dir(&gitlab_root, VERSION);
    assert_eq!(
        w::sha256_file(&pkg.join(&rootfs_file)).unwrap(),
        m.rootfs.sha256
    );
    let sums = std::fs::read_to_string(pkg.join(format!("{rootfs_file}.SHA256"))).unwrap();
    assert_eq!(
        sums.split_whitespace().collect::<Vec<_>>(),
        [m.rootfs.sha256.as_str(), rootfs_file.as_str()],
        "{sums}"
    );
    assert!(!m.rootfs.env_packages.is_empty());

    // The registry: the published image under both its tags, and Docker Hub's alpine.
    let storage = dir.join("registry");
    let image =
        registry::read_image(&storage, registry::IMAGE_REPO, &format!("repro-{VERSION}")).unwrap();
    assert_eq!(image, m.image);
    // `:repro` is the last release pushed: the next-day one, whose rootfs differs.
    let latest = registry::read_image(&storage, registry::IMAGE_REPO, "repro").unwrap();
    assert_eq!(latest.manifest_digest, next.image.manifest_digest);
    assert_ne!(next.image.manifest_digest, m.image.manifest_digest);
    assert_ne!(next.rootfs.sha256, m.rootfs.sha256);
    let a = registry::read_image(&storage, alpine::IMAGE_REPO, alpine::IMAGE_TAG).unwrap();
    let recorded: alpine::AlpineRecord = serde_json::from_value(m.alpine.clone()).unwrap();
    assert_eq!(a, recorded.image);

    // Every real tag of the bundle is in the world's repository, at the same commit.
    let real = sh(&format!("git ls-remote --tags '{}'", bundle().display()));
    let world_tags: std::collections::BTreeSet<(String, String)> = git(&bare, "show-ref --tags")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sha, r)| (sha.to_string(), r.to_string()))
        .collect();
    let mut n = 0;
    for l in real.lines().filter(|l| !l.ends_with("^{}")) {
        let (sha, r) = l.split_once('\t').unwrap();
        n += 1;
        assert!(
            world_tags.contains(&(sha.to_string(), r.to_string())),
            "{l} missing in the world"
        );
    }
    assert!(n > 100, "only {n} tags in the bundle");
    assert!(
        !real.contains(&format!("v{VERSION}")),
        "the release is not a real tag"
    );

    // The archive's record: the snapshot, build and later days.
    assert_eq!(
        m.arch["days"],
        serde_json::json!(["2026/05/19", "2026/05/20", "2026/06/02"])
    );
    assert_eq!(m.hosts["gitlab.archlinux.org"], "gitlab/");
}

#[test]
fn serve_serves_every_host_and_stops_on_drop() {
    let (_, m) = world();
    let s = serve();
    let l: std::collections::BTreeMap<_, _> = s.locations().into_iter().collect();
    assert_eq!(
        l.keys().copied().collect::<Vec<_>>(),
        [
            "alpine", "archive", "git", "gitlab", "hub_auth", "registry", "rootfs"
        ]
    );

    // archive.archlinux.org: a day's signed repository database and a bootstrap's pin.
    let db = get(&format!(
        "{}/repos/2026/05/19/core/os/x86_64/core.db",
        l["archive"]
    ));
    assert_eq!(&db[..2], &[0x1f, 0x8b], "core.db is not gzip");
    let sums_url = sums_url(m, &l["archive"]);
    let boot = &m.arch["bootstraps"][0];
    let sums = String::from_utf8(get(&sums_url)).unwrap();
    assert!(sums.contains(boot["sha256"].as_str().unwrap()), "{sums}");

    // gitlab.archlinux.org: the package registry's files and the repository (dumb HTTP).
    let rootfs = get(&format!(
        "{}/{VERSION}/repro-{VERSION}.tar.zst",
        l["rootfs"]
    ));
    assert_eq!(sha256(&rootfs), m.rootfs.sha256);
    let clone = tempfile::tempdir().unwrap();
    let c = clone.path().join("c");
    sh(&format!(
        "git clone -q '{}' '{}' && git -C '{}' -c advice.detachedHead=false checkout -q v{VERSION}",
        l["git"],
        c.display(),
        c.display()
    ));
    let df = std::fs::read_to_string(c.join("Dockerfile.repro")).unwrap();
    assert!(df.contains(&m.rootfs.sha256));
    assert_eq!(
        sh(&format!("git -C '{}' rev-parse HEAD", c.display())).trim(),
        m.tag_commit
    );

    // The Alpine CDN.
    let idx = get(&format!(
        "{}/{}/APKINDEX.tar.gz",
        l["alpine"],
        alpine::REPOSITORY_PATH
    ));
    assert_eq!(&idx[..2], &[0x1f, 0x8b], "APKINDEX is not gzip");

    // Docker Hub: the registry asks for a bearer token, as Docker Hub does, naming its real
    // token service; the world's (hub_auth) gives an anonymous pull token the registry
    // verifies, and with it the published image by tag has the digest world.json names.
    let url = format!(
        "{}/v2/{}/manifests/{}",
        l["registry"], m.image.repository, m.image.tag
    );
    let (status, challenge, _, _) = registry_get(&url, None);
    assert_eq!(status, 401);
    let challenge = challenge.expect("a 401 without WWW-Authenticate");
    assert!(
        challenge.starts_with(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
        ) && challenge.contains(&format!(
            r#"scope="repository:{}:pull""#,
            m.image.repository
        )),
        "{challenge}"
    );
    let token = s.pull_authorization(&m.image.repository).unwrap();
    let (status, _, digest, body) = registry_get(&url, Some(&token));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(digest.as_deref(), Some(m.image.manifest_digest.as_str()));
    assert_eq!(format!("sha256:{}", sha256(&body)), m.image.manifest_digest);
    let url = format!(
        "{}/v2/{}/manifests/{}",
        l["registry"],
        alpine::IMAGE_REPO,
        alpine::IMAGE_TAG
    );
    let alpine_token = s.pull_authorization(alpine::IMAGE_REPO).unwrap();
    assert_eq!(registry_get(&url, Some(&alpine_token)).0, 200, "{url}");
    // A token is for the repositories it names; one from another token service (another
    // key) is not accepted; and anonymous push is refused (the token holds pull only, as
    // Docker Hub's anonymous tokens do).
    assert_eq!(registry_get(&url, Some(&token)).0, 401, "{url}");
    let forged = reprobox::world::hub_auth::TokenService::new()
        .unwrap()
        .answer(
            &format!(
                "service=registry.docker.io&scope=repository:{}:pull",
                alpine::IMAGE_REPO
            ),
            jiff::Timestamp::now().as_second(),
        )
        .unwrap();
    let forged: serde_json::Value = serde_json::from_str(&forged).unwrap();
    let forged = format!("Bearer {}", forged["token"].as_str().unwrap());
    assert_eq!(registry_get(&url, Some(&forged)).0, 401, "{url}");
    let push_token: serde_json::Value = serde_json::from_slice(&get(&format!(
        "{}/token?service=registry.docker.io&scope=repository:{}:pull,push",
        l["hub_auth"], m.image.repository
    )))
    .unwrap();
    let upload = format!("{}/v2/{}/blobs/uploads/", l["registry"], m.image.repository);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post(&upload)
        .header(
            "Authorization",
            &format!("Bearer {}", push_token["token"].as_str().unwrap()),
        )
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "anonymous push was let through");
    let challenge = r
        .headers()
        .get("WWW-Authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    // `reprobox image diff` of the published image by tag and by digest, its token realm
    // asked at the world's token service.
    let store = tempfile::tempdir().unwrap();
    let reg = l["registry"].trim_start_matches("http://");
    let o = Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .args(["image", "diff", "--store"])
        .arg(store.path())
        .arg(format!(
            "http://{reg}/{}:{}",
            m.image.repository, m.image.tag
        ))
        .arg(format!(
            "http://{reg}/{}@{}",
            m.image.repository, m.image.manifest_digest
        ))
        .arg(format!("--auth-location=auth.docker.io={}", l["hub_auth"]))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The token service refuses another service.
    assert!(
        ureq::get(&format!("{}/token?service=ghcr.io", l["hub_auth"]))
            .call()
            .is_err()
    );

    // Hidden files (markers, the world's own files) and parent paths are refused.
    for bad in [
        "/repos/2026/05/19/core/os/x86_64/.complete".to_string(),
        "/../world.json".into(),
        "/%2e%2e/world.json".into(),
        "/gitlab/../world.json".into(),
        "/gitlab/%2e%2e/pki/ca.key".into(),
        "/alpine/../registry".into(),
    ] {
        assert!(
            ureq::get(&format!("{}{bad}", l["archive"])).call().is_err(),
            "{bad} was served"
        );
    }

    let registry_url = l["registry"].clone();
    drop(s);
    assert!(ureq::get(&sums_url).call().is_err(), "archive still served");
    assert!(!registry_answers(&registry_url), "registry still running");
}

#[test]
fn cli_build_with_a_missing_tool_exits_3_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let target = empty.path().join("world");
    let out = world_cmd("build", &target)
        .arg("--upstream")
        .arg(bundle())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bwrap") && err.contains("bubblewrap"), "{err}");
    assert!(!target.exists(), "a failed build left {}", target.display());
}

#[test]
fn cli_build_into_a_file_is_bad_input_and_leaves_it() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let out = world_cmd("build", &file)
        .arg("--upstream")
        .arg(bundle())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("not a file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn cli_build_of_a_missing_or_bad_bundle_is_bad_input_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("world");
    let absent = t.path().join("absent.bundle");
    let junk = t.path().join("junk.bundle");
    std::fs::write(&junk, "not a bundle").unwrap();
    for b in [&absent, &junk] {
        let out = world_cmd("build", &target)
            .arg("--upstream")
            .arg(b)
            .arg("--devtools")
            .arg(upstream_dir().join("devtools.bundle"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(b.to_str().unwrap()), "{err}");
        assert!(
            !target.exists(),
            "a refused build left {}",
            target.display()
        );
    }
    // Without --upstream: the default places, all named, when none has the bundle.
    let out = world_cmd("build", &target)
        .current_dir(t.path())
        .env("REPROBOX_UPSTREAM_DIR", t.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}/archlinux-docker.bundle",
            t.path().join("nowhere").display()
        )) && err.contains("--upstream"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn cli_serve_of_a_non_world_is_bad_input() {
    let empty = tempfile::tempdir().unwrap();
    let out = world_cmd("serve", empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reprobox world build"));
    // A directory that does not exist at all is bad input too, named in the message.
    let absent = empty.path().join("absent");
    let out = world_cmd("serve", &absent).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(absent.to_str().unwrap()) && err.contains("no such directory"),
        "{err}"
    );
    // The old world's layout is not a world any more.
    for sub in ["archive", "published", "registry", "upstream.git"] {
        std::fs::create_dir(empty.path().join(sub)).unwrap();
    }
    let out = world_cmd("serve", empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no gitlab/"),
        "{out:?}"
    );
    // A today that is not a day.
    let out = world_cmd("serve", empty.path())
        .args(["--today", "2026-13-01"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2026-13-01") && err.contains("YYYY-MM-DD"),
        "{err}"
    );
}

#[test]
fn cli_serve_prints_every_location_and_stops_on_sigint() {
    let (dir, m) = world();
    let mut child = world_cmd("serve", dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut exports = std::collections::BTreeMap::new();
    let mut or = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0 {
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("export REPROBOX_LOCATION_")
            .and_then(|kv| kv.split_once('='))
        {
            exports.insert(k.to_lowercase(), v.to_string());
        }
        if let Some(rest) = line.strip_prefix("# or: ") {
            or = Some(rest.trim().to_string());
            break;
        }
        line.clear();
    }
    assert_eq!(
        exports.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "alpine", "archive", "git", "gitlab", "hub_auth", "registry", "rootfs"
        ]
    );
    let or = or.expect("no `# or:` line printed");
    assert!(
        or.starts_with(&format!(
            "reprobox reproduce archlinux-repro {VERSION} --location "
        )),
        "{or}"
    );
    for (k, v) in &exports {
        assert!(or.contains(&format!("--location {k}={v}")), "{or}");
    }
    let registry = &exports["registry"];
    assert!(ureq::get(&sums_url(m, &exports["archive"])).call().is_ok());
    assert!(registry_answers(registry));
    assert!(
        ureq::get(&format!("{}/info/refs", exports["git"]))
            .call()
            .is_ok()
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert!(!registry_answers(registry), "registry outlived serve");
}

/// The real profile, its locations pointed at the served world, plans the world's release
/// and names things that exist there: the bootstrap pinned by sha256sums.txt, the build day's
/// repos, the source tag and its release file, the published rootfs and image.
#[test]
fn the_real_profile_plans_the_release_against_the_served_world() {
    let (_, m) = world();
    let s = serve();
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["plan", "archlinux-repro", VERSION, "--json"]);
    for l in locations(&s) {
        c.args(["--location", &l]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["snapshot"], m.release.snapshot.as_str());
    assert_eq!(plan["build_day"], m.release.build_day.replace('/', "-"));
    assert_eq!(plan["source_date_epoch"], m.release.source_date_epoch);

    let base = get(plan["base"]["url"].as_str().unwrap());
    let sums = String::from_utf8(get(plan["base"]["sha256sums"].as_str().unwrap())).unwrap();
    let name = plan["base"]["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        sums.contains(&format!("{}  {name}", sha256(&base))),
        "{name} not pinned by {sums}"
    );

    let server = plan["rollback"]["server"].as_str().unwrap();
    let path = server
        .strip_prefix(plan["mirror"].as_str().unwrap())
        .unwrap();
    let db = path.replace("$repo", "core").replace("$arch", "x86_64") + "/core.db";
    assert_eq!(
        &get(&format!("{}{db}", s.archive_url))[..2],
        &[0x1f, 0x8b],
        "{db}"
    );

    let clone = tempfile::tempdir().unwrap();
    let c = clone.path().join("c");
    sh(&format!(
        "git clone -q '{}' '{}' && git -C '{}' -c advice.detachedHead=false checkout -q {}",
        plan["source"]["git"].as_str().unwrap(),
        c.display(),
        c.display(),
        plan["source"]["tag"].as_str().unwrap()
    ));
    let release =
        std::fs::read_to_string(c.join(plan["source"]["release_file"].as_str().unwrap())).unwrap();
    let label = format!(
        "{}=\"{}\"",
        plan["source"]["revision_label"].as_str().unwrap(),
        m.release.source_revision
    );
    assert!(release.contains(&label), "{label}");

    let e = &plan["expected"];
    assert_eq!(
        sha256(&get(e["rootfs_url"].as_str().unwrap())),
        m.rootfs.sha256
    );
    let url = format!(
        "{}/v2/{}/manifests/{}",
        e["registry"].as_str().unwrap(),
        e["image"].as_str().unwrap(),
        e["image_tag"].as_str().unwrap()
    );
    let token = s.pull_authorization(e["image"].as_str().unwrap()).unwrap();
    let (status, _, digest, _) = registry_get(&url, Some(&token));
    assert_eq!(status, 200, "{url}");
    assert_eq!(digest.as_deref(), Some(m.image.manifest_digest.as_str()));
}
