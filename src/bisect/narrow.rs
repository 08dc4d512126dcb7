//! The smallest set of changes that still changes the outcome, by halves: the probe is
//! told which changes to apply (over a base that holds none of them) and says whether the
//! outcome changed. One change that does it alone is found in about log2(n) probes; when
//! two halves are each needed (an interaction), both are narrowed with the other applied.

use std::collections::BTreeMap;

use crate::error::Result;

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
