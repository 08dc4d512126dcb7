//! "Did you mean …?": the nearest valid name to a mistyped one (a profile, a location), by
//! edit distance, when it is near enough to be a typo rather than another word.
//! (Subcommands and option values get clap's own suggestions.)

/// The candidate nearest to `input` by Damerau–Levenshtein distance (case-insensitive),
/// when that distance is at most a third of the shorter name (and at least 1 is allowed):
/// `archlinux-rpro` → `archlinux-repro`, `archiv` → `archive`; `x` → nothing.
pub fn nearest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == input {
            continue;
        }
        let d = strsim::damerau_levenshtein(&input_l, &c.to_lowercase());
        let shorter = input.chars().count().min(c.chars().count());
        let limit = (shorter / 3).max(1);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean "NAME"? ` when a candidate is near `input`, else nothing: the start of a
/// message that goes on with what is expected.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(input, candidates) {
        Some(c) => format!("did you mean {c:?}? "),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_name_and_another_word_finds_nothing() {
        let profiles = ["archlinux-repro", "local-world"];
        assert_eq!(nearest("archlinux-rpro", profiles), Some("archlinux-repro"));
        assert_eq!(
            nearest("archlinux-ropre", profiles),
            Some("archlinux-repro")
        );
        assert_eq!(nearest("Local-World", profiles), Some("local-world"));
        assert_eq!(nearest("localworld", profiles), Some("local-world"));
        assert_eq!(nearest("debian", profiles), None);
        assert_eq!(nearest("x", profiles), None);
        let locations = ["archive", "git", "registry", "rootfs"];
        assert_eq!(nearest("archiv", locations), Some("archive"));
        assert_eq!(nearest("regsitry", locations), Some("registry"));
        assert_eq!(nearest("gti", locations), Some("git"));
        assert_eq!(nearest("mirror", locations), None);
        // The nearest of several near ones; an exact match is no suggestion.
        assert_eq!(
            nearest("registyr", ["regist", "registry"]),
            Some("registry")
        );
        assert_eq!(nearest("git", locations), None);
        assert_eq!(nearest("anything", []), None);
    }

    #[test]
    fn the_message_names_the_suggestion_or_says_nothing() {
        assert_eq!(
            did_you_mean("archiv", ["archive", "git"]),
            "did you mean \"archive\"? "
        );
        assert_eq!(did_you_mean("zzz", ["archive", "git"]), "");
    }
}
