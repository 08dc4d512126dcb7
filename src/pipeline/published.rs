//! A release's published package set: the lock of its published rootfs
//! (`envlock::rootfs`), read from the tarball the release's Dockerfile names (fetched into
//! the store, checked against the release's sha256), or, that tarball being gone, from the
//! published image's layer that `COPY --from=verify /rootfs/ /` made of it (checked against
//! the config's diffID), as the rootfs check does (`checks::rootfs_layer`).
//!
//! Used by `reprobox drift --release V1 --release V2` and by the rootfs check, which names
//! the packages a differing rebuild holds in other versions.

use crate::envlock::EnvLock;
use crate::envlock::rootfs::lock_from_tarball;
use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::Fetcher;
use crate::inputs::lock::InputsLock;
use crate::inputs::store::Store;
use crate::plan::Plan;

/// The published package set and where it was read.
#[derive(Debug, Clone)]
pub struct PublishedSet {
    pub lock: EnvLock,
    /// The tarball's URL, or the image layer it was read from.
    pub source: String,
}

/// The published package set of `plan`'s release: the release file at its tag gives the
/// rootfs URL and sha256 (`reprobox drift --release`).
pub fn published_set(plan: &Plan, store: &Store, offline: bool) -> Result<PublishedSet> {
    let fetcher = Fetcher::new(store.clone(), offline).with_names(plan.location_names());
    let git = super::release::git_source(plan, store);
    let release = super::release::fetch(plan, &git, offline)?.release;
    published_set_of(plan, &release, &fetcher, &mut InputsLock::default())
}

/// The published package set of `release`, every request recorded in `inputs`.
pub fn published_set_of(
    plan: &Plan,
    release: &crate::plan::release::Release,
    fetcher: &Fetcher,
    inputs: &mut InputsLock,
) -> Result<PublishedSet> {
    let url = plan.expected.rootfs_url.clone();
    match fetcher.fetch_recorded(inputs, &url, Some(&release.rootfs_sha256)) {
        Ok(blob) => Ok(PublishedSet {
            lock: lock_from_tarball(&blob.path)?,
            source: format!("{url} (sha256 {})", release.rootfs_sha256),
        }),
        // A tampered tarball is never read in place of the published one.
        Err(e @ Error::Tampered { .. }) => Err(e),
        Err(gone) => from_image_layer(plan, fetcher, inputs).map_err(|e| {
            Error::network(
                &url,
                format!(
                    "the published rootfs could not be fetched ({gone}) and the published image's rootfs layer could not be read either ({e})"
                ),
            )
        }),
    }
}

impl super::Run<'_> {
    /// `--packages-from published`: the release's published package set, the snapshot day
    /// made from it and given to the egress's archive rules (make-rootfs.sh's pacman reaches
    /// the archive only through them); the report's notes say so and list the packages that
    /// differ from the snapshot day.
    pub fn serve_published_set(
        &mut self,
        ctx: &mut super::steps::JobContext,
        release: &crate::plan::release::Release,
    ) -> Result<()> {
        let plan = self.plan;
        self.phase("reading the published package set from the published rootfs");
        let set = published_set_of(plan, release, self.fetcher, &mut self.ledger.inputs)?;
        self.phase(&format!(
            "making the snapshot day {} from the {} published packages",
            plan.snapshot,
            set.lock.packages.len()
        ));
        let (overlay, pinned) = day_overlay(
            self.fetcher,
            &mut self.ledger.inputs,
            super::archive_url(plan),
            &plan.snapshot,
            &set.lock,
        )?;
        let taken = match ctx
            .services
            .egress
            .as_mut()
            .and_then(std::sync::Arc::get_mut)
        {
            Some(eg) => eg.set_archive_overlay(std::sync::Arc::new(overlay)),
            None => 0,
        };
        if taken == 0 {
            return Err(Error::bad_input(
                "--packages-from published",
                format!(
                    "profile {} maps no archive host through an [[egress]] rule with policy \"archive\"; expected one (the published set is served to the build through it)",
                    plan.profile
                ),
            ));
        }
        let differ_from_snapshot: Vec<PinnedPackage> = pinned
            .iter()
            .filter(|p| p.differs_from_snapshot())
            .cloned()
            .collect();
        let differ: Vec<String> = differ_from_snapshot
            .iter()
            .map(|p| {
                let from = p.snapshot_version.as_deref().unwrap_or("(absent)");
                format!("{} {from} → {} ({} {})", p.name, p.version, p.day, p.repo)
            })
            .collect();
        self.ledger.notes.push(format!(
            "packages from the published rootfs (--packages-from published): make-rootfs.sh's pacman was served a {} made from exactly the {} packages of {}, each file from the archive's packages/ tree checked against the sha256 of the first day's database listing it; {}",
            plan.snapshot,
            pinned.len(),
            set.source,
            if differ.is_empty() {
                "every one is the snapshot day's version".to_string()
            } else {
                format!(
                    "{} differ from the snapshot day (snapshot → published): {}",
                    differ.len(),
                    differ.join(", ")
                )
            }
        ));
        self.ledger.published_packages = Some(PublishedPackages {
            source: set.source.clone(),
            day: plan.snapshot.clone(),
            packages: pinned.len(),
            differ_from_snapshot,
        });
        Ok(())
    }
}

