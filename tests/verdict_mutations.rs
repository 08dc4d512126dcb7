//! Verdict integrity: the mutation suite (issue 16, part 4; docs/reproduce.md, "Verdict
//! integrity: the mutation suite"). The world's release is reproduced once with the real
//! profile (`archlinux-repro`) — the positive control, which must be `reproduced` — and then
//! one thing at a time is flipped, each in a copy of what it lives in, and the real
//! `reprobox reproduce` must say `differs` or `incomplete`, never `reproduced`, with the check
//! (or the step, or the egress rule) that caught it named in report.json:
//!
//! | flipped | where it lives | caught by |
//! |---|---|---|
//! | the published rootfs sha256 | `Dockerfile.repro` at the release tag (world gitlab git) | `rootfs-sha256` |
//! | one byte inside the published rootfs | the tarball in the gitlab package registry | `published-rootfs-sha256` |
//! | one label of the published config | registry storage (config, manifest, tag) | `image-config-digest` |
//! | one published diffID | registry storage (config, manifest, tag) | `image-diff-ids` |
//! | one package version in the day's database | `archive/repos/<snapshot>/core/os/x86_64/core.db` | step `make` (pacman refuses the package) |
//! | SOURCE_DATE_EPOCH | the profile's `{source_date_epoch}` | `rootfs-sha256` |
//! | the rootfs the build makes | a profile whose make step removes it | `rootfs-sha256` unknown |
//! | the source revision | `Dockerfile.repro`'s revision label at the tag | `image-config-digest` |
//! | one file of the upstream checkout | a blob of the store's git cache | `source-checkout` |
//! | the verify stage's pinned base image | alpine:3.23's layer in registry storage | the egress's `registry` rule (tampered) |
//!
//! The shared world is only read: the control and every mutation run on a copy of it (hard
//! links for what is not changed) served by `reprobox::world::serve`. One store is filled by the control and copied
//! for each mutation (hard links; a copy without the blob of the flipped input where the store
//! would otherwise answer from its own pin: the store is content-addressed, and a pin already
//! made is, by design, what a later run gets). Needs root, like every reproduction test.

mod reproduce_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reprobox::world;
use reproduce_common::*;

/// `reprobox reproduce PROFILE VERSION --json --out OUT --store STORE --location …`.
fn reproduce_with(
    profile: &str,
    store: &Path,
    out: &Path,
    locs: &[String],
) -> (Output, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.args(["reproduce", profile, version(), "--json", "--store"])
        .arg(store)
        .arg("--out")
        .arg(out);
    for l in locs {
        c.args(["--location", l]);
    }
    let o = c.output().expect("run reprobox");
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{profile}: no report on stdout ({e}), exit {:?}: {}",
            o.status.code(),
            stderr(&o)
        )
    });
    (o, v)
}

/// The report's status of check `name`.
fn status<'a>(r: &'a serde_json::Value, name: &str) -> &'a str {
    check(r, name)["status"].as_str().unwrap()
}

