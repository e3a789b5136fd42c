//! The parser against the constructs of the Norg 1.0 specification.

use super::*;

fn link_of(text: &str) -> Link {
    let doc = parse(text);
    assert_eq!(doc.links.len(), 1, "one link in {text:?}: {doc:?}");
    doc.links[0].clone()
}

#[test]
fn headings_from_one_to_six_stars_and_more_count_as_six() {
    let doc = parse("* One\n** Two\n*** Three\n**** Four\n***** Five\n****** Six\n******* Seven\n");
    let got: Vec<_> = doc.headings.iter().map(|h| (h.line, h.level, h.text.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, 1, "One"),
            (2, 2, "Two"),
            (3, 3, "Three"),
            (4, 4, "Four"),
            (5, 5, "Five"),
            (6, 6, "Six"),
            (7, 6, "Seven")
        ]
    );
}

#[test]
fn bold_text_and_indented_headings() {
    let doc = parse("*bold* is not a heading\n   ** Indented\n");
    let got: Vec<_> = doc.headings.iter().map(|h| (h.level, h.text.as_str())).collect();
    assert_eq!(got, [(2, "Indented")]);
}

#[test]
fn document_meta_with_arrays() {
    let doc = parse(
        "@document.meta\ntitle: Gardening notes\ndescription: what grows where\nauthors: [\n  alice\n  bob\n]\n\
         categories: [plants, outdoors]\ncreated: 2024-01-01\nupdated: 2024-02-01T10:00:00+0100\n@end\n* After\n",
    );
    let meta: Vec<_> = doc.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        meta,
        [
            ("title", "Gardening notes"),
            ("description", "what grows where"),
            ("authors", "alice"),
            ("authors", "bob"),
            ("categories", "plants"),
            ("categories", "outdoors"),
            ("created", "2024-01-01"),
            ("updated", "2024-02-01T10:00:00+0100"),
        ]
    );
    // The meta block is not headings or text; the heading after it is on line 12.
    assert_eq!(doc.headings, [Heading { line: 12, level: 1, text: "After".into() }]);
    assert!(doc.problems.is_empty());
}

#[test]
fn one_line_arrays_split_on_spaces_without_commas() {
    let doc = parse("@document.meta\ncategories: [ a b ]\n@end\n");
    assert_eq!(doc.meta, [("categories".into(), "a".into()), ("categories".into(), "b".into())]);
}

#[test]
fn file_links_with_and_without_headings() {
    let l = link_of("see {:other:}");
    assert_eq!((l.kind, l.file.as_deref(), l.heading.as_deref()), (LinkKind::File, Some("other"), None));
    let l = link_of("see {:dir/other:* Top heading}[the top]");
    assert_eq!(
        (l.kind, l.file.as_deref(), l.heading_level, l.heading.as_deref(), l.description.as_deref()),
        (LinkKind::File, Some("dir/other"), Some(1), Some("Top heading"), Some("the top"))
    );
    let l = link_of("{:$/root/x:** Sub}");
    assert_eq!((l.file.as_deref(), l.heading_level), (Some("$/root/x"), Some(2)));
    let l = link_of("{:other:# anything}");
    assert_eq!((l.kind, l.heading_level, l.heading.as_deref()), (LinkKind::File, None, Some("anything")));
}

#[test]
fn local_heading_anchor_url_and_external_links() {
    let l = link_of("{*** Deep heading}");
    assert_eq!(
        (l.kind, l.heading_level, l.heading.as_deref()),
        (LinkKind::Heading, Some(3), Some("Deep heading"))
    );
    let l = link_of("{# some anchor}");
    assert_eq!(
        (l.kind, l.heading_level, l.heading.as_deref()),
        (LinkKind::Anchor, None, Some("some anchor"))
    );
    let l = link_of("{https://github.com/nvim-neorg/norg-specs}[spec]");
    assert_eq!(
        (l.kind, l.raw.as_str(), l.description.as_deref()),
        (LinkKind::Url, "https://github.com/nvim-neorg/norg-specs", Some("spec"))
    );
    let l = link_of("{/ ./assets/photo.png}");
    assert_eq!((l.kind, l.file.as_deref()), (LinkKind::External, Some("./assets/photo.png")));
    let l = link_of("{? wiki page}");
    assert_eq!(l.kind, LinkKind::Other);
}

