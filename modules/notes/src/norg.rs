//! A focused Norg 1.0 parser: only what the index needs, line by line.
//!
//! It reads headings (`*` … `******`), the `@document.meta` block, links,
//! TODO states on headings and list items, and carryover tags, and says
//! where the text is malformed. Everything else (attached modifiers, tables,
//! footnotes' bodies) is only text for the full-text index. ARCHITECTURE.md
//! says why this is not `tree-sitter-norg`.
//!
//! It never fails: malformed input becomes a [`Problem`] and parsing goes
//! on, so that one bad line cannot hide the rest of a file.

/// What one `.norg` file holds, as far as the index cares.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Doc {
    /// `@document.meta` entries in order; an array gives one entry per item.
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) headings: Vec<Heading>,
    pub(crate) links: Vec<Link>,
    pub(crate) tasks: Vec<Task>,
    /// Carryover tags (`#name args`, `+name args`).
    pub(crate) tags: Vec<Tag>,
    pub(crate) problems: Vec<Problem>,
    /// The lines of the `@document.meta` block, 0-based, both tags included.
    pub(crate) meta_lines: Option<(usize, usize)>,
}

impl Doc {
    /// The first value of meta `key`.
    pub(crate) fn meta_value(&self, key: &str) -> Option<&str> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A heading: `*` to `******` (more stars count as level 6), 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heading {
    pub(crate) line: u32,
    pub(crate) level: u8,
    pub(crate) text: String,
}

/// A TODO state, the detached modifier extension `( )`, `(x)`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Undone,
    Done,
    Pending,
    OnHold,
    Cancelled,
    Urgent,
    Uncertain,
    Recurring,
}

impl State {
    /// Every state, for validating a `tasks {state}` filter.
    pub(crate) const ALL: [State; 8] = [
        State::Undone,
        State::Done,
        State::Pending,
        State::OnHold,
        State::Cancelled,
        State::Urgent,
        State::Uncertain,
        State::Recurring,
    ];

    /// The name stored in the index and used by `tasks {state}`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Undone => "undone",
            State::Done => "done",
            State::Pending => "pending",
            State::OnHold => "on_hold",
            State::Cancelled => "cancelled",
            State::Urgent => "urgent",
            State::Uncertain => "uncertain",
            State::Recurring => "recurring",
        }
    }

    fn from_char(c: char) -> Option<State> {
        Some(match c {
            ' ' => State::Undone,
            'x' => State::Done,
            '-' => State::Pending,
            '=' => State::OnHold,
            '_' => State::Cancelled,
            '!' => State::Urgent,
            '?' => State::Uncertain,
            '+' => State::Recurring,
            _ => return None,
        })
    }
}

/// A task: a heading or list item with a TODO state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Task {
    pub(crate) line: u32,
    pub(crate) state: State,
    pub(crate) text: String,
    /// The headings it sits under, outermost first.
    pub(crate) heading_path: Vec<String>,
}

/// What a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// `{:file:}`, or `{:file:* Heading}` with a heading.
    File,
    /// `{* Heading}`: a heading of that level in this file.
    Heading,
    /// `{# name}`: any heading of that text in this file (a generic link).
    Anchor,
    /// `{https://…}` and anything without a modifier.
    Url,
    /// `{/ path}`: a file that is not Norg.
    External,
    /// `{? name}` wiki links, `{$ def}`, `{^ note}`, `{@ date}`: kept, not resolved.
    Other,
    /// `{}`, `{:}`, `{* }`: no target.
    Invalid,
}

impl LinkKind {
    /// The name stored in the index.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LinkKind::File => "file",
            LinkKind::Heading => "heading",
            LinkKind::Anchor => "anchor",
            LinkKind::Url => "url",
            LinkKind::External => "external",
            LinkKind::Other => "other",
            LinkKind::Invalid => "invalid",
        }
    }
}

/// One link, as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub(crate) line: u32,
    pub(crate) kind: LinkKind,
    /// The text between the braces.
    pub(crate) raw: String,
    /// The file part: `x` in `{:x:}`, the path in `{/ path}`, as written.
    pub(crate) file: Option<String>,
    /// The heading level a `*` target asks for (`None` for `#`: any level).
    pub(crate) heading_level: Option<u8>,
    /// The heading or anchor text.
    pub(crate) heading: Option<String>,
    /// `[text]` right after the link.
    pub(crate) description: Option<String>,
}

/// A carryover tag: `#name args` (weak) or `+name args` (strong).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tag {
    pub(crate) line: u32,
    pub(crate) name: String,
    pub(crate) args: String,
}

/// Malformed Norg, said with the line where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub(crate) line: u32,
    pub(crate) message: String,
}

