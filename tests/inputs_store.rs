//! `reprobox store`: verify finds and quarantines corruption, gc keeps what locks name, ls.

mod inputs_common;

use inputs_common::{reprobox, run};

use std::os::unix::fs::PermissionsExt;

use reprobox::inputs::lock::{InputsLock, Status};
use reprobox::inputs::store::Store;
use reprobox::world::fixtures::{count_files, noise};

#[test]
fn verify_finds_and_quarantines_a_corrupt_blob() {
    let sd = tempfile::tempdir().unwrap();
    let s = Store::open(sd.path()).unwrap();
    let a = s
        .put_reader(&noise(100_000, 1)[..], None, "test:a")
        .unwrap();
    let b = s.put_reader(&b"bbbb"[..], None, "test:b").unwrap();
    let (code, out, err) = run(sd.path(), &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("checked 2 blobs, 0 corrupt"), "{out}");

    std::fs::set_permissions(&a.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&a.path).unwrap();
    bytes[500] ^= 0x40;
    std::fs::write(&a.path, &bytes).unwrap();
    let (code, out, _) = run(sd.path(), &["store", "verify"]);
    assert_eq!(code, 1, "corruption found means exit 1: {out}");
    assert!(out.contains(&format!("corrupt {}", a.sha256)), "{out}");
    assert!(s.get(&a.sha256).is_none(), "corrupt blob no longer served");
    assert_eq!(count_files(&sd.path().join("quarantine")), 1);
    assert!(s.get(&b.sha256).is_some());
    let (code, out, _) = run(sd.path(), &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
    // get_verified catches it at read time too.
    std::fs::set_permissions(&b.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&b.path, b"cccc").unwrap();
    assert!(matches!(
        s.get_verified(&b.sha256),
        Err(reprobox::Error::Tampered { .. })
    ));
}

#[test]
fn gc_ls_and_bad_input() {
    let sd = tempfile::tempdir().unwrap();
    let s = Store::open(sd.path()).unwrap();
    let keep = s
        .put_reader(&b"keep me"[..], None, "http://example.invalid/keep")
        .unwrap();
    let drop = s
        .put_reader(&b"drop me"[..], None, "http://example.invalid/drop")
        .unwrap();
    // An abandoned temporary file (no process holds its lock).
    std::fs::write(sd.path().join("tmp/put-abandoned"), b"half").unwrap();
    let (code, out, _) = run(sd.path(), &["store", "ls"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("{} 7 http://example.invalid/keep", keep.sha256)),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2);

    let mut lock = InputsLock::default();
    lock.record(
        Status::Hit,
        "http://example.invalid/keep",
        Some((&keep.sha256, keep.size)),
    );
    let lp = sd.path().join("keep.lock");
    lock.write(&lp).unwrap();
    let (code, out, err) = run(sd.path(), &["store", "gc"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed 1 temporary files and 0 blobs"),
        "{out}"
    );
    let (code, out, err) = run(sd.path(), &["store", "gc", "--keep", lp.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 temporary files and 1 blobs"), "{out}");
    assert!(s.get(&keep.sha256).is_some() && s.get(&drop.sha256).is_none());
    assert!(
        s.index().unwrap().iter().all(|r| r.sha256 != drop.sha256),
        "index compacted"
    );

    std::fs::write(sd.path().join("broken.lock"), "not a lock\n").unwrap();
    let (code, _, err) = run(
        sd.path(),
        &[
            "store",
            "gc",
            "--keep",
            sd.path().join("broken.lock").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one clear error line: {err}");
    assert!(err.contains("broken.lock line 1"), "{err}");

    // sha256 of a file, as sha256sum prints it.
    let f = sd.path().join("f");
    std::fs::write(&f, b"hello").unwrap();
    let (code, out, _) = run(sd.path(), &["store", "hash", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824  {}\n",
            f.display()
        )
    );
}

#[test]
fn store_location_follows_env() {
    let d = tempfile::tempdir().unwrap();
    let out = reprobox()
        .args(["store", "ls"])
        .env_remove("REPROBOX_STORE")
        .env("XDG_CACHE_HOME", d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        d.path().join("reprobox/blobs").is_dir(),
        "default store under $XDG_CACHE_HOME/reprobox"
    );
    let e = d.path().join("envstore");
    let out = reprobox()
        .args(["store", "ls"])
        .env("REPROBOX_STORE", &e)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(e.join("blobs").is_dir());
}
