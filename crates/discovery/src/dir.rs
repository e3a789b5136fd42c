//! Where a mesh directory lives, and the checks that make it safe to use.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// The mesh directory when none is given (`--mesh-dir` / `POLIS_MESH_DIR`
/// are the caller's to apply first): `$XDG_RUNTIME_DIR/polis/<mesh>`, else
/// `<temp dir>/polis-<uid>/<mesh>`, where `<mesh>` is `POLIS_MESH` or
/// `default`.
pub fn default_mesh_dir() -> PathBuf {
    let mesh = std::env::var("POLIS_MESH").ok().filter(|m| !m.is_empty()).unwrap_or_else(|| "default".into());
    if let Some(runtime) = directories::BaseDirs::new().and_then(|d| d.runtime_dir().map(Path::to_owned)) {
        return runtime.join("polis").join(mesh);
    }
    fallback_root().join(mesh)
}

#[cfg(unix)]
fn fallback_root() -> PathBuf {
    std::env::temp_dir().join(format!("polis-{}", rustix::process::getuid().as_raw()))
}

#[cfg(not(unix))]
fn fallback_root() -> PathBuf {
    directories::BaseDirs::new().map(|d| d.data_local_dir().join("polis")).unwrap_or_else(std::env::temp_dir)
}

/// An opened, checked mesh directory, and the paths of the contract within it.
#[derive(Debug, Clone)]
pub struct MeshDir {
    root: PathBuf,
}

impl MeshDir {
    /// Opens the mesh directory at `root`, creating it (mode 0700) and its
    /// `nodes/` and `logs/` as needed.
    ///
    /// A directory owned by another user, or writable by group or others,
    /// is refused: whoever can write there could impersonate the router.
    /// Under the shared temp dir the per-user parent is checked the same way.
    /// Every directory above it is checked too, as OpenSSH's StrictModes
    /// does: one that others may write without the sticky bit is refused,
    /// since they could swap the mesh directory for their own. Symbolic
    /// links on the way (the mesh directory itself may be one) are followed,
    /// and where they lead is checked as if it had been given.
    ///
    /// Every refusal is an error for which [`Error::is_refusal`] holds.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir().map_err(Error::io("resolve", &root))?.join(root)
        };
        if let Some(parent) = root.parent().filter(|p| *p == fallback_root()) {
            let resolved = resolve_safely(parent)?;
            create_private(parent).map_err(|e| resolved.through(e))?;
            check_private(&resolved.real).map_err(|e| resolved.through(e))?;
        }
        let resolved = resolve_safely(&root)?;
        create_private(&root).map_err(|e| resolved.through(e))?;
        check_private(&resolved.real).map_err(|e| resolved.through(e))?;
        let mesh = Self { root };
        for sub in [mesh.nodes_dir(), mesh.logs_dir()] {
            create_private(&sub)?;
            check_private(&sub)?;
        }
        Ok(mesh)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `router.lock`: holding it is being the router; it stores the last epoch.
    pub fn router_lock(&self) -> PathBuf {
        self.root.join("router.lock")
    }

    /// `router.json`: the router's record, written after its socket listens.
    pub fn router_record(&self) -> PathBuf {
        self.root.join("router.json")
    }

    /// `router.sock`: the router's gRPC endpoint.
    pub fn router_socket(&self) -> PathBuf {
        self.root.join("router.sock")
    }

    /// `spawn.lock`: held by a frontend while it launches a router.
    pub fn spawn_lock(&self) -> PathBuf {
        self.root.join("spawn.lock")
    }

    /// `nodes/`: one record and one lock per node.
    pub fn nodes_dir(&self) -> PathBuf {
        self.root.join("nodes")
    }

    /// `logs/`: router and module logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub(crate) fn node_record(&self, id: &uuid::Uuid) -> PathBuf {
        self.nodes_dir().join(format!("{id}.json"))
    }

    pub(crate) fn node_lock(&self, id: &uuid::Uuid) -> PathBuf {
        self.nodes_dir().join(format!("{id}.lock"))
    }
}