/// Heading and anchor text as links match it: case-folded, whitespace collapsed.
pub(crate) fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Parses one file's text.
pub(crate) fn parse(text: &str) -> Doc {
    let mut doc = Doc::default();
    let lines: Vec<&str> = text.lines().collect();
    // Headings above the current line, by level, for tasks' heading paths.
    let mut outline: Vec<(u8, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = (i + 1) as u32;
        let trimmed = lines[i].trim_start();
        // Ranged tags: `@name` (verbatim) … `@end`, `=name` (macro) … `=end`.
        // Their content holds no links or headings, except `@document.meta`'s entries.
        if let Some((sigil, name)) = ranged_tag(trimmed) {
            let end = format!("{sigil}end");
            match (i + 1..lines.len()).find(|&j| lines[j].trim() == end) {
                Some(close) => {
                    if name == "document.meta" && doc.meta_lines.is_none() {
                        parse_meta(&lines[i + 1..close], &mut doc.meta);
                        doc.meta_lines = Some((i, close));
                    }
                    i = close + 1;
                }
                None => {
                    // Read the rest as ordinary text, so that a forgotten
                    // `@end` does not hide every heading and link after it.
                    doc.problems.push(Problem {
                        line: line_no,
                        message: format!(
                            "unclosed {sigil}{name} block (no {end} before the end of the file)"
                        ),
                    });
                    i += 1;
                }
            }
            continue;
        }
        if let Some((level, rest)) = prefix(trimmed, '*') {
            let (state, title) = extension(rest);
            let title = title.trim().to_owned();
            if title.is_empty() {
                doc.problems.push(Problem { line: line_no, message: "heading without a title".into() });
            }
            outline.retain(|(l, _)| *l < level);
            if let Some(state) = state {
                doc.tasks.push(Task {
                    line: line_no,
                    state,
                    text: title.clone(),
                    heading_path: outline.iter().map(|(_, t)| t.clone()).collect(),
                });
            }
            outline.push((level, title.clone()));
            doc.headings.push(Heading { line: line_no, level, text: title });
            links(rest, line_no, &mut doc);
            i += 1;
            continue;
        }
        let item = prefix(trimmed, '-').or_else(|| prefix(trimmed, '~'));
        if let Some((_, rest)) = item {
            if let (Some(state), text) = extension(rest) {
                doc.tasks.push(Task {
                    line: line_no,
                    state,
                    text: text.trim().to_owned(),
                    heading_path: outline.iter().map(|(_, t)| t.clone()).collect(),
                });
            }
        } else if let Some(tag) = carryover_tag(trimmed, line_no) {
            doc.tags.push(tag);
        }
        links(lines[i], line_no, &mut doc);
        i += 1;
    }
    doc
}

/// `@name` or `=name` opening a ranged tag (never `@end` itself).
fn ranged_tag(line: &str) -> Option<(char, &str)> {
    let sigil = line.chars().next().filter(|c| *c == '@' || *c == '=')?;
    let name = line[1..].split_whitespace().next()?;
    let starts_word = name.chars().next().is_some_and(|c| c.is_alphanumeric());
    (starts_word && name != "end" && line[1..].starts_with(name)).then_some((sigil, name))
}

/// A detached modifier (`*`, `-`, `~`) repeated and followed by whitespace:
/// its level (capped at 6) and the rest of the line.
fn prefix(line: &str, modifier: char) -> Option<(u8, &str)> {
    let count = line.chars().take_while(|c| *c == modifier).count();
    let rest = &line[count..];
    (count > 0 && rest.starts_with([' ', '\t'])).then(|| (count.min(6) as u8, rest.trim_start()))
}

/// The TODO state of a detached modifier extension `(…)` at the start of
/// `rest`, and the text after it. Extensions chain with `|`: `(x|# A)`.
fn extension(rest: &str) -> (Option<State>, &str) {
    let Some(inner) = rest.strip_prefix('(') else { return (None, rest) };
    let Some(close) = inner.find(')') else { return (None, rest) };
    let after = &inner[close + 1..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return (None, rest);
    }
    let state = inner[..close].split('|').find_map(|part| {
        let mut chars = part.chars();
        let state = State::from_char(chars.next()?)?;
        // `(+ 2024-05-01)` carries a date; the others are one character.
        let tail = chars.as_str();
        (tail.is_empty() || (state == State::Recurring && tail.starts_with(' '))).then_some(state)
    });
    match state {
        Some(state) => (Some(state), after),
        None => (None, rest),
    }
}

/// `#name args` or `+name args` on a line of its own.
fn carryover_tag(line: &str, line_no: u32) -> Option<Tag> {
    let rest = line.strip_prefix('#').or_else(|| line.strip_prefix('+'))?;
    let name: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    let valid = name.chars().next().is_some_and(|c| c.is_alphanumeric());
    valid.then(|| Tag { line: line_no, args: rest[name.len()..].trim().to_owned(), name })
}