/// The flip was caught: never reproduced, the verdict and exit code agree, and `caught`
/// (a check that failed, for `differs`) is named in the report.
fn caught(
    what: &str,
    o: &Output,
    r: &serde_json::Value,
    verdict: &str,
    failed_check: Option<&str>,
) {
    assert_ne!(
        r["verdict"], "reproduced",
        "{what}: called reproduced: {r:#}"
    );
    assert_eq!(r["verdict"], verdict, "{what}: {r:#}");
    let code = if verdict == "differs" { 1 } else { 3 };
    assert_eq!(o.status.code(), Some(code), "{what}: {}", stderr(o));
    if let Some(name) = failed_check {
        let c = check(r, name);
        assert_eq!(c["status"], "fail", "{what}: {name}: {c:#}");
        assert_eq!(c["decisive"], true, "{what}: {name}: {c:#}");
    }
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A copy of the shared world in `dst` that may be changed: the archive, Alpine's files and
/// the PKI hard-linked (a changed file there is replaced, never written through), gitlab and
/// the registry copied.
fn copy_world(dst: &Path) -> PathBuf {
    let src = &world().0;
    std::fs::create_dir_all(dst).unwrap();
    for (d, flag) in [
        ("archive", "-al"),
        ("alpine", "-al"),
        ("pki", "-al"),
        ("gitlab", "-a"),
        ("registry", "-a"),
        ("world.json", "-a"),
    ] {
        run_ok(
            Command::new("cp")
                .arg(flag)
                .arg(src.join(d))
                .arg(dst.join(d)),
        );
    }
    std::fs::create_dir_all(dst.join("work")).unwrap();
    dst.to_path_buf()
}

/// Replace `path` (possibly a hard link into the shared world) by a new file holding `bytes`.
fn replace_file(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A copy of `src` at `dst` for one run: the blobs hard-linked (the store never writes into
/// a blob), the index and git caches copied, minus the blobs named; the prepared
/// environments are `src`'s own, through a symbolic link (only read: every flip has the
/// control's base, day and environment steps, so none prepares another; a hard-linked tree
/// of them cost a minute to remove on a loaded machine).
fn copy_store(src: &Path, dst: &Path, without: &[&str]) {
    std::fs::create_dir_all(dst).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-al")
            .arg(src.join("blobs"))
            .arg(dst.join("blobs")),
    );
    std::os::unix::fs::symlink(src.join("envs"), dst.join("envs")).unwrap();
    for d in ["git", "index.jsonl"] {
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(src.join(d))
                .arg(dst.join(d)),
        );
    }
    let store = reprobox::inputs::store::Store::open(dst).unwrap();
    for sha in without {
        let p = store.blob_path(sha);
        assert!(p.is_file(), "the store holds no blob {sha}");
        std::fs::remove_file(&p).unwrap();
    }
}

/// The sha256 the inputs lock gives `url` (the first line naming it).
fn lock_sha(lock: &str, url: &str) -> String {
    lock.lines()
        .find(|l| l.split(' ').any(|w| w == url))
        .and_then(|l| l.split(' ').find(|w| w.len() == 64))
        .unwrap_or_else(|| panic!("no {url} in the inputs lock:\n{lock}"))
        .to_string()
}

/// Re-release in the world copy `w`: the release file at the tag edited by `edit`,
/// committed and the tag moved, as a publisher re-tagging would.
fn retag(w: &Path, edit: impl Fn(&str) -> String) {
    let (_, m) = world();
    let bare = world::gitlab::bare_repo(&w.join("gitlab"));
    let wt = w.with_extension("retag-wt");
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(&wt),
        )
    };
    run_ok(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(&bare)
            .arg(&wt),
    );
    git(&["checkout", "-q", &m.tag]);
    let df = wt.join("Dockerfile.repro");
    let text = std::fs::read_to_string(&df).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&df, edited).unwrap();
    git(&["commit", "-q", "-am", "altered"]);
    git(&["tag", "-f", &m.tag]);
    git(&[
        "push",
        "-q",
        "-f",
        "origin",
        &format!("refs/tags/{}", m.tag),
    ]);
    std::fs::remove_dir_all(&wt).unwrap();
}

/// The snapshot day's `core.db` in `w` with package `name` given another version (its entry's
/// directory and `%VERSION%`; file name and sha256 unchanged). Returns the old and new version.
fn flip_db_version(w: &Path, name: &str) -> (String, String) {
    let (_, m) = world();
    let db = w.join(format!(
        "archive/repos/{}/core/os/x86_64/core.db.tar.gz",
        m.release.snapshot
    ));
    let bytes = std::fs::read(&db).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut out = tar::Builder::new(Vec::new());
    let mut versions = None;
    let prefix = format!("{name}-");
    let entries: Vec<(tar::Header, PathBuf, Vec<u8>)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (e.header().clone(), e.path().unwrap().into_owned(), data)
        })
        .collect();
    // The entry's directory is NAME-VERSION (VERSION = pkgver-pkgrel, no dash in NAME here).
    let dir = entries
        .iter()
        .map(|(_, p, _)| {
            p.components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned()
        })
        .find(|d| {
            d.strip_prefix(&prefix)
                .is_some_and(|v| v.matches('-').count() == 1)
        })
        .unwrap_or_else(|| panic!("no {name} in {}", db.display()));
    let old = dir[prefix.len()..].to_string();
    let (pkgver, pkgrel) = old.split_once('-').unwrap();
    let new = format!("{pkgver}-{}", pkgrel.parse::<u32>().unwrap() + 1);
    for (mut h, p, mut data) in entries {
        let p = p
            .to_string_lossy()
            .replacen(&dir, &format!("{name}-{new}"), 1);
        if p.ends_with("/desc") && p.starts_with(&format!("{name}-{new}/")) {
            let t = String::from_utf8(data).unwrap();
            let from = format!("%VERSION%\n{old}\n");
            assert!(t.contains(&from), "{t}");
            data = t
                .replace(&from, &format!("%VERSION%\n{new}\n"))
                .into_bytes();
            versions = Some((old.clone(), new.clone()));
        }
        h.set_size(data.len() as u64);
        out.append_data(&mut h, &p, &data[..]).unwrap();
    }
    let tar = out.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    replace_file(&db, &gz.finish().unwrap());
    versions.expect("the entry has a desc")
}

