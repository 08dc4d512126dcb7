//! Upstream sources from git, pinned by commit.
//!
//! A bare cache per remote lives in the store (`git/<sha256(name)[..16]>.git`, the name
//! being the remote's canonical URL, so one cache serves a remote wherever it is fetched
//! from: [`GitSource::named`]); online runs
//! fetch into it, offline runs use it as it is. Files are read from it with `git show` and
//! a source tree is exported with `git archive` into a fresh directory, so the cache is
//! never checked out and never dirtied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, IoContext, Result};

pub struct GitSource {
    url: String,
    cache: PathBuf,
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("--git-dir").arg(dir);
    // Never prompt, never read the user's configuration.
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

/// Runs a git command; a failure is an environment error naming `what` and git's stderr.
pub(crate) fn run(mut c: Command, what: &str) -> Result<Vec<u8>> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Environment(format!("{what}: cannot run git: {e} (install git)")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Environment(format!("{what}: {}", err.trim())));
    }
    Ok(out.stdout)
}

impl GitSource {
    /// The cache of the remote named `name` (its canonical URL, e.g.
    /// `https://gitlab.archlinux.org/archlinux/archlinux-docker.git`), fetched from `url`
    /// (a location standing for it): an offline run finds it whatever the location.
    pub fn named(store_root: &Path, url: &str, name: &str) -> GitSource {
        let h = crate::digest::sha256_hex(name.as_bytes());
        GitSource {
            url: url.to_string(),
            cache: store_root.join("git").join(format!("{}.git", &h[..16])),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetch every branch and tag from the remote into the cache (online mode).
    pub fn fetch(&self) -> Result<()> {
        let fresh = !self.cache.join("HEAD").is_file();
        if fresh {
            std::fs::create_dir_all(&self.cache).ctx("create", &self.cache)?;
            let mut c = git(&self.cache);
            c.args(["init", "--bare", "-q"]);
            run(c, &format!("git init {}", self.cache.display()))?;
        }
        let mut c = git(&self.cache);
        // A fetch may start git's automatic maintenance (gc); detached, it repacks and
        // prunes loose objects while the checkout clones the cache, which then fails on a
        // file that vanished (seen by the mutation suite): run it before fetch returns.
        c.args([
            "-c",
            "gc.autoDetach=false",
            "-c",
            "maintenance.autoDetach=false",
        ]);
        c.args([
            "fetch",
            "-q",
            "--force",
            "--tags",
            &self.url,
            "+refs/heads/*:refs/heads/*",
        ]);
        let fetched = run(c, &format!("git fetch {}", self.url));
        if let Err(e) = fetched {
            // A cache that never received anything must not look like one to an offline run.
            if fresh {
                let _ = std::fs::remove_dir_all(&self.cache);
            }
            return Err(match e {
                Error::Environment(m) => Error::network(&self.url, m),
                e => e,
            });
        }
        Ok(())
    }

    /// Whether the cache exists (offline mode needs it).
    pub fn is_cached(&self) -> bool {
        self.cache.join("HEAD").is_file()
    }

    /// The commit a ref (tag, branch, sha) names.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        let mut c = git(&self.cache);
        c.args(["rev-parse", "-q", "--verify", &format!("{rev}^{{commit}}")]);
        let out = run(c, &format!("{}: {rev}", self.url)).map_err(|_| {
            Error::bad_input(
                format!("{rev} in {}", self.url),
                "no such tag or commit in the upstream repository",
            )
        })?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// A file's bytes at a revision.
    pub fn show(&self, rev: &str, path: &str) -> Result<Vec<u8>> {
        let mut c = git(&self.cache);
        c.args(["show", &format!("{rev}:{path}")]);
        run(c, &format!("{}: {path} at {rev}", self.url)).map_err(|_| {
            Error::bad_input(
                format!("{path} at {rev} in {}", self.url),
                "the release holds no such file",
            )
        })
    }

    /// Check `commit` out into `dest` (must not exist) as a git working tree of its own,
    /// cloned from the cache: build scripts may ask git about their checkout (upstream's
    /// make-dockerfile does), and the cache itself is never checked out or written.
    pub fn checkout(&self, commit: &str, dest: &Path) -> Result<()> {
        let mut c = Command::new("git");
        c.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["clone", "-q", "--no-checkout", "--no-hardlinks"])
            .arg(&self.cache)
            .arg(dest);
        run(
            c,
            &format!("git clone {} into {}", self.cache.display(), dest.display()),
        )?;
        let mut c = Command::new("git");
        c.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .arg("-C")
            .arg(dest)
            .args(["checkout", "-q", "--detach", commit]);
        run(c, &format!("git checkout {commit} in {}", dest.display()))?;
        Ok(())
    }
}
