//! `reprobox mirror`: serve the archive layout from the store on a loopback address until
//! SIGINT/SIGTERM, then write the inputs lock.

use std::path::PathBuf;

use crate::cmd::store::StoreArg;
use crate::error::{Error, Result};
use crate::inputs::archive::{self, DEFAULT_ARCHIVE};
use crate::inputs::mirror::{Mirror, MirrorConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArg,
    /// The upstream archive root misses are fetched from.
    #[arg(long, value_name = "URL", default_value = DEFAULT_ARCHIVE)]
    pub archive: String,
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Serve only what the store holds; a miss is a 404.
    #[arg(long)]
    pub offline: bool,
    /// The archive root `--archive` stands for (e.g. https://archive.archlinux.org when
    /// `--archive` is a mirror of it): the store's origin index, offline answers and the
    /// lock name what is served under it, as a reproduction's mirror does [default:
    /// `--archive` itself].
    #[arg(long, value_name = "URL")]
    pub canonical: Option<String>,
    /// Where to write the inputs lock when stopped [default: print it to stdout].
    #[arg(long, value_name = "FILE")]
    pub lock_out: Option<PathBuf>,
}

pub fn execute(a: Args) -> Result<i32> {
    let upstream = archive::parse_base(&a.archive)?;
    let canonical = a
        .canonical
        .as_deref()
        .map(archive::parse_base)
        .transpose()?;
    let addr: std::net::SocketAddr = a.listen.parse().map_err(|_| {
        Error::bad_input(
            format!("--listen {:?}", a.listen),
            "expected ADDRESS:PORT, e.g. 127.0.0.1:8080",
        )
    })?;
    let store = a.store.open()?;
    // Block the stop signals in every thread (threads inherit the mask) and wait for them here.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::io("listen on", a.listen.clone(), e))?;
    let handle = Mirror::serve(
        listener,
        MirrorConfig {
            store,
            upstream: upstream.clone(),
            canonical,
            offline: a.offline,
        },
    )?;
    println!(
        "listening on http://{} (upstream {upstream}{})",
        handle.local_addr(),
        if a.offline { ", offline" } else { "" }
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut sig: libc::c_int = 0;
    // SAFETY: waits for one of the blocked signals.
    unsafe { libc::sigwait(&set, &mut sig) };
    let lock = handle.stop();
    match &a.lock_out {
        Some(p) => {
            lock.write(p)?;
            eprintln!(
                "wrote inputs lock {} ({} entries, {} misses)",
                p.display(),
                lock.entries.len(),
                lock.misses().count()
            );
        }
        None => print!("{lock}"),
    }
    Ok(0)
}
