//! `reprobox plan PROFILE BUILD_VERSION [--json]`

use crate::error::{Error, Result};
use crate::plan::{BuildVersion, Plan, Profile, parse_location_override};

/// PROFILE BUILD_VERSION [--location NAME=URL]…: what every command about one release takes.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// A profile name (see `reprobox profiles`) or a path to a profile TOML file.
    pub profile: String,
    /// The release, YYYYMMDD.N.JOB (for example 20260518.0.532496).
    pub build_version: String,
    /// Override a profile location, NAME=URL (repeatable); REPROBOX_LOCATION_<NAME> works too.
    #[arg(short = 'L', long = "location", value_name = "NAME=URL")]
    pub locations: Vec<String>,
}

impl Target {
    /// Load the profile and compute the plan.
    pub fn plan(&self) -> Result<Plan> {
        make_plan(&self.profile, &self.build_version, &self.locations)
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn make_plan(profile: &str, version: &str, locations: &[String]) -> Result<Plan> {
    let version = BuildVersion::parse(version)?;
    let overrides = locations
        .iter()
        .map(|s| parse_location_override(s))
        .collect::<Result<Vec<_>>>()?;
    let loaded = Profile::load(profile)?;
    Plan::new(&loaded, &version, &overrides)
}

pub fn execute(a: Args) -> Result<i32> {
    let plan = a.target.plan()?;
    if a.json {
        let s = serde_json::to_string_pretty(&plan)
            .map_err(|e| Error::Environment(format!("serialising the plan: {e}")))?;
        println!("{s}");
    } else {
        print!("{}", plan.render());
    }
    Ok(0)
}