/// One byte of one file's content inside the published rootfs tarball in `w`, re-compressed:
/// a valid tarball that differs from the release's in that file. Returns the file's path.
fn flip_published_rootfs_byte(w: &Path) -> String {
    let (_, m) = world();
    let dir = world::gitlab::package_dir(&w.join("gitlab"), &m.release.version);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .unwrap_or_else(|| panic!("no tarball in {}", dir.display()));
    let mut tar = zstd::decode_all(&std::fs::read(&file).unwrap()[..]).unwrap();
    let (path, at) = {
        let mut ar = tar::Archive::new(&tar[..]);
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.header().entry_type().is_file() && e.header().size().unwrap() > 100)
            .map(|e| {
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.raw_file_position() as usize + 50,
                )
            })
            .unwrap()
    };
    tar[at] ^= 0x01;
    replace_file(&file, &zstd::encode_all(&tar[..], 3).unwrap());
    path
}

/// The store's git cache (one remote in the control's store) rewritten with every object
/// loose and the blob of `path` at the source revision holding other bytes under its id, as
/// an altered store would: `git rev-parse` and `git status` read objects without re-hashing.
fn alter_git_cache(store: &Path, path: &str) {
    let caches: Vec<PathBuf> = std::fs::read_dir(store.join("git"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let cache = &caches[0];
    let rev = &world().1.release.source_revision;
    let blob = run_ok(
        Command::new("git")
            .arg("--git-dir")
            .arg(cache)
            .args(["rev-parse", &format!("{rev}:{path}")]),
    )
    .trim()
    .to_string();
    // Every object but that blob in one pack, the blob loose (git reads a packed object
    // first, so the altered one must be the only copy).
    let forged = cache.with_extension("forged");
    run_ok(
        Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&forged),
    );
    let all = run_ok(Command::new("git").arg("--git-dir").arg(cache).args([
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname)",
    ]));
    let others: String = all
        .lines()
        .filter(|l| *l != blob)
        .map(|l| format!("{l}\n"))
        .collect();
    let mut pack = Command::new("git")
        .arg("--git-dir")
        .arg(cache)
        .args(["pack-objects", "-q"])
        .arg(forged.join("objects/pack/pack"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(pack.stdin.as_mut().unwrap(), others.as_bytes()).unwrap();
    drop(pack.stdin.take());
    assert!(pack.wait().unwrap().success(), "git pack-objects");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(cache.join("refs/."))
            .arg(forged.join("refs")),
    );
    if cache.join("packed-refs").is_file() {
        std::fs::copy(cache.join("packed-refs"), forged.join("packed-refs")).unwrap();
    }
    let body = run_ok(
        Command::new("git")
            .arg("--git-dir")
            .arg(cache)
            .args(["cat-file", "blob", &blob]),
    );
    let mut body = body.into_bytes();
    let loose = forged.join("objects").join(&blob[..2]).join(&blob[2..]);
    let mid = body.len() / 2;
    body[mid] ^= 0x01;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, format!("blob {}\0", body.len()).as_bytes()).unwrap();
    std::io::Write::write_all(&mut z, &body).unwrap();
    std::fs::create_dir_all(loose.parent().unwrap()).unwrap();
    std::fs::write(&loose, z.finish().unwrap()).unwrap();
    std::fs::remove_dir_all(cache).unwrap();
    std::fs::rename(&forged, cache).unwrap();
    // The alteration is there: git itself now shows the altered bytes at the revision.
    let shown = Command::new("git")
        .arg("--git-dir")
        .arg(cache)
        .args(["show", &format!("{rev}:{path}")])
        .output()
        .unwrap();
    assert_eq!(
        shown.stdout, body,
        "the cache does not serve the altered blob"
    );
}