fn create_private(path: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(Error::NotADirectory { path: path.to_owned() })
        }
        Err(e) => Err(Error::io("create", path)(e)),
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // symlink_metadata: links have been followed by resolve_safely, and
    // `path` is where they lead; a link here was planted since.
    let meta = fs::symlink_metadata(path).map_err(Error::io("inspect", path))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory { path: path.to_owned() });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::NotOwner { path: path.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(Error::Insecure { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Where a path leads once its symbolic links are followed.
#[derive(Debug)]
struct Resolved {
    /// The path without links, as far as it exists; the rest as given.
    real: PathBuf,
    /// The first link followed, and where it points.
    via: Option<(PathBuf, PathBuf)>,
}

impl Resolved {
    /// Names the link in a refusal of where it leads.
    fn through(&self, error: Error) -> Error {
        match &self.via {
            Some((link, target)) if error.is_refusal() => {
                Error::Link { link: link.clone(), target: target.clone(), refusal: Box::new(error) }
            }
            _ => error,
        }
    }
}

/// Walks `path` from `/` as the kernel resolves it, following symbolic
/// links, and refuses every directory on the way, but the last, that users
/// other than its owner may write without the sticky bit. The last one, the
/// mesh directory itself, is for [`check_private`] to judge.
///
/// A link that leads nowhere is refused; a part of the path that does not
/// exist yet ends the walk, to be created by us.
#[cfg(unix)]
fn resolve_safely(path: &Path) -> Result<Resolved> {
    use std::{collections::VecDeque, ffi::OsString, os::unix::fs::MetadataExt, path::Component};

    // The kernel's own limit on links in one resolution (MAXSYMLINKS).
    const MAX_LINKS: usize = 40;

    fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
        path.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
    }
    let check_ancestor = |dir: &Path, resolved: &Resolved| -> Result<()> {
        let mode = fs::metadata(dir).map_err(Error::io("inspect", dir))?.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(resolved.through(Error::InsecureAncestor { path: dir.to_owned(), mode }));
        }
        Ok(())
    };

    let mut resolved = Resolved { real: PathBuf::from("/"), via: None };
    let mut todo: VecDeque<OsString> = parts(path).collect();
    let mut links = 0;
    if !todo.is_empty() {
        check_ancestor(&resolved.real, &resolved)?;
    }
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            resolved.real.pop();
            continue;
        }
        let next = resolved.real.join(&part);
        let meta = match fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Not there yet: the rest is ours to create, under a
                // directory already checked.
                resolved.real = next;
                resolved.real.extend(todo);
                return Ok(resolved);
            }
            Err(e) => return Err(Error::io("inspect", &next)(e)),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            let target = fs::read_link(&next).map_err(Error::io("read the link", &next))?;
            let target = resolved.real.join(target);
            // In a sticky directory such as /tmp, a link's owner may still
            // replace it, and so send us elsewhere after the check.
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me && meta.uid() != 0 {
                return Err(resolved.through(Error::NotOwner { path: next, owner: meta.uid(), me }));
            }
            if links > MAX_LINKS {
                let loops = io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error());
                return Err(Error::io("resolve", path)(loops));
            }
            if fs::metadata(&next).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
                return Err(Error::DanglingLink { link: next, target });
            }
            resolved.via.get_or_insert_with(|| (next.clone(), target.clone()));
            // `target` is absolute: walk it again from the root.
            resolved.real = PathBuf::from("/");
            for part in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(part);
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(resolved.through(Error::NotADirectory { path: next }));
        }
        resolved.real = next;
        if !todo.is_empty() {
            check_ancestor(&resolved.real, &resolved)?;
        }
    }
    Ok(resolved)
}

#[cfg(not(unix))]
fn resolve_safely(path: &Path) -> Result<Resolved> {
    Ok(Resolved { real: path.to_owned(), via: None })
}

