//! Stage 1, the release: tag → release file → source revision and expected hashes.

use crate::error::{Error, Result};
use crate::inputs::git::GitSource;
use crate::plan::Plan;
use crate::plan::release::Release;

/// The published release as the tag holds it.
#[derive(Debug, Clone)]
pub struct ReleaseAt {
    /// The commit the tag points to.
    pub tag_commit: String,
    pub release: Release,
    /// The release file's text.
    pub text: String,
}

/// Fetch the upstream repository into the store (online) or check it is there (offline),
/// then read and check the release file at the plan's tag.
/// The git cache of `plan`'s source in `store`, named by the remote's canonical URL
/// (`Plan::canonical_url`): fetched from the `git` location, found offline whatever it is.
pub fn git_source(plan: &Plan, store: &crate::inputs::store::Store) -> GitSource {
    GitSource::named(
        store.root(),
        &plan.source.git,
        &plan.canonical_url(&plan.source.git),
    )
}

pub fn fetch(plan: &Plan, git: &GitSource, offline: bool) -> Result<ReleaseAt> {
    if offline {
        if !git.is_cached() {
            return Err(Error::network(
                &plan.source.git,
                "offline and the store holds no copy of the repository",
            ));
        }
    } else {
        git.fetch()?;
    }
    let tag_commit = git.resolve(&plan.source.tag)?;
    let text = git.show(&tag_commit, &plan.source.release_file)?;
    let release = parse(plan, text.clone())?;
    Ok(ReleaseAt {
        tag_commit,
        release,
        text: String::from_utf8(text).unwrap_or_default(),
    })
}

/// The release file's bytes as a [`Release`] that agrees with the plan.
fn parse(plan: &Plan, bytes: Vec<u8>) -> Result<Release> {
    let what = format!("{} at {}", plan.source.release_file, plan.source.tag);
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::bad_input(what.clone(), "not UTF-8 text; expected a text file"))?;
    let release = Release::parse(&text, &what)?;
    let disagreements = release.check_against(&plan.version);
    if !disagreements.is_empty() {
        let d: Vec<String> = disagreements
            .iter()
            .map(|d| format!("{} is {:?}, expected {:?}", d.field, d.release, d.plan))
            .collect();
        return Err(Error::bad_input(
            format!("release {what}"),
            format!("disagrees with the plan: {}", d.join("; ")),
        ));
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_file_that_is_not_text_is_bad_input_naming_the_file_and_tag() {
        let e = parse(&super::super::test_plan(), vec![0xff, 0xfe]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("Dockerfile.repro") || msg.contains("at v"),
            "{msg}"
        );
        assert!(msg.contains("not UTF-8"), "{msg}");
    }
}
