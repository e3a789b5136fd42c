//! Names echoed into error messages, cut to a readable length (issue 11):
//! a 100 kB service name echoed whole made the error itself too large for
//! gRPC metadata, and the caller saw a metadata error instead of the code.

/// The most characters of a caller's string an error message repeats.
pub(crate) const MAX_ECHO: usize = 64;

/// `text` quoted as `{:?}` would, cut to [`MAX_ECHO`] characters with `…`.
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(quoted("echo"), "\"echo\"");
        let long = "x".repeat(100_000);
        let cut = quoted(&long);
        assert!(cut.len() < 100, "{cut}");
        assert!(cut.contains('…') && cut.contains("100000 bytes"), "{cut}");
        assert_eq!(quoted(&"é".repeat(70)).matches('é').count(), MAX_ECHO);
    }
}
