//! PreparedEnv environments kept between reproductions, so that a warm reproduction does not
//! unpack the base and roll it back again.
//!
//! A prepared environment is a pure function of what went into it: the pinned base tarball
//! (by sha256), the day it was rolled to and the exact argv of every environment step
//! (rollback and install). Archive days never change, so the same key gives the same
//! packages; the environment lock recorded when it was made is kept beside it and reused.
//!
//! Layout, beside the store's blobs:
//!
//! ```text
//! STORE/envs/<key>/root        the environment's root filesystem, owned as the base has it
//! STORE/envs/<key>/env.lock    its environment lock (exact text, see `envlock`)
//! STORE/envs/<key>/meta.json   what the key was made of, and when
//! STORE/envs/.staging-XXXXXX/  an environment being prepared; renamed into place only once
//!                              every environment step succeeded and its lock is written
//! ```
//!
//! Invariants: an entry under its key is complete (it is published by one rename, after its
//! lock); nothing ever writes into a published root (reproductions see it through an
//! overlay, `sandbox::overlay`); a staging directory that is not renamed is removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::envlock::EnvLock;
use crate::error::{Error, IoContext, Result};

/// What a prepared environment is made of; its sha256 is the key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvRecipe {
    /// Bump when the way environments are prepared changes what they hold.
    pub format: u32,
    pub base_sha256: String,
    pub base_subdir: Option<String>,
    /// The day the environment steps rolled it to (`YYYY/MM/DD`), or `None` without rollback.
    pub day: Option<String>,
    /// Every environment step, in order: its name and the exact argv of its commands.
    pub steps: Vec<(String, Vec<Vec<String>>)>,
}

const FORMAT: u32 = 1;

impl EnvRecipe {
    /// `steps`: each environment step's name and the exact argv of its commands.
    pub fn new(
        base_sha256: &str,
        base_subdir: Option<&str>,
        day: Option<&str>,
        steps: Vec<(String, Vec<Vec<String>>)>,
    ) -> EnvRecipe {
        EnvRecipe {
            format: FORMAT,
            base_sha256: base_sha256.to_string(),
            base_subdir: base_subdir.map(str::to_string),
            day: day.map(str::to_string),
            steps,
        }
    }

    /// The cache key: sha256 of the recipe's canonical JSON.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain JSON");
        crate::digest::sha256_hex(&json)
    }
}

/// `meta.json` of a prepared environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvMeta {
    pub recipe: EnvRecipe,
    /// When it was prepared (seconds since the epoch, UTC).
    pub prepared_at: i64,
}

/// The prepared environments of one store.
pub struct PreparedEnvs {
    dir: PathBuf,
}

/// A published prepared environment.
#[derive(Debug, Clone)]
pub struct PreparedEnv {
    pub key: String,
    pub dir: PathBuf,
}

impl PreparedEnv {
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn env_lock(&self) -> Result<EnvLock> {
        let p = self.dir.join("env.lock");
        let text = std::fs::read_to_string(&p).ctx("read", &p)?;
        EnvLock::parse(&text, &p.display().to_string())
    }

    pub fn meta(&self) -> Result<EnvMeta> {
        let p = self.dir.join("meta.json");
        let text = std::fs::read_to_string(&p).ctx("read", &p)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Environment(format!(
                "{}: not a prepared environment's meta: {e}",
                p.display()
            ))
        })
    }
}

/// An environment being prepared: removed on drop unless published. It holds an exclusive
/// lock on its `.lock` file while alive, so `store gc` removes only abandoned ones.
pub struct Staging {
    dir: Option<tempfile::TempDir>,
    _lock: std::fs::File,
}

/// Take `flock(LOCK_EX | LOCK_NB)` on `f`; false when another process holds it.
fn try_lock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open file descriptor.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Staging {
    /// Where the environment's root goes.
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until published").path()
    }
}

