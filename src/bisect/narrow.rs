//! The smallest set of changes that still changes the outcome, by halves: the probe is
//! told which changes to apply (over a base that holds none of them) and says whether the
//! outcome changed. One change that does it alone is found in about log2(n) probes; when
//! two halves are each needed (an interaction), both are narrowed with the other applied.

use std::collections::BTreeMap;

use crate::error::Result;

/// The first of `n` ordered points (days) whose outcome changed, knowing that point 0's did
/// not and point `n - 1`'s did: by halves, asking `changed` only about the points between.
/// A point that changed ends the good range there even if a later one did not (the first
/// change is what is looked for).
pub fn first_changed(n: usize, changed: &mut dyn FnMut(usize) -> Result<bool>) -> Result<usize> {
    assert!(n >= 2, "two known points at least");
    let (mut lo, mut hi) = (0, n - 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if changed(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The minimal subset of `all` (indices into it, sorted) for which `changed` holds, given
/// that it holds for `all` and not for the empty set (the caller probed both). `changed` is
/// asked each set at most once.
pub fn minimal<T: Clone>(
    all: &[T],
    changed: &mut dyn FnMut(&[T]) -> Result<bool>,
) -> Result<Vec<usize>> {
    let mut seen: BTreeMap<Vec<usize>, bool> = BTreeMap::new();
    let mut ask = |set: &[usize]| -> Result<bool> {
        let mut key = set.to_vec();
        key.sort_unstable();
        if let Some(&r) = seen.get(&key) {
            return Ok(r);
        }
        let items: Vec<T> = key.iter().map(|&i| all[i].clone()).collect();
        let r = changed(&items)?;
        seen.insert(key, r);
        Ok(r)
    };
    let idx: Vec<usize> = (0..all.len()).collect();
    let mut found = narrow(&[], &idx, &mut ask)?;
    found.sort_unstable();
    Ok(found)
}

/// Narrow `set`, knowing that `base ∪ set` changes the outcome and `base` alone does not.
fn narrow(
    base: &[usize],
    set: &[usize],
    ask: &mut dyn FnMut(&[usize]) -> Result<bool>,
) -> Result<Vec<usize>> {
    if set.len() <= 1 {
        return Ok(set.to_vec());
    }
    let (a, b) = set.split_at(set.len() / 2);
    let with = |extra: &[usize]| -> Vec<usize> { base.iter().chain(extra).copied().collect() };
    if ask(&with(a))? {
        return narrow(base, a, ask);
    }
    if ask(&with(b))? {
        return narrow(base, b, ask);
    }
    // Neither half alone: some of each is needed.
    let in_a = narrow(&with(b), a, ask)?;
    let in_b = narrow(&with(&in_a), b, ask)?;
    Ok(in_a.into_iter().chain(in_b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, culprits: &[usize], all_needed: bool) -> (Vec<usize>, usize) {
        let all: Vec<usize> = (0..n).collect();
        let mut probes = 0;
        let got = minimal(&all, &mut |s: &[usize]| {
            probes += 1;
            Ok(if all_needed {
                culprits.iter().all(|c| s.contains(c))
            } else {
                culprits.iter().any(|c| s.contains(c))
            })
        })
        .unwrap();
        (got, probes)
    }

    #[test]
    fn the_first_changed_day_by_halves() {
        for n in 2..40 {
            for first in 1..n {
                let mut asked = Vec::new();
                let got = first_changed(n, &mut |i| {
                    asked.push(i);
                    Ok(i >= first)
                })
                .unwrap();
                assert_eq!(got, first, "n={n}");
                assert!(asked.iter().all(|&i| i > 0 && i < n - 1), "{asked:?}");
                assert!(
                    asked.len() <= (n as f64).log2().ceil() as usize,
                    "{asked:?}"
                );
            }
        }
        assert_eq!(first_changed(2, &mut |_| unreachable!()).unwrap(), 1);
    }

    #[test]
    fn one_culprit_among_many_in_log_probes() {
        for c in 0..16 {
            let (got, probes) = run(16, &[c], true);
            assert_eq!(got, vec![c]);
            assert!(probes <= 8, "{probes} probes for culprit {c}");
        }
        assert_eq!(run(1, &[0], true).0, vec![0]);
    }

    #[test]
    fn an_interaction_of_two_names_both() {
        assert_eq!(run(8, &[1, 6], true).0, vec![1, 6]);
        assert_eq!(run(5, &[0, 4], true).0, vec![0, 4]);
        assert_eq!(run(9, &[2, 3, 8], true).0, vec![2, 3, 8]);
    }

    #[test]
    fn either_of_two_is_enough_so_one_is_named() {
        let (got, _) = run(8, &[2, 5], false);
        assert_eq!(got.len(), 1);
        assert!(got == vec![2] || got == vec![5]);
    }

    #[test]
    fn a_probe_error_stops_the_search() {
        let all = vec![1, 2, 3];
        let r = minimal(&all, &mut |_s: &[i32]| {
            Err(crate::error::Error::Environment("probe failed".into()))
        });
        assert!(r.is_err());
    }
}