/// Every `{…}` link on one line, outside inline verbatim (`` `…` ``).
fn links(line: &str, line_no: u32, doc: &mut Doc) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut verbatim = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'`' => verbatim = !verbatim,
            b'{' if !verbatim => {
                let Some(len) = line[i + 1..].find('}') else { return };
                let raw = &line[i + 1..i + 1 + len];
                let mut end = i + 1 + len + 1;
                let mut description = None;
                if line[end..].starts_with('[')
                    && let Some(close) = line[end + 1..].find(']')
                {
                    description = Some(line[end + 1..end + 1 + close].to_owned());
                    end += close + 2;
                }
                let link = link(raw, line_no, description);
                if link.kind == LinkKind::Invalid {
                    doc.problems
                        .push(Problem { line: line_no, message: format!("link {{{raw}}} has no target") });
                }
                doc.links.push(link);
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// One link's target, from the text between its braces.
fn link(raw: &str, line: u32, description: Option<String>) -> Link {
    let mut link = Link {
        line,
        kind: LinkKind::Invalid,
        raw: raw.to_owned(),
        file: None,
        heading_level: None,
        heading: None,
        description,
    };
    let text = raw.trim();
    if let Some(rest) = text.strip_prefix(':') {
        // `{:file:}` or `{:file:<location>}`.
        let Some(colon) = rest.find(':') else { return link };
        let file = rest[..colon].trim();
        if file.is_empty() {
            return link;
        }
        link.file = Some(file.to_owned());
        let location = rest[colon + 1..].trim();
        if location.is_empty() {
            link.kind = LinkKind::File;
        } else if let Some((level, heading)) = location_heading(location) {
            link.kind = LinkKind::File;
            link.heading_level = level;
            link.heading = Some(heading);
        } else {
            // `{:file:$ def}`, `{:file:4}` …: a file link with a location the
            // index does not resolve.
            link.kind = LinkKind::File;
        }
        return link;
    }
    if let Some((level, heading)) = location_heading(text) {
        link.kind = if level.is_some() { LinkKind::Heading } else { LinkKind::Anchor };
        link.heading_level = level;
        link.heading = Some(heading);
        return link;
    }
    if let Some(path) = text.strip_prefix('/') {
        let path = path.trim();
        if !path.is_empty() {
            link.kind = LinkKind::External;
            link.file = Some(path.to_owned());
        }
        return link;
    }
    let other = text.chars().next().is_some_and(|c| "?$^@=".contains(c));
    if other {
        if text[1..].trim().is_empty() {
            return link;
        }
        link.kind = LinkKind::Other;
    } else if text.starts_with(['*', '#']) {
        // `{* }`, `{#}`: a modifier with nothing after it.
    } else if !text.is_empty() {
        link.kind = LinkKind::Url;
    }
    link
}

/// `* Heading` (level from the stars) or `# name` (any level).
fn location_heading(location: &str) -> Option<(Option<u8>, String)> {
    let stars = location.chars().take_while(|c| *c == '*').count();
    let (level, rest) = if stars > 0 {
        (Some(stars.min(6) as u8), &location[stars..])
    } else {
        (None, location.strip_prefix('#')?)
    };
    let heading = rest.trim();
    (rest.starts_with([' ', '\t']) && !heading.is_empty()).then(|| (level, heading.to_owned()))
}

/// `key: value` lines; `key: [` … `]` (or `[a, b]` on one line) is an array.
fn parse_meta(lines: &[&str], meta: &mut Vec<(String, String)>) {
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        let Some((key, value)) = line.split_once(':') else { continue };
        let key = key.trim().to_owned();
        let value = value.trim();
        if key.is_empty() {
            continue;
        }
        let Some(open) = value.strip_prefix('[') else {
            meta.push((key, value.to_owned()));
            continue;
        };
        if let Some(inline) = open.strip_suffix(']') {
            // One line: commas separate items when there are any, else spaces.
            let items: Vec<&str> = if inline.contains(',') {
                inline.split(',').collect()
            } else {
                inline.split_whitespace().collect()
            };
            meta.extend(
                items
                    .into_iter()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| (key.clone(), s.to_owned())),
            );
            continue;
        }
        // Several lines: one item per line (commas allowed) until `]`.
        let first = open.trim();
        let mut items = vec![first];
        while i < lines.len() {
            let item = lines[i].trim();
            i += 1;
            if let Some(last) = item.strip_suffix(']') {
                items.push(last);
                break;
            }
            items.push(item);
        }
        for item in items {
            for part in item.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                meta.push((key.clone(), part.to_owned()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
