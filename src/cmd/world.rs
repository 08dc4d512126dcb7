//! `reprobox world build DIR` and `reprobox world serve DIR`: the test world made from the
//! real upstream (see docs/world.md).

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::Result;
use crate::world;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Build (or complete) the test world in DIR from the real upstream: the archive and its
    /// build environments, Docker Hub's alpine and the Alpine CDN, gitlab.archlinux.org with
    /// archlinux-docker's repository, and one release made by upstream's own CI jobs. Needs
    /// root.
    Build {
        /// Directory of the world (created if missing; existing complete parts are reused).
        dir: PathBuf,
        /// archlinux-docker's git bundle (or repository): the world's gitlab.archlinux.org
        /// repository [default: archlinux-docker.bundle in $REPROBOX_UPSTREAM_DIR, else in
        /// ../shared/upstream beside the current directory or the project].
        #[arg(long, value_name = "BUNDLE")]
        upstream: Option<PathBuf>,
        /// devtools' git bundle, for the world's devtools packages [default: devtools.bundle
        /// next to the upstream bundle].
        #[arg(long, value_name = "BUNDLE")]
        devtools: Option<PathBuf>,
    },
    /// Serve DIR's archive, gitlab, Alpine CDN and registry on 127.0.0.1 until interrupted;
    /// prints the location overrides for the archlinux-repro profile.
    Serve {
        dir: PathBuf,
        /// Port of the archive (also serving /gitlab and /alpine); 0 picks a free one.
        #[arg(long, default_value_t = crate::inputs::mirror::MIRROR_PORT)]
        archive_port: u16,
        /// Port of the OCI registry; 0 picks a free one.
        #[arg(long, default_value_t = 7879)]
        registry_port: u16,
        /// The world's today (YYYY-MM-DD): its package registry answers 404 for a release
        /// more than 60 days older, as upstream's cleanup does [default: the archive's last
        /// day].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_today)]
        today: Option<jiff::civil::Date>,
    },
}

pub fn execute(args: Args) -> Result<i32> {
    match args.action {
        Action::Build {
            dir,
            upstream,
            devtools,
        } => {
            let bundle = match upstream {
                Some(b) => b,
                None => world::default_bundle()?,
            };
            let devtools = devtools.unwrap_or_else(|| world::devtools_beside(&bundle));
            let m = world::build(&dir, &bundle, &devtools)?;
            let r = &m.release;
            println!(
                "world {} built in {} from {}",
                r.version,
                dir.display(),
                bundle.display()
            );
            println!("  rootfs sha256  {}", m.rootfs.sha256);
            println!(
                "  image          {}:{} config {} manifest {}",
                m.image.repository, m.image.tag, m.image.config_digest, m.image.manifest_digest
            );
            println!(
                "  source         {} (tag {} at {})",
                r.source_revision, m.tag, m.tag_commit
            );
            if let Some(n) = &m.next_day {
                println!(
                    "  next-day       {} (tag {}): rootfs from repos/{}, sha256 {}",
                    n.release.version, n.tag, n.repos_day, n.rootfs.sha256
                );
            }
            Ok(0)
        }
        Action::Serve {
            dir,
            archive_port,
            registry_port,
            today,
        } => {
            // Block SIGINT/SIGTERM before any server thread exists, so every thread inherits
            // the mask and the signal reaches sigwait below (servers then stop via Drop).
            let set = block_interrupts()?;
            let servers = world::serve_at(
                &dir,
                world::Ports {
                    archive: archive_port,
                    registry: registry_port,
                },
                today,
            )?;
            let m = world::load(&dir)?;
            println!(
                "# test world {} served on loopback; stop with Ctrl-C",
                dir.display()
            );
            print!("{}", servers.exports());
            println!(
                "# or: reprobox reproduce archlinux-repro {} {}",
                m.release.version,
                servers.location_flags()
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            wait_for(set);
            drop(servers);
            Ok(130)
        }
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it spawns later).
fn block_interrupts() -> Result<libc::sigset_t> {
    // SAFETY: plain libc signal-set calls on a local, initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(crate::error::Error::Environment(
                "world serve: cannot block SIGINT".into(),
            ));
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals.
fn wait_for(set: libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is an initialised sigset_t; `sig` is a valid out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
}

/// `--today YYYY-MM-DD`.
fn parse_today(s: &str) -> std::result::Result<jiff::civil::Date, String> {
    jiff::civil::Date::strptime("%Y-%m-%d", s)
        .map_err(|e| format!("{s:?} is not a day YYYY-MM-DD: {e}"))
}
