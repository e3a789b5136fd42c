//! A search hit's line and snippet, made from the note's text in Rust.
//!
//! FTS5's `snippet()` tokenizes the whole note for every hit it is asked
//! about; on 10,000 notes that was a quarter of a search's CPU. The line a
//! hit is shown at is found here anyway, so the snippet is cut from that
//! line: the words are matched token by token (a token is a run of letters
//! and digits, compared lowercased, a `word*` term as a prefix), which is
//! what FTS5's `unicode61` tokenizer does for every note without accents.
//! A note whose hit this cannot see (a word that matched only with its
//! diacritics folded, or only in the title) gets `None`, and the caller
//! asks FTS5 for that one row's snippet.

/// One term of the user's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    /// Lowercased.
    pub(crate) word: String,
    /// `word*`: any token starting with `word` matches.
    pub(crate) prefix: bool,
}

impl Term {
    fn matches(&self, token: &str) -> bool {
        // Most tokens differ from the word in length already: compare
        // lowercased only when they could match.
        if !self.prefix && token.len() != self.word.len() && token.is_ascii() {
            return false;
        }
        let lower = token.to_lowercase();
        if self.prefix { lower.starts_with(&self.word) } else { lower == self.word }
    }
}

/// The most tokens a snippet shows, as FTS5's `snippet(…, 12)` did.
const TOKENS: usize = 12;
/// How many tokens before the first hit a cut snippet begins.
const LEAD: usize = 3;

/// The first line of `body` holding a term (1-based) and a snippet of it,
/// with every hit marked `«…»` and `…` where the line was cut.
pub(crate) fn first_hit(body: &str, terms: &[Term]) -> Option<(usize, String)> {
    body.lines().enumerate().find_map(|(i, line)| {
        let tokens = tokens(line);
        let hits: Vec<bool> =
            tokens.iter().map(|&(a, b)| terms.iter().any(|t| t.matches(&line[a..b]))).collect();
        let first = hits.iter().position(|&h| h)?;
        Some((i + 1, render(line, &tokens, &hits, first)))
    })
}

/// The byte ranges of the tokens of `line`.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

/// Up to [`TOKENS`] tokens of `line` from a little before the first hit,
/// with the text between them as it is (whitespace collapsed).
fn render(line: &str, tokens: &[(usize, usize)], hits: &[bool], first: usize) -> String {
    let begin = first.saturating_sub(LEAD).min(tokens.len().saturating_sub(TOKENS));
    let end = (begin + TOKENS).min(tokens.len());
    let mut out = String::new();
    let from = if begin == 0 {
        out.push_str(line[..tokens[0].0].trim_start());
        tokens[0].0
    } else {
        out.push('…');
        tokens[begin].0
    };
    let mut at = from;
    for i in begin..end {
        let (a, b) = tokens[i];
        out.push_str(&line[at..a]);
        if hits[i] {
            out.push('«');
            out.push_str(&line[a..b]);
            out.push('»');
        } else {
            out.push_str(&line[a..b]);
        }
        at = b;
    }
    if end == tokens.len() {
        out.push_str(line[at..].trim_end());
    } else {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(words: &[&str]) -> Vec<Term> {
        words
            .iter()
            .map(|w| match w.strip_suffix('*') {
                Some(w) => Term { word: w.into(), prefix: true },
                None => Term { word: (*w).into(), prefix: false },
            })
            .collect()
    }

    #[test]
    fn the_first_line_with_a_whole_token_is_the_hit() {
        let body = "#season summer\n* Vegetables\n  Tomatoes need sun and water, tomatoes.\n";
        assert_eq!(
            first_hit(body, &terms(&["tomatoes"])),
            Some((3, "«Tomatoes» need sun and water, «tomatoes».".into()))
        );
        // "tomato" is not a token of the note, "tomato*" is a prefix of one.
        assert_eq!(first_hit(body, &terms(&["tomato"])), None);
        assert_eq!(first_hit(body, &terms(&["tomato*"])).unwrap().0, 3);
        assert_eq!(first_hit(body, &terms(&["summer", "sun"])).unwrap(), (1, "#season «summer»".into()));
    }

    #[test]
    fn a_long_line_is_cut_around_the_first_hit() {
        let line = (1..=30).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let (_, snippet) = first_hit(&line, &terms(&["w10"])).unwrap();
        assert_eq!(snippet, "…w7 w8 w9 «w10» w11 w12 w13 w14 w15 w16 w17 w18…");
        let (_, start) = first_hit(&line, &terms(&["w1"])).unwrap();
        assert_eq!(start, "«w1» w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12…");
        let (_, end) = first_hit(&line, &terms(&["w30"])).unwrap();
        assert_eq!(end, "…w19 w20 w21 w22 w23 w24 w25 w26 w27 w28 w29 «w30»");
    }

    #[test]
    fn letters_beyond_ascii_are_tokens_and_compare_lowercased() {
        let body = "Ein Ärger über Öl\n";
        assert_eq!(first_hit(body, &terms(&["ärger"])), Some((1, "Ein «Ärger» über Öl".into())));
        // Folding diacritics is FTS5's job: the caller falls back to it.
        assert_eq!(first_hit(body, &terms(&["arger"])), None);
    }
}