#[test]
fn links_with_no_target_are_invalid_and_reported() {
    for text in ["{}", "{:}", "{::}", "{* }", "{#}", "{/ }", "{?}"] {
        let doc = parse(text);
        assert_eq!(doc.links.len(), 1, "{text}: {doc:?}");
        assert_eq!(doc.links[0].kind, LinkKind::Invalid, "{text}");
        assert_eq!(doc.problems.len(), 1, "{text}: {doc:?}");
        assert!(doc.problems[0].message.contains("has no target"), "{:?}", doc.problems);
    }
}

#[test]
fn several_links_on_a_line_escapes_and_inline_verbatim() {
    let doc = parse("{:a:} and {* B}[b] but not \\{:c:} nor `{:d:}`, then {https://e}\n");
    let raws: Vec<_> = doc.links.iter().map(|l| l.raw.as_str()).collect();
    assert_eq!(raws, [":a:", "* B", "https://e"]);
}

#[test]
fn an_unclosed_brace_is_not_a_link() {
    let doc = parse("a { b\n");
    assert!(doc.links.is_empty());
}

#[test]
fn todo_states_on_list_items_and_headings() {
    let doc = parse(
        "* Project\n- ( ) undone\n- (x) done\n-- (-) pending\n- (=) on hold\n- (_) cancelled\n~ (!) urgent\n\
         - (?) uncertain\n- (+ 2024-05-01) recurring\n** (x) Finished part\n   --- (x|# A) with priority\n\
         - (y) not a state\n- (x)glued\n- plain\n",
    );
    let got: Vec<_> = doc.tasks.iter().map(|t| (t.line, t.state.name(), t.text.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, "undone", "undone"),
            (3, "done", "done"),
            (4, "pending", "pending"),
            (5, "on_hold", "on hold"),
            (6, "cancelled", "cancelled"),
            (7, "urgent", "urgent"),
            (8, "uncertain", "uncertain"),
            (9, "recurring", "recurring"),
            (10, "done", "Finished part"),
            (11, "done", "with priority"),
        ]
    );
    assert_eq!(doc.tasks[0].heading_path, ["Project"]);
    // The heading's own task sits under its parents only; the item after it under both.
    assert_eq!(doc.tasks[8].heading_path, ["Project"]);
    assert_eq!(doc.tasks[9].heading_path, ["Project", "Finished part"]);
}

#[test]
fn heading_paths_follow_levels() {
    let doc = parse("* A\n** B\n- ( ) one\n* C\n*** D\n- ( ) two\n** E\n- ( ) three\n");
    let paths: Vec<_> = doc.tasks.iter().map(|t| t.heading_path.join(" > ")).collect();
    assert_eq!(paths, ["A > B", "C > D", "C > E"]);
}

#[test]
fn verbatim_blocks_hide_links_and_headings() {
    let doc = parse("@code lua\nprint('{:not:}')\n* not a heading\n@end\n=macro\n{:nor:}\n=end\n* Real\n");
    assert!(doc.links.is_empty(), "{doc:?}");
    assert_eq!(doc.headings.len(), 1);
    assert_eq!(doc.headings[0].line, 8);
}

#[test]
fn an_unclosed_block_is_reported_and_the_rest_still_read() {
    let doc = parse("* Before\n@code\nnever closed {:x:}\n* After\n");
    assert_eq!(
        doc.problems,
        [Problem { line: 2, message: "unclosed @code block (no @end before the end of the file)".into() }]
    );
    let headings: Vec<_> = doc.headings.iter().map(|h| h.text.as_str()).collect();
    assert_eq!(headings, ["Before", "After"]);
    assert_eq!(doc.links.len(), 1);
}

#[test]
fn an_unclosed_meta_block_is_reported() {
    let doc = parse("@document.meta\ntitle: x\n");
    assert!(doc.meta.is_empty());
    assert_eq!(doc.problems.len(), 1);
    assert!(doc.problems[0].message.contains("@document.meta"));
}

#[test]
fn carryover_tags() {
    let doc = parse("#comment\n#name value here\n+color red\n# not a tag\n");
    let got: Vec<_> = doc.tags.iter().map(|t| (t.line, t.name.as_str(), t.args.as_str())).collect();
    assert_eq!(got, [(1, "comment", ""), (2, "name", "value here"), (3, "color", "red")]);
}

#[test]
fn normalize_folds_case_and_whitespace() {
    assert_eq!(normalize("  Top   Heading "), "top heading");
}

#[test]
fn empty_and_odd_input_never_panics() {
    for text in [
        "",
        "\n",
        "*",
        "* ",
        "-",
        "- (",
        "- ()",
        "{",
        "}",
        "{:",
        "@",
        "@end",
        "@document.meta",
        "=",
        "\u{feff}* x",
        "é{:ü:}",
    ] {
        let _ = parse(text);
    }
}
