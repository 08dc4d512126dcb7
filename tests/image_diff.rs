//! `reprobox image diff`, through the real binary, on small images written here by hand
//! (docker-archive and oci-archive tars: config JSON, manifests, layer tars, deterministic).
//! No root, no network.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn reprobox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprobox"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REPROBOX_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(args: &[&str]) -> Output {
    reprobox().args(args).output().expect("run reprobox")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file in a layer: (path, content, mtime).
type File = (&'static str, &'static str, u64);

/// What an image is made of.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    created: &'static str,
    layers: Vec<Vec<File>>,
}

fn base() -> Spec {
    Spec {
        name: "example.org/app:1",
        labels: vec![("org.opencontainers.image.version", "1")],
        created: "2026-05-18T00:00:00Z",
        layers: vec![vec![
            ("etc/os-release", "NAME=Arch\n", 1_779_062_400),
            ("usr/bin/app", "#!/bin/sh\necho hi\n", 1_779_062_400),
        ]],
    }
}

fn layer_tar(files: &[File]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content, mtime) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(*mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn digest(bytes: &[u8]) -> String {
    reprobox::digest::sha256_digest(bytes)
}

fn config(s: &Spec, plain_layers: &[Vec<u8>]) -> Vec<u8> {
    let labels: serde_json::Map<String, Value> = s
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": s.created,
        "config": {
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["/usr/bin/app"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": plain_layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
        "history": plain_layers.iter().map(|_| json!({"created": s.created, "created_by": "COPY / /"})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn member(b: &mut tar::Builder<std::fs::File>, path: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, path, bytes).unwrap();
}

/// A `docker save`-style archive: config, uncompressed layers, manifest.json with RepoTags.
fn docker_archive(path: &Path, s: &Spec) {
    let layers: Vec<Vec<u8>> = s.layers.iter().map(|l| layer_tar(l)).collect();
    let cfg = config(s, &layers);
    let cfg_name = format!("{}.json", digest(&cfg).trim_start_matches("sha256:"));
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    member(&mut b, &cfg_name, &cfg);
    let mut names = Vec::new();
    for l in &layers {
        let n = format!("{}.tar", digest(l).trim_start_matches("sha256:"));
        member(&mut b, &n, l);
        names.push(n);
    }
    let m = json!([{"Config": cfg_name, "RepoTags": [s.name], "Layers": names}]);
    member(&mut b, "manifest.json", &serde_json::to_vec(&m).unwrap());
    b.finish().unwrap();
}

/// An oci-archive (an OCI layout in a tar): gzip layers, the image name as the index
/// descriptor's `org.opencontainers.image.ref.name` and `io.containerd.image.name`.
fn oci_archive(path: &Path, s: &Spec) {
    let plain: Vec<Vec<u8>> = s.layers.iter().map(|l| layer_tar(l)).collect();
    let cfg = config(s, &plain);
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    member(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let blob = |b: &mut tar::Builder<std::fs::File>, bytes: &[u8]| -> (String, usize) {
        let d = digest(bytes);
        member(
            b,
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            bytes,
        );
        (d, bytes.len())
    };
    let (cd, cs) = blob(&mut b, &cfg);
    let mut layers = Vec::new();
    for l in &plain {
        let (d, n) = blob(&mut b, &gzip(l));
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))
    .unwrap();
    let (md, ms) = blob(&mut b, &manifest);
    let tag = s.name.rsplit_once(':').unwrap().1;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": s.name},
        }],
    });
    member(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    b.finish().unwrap();
}

struct Images {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Images {
    fn new() -> Images {
        let d = tempfile::tempdir().unwrap();
        Images {
            path: d.path().to_path_buf(),
            _dir: d,
        }
    }
    fn docker(&self, name: &str, s: &Spec) -> String {
        let p = self.path.join(name);
        docker_archive(&p, s);
        p.display().to_string()
    }
    fn oci(&self, name: &str, s: &Spec) -> String {
        let p = self.path.join(name);
        oci_archive(&p, s);
        p.display().to_string()
    }
}

fn diff(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["image", "diff"];
    all.extend_from_slice(args);
    let o = run(&all);
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

#[test]
fn the_same_image_has_no_difference_and_exits_0() {
    let t = Images::new();
    let a = t.docker("a.tar", &base());
    let b = t.docker("b.tar", &base());
    let (code, out, err) = diff(&[&a, &b]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "no differences\n");
    let (code, out, _) = diff(&[&a, &b, "--semantic"]);
    assert_eq!((code, out.as_str()), (0, "no semantic differences\n"));
}

#[test]
fn names_a_changed_label_a_changed_file_and_an_extra_layer() {
    let t = Images::new();
    let a = t.docker("a.tar", &base());

    let mut s = base();
    s.labels = vec![("org.opencontainers.image.version", "2")];
    let label = t.docker("label.tar", &s);
    let (code, out, _) = diff(&[&a, &label, "--semantic"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "config .config.Labels[\"org.opencontainers.image.version\"]: 1 -> 2\n"
    );

    let mut s = base();
    s.layers[0][1] = ("usr/bin/app", "#!/bin/sh\necho bye\n", 1_779_062_400);
    let file = t.docker("file.tar", &s);
    let (code, out, _) = diff(&[&a, &file, "--semantic"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("layer 1 usr/bin/app content: sha256:")
                && l.contains(" (18 bytes) -> sha256:")
                && l.ends_with(" (19 bytes)")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("layer 1 uncompressed digest: sha256:")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("config .rootfs.diff_ids[0]: sha256:")),
        "{out}"
    );
    assert!(!out.contains("etc/os-release"), "{out}");

    let mut s = base();
    s.layers.push(vec![("etc/extra", "x\n", 1_779_062_400)]);
    let extra = t.docker("extra.tar", &s);
    let (code, out, _) = diff(&[&a, &extra, "--semantic"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l == "layers: 1 -> 2"), "{out}");
    assert!(
        out.lines()
            .any(|l| l
                .starts_with("layer 2: (absent) -> application/vnd.docker.image.rootfs.diff.tar ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("config .rootfs.diff_ids[1]: (absent) -> sha256:")),
        "{out}"
    );
}

#[test]
fn semantic_hides_a_renamed_image_but_the_plain_diff_shows_it() {
    let t = Images::new();
    let mut renamed = base();
    renamed.name = "example.org/other:2";

    // docker-archive: RepoTags.
    let a = t.docker("a.tar", &base());
    let b = t.docker("b.tar", &renamed);
    let (code, out, _) = diff(&[&a, &b]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "image name: example.org/app:1 -> example.org/other:2\n"
    );
    let (code, out, _) = diff(&[&a, &b, "--semantic"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "no semantic differences\n(1 ignored by --semantic: 1 name)\n"
    );

    // oci-archive: the ref.name and containerd name annotations.
    let a = t.oci("a.oci.tar", &base());
    let b = t.oci("b.oci.tar", &renamed);
    let (code, out, _) = diff(&[&a, &b]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "index annotation io.containerd.image.name: example.org/app:1 -> example.org/other:2\n\
         index annotation org.opencontainers.image.ref.name: 1 -> 2\n"
    );
    let (code, out, _) = diff(&[&a, &b, "--semantic"]);
    assert_eq!(code, 0, "{out}");

    // The created timestamp is not content; a file's mtime is.
    let mut later = base();
    later.created = "2026-06-01T00:00:00Z";
    let c = t.oci("c.oci.tar", &later);
    let (code, out, _) = diff(&[&a, &c]);
    assert_eq!(code, 1);
    assert!(
        out.contains("config .created: 2026-05-18T00:00:00Z -> 2026-06-01T00:00:00Z"),
        "{out}"
    );
    assert!(out.contains("config .history[0].created: "), "{out}");
    let (code, _, _) = diff(&[&a, &c, "--semantic"]);
    assert_eq!(code, 0);
    let mut touched = base();
    touched.layers[0][0].2 += 1;
    let d = t.oci("d.oci.tar", &touched);
    let (code, out, _) = diff(&[&a, &d, "--semantic"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("layer 1 etc/os-release mtime: 1779062400 -> 1779062401"),
        "{out}"
    );
}

#[test]
fn a_docker_archive_and_an_oci_archive_of_the_same_image_differ_only_in_name_and_compression() {
    let t = Images::new();
    let a = t.docker("a.tar", &base());
    let b = t.oci("b.oci.tar", &base());
    let (code, out, _) = diff(&[&a, &b]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("layer 1 mediaType: application/vnd.docker.image.rootfs.diff.tar -> application/vnd.oci.image.layer.v1.tar+gzip"), "{out}");
    assert!(out.contains("layer 1 size: "), "{out}");
    let (code, out, _) = diff(&[&a, &b, "--semantic"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("compression"), "{out}");
}

#[test]
fn json_is_a_list_of_kind_where_a_b() {
    let t = Images::new();
    let a = t.docker("a.tar", &base());
    let mut s = base();
    s.name = "example.org/other:2";
    s.labels = vec![("org.opencontainers.image.version", "2")];
    let b = t.docker("b.tar", &s);
    let (code, out, err) = diff(&[&a, &b, "--semantic", "--json"]);
    assert_eq!(code, 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["a"], a.as_str());
    assert_eq!(v["b"], b.as_str());
    assert_eq!(v["semantic"], true);
    assert_eq!(
        v["differences"],
        json!([{
            "kind": "config",
            "where": "config .config.Labels[\"org.opencontainers.image.version\"]",
            "a": "1",
            "b": "2",
        }])
    );
    assert_eq!(
        v["ignored"],
        json!([{
            "kind": "name",
            "where": "image name",
            "a": "example.org/app:1",
            "b": "example.org/other:2",
            "reason": "name",
        }])
    );
    // Without --semantic the name is a difference like any other, and nothing is ignored.
    let (code, out, _) = diff(&[&a, &b, "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["a", "b", "kind", "where"], "{d}");
            d["kind"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds, ["name", "config"]);
    assert_eq!(v["ignored"], json!([]));
    // No difference: an empty list, exit 0.
    let (code, out, _) = diff(&[&a, &a, "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["differences"], json!([]));
}

#[test]
fn bad_input_exits_2_naming_the_input_and_what_was_expected() {
    let t = Images::new();
    let a = t.docker("a.tar", &base());
    let text = t.path.join("notes.txt");
    std::fs::write(&text, "not an image at all, just some words").unwrap();
    let text = text.display().to_string();
    let missing = t.path.join("missing.tar").display().to_string();
    let empty_dir = t.path.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty_dir = empty_dir.display().to_string();
    // A tar that is not an image.
    let plain = t.path.join("plain.tar");
    std::fs::write(&plain, layer_tar(&[("hello", "hi", 0)])).unwrap();
    let plain = plain.display().to_string();
    for (input, expect) in [
        (&text, "expected a docker-archive or oci-archive tar"),
        (&missing, "no such file or directory"),
        (
            &empty_dir,
            "neither index.json (OCI) nor manifest.json (docker-archive)",
        ),
        (
            &plain,
            "neither index.json (OCI) nor manifest.json (docker-archive)",
        ),
    ] {
        let (code, out, err) = diff(&[&a, input]);
        assert_eq!(code, 2, "{input}: {out}{err}");
        assert!(err.contains(&format!("image {input}: ")), "{input}: {err}");
        assert!(err.contains(expect), "{input}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    // A registry reference needs a host: a bare name is neither a file nor a reference.
    let (code, _, err) = diff(&[&a, "alpine:3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("REGISTRY/REPO:TAG"), "{err}");
    // A token realm's location must be HOST=URL.
    let (code, _, err) = diff(&[&a, &a, "--auth-location", "auth.docker.io"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--auth-location") && err.contains("expected HOST=URL"),
        "{err}"
    );
    // A reproduction's directory without the saved images.
    let (code, _, err) = diff(&["--report", &empty_dir]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("images/published.tar"), "{err}");
}

#[test]
fn report_dir_compares_the_published_and_the_rebuilt_image() {
    let t = Images::new();
    let out = t.path.join("out");
    std::fs::create_dir_all(out.join("images")).unwrap();
    let mut published = base();
    published.name = "reprobox.local/published:image";
    let mut rebuilt = published.clone();
    rebuilt.name = "reprobox.local/rebuilt:image";
    rebuilt.layers[0][0] = ("etc/os-release", "NAME=Arch Linux\n", 1_779_062_400);
    docker_archive(&out.join("images/published.tar"), &published);
    docker_archive(&out.join("images/rebuilt.tar"), &rebuilt);
    let dir = out.display().to_string();
    let (code, text, err) = diff(&["--report", &dir, "--semantic"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("layer 1 etc/os-release content: ")),
        "{text}"
    );
    assert!(!text.contains("image name"), "{text}");
    let (_, plain, _) = diff(&["--report", &dir]);
    assert!(
        plain.starts_with(
            "image name: reprobox.local/published:image -> reprobox.local/rebuilt:image\n"
        ),
        "{plain}"
    );
    // A and B with --report is a usage error.
    let (code, _, _) = diff(&["--report", &dir, "x.tar", "y.tar"]);
    assert_eq!(code, 2);
}

/// A read-only registry on 127.0.0.1 answering `GET /v2/…` paths from `routes` (404
/// otherwise), one request per connection. Returns its `host:port`.
fn serve(routes: std::collections::BTreeMap<String, (String, Vec<u8>)>) -> String {
    use std::io::{BufRead, BufReader};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let head = line.starts_with("HEAD ");
            let (status, ctype, body) = match routes.get(&path) {
                Some((t, b)) => ("200 OK", t.clone(), b.clone()),
                None => ("404 Not Found", "text/plain".into(), b"not found".to_vec()),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if !head {
                let _ = s.write_all(&body);
            }
        }
    });
    addr
}

/// The routes of `s` pushed as `REPO:TAG` (OCI manifest, gzip layers), and its manifest digest.
fn pushed(
    repo: &str,
    tag: &str,
    s: &Spec,
) -> (
    std::collections::BTreeMap<String, (String, Vec<u8>)>,
    String,
) {
    let mut routes = std::collections::BTreeMap::new();
    let plain: Vec<Vec<u8>> = s.layers.iter().map(|l| layer_tar(l)).collect();
    let mut blob = |bytes: Vec<u8>| -> (String, usize) {
        let d = digest(&bytes);
        let n = bytes.len();
        routes.insert(
            format!("/v2/{repo}/blobs/{d}"),
            ("application/octet-stream".to_string(), bytes),
        );
        (d, n)
    };
    let (cd, cs) = blob(config(s, &plain));
    let layers: Vec<Value> = plain
        .iter()
        .map(|l| {
            let (d, n) = blob(gzip(l));
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))
    .unwrap();
    let md = digest(&manifest);
    let t = "application/vnd.oci.image.manifest.v1+json".to_string();
    routes.insert(
        format!("/v2/{repo}/manifests/{tag}"),
        (t.clone(), manifest.clone()),
    );
    routes.insert(format!("/v2/{repo}/manifests/{md}"), (t, manifest));
    (routes, md)
}

#[test]
fn registry_references_are_read_through_the_registry_client() {
    let t = Images::new();
    let mut changed = base();
    changed.labels = vec![("org.opencontainers.image.version", "2")];
    let (mut routes, md) = pushed("team/app", "1", &base());
    routes.extend(pushed("team/app", "2", &changed).0);
    let host = serve(routes);
    let store = t.path.join("store");
    let store = store.to_str().unwrap();
    let local = t.oci("local.oci.tar", &base());

    // By tag with a scheme, by digest without one (loopback is plain HTTP): the same image as
    // the local archive but for its name annotations.
    let by_tag = format!("http://{host}/team/app:1");
    let by_digest = format!("{host}/team/app@{md}");
    let (code, out, err) = diff(&["--store", store, &by_tag, &local]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().all(|l| l.starts_with("index annotation ")),
        "{out}"
    );
    let (code, out, err) = diff(&["--store", store, &by_digest, &local, "--semantic"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = diff(&["--store", store, &by_tag, &format!("{host}/team/app:2")]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        out,
        "config .config.Labels[\"org.opencontainers.image.version\"]: 1 -> 2\n"
    );
    // Offline, what the store holds is enough for a digest.
    let (code, _, err) = diff(&["--store", store, "--offline", &by_digest, &by_digest]);
    assert_eq!(code, 0, "{err}");
}
