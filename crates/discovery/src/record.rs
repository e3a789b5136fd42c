//! The node record: `nodes/<id>.json` and `router.json` (DESIGN.md §4).

use std::{fs, io::Write, path::Path};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

/// The record format this build writes and reads.
pub const RECORD_FORMAT: u32 = 1;

/// What part a node plays in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// The node holding the router election.
    Router,
    /// A node serving a service.
    Module,
    /// An editor, GUI or other long-lived client holding a session.
    Frontend,
    /// A one-off client.
    Script,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Router => "router",
            Role::Module => "module",
            Role::Frontend => "frontend",
            Role::Script => "script",
        })
    }
}

/// One node's published record. `router.json` adds `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Always [`RECORD_FORMAT`] when written by this build.
    pub format: u32,
    /// The node's id; also the name of its files under `nodes/`.
    pub id: Uuid,
    /// The node's role.
    pub role: Role,
    /// A name for people, such as the module or frontend name.
    pub name: String,
    /// The service names this node serves.
    #[serde(default)]
    pub services: Vec<String>,
    /// The node's process id.
    pub pid: u32,
    /// The node's version.
    #[serde(default)]
    pub version: String,
    /// When the node started, RFC 3339 in UTC.
    pub started_at: String,
    /// `unix:/abs/path.sock`, `pipe:\\.\pipe\name`, or none.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The id of the router this node is attached to, if any.
    #[serde(default)]
    pub router: Option<Uuid>,
    /// The router's term; only in `router.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl NodeRecord {
    /// A record for this process, started now, with a fresh id.
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            format: RECORD_FORMAT,
            id: Uuid::new_v4(),
            role,
            name: name.into(),
            services: Vec::new(),
            pid: std::process::id(),
            version: String::new(),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            endpoint: None,
            router: None,
            epoch: None,
        }
    }

    /// Parses a record, saying why in words when it cannot be used.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("empty file".into());
        }
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_eof() { format!("truncated JSON ({e})") } else { format!("not JSON ({e})") }
        })?;
        match value.get("format").map(serde_json::Value::as_u64) {
            Some(Some(n)) if n == u64::from(RECORD_FORMAT) => {}
            Some(Some(other)) => {
                return Err(format!(
                    "unknown record format {other} (this polis reads format {RECORD_FORMAT})"
                ));
            }
            _ => return Err("no record format number".into()),
        }
        serde_json::from_value(value).map_err(|e| format!("invalid record ({e})"))
    }

    /// The record as contract JSON, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }
}

/// Writes `record` to `path` atomically: readers see the old file or the new
/// one, never a part. The temp file is a dot file, which readers skip.
pub(crate) fn write_atomic(path: &Path, record: &NodeRecord) -> Result<()> {
    let dir = path.parent().expect("records live in a directory");
    let name = path.file_name().and_then(|n| n.to_str()).expect("record names are UTF-8");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(record.to_json().as_bytes())?;
        file.write_all(b"\n")?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../tests/data/record-v1.json");

    #[test]
    fn committed_sample_round_trips() {
        let record = NodeRecord::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(record.role, Role::Module);
        assert_eq!(record.services, ["echo"]);
        assert_eq!(record.pid, 1234);
        let again: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        let sample: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(again, sample, "writing a parsed record gives the contract back");
    }

    #[test]
    fn unreadable_records_say_why() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty file"),
            (b"  \n", "empty file"),
            (b"\x00\xffgarbage", "not JSON"),
            (&SAMPLE.as_bytes()[..40], "truncated JSON"),
            (br#"{"format":2,"id":"x"}"#, "unknown record format 2"),
            (br#"{"format":1,"id":"not-a-uuid"}"#, "invalid record"),
        ];
        for (bytes, want) in cases {
            let err = NodeRecord::parse(bytes).unwrap_err();
            assert!(err.contains(want), "{:?}: {err}", String::from_utf8_lossy(bytes));
        }
    }
}