impl PreparedEnvs {
    pub fn new(store_root: &Path) -> PreparedEnvs {
        PreparedEnvs {
            dir: store_root.join("envs"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prepared environment for `recipe`, if one was published.
    pub fn lookup(&self, recipe: &EnvRecipe) -> Result<Option<PreparedEnv>> {
        let key = recipe.key();
        let dir = self.dir.join(&key);
        if !dir.join("env.lock").is_file() || !dir.join("root").is_dir() {
            return Ok(None);
        }
        let p = PreparedEnv { key, dir };
        // A key collision or a hand-edited entry would be a different environment.
        if p.meta()?.recipe != *recipe {
            return Err(Error::Environment(format!(
                "{}: its meta.json describes another environment than its key; remove it",
                p.dir.display()
            )));
        }
        Ok(Some(p))
    }

    /// A fresh staging directory for a new environment.
    pub fn stage(&self) -> Result<Staging> {
        std::fs::create_dir_all(&self.dir).ctx("create", &self.dir)?;
        let dir = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.dir)
            .ctx("create a staging directory in", &self.dir)?;
        let lp = dir.path().join(".lock");
        let lock = std::fs::File::create(&lp).ctx("create", &lp)?;
        if !try_lock(&lock) {
            return Err(Error::Environment(format!(
                "{}: already locked",
                lp.display()
            )));
        }
        Ok(Staging {
            dir: Some(dir),
            _lock: lock,
        })
    }

    /// Publish a staged environment under its recipe's key: its lock and meta are written
    /// first, then the whole directory is renamed into place. When another reproduction
    /// published the same key meanwhile, that one is kept and this one removed.
    pub fn publish(
        &self,
        mut staging: Staging,
        recipe: &EnvRecipe,
        lock: &EnvLock,
    ) -> Result<PreparedEnv> {
        let path = staging.path().to_path_buf();
        let lock_path = path.join("env.lock");
        std::fs::write(&lock_path, lock.to_text()).ctx("write", &lock_path)?;
        let meta = EnvMeta {
            recipe: recipe.clone(),
            prepared_at: jiff::Timestamp::now().as_second(),
        };
        let meta_path = path.join("meta.json");
        std::fs::write(
            &meta_path,
            serde_json::to_vec_pretty(&meta).expect("plain JSON"),
        )
        .ctx("write", &meta_path)?;
        let key = recipe.key();
        let dest = self.dir.join(&key);
        let _ = std::fs::remove_file(path.join(".lock"));
        let tmp = staging.dir.take().expect("present until published").keep();
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(PreparedEnv { key, dir: dest }),
            Err(_) if dest.join("env.lock").is_file() => {
                remove_tree(&tmp);
                Ok(PreparedEnv { key, dir: dest })
            }
            Err(e) => {
                remove_tree(&tmp);
                Err(Error::io("rename a staged environment to", &dest, e))
            }
        }
    }

    /// Every published environment (`store envs`).
    pub fn list(&self) -> Result<Vec<PreparedEnv>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        for e in rd {
            let e = e.ctx("read directory", &self.dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(PreparedEnv {
                    key: name,
                    dir: e.path(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Remove every prepared environment and leftover staging directory; returns how many
    /// environments were removed.
    pub fn clear(&self) -> Result<usize> {
        let n = self.list()?.len();
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).ctx("remove", &self.dir)?;
        }
        Ok(n)
    }
}

impl PreparedEnvs {
    /// Remove staging directories a killed reproduction left behind (`store gc`): those
    /// whose lock nobody holds. Returns how many.
    pub fn remove_staging(&self) -> Result<usize> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let mut n = 0;
        for e in rd {
            let e = e.ctx("read directory", &self.dir)?;
            if !e.file_name().to_string_lossy().starts_with(".staging-") {
                continue;
            }
            let lp = e.path().join(".lock");
            let abandoned = match std::fs::File::open(&lp) {
                Ok(f) => try_lock(&f),
                Err(_) => true,
            };
            if abandoned {
                std::fs::remove_dir_all(e.path()).ctx("remove", e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn remove_tree(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        tracing::warn!("could not remove {}: {e}", p.display());
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let p = d.path().to_path_buf();
            if let Err(e) = d.close() {
                tracing::warn!("could not remove staging directory {}: {e}", p.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(day: &str) -> EnvRecipe {
        EnvRecipe {
            format: FORMAT,
            base_sha256: "ab".repeat(32),
            base_subdir: Some("root.x86_64".into()),
            day: Some(day.into()),
            steps: vec![(
                "rollback".into(),
                vec![vec!["pacman".into(), "-Syyuu".into()]],
            )],
        }
    }

    #[test]
    fn the_key_follows_every_part_of_the_recipe() {
        let a = recipe("2026/03/30");
        assert_eq!(a.key(), recipe("2026/03/30").key());
        assert_ne!(a.key(), recipe("2026/04/15").key());
        let mut b = a.clone();
        b.steps[0].1[0].push("--noconfirm".into());
        assert_ne!(a.key(), b.key());
        let mut c = a.clone();
        c.base_sha256 = "cd".repeat(32);
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key().len(), 64);
    }

    #[test]
    fn publish_then_lookup_and_an_unpublished_staging_leaves_nothing() {
        let store = tempfile::tempdir().unwrap();
        let cache = PreparedEnvs::new(store.path());
        let r = recipe("2026/03/30");
        assert!(cache.lookup(&r).unwrap().is_none());
        {
            let s = cache.stage().unwrap();
            std::fs::create_dir_all(s.root().join("etc")).unwrap();
        }
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);

        let s = cache.stage().unwrap();
        std::fs::create_dir_all(s.root().join("etc")).unwrap();
        let lock = EnvLock::parse("schema = 1\n", "test").unwrap();
        let p = cache.publish(s, &r, &lock).unwrap();
        assert_eq!(p.key, r.key());
        let hit = cache.lookup(&r).unwrap().expect("published");
        assert!(hit.root().join("etc").is_dir());
        assert_eq!(hit.env_lock().unwrap(), lock);
        assert_eq!(hit.meta().unwrap().recipe, r);
        assert_eq!(cache.list().unwrap().len(), 1);
        assert_eq!(cache.clear().unwrap(), 1);
        assert!(cache.lookup(&r).unwrap().is_none());
    }

    #[test]
    fn gc_removes_only_abandoned_stagings() {
        let store = tempfile::tempdir().unwrap();
        let cache = PreparedEnvs::new(store.path());
        let live = cache.stage().unwrap();
        let abandoned = cache.dir().join(".staging-dead");
        std::fs::create_dir_all(abandoned.join("root")).unwrap();
        std::fs::write(abandoned.join(".lock"), "").unwrap();
        assert_eq!(cache.remove_staging().unwrap(), 1);
        assert!(!abandoned.exists());
        assert!(live.path().exists(), "a staging in use was removed");
        drop(live);
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_entry_whose_meta_disagrees_with_its_key_is_refused() {
        let store = tempfile::tempdir().unwrap();
        let cache = PreparedEnvs::new(store.path());
        let r = recipe("2026/03/30");
        let s = cache.stage().unwrap();
        std::fs::create_dir_all(s.root()).unwrap();
        let lock = EnvLock::parse("schema = 1\n", "test").unwrap();
        let p = cache.publish(s, &r, &lock).unwrap();
        let mut other = r.clone();
        other.day = Some("2026/04/15".into());
        let meta = EnvMeta {
            recipe: other,
            prepared_at: 0,
        };
        std::fs::write(p.dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        let e = cache.lookup(&r).unwrap_err();
        assert!(e.to_string().contains("another environment"), "{e}");
    }
}