/// One byte of alpine:3.23's (only) layer in the registry storage of `w`; returns its digest.
fn flip_alpine_layer_byte(w: &Path) -> String {
    let storage = w.join("registry");
    let img = world::registry::read_image(&storage, "library/alpine", "3.23").unwrap();
    let blob = |d: &str| {
        let h = d.trim_start_matches("sha256:");
        storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&h[..2])
            .join(h)
            .join("data")
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&img.manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let p = blob(&layer);
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    replace_file(&p, &b);
    layer
}

/// What every flip shares: the control's store and inputs lock, the shared world's
/// locations, the temporary directory.
struct Cx {
    tmp: PathBuf,
    store: PathBuf,
    locs: Vec<String>,
    control_lock: String,
}

impl Cx {
    /// A fresh copy of the world for flip `name`.
    fn world(&self, name: &str) -> PathBuf {
        copy_world(&self.tmp.join(format!("world-{name}")))
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.join(format!("out-{name}"))
    }

    /// A copy of the control's store for flip `name`, without the blobs named.
    fn store(&self, name: &str, without: &[&str]) -> PathBuf {
        let s = self.tmp.join(format!("store-{name}"));
        copy_store(&self.store, &s, without);
        s
    }
}

/// `w` served on free loopback ports, and its locations.
fn served(w: &Path) -> (world::WorldServers, Vec<String>) {
    let s = world::serve(
        w,
        world::Ports {
            archive: 0,
            registry: 0,
        },
    )
    .unwrap();
    let l = locations(&s);
    (s, l)
}

/// The published rootfs sha256: the release file's hash altered at the tag.
fn flip_release_rootfs_sha256(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("sha");
    let altered = "0".repeat(64);
    retag(&w, |t| t.replace(&m.rootfs.sha256, &altered));
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with("archlinux-repro", &cx.store("sha", &[]), &cx.out("sha"), &l);
    caught(
        "published rootfs sha256",
        &o,
        &r,
        "differs",
        Some("rootfs-sha256"),
    );
    assert_eq!(check(&r, "rootfs-sha256")["expected"], altered.as_str());
    assert_eq!(
        check(&r, "rootfs-sha256")["actual"],
        m.rootfs.sha256.as_str()
    );
    // The tarball the package registry serves is not the one the altered hash names either.
    assert_eq!(status(&r, "published-rootfs-sha256"), "fail", "{r:#}");
}

/// One byte inside the published rootfs (the tarball users download), the release's hash
/// left alone. A store that holds the release's tarball already answers from it
/// (content-addressed); this run's store has not seen it.
fn flip_published_rootfs(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("tarball");
    let file = flip_published_rootfs_byte(&w);
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("tarball", &[&m.rootfs.sha256]),
        &cx.out("tarball"),
        &l,
    );
    caught(
        &format!("one byte of {file} in the published rootfs"),
        &o,
        &r,
        "differs",
        Some("published-rootfs-sha256"),
    );
    assert_eq!(status(&r, "rootfs-sha256"), "pass", "{r:#}");
    let c = check(&r, "published-rootfs-sha256");
    assert_eq!(c["actual"], m.rootfs.sha256.as_str(), "{c:#}");
    assert_ne!(c["expected"], m.rootfs.sha256.as_str(), "{c:#}");
}