/// The lock of the published image's rootfs layer (the tarball being gone).
fn from_image_layer(
    plan: &Plan,
    fetcher: &Fetcher,
    inputs: &mut InputsLock,
) -> Result<PublishedSet> {
    let super::checks::PublishedLayer {
        published,
        pick,
        blob,
        ..
    } = super::checks::published_rootfs_layer(plan, fetcher, inputs)?;
    Ok(PublishedSet {
        lock: lock_from_tarball(&blob.path)?,
        source: format!(
            "published image {}, layer {} ({}), the tarball being gone",
            published.reference,
            pick.index + 1,
            pick.label()
        ),
    })
}

/// The packages two rootfs tarballs hold in other versions (published → rebuilt), as one
/// note for the report: `None` when both hold the same set, or when either cannot be read
/// (then the note says why).
pub fn package_difference_note(
    published: &std::path::Path,
    published_what: &str,
    rebuilt: &std::path::Path,
) -> Option<String> {
    let (a, b) = match (lock_from_tarball(published), lock_from_tarball(rebuilt)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Some(format!(
                "the two rootfs' package sets could not be compared: {e}"
            ));
        }
    };
    let d = crate::envlock::drift(&a, &b);
    (!d.is_empty()).then(|| {
        format!(
            "the rebuilt rootfs holds other packages than the published one ({published_what} → rebuilt; each read from its pacman database): {}",
            d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The repositories a day database is made for (make-rootfs.sh's pacman.conf is devtools'
/// extra.conf or multilib.conf); those the snapshot day lacks are left out.
pub const REPOS: [&str; 3] = ["core", "extra", "multilib"];
/// How many days after the snapshot day a published version is looked for: the live
/// mirrors a release was built from are the build day's (the snapshot day plus one), or a
/// mirror a little ahead.
pub const SEARCH_DAYS: u32 = 7;

/// The report's record of `--packages-from published`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedPackages {
    /// Where the set was read (the published tarball's URL, or the image layer).
    pub source: String,
    /// The archive day answered from the set (the snapshot day).
    pub day: String,
    /// How many packages the set holds.
    pub packages: usize,
    /// The packages whose version differs from (or which are absent on) the snapshot day.
    pub differ_from_snapshot: Vec<PinnedPackage>,
}

/// One package of the published set, where the archive has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedPackage {
    pub name: String,
    pub version: String,
    /// The repository and the first day (from the snapshot day on) whose database lists it.
    pub repo: String,
    pub day: String,
    pub file: String,
    /// `%SHA256SUM%` of that database; the file from `packages/` was checked against it.
    pub sha256: String,
    /// The snapshot day's version, when it differs (`None`: the same, or absent: see
    /// `on_snapshot_day`).
    pub snapshot_version: Option<String>,
    /// Whether the snapshot day's databases list the package at all.
    pub on_snapshot_day: bool,
}

impl PinnedPackage {
    /// Whether the snapshot day has this package in another version, or not at all.
    pub fn differs_from_snapshot(&self) -> bool {
        !self.on_snapshot_day || self.snapshot_version.is_some()
    }
}

/// One entry of a repository database: its directory name and `desc` text.
#[derive(Debug, Clone)]
struct RawEntry {
    dir: String,
    desc: String,
    name: String,
    version: String,
    filename: String,
    sha256: Option<String>,
}

/// `%KEY%` → first value line of a `desc` text.
fn desc_field(desc: &str, key: &str) -> Option<String> {
    let mut lines = desc.lines();
    while let Some(l) = lines.next() {
        if l == key {
            return lines.next().map(str::to_string);
        }
    }
    None
}

/// Every `<dir>/desc` of a repository database (any compression); `what` names it.
fn raw_entries(bytes: &[u8], what: &str) -> Result<Vec<RawEntry>> {
    let bad = |e: std::io::Error| Error::network(what, format!("not a repository database: {e}"));
    let reader = crate::inputs::unpack::decompressed_bytes(bytes, what)?;
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let path = e.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(dir) = path.strip_suffix("/desc") else {
            continue;
        };
        let mut desc = String::new();
        std::io::Read::read_to_string(&mut e, &mut desc).map_err(bad)?;
        let field = |k: &str| {
            desc_field(&desc, k).ok_or_else(|| Error::network(what, format!("{path} has no {k}")))
        };
        out.push(RawEntry {
            dir: dir.to_string(),
            name: field("%NAME%")?,
            version: field("%VERSION%")?,
            filename: field("%FILENAME%")?,
            sha256: desc_field(&desc, "%SHA256SUM%"),
            desc,
        });
    }
    Ok(out)
}

/// A repository database (plain tar, which pacman reads like the compressed ones) holding
/// exactly `entries`, in name order, with fixed metadata.
fn make_db(entries: &[&RawEntry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut sorted: Vec<&&RawEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.dir.cmp(&b.dir));
    let io = |e: std::io::Error| Error::Environment(format!("making a day database: {e}"));
    for e in sorted {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("{}/", e.dir), std::io::empty())
            .map_err(io)?;
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(e.desc.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("{}/desc", e.dir), e.desc.as_bytes())
            .map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// `YYYY/MM/DD` plus `n` days.
fn day_plus(day: &str, n: u32) -> Result<String> {
    let mut d: jiff::civil::Date = day
        .replace('/', "-")
        .parse()
        .map_err(|e| Error::bad_input(format!("day {day}"), format!("not YYYY/MM/DD: {e}")))?;
    for _ in 0..n {
        d = d
            .tomorrow()
            .map_err(|e| Error::bad_input(format!("day {day}"), e.to_string()))?;
    }
    Ok(d.strftime("%Y/%m/%d").to_string())
}

/// The snapshot day `day` of the archive at `archive` answered from `lock`'s packages: for
/// each, the first day from `day` on whose database lists that version gives its `desc`
/// (dependencies, `%PGPSIG%`, `%SHA256SUM%`) and repository; its file is fetched from
/// `packages/<first letter>/<name>/` and checked against that `%SHA256SUM%` (recorded in
/// `inputs`); the day's databases are made from exactly those entries. A package no day
/// lists is an error naming it.
pub fn day_overlay(
    fetcher: &Fetcher,
    inputs: &mut InputsLock,
    archive: &str,
    day: &str,
    lock: &EnvLock,
) -> Result<(crate::inputs::mirror::ArchiveOverlay, Vec<PinnedPackage>)> {
    use crate::inputs::mirror::{ArchiveOverlay, OverlayFile};
    use std::collections::{BTreeSet, HashMap};
    let archive = archive.trim_end_matches('/');
    let mut want: BTreeSet<(String, String)> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    // (name, version) → (repo, day, entry)
    let mut found: HashMap<(String, String), (String, String, RawEntry)> = HashMap::new();
    let mut snapshot_versions: HashMap<String, String> = HashMap::new();
    let mut snapshot_repos = Vec::new();
    for n in 0..=SEARCH_DAYS {
        if want.is_empty() {
            break;
        }
        let d = day_plus(day, n)?;
        for repo in REPOS {
            let url = format!("{archive}/repos/{d}/{repo}/os/x86_64/{repo}.db");
            // A day or repository the archive does not have is skipped (not recorded).
            let Some((blob, outcome)) = fetcher.try_fetch(&url, None, true)? else {
                continue;
            };
            inputs.record(
                match outcome {
                    crate::inputs::fetch::Outcome::Hit => crate::inputs::lock::Status::Hit,
                    crate::inputs::fetch::Outcome::Fetched => crate::inputs::lock::Status::Fetched,
                },
                &url,
                Some((&blob.sha256, blob.size)),
            );
            let bytes = std::fs::read(&blob.path).ctx("read", &blob.path)?;
            for e in raw_entries(&bytes, &url)? {
                if n == 0 {
                    snapshot_versions.insert(e.name.clone(), e.version.clone());
                }
                if want.remove(&(e.name.clone(), e.version.clone())) {
                    found.insert(
                        (e.name.clone(), e.version.clone()),
                        (repo.to_string(), d.clone(), e),
                    );
                }
            }
            if n == 0 {
                snapshot_repos.push(repo);
            }
        }
    }
    if !want.is_empty() {
        let missing: Vec<String> = want.iter().map(|(n, v)| format!("{n} {v}")).collect();
        return Err(Error::network(
            format!("{archive}/repos/{day}"),
            format!(
                "the published package set has versions no archive day from {day} to {} lists: {}",
                day_plus(day, SEARCH_DAYS)?,
                missing.join(", ")
            ),
        ));
    }
    if snapshot_repos.is_empty() {
        return Err(Error::network(
            format!("{archive}/repos/{day}"),
            "the archive has no repository database for the snapshot day",
        ));
    }
    let prefix = format!("/repos/{day}/");
    let mut files = HashMap::new();
    let mut pinned = Vec::new();
    for p in &lock.packages {
        let (repo, d, e) = &found[&(p.name.clone(), p.version.clone())];
        let sha = e.sha256.clone().ok_or_else(|| {
            Error::network(
                format!("{archive}/repos/{d}/{repo}/os/x86_64/{repo}.db"),
                format!("{} has no %SHA256SUM% to check its file against", e.dir),
            )
        })?;
        let first = p.name.chars().next().expect("package names are not empty");
        let src = format!("/packages/{first}/{}/{}", p.name, e.filename);
        let blob = fetcher.fetch_recorded(inputs, &format!("{archive}{src}"), Some(&sha))?;
        let at = format!("{prefix}{repo}/os/x86_64/{}", e.filename);
        files.insert(at.clone(), OverlayFile::Blob(blob));
        files.insert(format!("{at}.sig"), OverlayFile::Path(format!("{src}.sig")));
        let sv = snapshot_versions.get(&p.name);
        pinned.push(PinnedPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            repo: repo.clone(),
            day: d.clone(),
            file: e.filename.clone(),
            sha256: sha,
            snapshot_version: sv.filter(|v| **v != p.version).cloned(),
            on_snapshot_day: sv.is_some(),
        });
    }
    let store = fetcher.store();
    for repo in snapshot_repos {
        let entries: Vec<&RawEntry> = found
            .values()
            .filter(|(r, _, _)| r == repo)
            .map(|(_, _, e)| e)
            .collect();
        let db = make_db(&entries)?;
        let origin = format!("reprobox:published-set{prefix}{repo}/os/x86_64/{repo}.db");
        let blob = store.put_reader(db.as_slice(), None, &origin)?;
        files.insert(
            format!("{prefix}{repo}/os/x86_64/{repo}.db"),
            OverlayFile::Blob(blob),
        );
    }
    Ok((ArchiveOverlay { prefix, files }, pinned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, version: &str) -> RawEntry {
        let file = format!("{name}-{version}-x86_64.pkg.tar.zst");
        RawEntry {
            dir: format!("{name}-{version}"),
            desc: format!(
                "%FILENAME%\n{file}\n\n%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%SHA256SUM%\n{}\n\n",
                "ab".repeat(32)
            ),
            name: name.into(),
            version: version.into(),
            filename: file,
            sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn a_made_database_reads_back_as_exactly_its_entries() {
        let (a, b) = (entry("systemd", "258.2-1"), entry("base", "3-2"));
        let db = make_db(&[&a, &b]).unwrap();
        assert_eq!(db, make_db(&[&b, &a]).unwrap(), "deterministic");
        let back = raw_entries(&db, "t.db").unwrap();
        let names: Vec<(&str, &str, &str)> = back
            .iter()
            .map(|e| (e.name.as_str(), e.version.as_str(), e.filename.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("base", "3-2", "base-3-2-x86_64.pkg.tar.zst"),
                ("systemd", "258.2-1", "systemd-258.2-1-x86_64.pkg.tar.zst")
            ]
        );
        assert_eq!(back[1].desc, a.desc);
        // The archive's own parser reads it too.
        let parsed = crate::inputs::archive::parse_repo_db(&db, "t.db").unwrap();
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.by_name("systemd").unwrap().version, "258.2-1");
    }

    #[test]
    fn days_and_desc_fields() {
        assert_eq!(day_plus("2026/05/19", 0).unwrap(), "2026/05/19");
        assert_eq!(day_plus("2026/05/31", 1).unwrap(), "2026/06/01");
        assert_eq!(day_plus("2024/02/28", 2).unwrap(), "2024/03/01");
        assert!(day_plus("2026-05-19x", 1).is_err());
        let d = "%NAME%\nbase\n\n%VERSION%\n3-2\n";
        assert_eq!(desc_field(d, "%VERSION%").as_deref(), Some("3-2"));
        assert_eq!(desc_field(d, "%ARCH%"), None);
        let e = raw_entries(b"not a database at all, not even close......", "x.db");
        assert!(e.is_err() || e.unwrap().is_empty());
    }
}
