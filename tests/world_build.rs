//! The test world end to end: `world::build` makes a complete, idempotent world; the
//! published rootfs is deterministic and the later day's environment drifts it; `serve`
//! serves every piece; the CLI fails cleanly when a tool is missing. Needs root (CI is root):
//! without it these tests fail with the reason, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reprobox::world::{self, WorldManifest};

static CLEANUP: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Removes the test world when the test process exits (the harness exits after all tests).
extern "C" fn remove_world() {
    if let Ok(mut g) = CLEANUP.lock()
        && let Some(d) = g.take()
    {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// One world per test process, built once (about two minutes with a warm Debian root); a
/// failed build is reported by every test that needs it, not retried.
fn shared() -> &'static (PathBuf, WorldManifest) {
    static W: OnceLock<Result<(PathBuf, WorldManifest), String>> = OnceLock::new();
    let w = W.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("reprobox-world-test-")
            .tempdir()
            .unwrap()
            .keep();
        *CLEANUP.lock().unwrap() = Some(dir.clone());
        // SAFETY: registers a plain extern "C" function; it runs once at process exit.
        unsafe { libc::atexit(remove_world) };
        world::build(&dir)
            .map(|m| (dir, m))
            .map_err(|e| e.to_string())
    });
    match w {
        Ok(w) => w,
        Err(e) => {
            panic!("world build failed (needs root, bwrap, debootstrap, docker-registry): {e}")
        }
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tar_list(p: &Path) -> String {
    sh(&format!("tar --zstd -tf '{}'", p.display()))
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

#[test]
fn world_is_complete_and_idempotent() {
    let (dir, m) = shared();
    assert_eq!(m.schema, "reprobox.world/v1");
    assert_eq!(m.version, "20260331.0.1");
    assert_eq!(m.days, ["2026/03/30", "2026/04/15"]);
    let archive = dir.join("archive");

    // Repo databases made by repo-add list exactly the packages of each day, with their sha256.
    for day in &m.days {
        for repo in ["core", "extra"] {
            let d = archive.join("repos").join(day).join(repo).join("os/x86_64");
            assert_eq!(
                std::fs::read_link(d.join(format!("{repo}.db"))).unwrap(),
                PathBuf::from(format!("{repo}.db.tar.gz"))
            );
            assert!(d.join(format!("{repo}.files")).exists());
            let descs = sh(&format!(
                "tar -xzOf '{}' --wildcards '*/desc'",
                d.join(format!("{repo}.db.tar.gz")).display()
            ));
            for (name, p) in &m.packages[day] {
                if p.repo != repo {
                    continue;
                }
                assert!(
                    descs.contains(&format!("%NAME%\n{name}\n")),
                    "{day}/{repo} lacks {name}"
                );
                assert!(
                    descs.contains(&format!("%VERSION%\n{}\n", p.version)),
                    "{day}/{repo}: {name} {}",
                    p.version
                );
                assert!(descs.contains(&p.sha256), "{day}/{repo}: sha256 of {name}");
                let f = d.join(&p.file);
                assert_eq!(world::sha256_file(&f).unwrap(), p.sha256);
                // Every version is also under packages/<l>/<name>/.
                assert!(
                    archive
                        .join("packages")
                        .join(&name[..1])
                        .join(name)
                        .join(&p.file)
                        .exists()
                );
            }
        }
    }
    // The drifting env package: a different version on each day; three versions in packages/.
    assert_eq!(m.env_package.name, "devtools");
    assert_eq!(m.env_package.per_day["2026/03/30"], "1.0-1");
    assert_eq!(m.env_package.per_day["2026/04/15"], "1.1-1");
    assert_eq!(
        std::fs::read_dir(archive.join("packages/d/devtools"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        std::fs::read_link(archive.join("repos/last")).unwrap(),
        PathBuf::from("2026/04/15")
    );

    // Bootstrap tarballs: pinned by sha256sums.txt, unpack to root.x86_64/ with pacman's
    // record of the environment package of that month.
    for b in &m.bootstraps {
        let f = archive.join(&b.path);
        assert_eq!(world::sha256_file(&f).unwrap(), b.sha256);
        let sums = std::fs::read_to_string(f.parent().unwrap().join("sha256sums.txt")).unwrap();
        assert_eq!(
            sums,
            format!(
                "{}  {}\n",
                b.sha256,
                f.file_name().unwrap().to_string_lossy()
            )
        );
        let list = tar_list(&f);
        let v = &m.env_package.per_bootstrap[&b.iso];
        assert!(
            list.contains(&format!(
                "root.x86_64/var/lib/pacman/local/devtools-{v}/desc"
            )),
            "{}: devtools {v}",
            b.iso
        );
        assert!(list.contains("root.x86_64/usr/bin/pacman\n"));
        assert!(list.contains("root.x86_64/usr/bin/podman\n"));
        assert!(list.contains("root.x86_64/usr/share/devtools/pacman.conf.d/extra.conf\n"));
    }

    // Given the same cached Debian root, a bootstrap tarball is rebuilt bit for bit.
    let again = tempfile::tempdir().unwrap();
    let devtools = archive.join("packages/d/devtools/devtools-1.0-1-any.pkg.tar.zst");
    let debian = world::env_rootfs::debian_root().unwrap();
    let t = world::env_rootfs::bootstrap_tarball(
        &again.path().join("archive"),
        "2026.03.01",
        &debian,
        &[devtools],
        world::ISOS[0].1,
        again.path(),
    )
    .unwrap();
    assert_eq!(
        world::sha256_file(&t).unwrap(),
        m.bootstraps[0].sha256,
        "bootstrap not reproducible"
    );
    drop(again);

    // Published artifacts agree with each other and with world.json.
    let pubdir = dir.join("published").join(&m.version);
    let rootfs = dir.join("published").join(&m.rootfs.path);
    assert_eq!(world::sha256_file(&rootfs).unwrap(), m.rootfs.sha256);
    assert_eq!(
        std::fs::read_to_string(pubdir.join(format!("repro-{}.tar.zst.SHA256", m.version)))
            .unwrap(),
        format!("{}  repro-{}.tar.zst\n", m.rootfs.sha256, m.version)
    );
    assert!(
        m.rootfs
            .env_packages
            .contains(&"devtools 1.0-1".to_string()),
        "{:?}",
        m.rootfs.env_packages
    );
    let dockerfile = std::fs::read_to_string(pubdir.join("Dockerfile.repro")).unwrap();
    for l in [
        format!("LABEL org.opencontainers.image.version=\"{}\"", m.version),
        format!(
            "LABEL org.opencontainers.image.revision=\"{}\"",
            m.git.source_revision
        ),
        "LABEL org.opencontainers.image.created=\"2026-03-31T00:00:00Z\"".to_string(),
        format!("FROM {} AS verify", m.verify_image_ref),
        format!("{}  /repro.tar.zst", m.rootfs.sha256),
        "rm -f /var/cache/ldconfig/aux-cache".to_string(),
    ] {
        assert!(dockerfile.contains(&l), "Dockerfile.repro lacks {l}");
    }
    // The rootfs is upstream-shaped: sorted, clamped to SDE, the snapshot line first in the
    // mirrorlist, pacman's install dates pinned by libfaketime.
    let verbose = sh(&format!(
        "tar --zstd --full-time -tvf '{}'",
        rootfs.display()
    ));
    assert!(
        verbose.lines().all(|l| l.contains("2026-03-31 00:00:00")),
        "an mtime is not SOURCE_DATE_EPOCH"
    );
    let mirrorlist = sh(&format!(
        "tar --zstd -xOf '{}' ./etc/pacman.d/mirrorlist",
        rootfs.display()
    ));
    assert!(
        mirrorlist.starts_with("Server = http://127.0.0.1:7878/repos/2026/03/30/$repo/os/$arch\n"),
        "{mirrorlist}"
    );
    let desc = sh(&format!(
        "tar --zstd -xOf '{}' ./var/lib/pacman/local/busybox-1.35.0-1/desc",
        rootfs.display()
    ));
    assert!(desc.contains("%INSTALLDATE%\n1774915200\n"), "{desc}");
    assert!(
        sh(&format!(
            "tar --zstd -xOf '{}' ./etc/shadow",
            rootfs.display()
        ))
        .starts_with("root:!*:")
    );

    // Git: main holds the build scripts; the tag's commit holds only Dockerfile.repro, equal
    // to the published one.
    let git = |args: &str| {
        sh(&format!(
            "git --git-dir '{}' {args}",
            dir.join("upstream.git").display()
        ))
    };
    assert_eq!(
        git("rev-parse refs/heads/main").trim(),
        m.git.source_revision
    );
    assert_eq!(
        git(&format!("rev-parse {}^{{commit}}", m.git.tag)).trim(),
        m.git.tag_commit
    );
    assert_eq!(
        git(&format!("ls-tree --name-only {}", m.git.tag)),
        "Dockerfile.repro\n"
    );
    assert_eq!(
        git(&format!("show {}:Dockerfile.repro", m.git.tag)),
        dockerfile
    );
    let main_files = git("ls-tree -r --name-only main");
    for f in [
        "Makefile",
        "scripts/make-rootfs.sh",
        "scripts/make-dockerfile.sh",
        "Dockerfile.template",
        "rootfs/etc/pacman.d/mirrorlist",
    ] {
        assert!(main_files.lines().any(|l| l == f), "main lacks {f}");
    }

    // Registry: the published image's config carries the labels; two layers (the COPY and the RUN).
    assert_eq!(m.image.repository, "archlinux/archlinux");
    assert_eq!(m.image.tag, format!("repro-{}", m.version));
    assert_eq!(m.image.diff_ids.len(), 2, "{:?}", m.image.diff_ids);
    assert!(
        m.verify_image_ref
            .ends_with(&format!("@{}", m.verify_image.manifest_digest))
    );

    // Idempotent: a second build reuses everything and describes the same world.
    let before = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    let again = world::build(dir).unwrap();
    assert_eq!(&again, m);
    assert_eq!(
        std::fs::metadata(&rootfs).unwrap().modified().unwrap(),
        before,
        "the rootfs was rebuilt"
    );
}

#[test]
fn published_rootfs_is_deterministic_and_the_later_environment_drifts() {
    let (dir, m) = shared();
    let work = tempfile::tempdir().unwrap();
    let published = dir.join("published").join(&m.rootfs.path);

    // The bootstrap of the 1st of April carries devtools 1.0.1-1; rolled back to the snapshot
    // day it is downgraded and rebuilds the published rootfs bit for bit.
    let a = world::publish::build_rootfs(
        dir,
        "2026.04.01",
        "2026/03/30",
        &m.git.source_revision,
        &work.path().join("a"),
    )
    .unwrap();
    assert!(
        a.env_packages.contains(&"devtools 1.0-1".to_string()),
        "{:?}",
        a.env_packages
    );
    assert_eq!(
        a.sha256, m.rootfs.sha256,
        "a rebuild with the environment of the snapshot day differs"
    );
    // …and the image built from it has the published config digest (podman --timestamp).
    let cfg = world::registry::write_config(
        &work.path().join("reg.yml"),
        &dir.join("registry"),
        "127.0.0.1:7879",
    )
    .unwrap();
    let id = world::publish::build_image(&a, &cfg, &m.verify_image_ref, false).unwrap();
    assert_eq!(
        id, m.image.config_digest,
        "the rebuilt image differs from the published one"
    );

    // The environment of the later day drifts the rootfs: its extra.conf stops man pages.
    let b = world::publish::build_rootfs(
        dir,
        "2026.03.01",
        "2026/04/15",
        &m.git.source_revision,
        &work.path().join("b"),
    )
    .unwrap();
    assert!(
        b.env_packages.contains(&"devtools 1.1-1".to_string()),
        "{:?}",
        b.env_packages
    );
    assert_ne!(
        b.sha256, m.rootfs.sha256,
        "the later environment must give a different rootfs"
    );
    let good = tar_list(&published);
    let drifted = tar_list(&b.output.join("repro.tar.zst"));
    assert!(good.contains("./usr/share/man/man1/busybox.1\n"));
    assert!(!drifted.contains("./usr/share/man/man1/busybox.1\n"));
    let only_good: Vec<&str> = good
        .lines()
        .filter(|l| !drifted.lines().any(|d| d == *l))
        .collect();
    assert_eq!(
        only_good,
        [
            "./usr/share/man/",
            "./usr/share/man/man1/",
            "./usr/share/man/man1/busybox.1"
        ],
        "unexpected listing difference"
    );
    assert!(
        drifted.lines().all(|d| good.lines().any(|l| l == d)),
        "the drifted rootfs has extra files"
    );
}

#[test]
fn serve_serves_archive_rootfs_git_and_registry_and_stops_on_drop() {
    let (dir, m) = shared();
    let s = world::serve(
        dir,
        world::Ports {
            archive: 0,
            registry: 0,
        },
    )
    .unwrap();
    let get = |url: &str| -> Vec<u8> {
        let mut r = ureq::get(url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    };
    let db = get(&format!(
        "{}/repos/2026/03/30/core/os/x86_64/core.db",
        s.archive_url
    ));
    assert_eq!(&db[..2], &[0x1f, 0x8b], "core.db is not gzip");
    let sums = String::from_utf8(get(&format!(
        "{}/iso/2026.03.01/sha256sums.txt",
        s.archive_url
    )))
    .unwrap();
    assert!(sums.starts_with(&m.bootstraps[0].sha256));
    let rootfs = get(&format!(
        "{}/{}/repro-{}.tar.zst",
        s.rootfs_url, m.version, m.version
    ));
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&rootfs)),
        m.rootfs.sha256
    );
    // Hidden files and parent paths are refused.
    for bad in [
        "/repos/2026/03/30/core/os/x86_64/.complete",
        "/../world.json",
        "/%2e%2e/world.json",
    ] {
        assert!(
            ureq::get(&format!("{}{bad}", s.archive_url))
                .call()
                .is_err(),
            "{bad} was served"
        );
    }

    // The registry serves the published image by tag with the digest world.json names.
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    for (repo, reference, digest) in [
        (
            &m.image.repository,
            m.image.tag.clone(),
            &m.image.manifest_digest,
        ),
        (
            &m.verify_image.repository,
            m.verify_image.manifest_digest.clone(),
            &m.verify_image.manifest_digest,
        ),
    ] {
        let url = format!("{}/v2/{repo}/manifests/{reference}", s.registry_url);
        let mut r = ureq::get(&url)
            .header("Accept", accept)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(
            r.headers()
                .get("Docker-Content-Digest")
                .unwrap()
                .to_str()
                .unwrap(),
            digest
        );
        let body = r.body_mut().read_to_vec().unwrap();
        assert_eq!(
            format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
            ),
            *digest
        );
    }

    // git clones over (dumb) HTTP and finds the release tag.
    let clone = tempfile::tempdir().unwrap();
    sh(&format!(
        "git clone -q '{}' '{}/c' && git -C '{}/c' checkout -q {}",
        s.git_url,
        clone.path().display(),
        clone.path().display(),
        m.git.tag
    ));
    assert!(
        std::fs::read_to_string(clone.path().join("c/Dockerfile.repro"))
            .unwrap()
            .contains(&m.git.source_revision)
    );

    let archive_url = s.archive_url.clone();
    let registry_url = s.registry_url.clone();
    drop(s);
    assert!(
        ureq::get(&format!("{archive_url}/iso/2026.03.01/sha256sums.txt"))
            .call()
            .is_err(),
        "archive still served"
    );
    assert!(
        ureq::get(&format!("{registry_url}/v2/")).call().is_err(),
        "registry still running"
    );
}

#[test]
fn cli_build_with_a_missing_tool_exits_3_and_writes_nothing() {
    let empty = tempfile::tempdir().unwrap();
    let target = empty.path().join("world");
    let out = world_cmd("build", &target)
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
    let out = world_cmd("build", &file).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("not a file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn cli_serve_of_a_missing_world_is_bad_input() {
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
}

#[test]
fn cli_serve_prints_the_locations_and_stops_on_sigint() {
    let (dir, _) = shared();
    let mut child = world_cmd("serve", dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut archive = None;
    let mut registry = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0 {
        if let Some(v) = line
            .trim()
            .strip_prefix("export REPROBOX_LOCATION_ARCHIVE=")
        {
            archive = Some(v.to_string());
        }
        if let Some(v) = line
            .trim()
            .strip_prefix("export REPROBOX_LOCATION_REGISTRY=")
        {
            registry = Some(v.to_string());
        }
        if line.starts_with("# or:") {
            break;
        }
        line.clear();
    }
    let archive = archive.expect("no archive export printed");
    let registry = registry.expect("no registry export printed");
    assert!(
        ureq::get(&format!("{archive}/iso/2026.03.01/sha256sums.txt"))
            .call()
            .is_ok()
    );
    assert!(ureq::get(&format!("{registry}/v2/")).call().is_ok());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert!(
        ureq::get(&format!("{registry}/v2/")).call().is_err(),
        "registry outlived serve"
    );
}

#[test]
fn the_test_profile_plans_the_sample_release() {
    let out = Command::new(env!("CARGO_BIN_EXE_reprobox"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["plan", "test-world", "20260331.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "http://127.0.0.1:7878/iso/2026.03.01/archlinux-bootstrap-2026.03.01-x86_64.tar.zst"
        ),
        "{text}"
    );
    assert!(
        text.contains("Server = http://127.0.0.1:7878/repos/2026/03/30/$repo/os/$arch"),
        "{text}"
    );
}

/// Both profiles, their locations pointed at the served world, name things that exist there:
/// the bootstrap pinned by sha256sums.txt, the snapshot day's repos, the source tag and its
/// release file, the published rootfs and the published image. (The real profile's rollback
/// packages — git, make, podman… — are Debian's in the world, not ALPM packages.)
#[test]
fn both_profiles_resolve_against_the_served_world() {
    let (dir, m) = shared();
    let s = world::serve(
        dir,
        world::Ports {
            archive: 0,
            registry: 0,
        },
    )
    .unwrap();
    let get = |url: &str| -> Vec<u8> {
        let mut r = ureq::get(url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    };
    for profile in ["test-world", "archlinux-repro"] {
        let out = Command::new(env!("CARGO_BIN_EXE_reprobox"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["plan", profile, &m.version, "--json"])
            .args(["-L", &format!("archive={}", s.archive_url)])
            .args(["-L", &format!("rootfs={}", s.rootfs_url)])
            .args(["-L", &format!("git={}", s.git_url)])
            .args(["-L", &format!("registry={}", s.registry_url)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{profile}: {out:?}");
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["snapshot"], m.snapshot.as_str());
        assert_eq!(plan["source_date_epoch"], m.source_date_epoch);

        let base = get(plan["base"]["url"].as_str().unwrap());
        let sums = String::from_utf8(get(plan["base"]["sha256sums"].as_str().unwrap())).unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&base));
        let name = plan["base"]["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        assert!(
            sums.contains(&format!("{sha}  {name}")),
            "{profile}: {name} not pinned by {sums}"
        );

        let server = plan["rollback"]["server"].as_str().unwrap();
        let path = server
            .strip_prefix(plan["mirror"].as_str().unwrap())
            .unwrap();
        let db = path.replace("$repo", "core").replace("$arch", "x86_64") + "/core.db";
        assert_eq!(
            &get(&format!("{}{db}", s.archive_url))[..2],
            &[0x1f, 0x8b],
            "{profile}: {db}"
        );
        for p in plan["rollback"]["packages_nodeps"].as_array().unwrap() {
            assert!(
                m.packages[&m.snapshot].contains_key(p.as_str().unwrap()),
                "{profile}: {p} not in the world"
            );
        }

        let clone = tempfile::tempdir().unwrap();
        let c = clone.path().join("c");
        sh(&format!(
            "git clone -q '{}' '{}' && git -C '{}' checkout -q {}",
            plan["source"]["git"].as_str().unwrap(),
            c.display(),
            c.display(),
            plan["source"]["tag"].as_str().unwrap()
        ));
        let release =
            std::fs::read_to_string(c.join(plan["source"]["release_file"].as_str().unwrap()))
                .unwrap();
        let label = format!(
            "{}=\"{}\"",
            plan["source"]["revision_label"].as_str().unwrap(),
            m.git.source_revision
        );
        assert!(release.contains(&label), "{profile}: {label}");

        let rootfs = get(&format!(
            "{}/{v}/repro-{v}.tar.zst",
            s.rootfs_url,
            v = m.version
        ));
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&rootfs)),
            m.rootfs.sha256
        );

        let e = &plan["expected"];
        let url = format!(
            "{}/v2/{}/manifests/{}",
            e["registry"].as_str().unwrap(),
            e["image"].as_str().unwrap(),
            e["image_tag"].as_str().unwrap()
        );
        let r = ureq::get(&url)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
            .call()
            .unwrap_or_else(|e| panic!("{profile}: GET {url}: {e}"));
        assert_eq!(
            r.headers()
                .get("Docker-Content-Digest")
                .unwrap()
                .to_str()
                .unwrap(),
            m.image.manifest_digest
        );
    }
}
