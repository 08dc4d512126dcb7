//! Both images of a failed image check as archives in the output directory, so any image
//! tool can take them, and diffoci when it is installed.
//!
//! The published image is written here from the store's pinned blobs as a `docker save`
//! archive (`manifest.json` + config + layers, layers as the registry serves them; `docker
//! load`, `podman load` and containerd's importer all read it). The rebuilt image comes from
//! the environment's own podman (`podman save`), in the pipeline.
//!
//! diffoci reads images from a registry or through `$PODMAN save NAME`; reprobox points
//! `$PODMAN` at a script it writes beside the archives that prints the archive saved for
//! `NAME`, so diffoci compares exactly these two archives without a daemon or a network.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::inputs::images::PinnedImage;
use crate::inputs::store::Store;

/// The names the two images carry inside their archives and on diffoci's command line.
pub const PUBLISHED_NAME: &str = "reprobox.local/published:image";
pub const REBUILT_NAME: &str = "reprobox.local/rebuilt:image";

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

/// Write a `docker save` archive of a pinned image (config first, then layers, as
/// `PinnedImage::blobs` lists them) from the store to `out`.
pub fn write_docker_archive(
    store: &Store,
    image: &PinnedImage,
    name: &str,
    out: &Path,
) -> Result<()> {
    let (config, layers) = image.blobs.split_first().ok_or_else(|| {
        Error::Environment(format!("{}: a manifest with no config", image.reference))
    })?;
    let blob = |d: &str| -> Result<PathBuf> {
        store.get(hex(d)).ok_or_else(|| {
            Error::Environment(format!("{}: blob {d} is not in the store", image.reference))
        })
    };
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", hex(config)),
        "RepoTags": [name],
        "Layers": layers.iter().map(|l| format!("{}/layer.tar", hex(l))).collect::<Vec<_>>(),
    }]);
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let add_bytes = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes).ctx("write", &tmp)
    };
    let cfg_path = blob(config)?;
    let cfg = std::fs::read(&cfg_path).ctx("read", &cfg_path)?;
    add_bytes(&mut tar, &format!("{}.json", hex(config)), &cfg)?;
    for l in layers {
        let p = blob(l)?;
        tar.append_path_with_name(&p, format!("{}/layer.tar", hex(l)))
            .ctx("write", &tmp)?;
    }
    add_bytes(
        &mut tar,
        "manifest.json",
        serde_json::to_string(&manifest)
            .expect("plain JSON")
            .as_bytes(),
    )?;
    let mut w = tar.into_inner().ctx("write", &tmp)?;
    w.flush().ctx("write", &tmp)?;
    drop(w);
    std::fs::rename(&tmp, out).ctx("rename into", out)?;
    Ok(())
}

/// The stand-in for `podman save NAME` that diffoci runs: prints the archive of `NAME`.
pub fn write_save_script(dir: &Path, published: &Path, rebuilt: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let q = |p: &Path| -> Result<String> {
        let s = p.to_str().ok_or_else(|| {
            Error::bad_input(
                format!("saved image archive {}", p.display()),
                "expected a path that is valid UTF-8",
            )
        })?;
        crate::shell::quote(s, "saved image archive")
    };
    let script = format!(
        "#!/bin/sh\n# written by reprobox: `podman save NAME` for diffoci, from the saved archives\n\
         [ \"$1\" = save ] || {{ echo \"reprobox: only 'save' is offered\" >&2; exit 2; }}\n\
         case \"$2\" in\n  {PUBLISHED_NAME}|docker.io/{PUBLISHED_NAME}) exec cat {} ;;\n  {REBUILT_NAME}|docker.io/{REBUILT_NAME}) exec cat {} ;;\nesac\n\
         echo \"reprobox: no saved archive for $2\" >&2\nexit 1\n",
        q(published)?,
        q(rebuilt)?
    );
    let path = dir.join("podman-save-for-diffoci");
    std::fs::write(&path, script).ctx("write", &path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).ctx("chmod", &path)?;
    Ok(path)
}

/// Run diffoci, when it is installed, on the two archives; its output is kept as
/// `diffoci.txt` (and `diffoci/` with the differing files) in `out`. Returns the file names
/// kept, or a note saying why it did not run.
pub fn run_diffoci(
    out: &Path,
    published: &Path,
    rebuilt: &Path,
) -> std::result::Result<Vec<String>, String> {
    let Some(bin) = crate::verify::on_path("diffoci") else {
        return Err("diffoci is not installed: the two images are kept as archives in images/ for it or any other tool".into());
    };
    let script = write_save_script(published.parent().unwrap_or(out), published, rebuilt)
        .map_err(|e| e.to_string())?;
    let text = out.join("diffoci.txt");
    let report_dir = out.join("diffoci");
    let file = std::fs::File::create(&text).map_err(|e| format!("{}: {e}", text.display()))?;
    let status = std::process::Command::new(bin)
        .args(["--backend=local", "diff", "--semantic"])
        .arg(format!("--report-dir={}", report_dir.display()))
        .arg(format!("podman://{PUBLISHED_NAME}"))
        .arg(format!("podman://{REBUILT_NAME}"))
        .env("PODMAN", &script)
        .stdout(file)
        .status();
    match status {
        // diffoci: 0 same, 1 different.
        Ok(s) if matches!(s.code(), Some(0 | 1)) => {
            Ok(vec!["diffoci.txt".into(), "diffoci/".into()])
        }
        Ok(s) => Err(format!(
            "diffoci failed ({s}); its output is in diffoci.txt"
        )),
        Err(e) => Err(format!("diffoci could not run: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::images::DigestRef;

    #[test]
    fn a_docker_archive_from_store_blobs_names_its_config_and_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let cfg = store
            .put_reader(&b"{\"rootfs\":{}}"[..], None, "test:config")
            .unwrap();
        let layer = store
            .put_reader(&b"layer bytes"[..], None, "test:layer")
            .unwrap();
        let image = PinnedImage {
            reference: DigestRef::parse(&format!("127.0.0.1:1/x@sha256:{}", "0".repeat(64)))
                .unwrap(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            blobs: vec![
                format!("sha256:{}", cfg.sha256),
                format!("sha256:{}", layer.sha256),
            ],
        };
        let out = dir.path().join("published.tar");
        write_docker_archive(&store, &image, PUBLISHED_NAME, &out).unwrap();
        let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut names = Vec::new();
        let mut manifest = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let n = e.path().unwrap().display().to_string();
            if n == "manifest.json" {
                std::io::Read::read_to_string(&mut e, &mut manifest).unwrap();
            }
            names.push(n);
        }
        assert_eq!(
            names,
            [
                format!("{}.json", cfg.sha256),
                format!("{}/layer.tar", layer.sha256),
                "manifest.json".to_string()
            ]
        );
        let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(m[0]["RepoTags"][0], PUBLISHED_NAME);
        assert_eq!(m[0]["Layers"][0], format!("{}/layer.tar", layer.sha256));
    }

    #[test]
    fn the_save_script_prints_the_archive_of_each_name_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        std::fs::write(&a, "published").unwrap();
        std::fs::write(&b, "rebuilt").unwrap();
        let s = write_save_script(dir.path(), &a, &b).unwrap();
        let run = |args: &[&str]| std::process::Command::new(&s).args(args).output().unwrap();
        assert_eq!(run(&["save", PUBLISHED_NAME]).stdout, b"published");
        assert_eq!(run(&["save", REBUILT_NAME]).stdout, b"rebuilt");
        assert!(!run(&["save", "other:tag"]).status.success());
        assert!(!run(&["load"]).status.success());
    }
}