/// One label of the published config, re-published (config, manifest, tag).
fn flip_published_label(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("label");
    let from = "\"org.opencontainers.image.title\":\"Arch Linux repro Image\"";
    let img = world::registry::republish_config(
        &w.join("registry"),
        &m.image.repository,
        &m.image.tag,
        |c| {
            let t = String::from_utf8(c.to_vec()).unwrap();
            assert!(t.contains(from), "{t}");
            t.replace(
                from,
                "\"org.opencontainers.image.title\":\"Arch Linux repro Imagf\"",
            )
            .into_bytes()
        },
    )
    .unwrap();
    assert_ne!(img.config_digest, m.image.config_digest);
    assert_eq!(img.diff_ids, m.image.diff_ids);
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("label", &[]),
        &cx.out("label"),
        &l,
    );
    caught(
        "one label of the published config",
        &o,
        &r,
        "differs",
        Some("image-config-digest"),
    );
    assert_eq!(
        check(&r, "image-config-digest")["expected"],
        img.config_digest.as_str()
    );
    assert_eq!(status(&r, "image-diff-ids"), "pass", "{r:#}");
    assert_eq!(status(&r, "rootfs-sha256"), "pass", "{r:#}");
}

/// One published diffID (the config re-published with its last diffID changed).
fn flip_published_diff_id(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("diffid");
    let last = &m.image.diff_ids[m.image.diff_ids.len() - 1];
    let flipped = format!(
        "{}{}",
        &last[..last.len() - 1],
        if last.ends_with('0') { '1' } else { '0' }
    );
    let img = world::registry::republish_config(
        &w.join("registry"),
        &m.image.repository,
        &m.image.tag,
        |c| {
            String::from_utf8(c.to_vec())
                .unwrap()
                .replace(last, &flipped)
                .into_bytes()
        },
    )
    .unwrap();
    assert!(img.diff_ids.contains(&flipped), "{img:?}");
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("diffid", &[]),
        &cx.out("diffid"),
        &l,
    );
    caught(
        "one published diffID",
        &o,
        &r,
        "differs",
        Some("image-diff-ids"),
    );
    assert!(
        check(&r, "image-diff-ids")["expected"]
            .as_str()
            .unwrap()
            .contains(&flipped),
        "{r:#}"
    );
}

/// One package version in the snapshot day's database (make-rootfs installs from it); the
/// store has not pinned that database (once pinned, a day's database is the pin).
fn flip_database_version(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("db");
    let (old, new) = flip_db_version(&w, "bash");
    let db_url = format!(
        "https://archive.archlinux.org/repos/{}/core/os/x86_64/core.db",
        m.release.snapshot
    );
    let pinned_db = lock_sha(&cx.control_lock, &db_url);
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("db", &[&pinned_db]),
        &cx.out("db"),
        &l,
    );
    caught(
        &format!("bash {old} -> {new} in the day's core.db"),
        &o,
        &r,
        "incomplete",
        None,
    );
    let make = step(&r, "make");
    assert_ne!(make["exit_code"], 0, "{make:#}");
    assert!(
        r["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "step make failed: the build did not complete"),
        "{r:#}"
    );
    let lock = std::fs::read_to_string(cx.out("db").join("inputs.lock")).unwrap();
    assert_ne!(
        lock_sha(&lock, &db_url),
        pinned_db,
        "the altered database was not served:\n{lock}"
    );
    assert_ne!(status(&r, "rootfs-sha256"), "pass", "{r:#}");
}

/// SOURCE_DATE_EPOCH: the profile's, one second later, everywhere it is passed.
fn flip_source_date_epoch(cx: &Cx) {
    let (_, m) = world();
    let sde = m.release.source_date_epoch;
    let dir = cx.tmp.join("profile-sde");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/archlinux-repro.toml"),
    )
    .unwrap();
    assert!(text.contains("{source_date_epoch}"));
    let profile = dir.join("archlinux-repro.toml");
    std::fs::write(
        &profile,
        text.replace("{source_date_epoch}", &(sde + 1).to_string()),
    )
    .unwrap();
    let (o, r) = reproduce_with(
        profile.to_str().unwrap(),
        &cx.store("sde", &[]),
        &cx.out("sde"),
        &cx.locs,
    );
    caught(
        "SOURCE_DATE_EPOCH + 1",
        &o,
        &r,
        "differs",
        Some("rootfs-sha256"),
    );
    assert_eq!(
        check(&r, "rootfs-sha256")["expected"],
        m.rootfs.sha256.as_str()
    );
    assert!(
        r["profile_origin"].to_string().contains("profile-sde"),
        "{}",
        r["profile_origin"]
    );
}

