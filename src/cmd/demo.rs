//! `reprobox demo`: build (or reuse) the test world made from the real upstream, serve it on
//! loopback, reproduce its release with the real profile `archlinux-repro` (filling the
//! store), stop every server and reproduce it again offline from the store alone.

use std::path::PathBuf;

use crate::cmd::store::StoreArg;
use crate::error::{IoContext, Result};
use crate::pipeline::{self, Options};
use crate::plan::{BuildVersion, Plan, Profile};
use crate::progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArg,
    /// The world's directory [default: STORE/world].
    #[arg(long, value_name = "DIR")]
    pub world: Option<PathBuf>,
    /// archlinux-docker's git bundle the world is made from [default: archlinux-docker.bundle
    /// in $REPROBOX_UPSTREAM_DIR, else in ../shared/upstream beside the current directory or
    /// the project].
    #[arg(long, value_name = "BUNDLE")]
    pub upstream: Option<PathBuf>,
    /// devtools' git bundle [default: devtools.bundle next to the upstream bundle].
    #[arg(long, value_name = "BUNDLE")]
    pub devtools: Option<PathBuf>,
    /// Output directory [default: reprobox-out/demo].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn execute(a: Args) -> Result<i32> {
    // Root, the sandbox's essentials and the world's host tools, before anything is built
    // (`reprobox doctor`; a missing tool is named with the apt-get line that installs it).
    crate::doctor::preflight(crate::doctor::Needs::DEMO)?;
    let bundle = match a.upstream {
        Some(b) => b,
        None => crate::world::default_bundle()?,
    };
    let devtools = a
        .devtools
        .unwrap_or_else(|| crate::world::devtools_beside(&bundle));
    // Refused before the store or the world is touched.
    for (what, p) in [("upstream bundle", &bundle), ("devtools bundle", &devtools)] {
        if !p.exists() {
            return Err(crate::error::Error::bad_input(
                format!("{what} {}", p.display()),
                "an existing git bundle or repository (--upstream BUNDLE, --devtools BUNDLE)",
            ));
        }
    }
    crate::world::gitlab::check_bundle(&bundle)?;
    let store = a.store.open()?;
    let dir = a
        .world
        .clone()
        .unwrap_or_else(|| store.root().join("world"));
    let out = a.out.unwrap_or_else(|| PathBuf::from("reprobox-out/demo"));
    progress::line(&format!(
        "test world in {} (built once, then reused)",
        dir.display()
    ));
    let (manifest, servers) = {
        // Quiet: what building the world prints goes to OUT/world.log.
        let _to_log = if progress::quiet() {
            crate::error::dir_or_absent(&out, "output directory")?;
            std::fs::create_dir_all(&out).ctx("create", &out)?;
            Some(progress::Redirect::to_file(&out.join("world.log"))?)
        } else {
            None
        };
        let manifest = crate::world::build(&dir, &bundle, &devtools)?;
        let servers = crate::world::serve(
            &dir,
            crate::world::Ports {
                archive: 0,
                registry: 0,
            },
        )?;
        (manifest, servers)
    };
    let overrides: Vec<(String, String)> = servers
        .locations()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let loaded = Profile::load("archlinux-repro")?;
    let version = BuildVersion::parse(&manifest.release.version)?;
    let plan = Plan::with_overrides(&loaded, &version, &[], &overrides)?;
    // First pass against the loopback servers: the real profile, every location pointed at
    // the world; fills the store with every input (nothing leaves the machine).
    progress::line("pass 1 of 2: warming the store from the world's loopback servers");
    let warm = Options {
        offline: false,
        rollback: true,
        env_day: None,
        out: out.join("warm"),
        progress: progress::mode(),
        timeout: None,
        keep_work: false,
        use_prepared_envs: true,
        backend: Default::default(),
        image_from: Default::default(),
        packages_from: Default::default(),
    };
    pipeline::reproduce(&plan, store.clone(), &warm)?.or_stopped()?;
    drop(servers);
    // Second pass: every server stopped, offline, from the store alone.
    progress::line("pass 2 of 2: every server stopped; reproducing offline from the store");
    let opts = Options {
        offline: true,
        out: out.clone(),
        ..warm
    };
    let outcome = pipeline::reproduce(&plan, store, &opts)?.or_stopped()?;
    if progress::quiet() {
        println!("{}", outcome.report.verdict_line());
    } else {
        print!("{}", outcome.report.summary());
        println!("\nreport: {}", out.join("report.json").display());
    }
    Ok(outcome.exit_code)
}
