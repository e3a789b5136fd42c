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
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir().map_err(Error::io("resolve", &root))?.join(root)
        };
        if let Some(parent) = root.parent().filter(|p| *p == fallback_root()) {
            create_private(parent)?;
            check_private(parent)?;
        }
        create_private(&root)?;
        check_private(&root)?;
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
    // symlink_metadata: a link planted in place of the directory is refused
    // as "not a directory" rather than followed.
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
    fn refuses_a_file_or_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(MeshDir::open(&file).unwrap_err(), Error::NotADirectory { .. }));
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(matches!(MeshDir::open(&link).unwrap_err(), Error::NotADirectory { .. }));
    }
}