/// The rootfs is not rebuilt: a profile whose make step removes the tarball it made. The
/// image is still built (the verify stage fetches the published rootfs), so only the
/// missing artifact can stop a false `reproduced`: the rootfs check is unknown, and the
/// make step's record shows it made the other two artifacts only.
fn flip_rootfs_not_built(cx: &Cx) {
    let dir = cx.tmp.join("profile-unbuilt");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/archlinux-repro.toml"),
    )
    .unwrap();
    let regen = r#"  ["scripts/make-dockerfile.sh", "repro.tar.zst", "repro", "output/", "true", "repro", "{source_date_epoch}"],
"#;
    assert!(text.contains(regen), "the profile's make step changed");
    let profile = dir.join("archlinux-repro.toml");
    std::fs::write(
        &profile,
        text.replace(
            regen,
            &format!("{regen}  [\"rm\", \"output/repro.tar.zst\"],\n"),
        ),
    )
    .unwrap();
    let (o, r) = reproduce_with(
        profile.to_str().unwrap(),
        &cx.store("unbuilt", &[]),
        &cx.out("unbuilt"),
        &cx.locs,
    );
    caught("the rootfs not rebuilt", &o, &r, "incomplete", None);
    assert_eq!(status(&r, "rootfs-sha256"), "unknown", "{r:#}");
    let make = step(&r, "make");
    assert_eq!(
        make["produced"],
        serde_json::json!(["repro.tar.zst.SHA256", "Dockerfile.repro"]),
        "{make:#}"
    );
}

/// The source revision: the release names the revision's second parent (the merged branch,
/// whose files are the merge's), re-tagged.
fn flip_source_revision(cx: &Cx) {
    let (_, m) = world();
    let w = cx.world("revision");
    let rev = &m.release.source_revision;
    let parent = run_ok(
        Command::new("git")
            .arg("--git-dir")
            .arg(world::gitlab::bare_repo(&w.join("gitlab")))
            .args(["rev-parse", &format!("{rev}^2")]),
    )
    .trim()
    .to_string();
    retag(&w, |t| t.replace(rev.as_str(), &parent));
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("revision", &[]),
        &cx.out("revision"),
        &l,
    );
    caught(
        "the source revision",
        &o,
        &r,
        "differs",
        Some("image-config-digest"),
    );
    assert_eq!(r["source_revision"], parent.as_str(), "{r:#}");
    // The files are the revision's own: only the revision differs.
    assert_eq!(status(&r, "source-checkout"), "pass", "{r:#}");
}

/// One file of the upstream checkout: the store's git cache altered under the blob's id
/// (README.md: nothing of the build reads it, so only the checkout check can see it).
fn flip_checkout_file(cx: &Cx) {
    let (_, m) = world();
    let s = cx.store("checkout", &[]);
    alter_git_cache(&s, "README.md");
    let (o, r) = reproduce_with("archlinux-repro", &s, &cx.out("checkout"), &cx.locs);
    caught(
        "one file of the upstream checkout",
        &o,
        &r,
        "differs",
        Some("source-checkout"),
    );
    assert_eq!(
        r["workspace"]["revision"],
        m.release.source_revision.as_str(),
        "{r:#}"
    );
}

/// The verify stage's pinned base image: one byte of alpine:3.23's layer, under the digest
/// its pinned manifest names (the store has the pin, not the layer's bytes).
fn flip_verify_base_image(cx: &Cx) {
    let w = cx.world("alpine");
    let layer = flip_alpine_layer_byte(&w);
    let (_s, l) = served(&w);
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &cx.store("alpine", &[layer.trim_start_matches("sha256:")]),
        &cx.out("alpine"),
        &l,
    );
    caught(
        "one byte of the verify stage's base image",
        &o,
        &r,
        "incomplete",
        None,
    );
    let tampered = r["egress"]["tampered"].as_array().unwrap();
    assert!(
        tampered
            .iter()
            .any(|t| t["url"].as_str().unwrap().ends_with(&layer)),
        "{r:#}"
    );
    assert!(
        r["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "step image failed: the build did not complete"),
        "{r:#}"
    );
}

