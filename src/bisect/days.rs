//! Which environment days exist: the archive's own listing of `repos/YYYY/MM/DD/` (the
//! nginx index pages archive.archlinux.org serves), and the days whose repository databases
//! the store already holds (all an offline run can probe). A bisection probes only these.

use std::collections::BTreeSet;

use crate::error::{Error, IoContext, Result};
use crate::inputs::fetch::Fetcher;

/// The days in `[from, to]` (`YYYY/MM/DD`, either end open) that the archive at `base`
/// lists or the store holds databases of, sorted. Listings go through the fetcher (stored
/// and replayable offline, never taken as immutable online: the archive grows).
pub fn available(
    fetcher: &Fetcher,
    base: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<BTreeSet<String>> {
    let in_range = |d: &str| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t);
    let mut days: BTreeSet<String> = store_days(fetcher)?
        .into_iter()
        .filter(|d| in_range(d))
        .collect();
    let listed = listed_days(fetcher, base, from, to);
    match listed {
        Ok(l) => days.extend(l.into_iter().filter(|d| in_range(d))),
        Err(e) if days.is_empty() => return Err(e),
        Err(e) => tracing::warn!("the archive's day listing: {e}; using the store's days"),
    }
    Ok(days)
}

/// The days the archive's index pages list, walking only the years and months that can
/// hold a day in `[from, to]`.
fn listed_days(
    fetcher: &Fetcher,
    base: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<String>> {
    let prefix = |d: Option<&str>, n: usize| d.map(|d| d[..n].to_string());
    let (from_y, to_y) = (prefix(from, 4), prefix(to, 4));
    let (from_m, to_m) = (prefix(from, 7), prefix(to, 7));
    let mut out = Vec::new();
    for y in entries(fetcher, &format!("{base}/repos/"), 4)? {
        if from_y.as_deref().is_some_and(|f| y.as_str() < f)
            || to_y.as_deref().is_some_and(|t| y.as_str() > t)
        {
            continue;
        }
        for m in entries(fetcher, &format!("{base}/repos/{y}/"), 2)? {
            let ym = format!("{y}/{m}");
            if from_m.as_deref().is_some_and(|f| ym.as_str() < f)
                || to_m.as_deref().is_some_and(|t| ym.as_str() > t)
            {
                continue;
            }
            for d in entries(fetcher, &format!("{base}/repos/{ym}/"), 2)? {
                let day = format!("{ym}/{d}");
                if crate::inputs::archive::parse_day(&day).is_ok() {
                    out.push(day);
                }
            }
        }
    }
    Ok(out)
}

/// The all-digit directory names of `width` characters an index page links to.
fn entries(fetcher: &Fetcher, url: &str, width: usize) -> Result<Vec<String>> {
    let Some((blob, _)) = fetcher.try_fetch(url, None, false)? else {
        return Err(Error::network(url, "no day listing (not found)"));
    };
    let html = std::fs::read_to_string(&blob.path).ctx("read", &blob.path)?;
    Ok(digit_dirs(&html, width))
}

/// `href="NN/"` targets of an index page that are `width` digits.
pub fn digit_dirs(html: &str, width: usize) -> Vec<String> {
    let mut out: Vec<String> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter_map(|h| h.strip_suffix('/'))
        .filter(|h| h.len() == width && h.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Days the store holds a repository database of (`…/repos/YYYY/MM/DD/<repo>/os/…`).
fn store_days(fetcher: &Fetcher) -> Result<BTreeSet<String>> {
    let mut days = BTreeSet::new();
    for r in fetcher.store().index()? {
        if let Some(d) = db_day(&r.url) {
            days.insert(d);
        }
    }
    Ok(days)
}

/// The day of a repository database URL, if it is one.
fn db_day(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("/repos/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() != 7 || segs[4] != "os" || !segs[6].ends_with(".db") {
        return None;
    }
    let day = format!("{}/{}/{}", segs[0], segs[1], segs[2]);
    crate::inputs::archive::parse_day(&day).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_pages_give_their_digit_directories() {
        let html = "<a href=\"../\">../</a>\n<a href=\"2026/\">2026/</a> x\n<a href=\"last/\">last/</a>\n<a href=\"05/\">05/</a><a href=\"2025/\">2025/</a><a href=\"core.db\">";
        assert_eq!(digit_dirs(html, 4), vec!["2025", "2026"]);
        assert_eq!(digit_dirs(html, 2), vec!["05"]);
    }

    #[test]
    fn database_urls_name_their_day() {
        assert_eq!(
            db_day("http://127.0.0.1:1/repos/2026/05/20/core/os/x86_64/core.db").as_deref(),
            Some("2026/05/20")
        );
        assert_eq!(
            db_day(
                "https://archive.archlinux.org/repos/2026/05/20/extra/os/x86_64/x-1-1-any.pkg.tar.zst"
            ),
            None
        );
        assert_eq!(db_day("https://a/repos/last/core/os/x86_64/core.db"), None);
    }

    #[test]
    fn the_store_and_the_listing_together_within_the_range() {
        let t = tempfile::tempdir().unwrap();
        let store = crate::inputs::store::Store::open(t.path().join("store")).unwrap();
        let arch = t.path().join("a");
        for (p, body) in [
            ("repos/index.html", ""),
            ("repos/2026/05/19/core/os/x86_64/core.db", "db"),
        ] {
            let f = arch.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, body).unwrap();
        }
        // A store that saw one database, and an archive whose listing cannot be read
        // (file:// has no index pages): the store's days are used.
        let fetcher = Fetcher::new(store.clone(), false);
        let db = format!(
            "file://{}/repos/2026/05/19/core/os/x86_64/core.db",
            arch.display()
        );
        fetcher.fetch(&db, None).unwrap();
        let base = format!("file://{}", arch.display());
        let days = available(&fetcher, &base, Some("2026/05/01"), None).unwrap();
        assert_eq!(days.into_iter().collect::<Vec<_>>(), vec!["2026/05/19"]);
        assert!(
            available(&fetcher, &base, Some("2026/05/20"), None)
                .unwrap_err()
                .to_string()
                .contains("no day listing")
        );
    }
}
