//! Exit codes and the one-line `error:` report.

use std::process::ExitCode;

/// A failure with its contract exit code. Commands return it inside
/// `anyhow::Error`; anything else exits 1.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

/// Exit code 1: the remote side returned an error.
pub(crate) const REMOTE: u8 = 1;
/// Exit code 2: the command line was wrong.
pub(crate) const USAGE: u8 = 2;
/// Exit code 3: the thing asked for does not exist.
pub(crate) const NOT_FOUND: u8 = 3;
/// Exit code 4: no router and none could be launched, or a deadline passed.
pub(crate) const UNAVAILABLE: u8 = 4;
/// Exit code 5: the local mesh directory or setup was refused as unsafe or
/// unusable (permissions, owner, not a directory), before anything remote
/// was asked. Nothing but fixing the setup makes it go away.
pub(crate) const REFUSED: u8 = 5;

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Prints `error: CODE: …` on one line and picks the exit code.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    let code = error.downcast_ref::<Failure>().map_or(1, |f| f.code);
    // `{:#}` joins the context chain with ": ", on one line.
    let text = format!("{error:#}").replace('\n', " ");
    eprintln!("{}", line(code, &text));
    ExitCode::from(code)
}

/// `error: CODE: message`: a message that names its gRPC-style code already
/// (a status from the router) keeps it; any other gets the code of its exit
/// status, so that every error line can be read the same way.
pub(crate) fn line(exit: u8, text: &str) -> String {
    if has_code(text) {
        return format!("error: {text}");
    }
    let code = match exit {
        USAGE => "INVALID_ARGUMENT",
        NOT_FOUND => "NOT_FOUND",
        UNAVAILABLE => "UNAVAILABLE",
        REFUSED => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    format!("error: {code}: {text}")
}

/// Whether `text` starts with `SOME_CODE: `.
fn has_code(text: &str) -> bool {
    text.split_once(": ")
        .is_some_and(|(code, _)| code.len() > 2 && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
}

/// Whether `error` is a write to a stdout that nobody reads any more.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
