//! Topics and subscription patterns: what is a valid name, and which
//! subscriptions a topic matches.

use tonic::Status;

/// The longest topic or pattern, in bytes.
pub(crate) const MAX_TOPIC_LEN: usize = 256;

/// Topics under this prefix are the router's own.
pub(crate) const RESERVED: &str = "polis.";

/// A valid subscription pattern: an exact topic, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    /// Matches every topic that starts with this (empty: every topic).
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern; refuses an empty one, a `*` anywhere but at the
    /// end, and anything that is not a valid topic otherwise.
    pub(crate) fn parse(pattern: &str) -> Result<Pattern, Status> {
        let bad = |why: &str| Status::invalid_argument(format!("bad pattern {pattern:?}: {why}"));
        if pattern.is_empty() {
            return Err(bad("a pattern is a topic, or a prefix ending in `*` (`*` alone matches all)"));
        }
        let (stem, prefix) = match pattern.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (pattern, false),
        };
        if stem.contains('*') {
            return Err(bad("`*` may only end a pattern (`notes.*`), not appear inside it"));
        }
        check_chars(stem).map_err(|why| bad(&why))?;
        Ok(if prefix { Pattern::Prefix(stem.to_owned()) } else { Pattern::Exact(stem.to_owned()) })
    }

    /// Whether `topic` matches.
    #[cfg(test)]
    pub(crate) fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == topic,
            Pattern::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

/// Checks a topic someone publishes; `router` may publish `polis.` topics.
pub(crate) fn check_topic(topic: &str, router: bool) -> Result<(), Status> {
    if topic.is_empty() {
        return Err(Status::invalid_argument("a topic may not be empty"));
    }
    if topic.contains('*') {
        return Err(Status::invalid_argument(format!(
            "bad topic {topic:?}: `*` belongs in patterns, not in topics"
        )));
    }
    check_chars(topic).map_err(|why| Status::invalid_argument(format!("bad topic {topic:?}: {why}")))?;
    if !router && topic.starts_with(RESERVED) {
        return Err(Status::permission_denied(format!(
            "topic {topic:?}: topics starting \"{RESERVED}\" are the router's own; pick another name"
        )));
    }
    Ok(())
}

fn check_chars(name: &str) -> Result<(), String> {
    if name.len() > MAX_TOPIC_LEN {
        return Err(format!("longer than {MAX_TOPIC_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_all() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("notes.changed").matches("notes.changed"));
        assert!(!p("notes.changed").matches("notes.changed2"));
        assert!(!p("notes.changed").matches("notes"));
        assert!(p("notes.*").matches("notes.changed"));
        assert!(p("notes.*").matches("notes."));
        assert!(!p("notes.*").matches("notes"));
        assert!(!p("notes.*").matches("note.s"));
        assert!(p("*").matches("anything.at.all"));
        assert!(p("*").matches("polis.module.started"));
        assert_eq!(p("*"), Pattern::Prefix(String::new()));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a*b", "**", "*a", "a b", "a\n", &"x".repeat(MAX_TOPIC_LEN + 1)] {
            let status = Pattern::parse(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(status.message().contains("bad pattern"), "{}", status.message());
        }
    }

    #[test]
    fn topics() {
        assert!(check_topic("notes.changed", false).is_ok());
        assert!(check_topic("polis.module.started", true).is_ok());
        assert_eq!(
            check_topic("polis.module.started", false).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        for bad in ["", "a*", "a b"] {
            assert_eq!(check_topic(bad, false).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
