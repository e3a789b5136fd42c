//! Workspaces: named notes directories, and paths inside them.
//!
//! A file is named by its workspace and its path relative to the
//! workspace's root, with `/` separators (`journal/2024.norg`). Link
//! targets are resolved to that form as Norg 1.0 says: `$/x` from the
//! workspace root, `$name/x` from workspace `name`, `~/x` from the home
//! directory, `/x` absolute, anything else relative to the linking file's
//! directory.

use std::path::{Component, Path, PathBuf};

/// A named notes directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Workspace {
    pub(crate) name: String,
    /// Absolute and, when it exists, canonical: watcher events and absolute
    /// paths from editors are compared with it.
    pub(crate) root: PathBuf,
    /// Why the workspace cannot be indexed (its directory is missing, say).
    pub(crate) error: Option<String>,
}

impl Workspace {
    /// The workspace `name` at `path` (`~` expanded). A missing directory
    /// is not an error here: the workspace is kept, with the reason.
    pub(crate) fn new(name: &str, path: &str) -> Result<Self, String> {
        check_name(name)?;
        let expanded = expand_home(path)?;
        if !expanded.is_absolute() {
            return Err(format!(
                "workspace {name:?}: the path {path:?} is not absolute (nor starts with ~/)"
            ));
        }
        Ok(match std::fs::canonicalize(&expanded) {
            Ok(root) if root.is_dir() => Workspace { name: name.to_owned(), root, error: None },
            Ok(root) => Workspace {
                name: name.to_owned(),
                error: Some(format!("{} is not a directory", root.display())),
                root,
            },
            Err(e) => Workspace {
                name: name.to_owned(),
                error: Some(format!("{} does not exist or cannot be opened ({e})", expanded.display())),
                root: lexical(&expanded),
            },
        })
    }

    /// `abs` relative to the root, with `/` separators, if it is inside.
    pub(crate) fn relative(&self, abs: &Path) -> Option<String> {
        let rel = abs.strip_prefix(&self.root).ok()?;
        let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_str()).collect::<Option<_>>()?;
        (!parts.is_empty()).then(|| parts.join("/"))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!("workspace name {name:?} must be letters, digits, '_', '-' or '.'"))
    }
}

fn expand_home(path: &str) -> Result<PathBuf, String> {
    if path == "~" || path.starts_with("~/") {
        let home = std::env::var_os("HOME").ok_or("HOME is not set: cannot expand ~")?;
        return Ok(PathBuf::from(home).join(path.trim_start_matches('~').trim_start_matches('/')));
    }
    Ok(PathBuf::from(path))
}

/// `.` and `..` removed without touching the filesystem.
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where a link's file part points: (workspace, path) when inside one of
/// `workspaces`, else the absolute path alone. `norg` adds `.norg` as file
/// links (`{:x:}`) do; `{/ x}` names the file exactly.
pub(crate) fn resolve_target(
    file: &str,
    from: &Workspace,
    from_path: &str,
    workspaces: &[Workspace],
    norg: bool,
) -> (Option<String>, PathBuf) {
    let file = file.trim();
    let abs = if let Some(rest) = file.strip_prefix("$/") {
        from.root.join(rest)
    } else if let Some(rest) = file.strip_prefix('$') {
        let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
        match workspaces.iter().find(|w| w.name == name) {
            Some(ws) => ws.root.join(rest),
            // An unknown workspace: a path no file has, so the link is broken.
            None => PathBuf::from(format!("${name}")).join(rest),
        }
    } else if file == "~" || file.starts_with("~/") {
        expand_home(file).unwrap_or_else(|_| PathBuf::from(file))
    } else if file.starts_with('/') {
        PathBuf::from(file)
    } else {
        let dir = Path::new(from_path).parent().unwrap_or(Path::new(""));
        from.root.join(dir).join(file)
    };
    let mut abs = lexical(&abs);
    if norg && abs.extension().is_none_or(|e| e != "norg") {
        let mut name = abs.into_os_string();
        name.push(".norg");
        abs = PathBuf::from(name);
    }
    let inside =
        workspaces.iter().filter(|w| abs.starts_with(&w.root)).max_by_key(|w| w.root.as_os_str().len());
    match inside.and_then(|w| Some((w.name.clone(), w.relative(&abs)?))) {
        Some((name, rel)) => (Some(name), PathBuf::from(rel)),
        None => (None, abs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str, root: &str) -> Workspace {
        Workspace { name: name.into(), root: root.into(), error: None }
    }

    #[test]
    fn link_targets_resolve_as_norg_says() {
        let all = [ws("notes", "/n"), ws("work", "/w")];
        let from = &all[0];
        let t = |file: &str, norg| resolve_target(file, from, "journal/day.norg", &all, norg);
        assert_eq!(t("other", true), (Some("notes".into()), "journal/other.norg".into()));
        assert_eq!(t("../index", true), (Some("notes".into()), "index.norg".into()));
        assert_eq!(t("$/index", true), (Some("notes".into()), "index.norg".into()));
        assert_eq!(t("$work/plan", true), (Some("work".into()), "plan.norg".into()));
        assert_eq!(t("/w/plan.norg", true), (Some("work".into()), "plan.norg".into()));
        assert_eq!(t("/elsewhere/x", true), (None, "/elsewhere/x.norg".into()));
        assert_eq!(t("$nowhere/x", true).0, None);
        assert_eq!(t("img/a.png", false), (Some("notes".into()), "journal/img/a.png".into()));
    }

    #[test]
    fn names_and_paths_are_checked() {
        assert!(Workspace::new("", "/tmp").is_err());
        assert!(Workspace::new("a/b", "/tmp").is_err());
        assert!(Workspace::new("a", "relative/dir").is_err());
        let missing = Workspace::new("a", "/no/such/dir/anywhere").unwrap();
        assert!(missing.error.unwrap().contains("does not exist"));
        assert!(Workspace::new("a", "/tmp").unwrap().error.is_none());
    }
}
