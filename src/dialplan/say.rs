//! Numbers and digit strings as prompt names, the way Asterisk's English `SayNumber`
//! and `SayDigits` build them from its core sounds (`digits/40`, `digits/2` for 42), so
//! the shipped prompts and any Asterisk sound pack both work. Pure: the engine plays
//! the names it returns.

/// The largest magnitude `say_number` says: 999 billion (there is no `digits/trillion`).
pub const MAX_NUMBER: u64 = 999_999_999_999;

/// One prompt per key: `digits/0` to `digits/9`, `digits/star`, `digits/pound`. `Err`
/// is the first character that is not a key.
pub fn digits(text: &str) -> Result<Vec<String>, char> {
    text.chars()
        .map(|c| match c {
            '0'..='9' => Ok(format!("digits/{c}")),
            '*' => Ok("digits/star".to_owned()),
            '#' => Ok("digits/pound".to_owned()),
            other => Err(other),
        })
        .collect()
}

/// A whole number in English without "and": 115 is `digits/1 digits/hundred
/// digits/15`, 1999 is `digits/1 digits/thousand digits/9 digits/hundred digits/90
/// digits/9`, a negative number starts with `digits/minus`. `None` beyond
/// [`MAX_NUMBER`].
pub fn number(n: i64) -> Option<Vec<String>> {
    let magnitude = n.unsigned_abs();
    if magnitude > MAX_NUMBER {
        return None;
    }
    let mut names = Vec::new();
    if n < 0 {
        names.push("digits/minus".to_owned());
    }
    if magnitude == 0 {
        names.push("digits/0".to_owned());
    } else {
        say(magnitude, &mut names);
    }
    Some(names)
}

/// `n` > 0: each group of three digits, then its scale word.
fn say(n: u64, names: &mut Vec<String>) {
    let mut rest = n;
    for (scale, word) in [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if rest >= scale {
            below_thousand(rest / scale, names);
            names.push(format!("digits/{word}"));
            rest %= scale;
        }
    }
    below_thousand(rest, names);
}

/// 1 to 999 (0 says nothing: it is the empty tail of 1000).
fn below_thousand(n: u64, names: &mut Vec<String>) {
    let mut rest = n;
    if rest >= 100 {
        names.push(format!("digits/{}", rest / 100));
        names.push("digits/hundred".to_owned());
        rest %= 100;
    }
    if rest >= 20 {
        names.push(format!("digits/{}", rest / 10 * 10));
        rest %= 10;
    }
    if rest > 0 {
        names.push(format!("digits/{rest}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn said(n: i64) -> String {
        number(n).unwrap().join(" ")
    }

    #[test]
    fn numbers_are_said_as_asterisk_says_them_in_english() {
        assert_eq!(said(0), "digits/0");
        assert_eq!(said(7), "digits/7");
        assert_eq!(said(19), "digits/19");
        assert_eq!(said(20), "digits/20");
        assert_eq!(said(42), "digits/40 digits/2");
        assert_eq!(said(100), "digits/1 digits/hundred");
        assert_eq!(said(115), "digits/1 digits/hundred digits/15");
        assert_eq!(said(250), "digits/2 digits/hundred digits/50");
        assert_eq!(
            said(1999),
            "digits/1 digits/thousand digits/9 digits/hundred digits/90 digits/9"
        );
        assert_eq!(said(2000), "digits/2 digits/thousand");
        assert_eq!(said(1005), "digits/1 digits/thousand digits/5");
        assert_eq!(
            said(120_013),
            "digits/1 digits/hundred digits/20 digits/thousand digits/13"
        );
        assert_eq!(said(3_000_000), "digits/3 digits/million");
        assert_eq!(
            said(1_002_000_300),
            "digits/1 digits/billion digits/2 digits/million digits/3 digits/hundred"
        );
        assert_eq!(said(-5), "digits/minus digits/5");
        assert_eq!(
            said(-999_999_999_999).split(' ').count(),
            // minus, then four groups of "9 hundred 90 9" each with a scale word but the last
            1 + 4 * 4 + 3
        );
    }

    #[test]
    fn numbers_beyond_the_largest_scale_are_refused() {
        assert_eq!(number(1_000_000_000_000), None);
        assert_eq!(number(i64::MIN), None);
        assert_eq!(number(i64::MAX), None);
    }

    #[test]
    fn digits_are_said_one_by_one() {
        assert_eq!(
            digits("1002").unwrap(),
            ["digits/1", "digits/0", "digits/0", "digits/2"]
        );
        assert_eq!(digits("*#").unwrap(), ["digits/star", "digits/pound"]);
        assert_eq!(digits("").unwrap(), Vec::<String>::new());
        assert_eq!(digits("12a"), Err('a'));
    }

    /// Every name this module can produce is a prompt the project ships.
    #[test]
    fn every_name_is_a_shipped_prompt() {
        let index = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sounds/en/INDEX.tsv"),
        )
        .unwrap();
        let shipped: BTreeSet<&str> = index
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split('\t').next())
            .collect();
        let mut used: BTreeSet<String> = digits("0123456789*#").unwrap().into_iter().collect();
        for n in (-1000..=1000).chain([1_000_000, 1_000_000_000]) {
            used.extend(number(n).unwrap());
        }
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| !shipped.contains(n.as_str()))
            .collect();
        assert!(missing.is_empty(), "not shipped: {missing:?}");
        assert!(used.len() > 30, "{used:?}");
    }
}