#[cfg(not(unix))]
fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(Error::io("inspect", path))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory { path: path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let mesh = MeshDir::open(tmp.path().join("a/b")).unwrap();
        for dir in [mesh.root().to_owned(), mesh.nodes_dir(), mesh.logs_dir()] {
            let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn refuses_group_or_world_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("m");
        fs::create_dir(&root).unwrap();
        for mode in [0o770, 0o707, 0o777] {
            fs::set_permissions(&root, fs::Permissions::from_mode(mode)).unwrap();
            let err = MeshDir::open(&root).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Insecure { .. }), "{text}");
            assert!(text.contains(&root.display().to_string()) && text.contains("chmod 700"), "{text}");
        }
    }

    #[test]
    fn refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        let err = MeshDir::open(&file).unwrap_err();
        assert!(matches!(err, Error::NotADirectory { .. }) && err.is_refusal(), "{err}");
        let err = MeshDir::open(file.join("m")).unwrap_err();
        assert!(matches!(err, Error::NotADirectory { ref path } if *path == file), "{err}");
    }

    fn dir_with_mode(path: &Path, mode: u32) -> PathBuf {
        fs::create_dir_all(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        path.to_owned()
    }

    #[test]
    fn refuses_an_ancestor_others_may_write_without_the_sticky_bit() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o775, 0o757] {
            let open = dir_with_mode(&tmp.path().join(format!("open{mode:o}")), mode);
            // A parent of ours in between does not help: `open` can be renamed.
            for mesh in [open.join("m"), open.join("a/b/m")] {
                let err = MeshDir::open(&mesh).unwrap_err();
                assert!(matches!(err, Error::InsecureAncestor { ref path, .. } if *path == open), "{err}");
                assert!(err.is_refusal());
                let text = err.to_string();
                let name = open.display();
                assert!(
                    text.contains(&format!("directory {name} above the mesh directory has mode 0{mode:o}")),
                    "{text}"
                );
                assert!(text.contains(&format!("`chmod go-w {name}` or `chmod +t {name}`")), "{text}");
            }
            assert!(
                !open.join("m").exists() && !open.join("a").exists(),
                "nothing was created under {mode:o}"
            );
        }
    }

    #[test]
    fn accepts_a_sticky_ancestor_others_may_write() {
        let tmp = tempfile::tempdir().unwrap();
        let sticky = dir_with_mode(&tmp.path().join("sticky"), 0o1777);
        let mesh = MeshDir::open(sticky.join("m")).unwrap();
        assert!(mesh.nodes_dir().is_dir());
    }

    #[test]
    fn follows_a_link_to_a_private_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let real = dir_with_mode(&tmp.path().join("real"), 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mesh = MeshDir::open(&link).unwrap();
        assert_eq!(mesh.root(), link, "the mesh keeps the name it was given");
        assert!(real.join("nodes").is_dir() && real.join("logs").is_dir());
        // And a link as an ancestor, relative this time.
        let parent = tmp.path().join("parent");
        std::os::unix::fs::symlink("real", &parent).unwrap();
        MeshDir::open(parent.join("m")).unwrap();
        assert!(real.join("m/nodes").is_dir());
    }

    #[test]
    fn refuses_a_link_to_a_directory_others_may_write() {
        let tmp = tempfile::tempdir().unwrap();
        let open = dir_with_mode(&tmp.path().join("open"), 0o777);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let err = MeshDir::open(&link).unwrap_err();
        assert!(err.is_refusal(), "{err}");
        let Error::Link { link: ref l, ref target, ref refusal } = err else { panic!("{err}") };
        assert_eq!((l, target), (&link, &open));
        assert!(matches!(**refusal, Error::Insecure { mode: 0o777, .. }), "{refusal}");
        let text = err.to_string();
        let want = format!(
            "{} is a symbolic link to {}: mesh directory {}",
            link.display(),
            open.display(),
            open.display()
        );
        assert!(text.starts_with(&want) && text.contains("chmod 700"), "{text}");

        // Through a link, an ancestor is judged where the link leads.
        let err = MeshDir::open(link.join("m")).unwrap_err();
        let Error::Link { ref refusal, .. } = err else { panic!("{err}") };
        assert!(matches!(**refusal, Error::InsecureAncestor { ref path, .. } if *path == open), "{err}");
    }

    #[test]
    fn refuses_a_dangling_link() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link");
        let target = tmp.path().join("gone");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for mesh in [link.clone(), link.join("m")] {
            let err = MeshDir::open(&mesh).unwrap_err();
            assert!(err.is_refusal(), "{err}");
            let want = format!(
                "{} is a symbolic link to {}, which does not exist",
                link.display(),
                target.display()
            );
            assert!(err.to_string().starts_with(&want), "{err}");
        }
        assert!(!target.exists(), "the link's target was not created");
    }

    #[test]
    fn only_refusals_are_refusals() {
        let io = Error::io("read", "/x")(io::Error::other("boom"));
        assert!(!io.is_refusal());
        assert!(!Error::IdInUse { id: uuid::Uuid::nil() }.is_refusal());
        assert!(Error::NotOwner { path: "/x".into(), owner: 1, me: 2 }.is_refusal());
    }
}