/// The flips, those that build the whole image first (the queue is worked from the front).
/// A flip: what it flips, and the function that flips it and checks it was caught.
/// (its key: the name of its copies, what it flips, the function).
type Flip = (&'static str, &'static str, fn(&Cx));

const FLIPS: [Flip; 10] = [
    (
        "sha",
        "the published rootfs sha256",
        flip_release_rootfs_sha256,
    ),
    (
        "tarball",
        "one byte inside the published rootfs",
        flip_published_rootfs,
    ),
    (
        "label",
        "one label of the published config",
        flip_published_label,
    ),
    ("diffid", "one published diffID", flip_published_diff_id),
    ("sde", "SOURCE_DATE_EPOCH", flip_source_date_epoch),
    (
        "unbuilt",
        "the rootfs the build makes (removed after make)",
        flip_rootfs_not_built,
    ),
    ("revision", "the source revision", flip_source_revision),
    (
        "checkout",
        "one file of the upstream checkout",
        flip_checkout_file,
    ),
    (
        "db",
        "one package version in the day's database",
        flip_database_version,
    ),
    (
        "alpine",
        "the verify stage's pinned base image",
        flip_verify_base_image,
    ),
];

#[test]
fn every_flip_is_caught_and_the_unflipped_release_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // The control's world is a copy too: serving writes into the world it serves (the
    // registry's configuration, git's server info), and the shared one is never written.
    let (servers, locs) = served(&copy_world(&tmp.path().join("world-control")));
    let started = std::time::Instant::now();

    // 0. The positive control: nothing flipped, reproduced, every decisive check a pass
    //    (the two this suite added among them).
    let (o, r) = reproduce_with(
        "archlinux-repro",
        &store,
        &tmp.path().join("control"),
        &locs,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(r["verdict"], "reproduced", "{r:#}");
    for c in r["checks"].as_array().unwrap() {
        if c["decisive"] == true {
            assert_eq!(c["status"], "pass", "{c:#}");
        }
    }
    for name in [
        "source-checkout",
        "rootfs-sha256",
        "published-rootfs-sha256",
        "image-config-digest",
        "image-diff-ids",
        "image-manifest-digest",
    ] {
        assert_eq!(status(&r, name), "pass", "{name}: {r:#}");
        assert_eq!(check(&r, name)["decisive"], true, "{name}: {r:#}");
    }
    eprintln!(
        "verdict_mutations: the control reproduced in {:?}",
        started.elapsed()
    );
    let cx = Cx {
        tmp: tmp.path().to_path_buf(),
        store,
        control_lock: std::fs::read_to_string(tmp.path().join("control/inputs.lock")).unwrap(),
        locs,
    };

    // 1–9. Each flip on its own copies, two at a time (they share nothing but the read-only
    // control store and world); every failure is collected, then all are reported.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((key, what, flip)) = FLIPS.get(i) else {
                        break;
                    };
                    let t = std::time::Instant::now();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flip(&cx)));
                    eprintln!(
                        "verdict_mutations: {what}: {} in {:?}",
                        if r.is_ok() { "caught" } else { "FAILED" },
                        t.elapsed()
                    );
                    if r.is_ok() {
                        // Its copies go now, while the other flip runs (kept on a failure).
                        for d in [
                            format!("world-{key}"),
                            format!("world-{key}.retag-wt"),
                            format!("store-{key}"),
                            format!("out-{key}"),
                        ] {
                            let _ = std::fs::remove_dir_all(cx.tmp.join(d));
                        }
                    }
                    if let Err(e) = r {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push(format!("{what}: {msg}"));
                    }
                }
            });
        }
    });
    eprintln!("verdict_mutations: all in {:?}", started.elapsed());
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} flip(s) not caught as they must be:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    drop(servers);
}
