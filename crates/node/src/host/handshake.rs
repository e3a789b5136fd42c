//! The handshake, one path for every module: a frames module says `Hello`
//! and is answered `Welcome`, whether the router spawned it or it attached
//! over the socket; a JSON-RPC module answers `initialize`.

use std::time::Duration;

use polis_mesh::{
    PROTOCOL_VERSION,
    pb::{self, Frame, frame::Kind},
};
use tokio::io::AsyncWriteExt;
use tonic::Status;

use super::{
    RouterIdentity, jsonrpc,
    link::{ByteWriter, LinkReader, LinkWriter},
    methods::Declared,
};

/// Why a module was not taken in. The text completes "module X failed its
/// handshake: …", as a person reads it in the load's error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("its first frame was not Hello")]
    NotHello,
    #[error("it closed its stdout before saying hello")]
    Closed,
    #[error("{0}; its stdout is for frames only")]
    Link(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("it calls itself {found:?}, not {expected:?}")]
    WrongName { found: String, expected: String },
    #[error("it speaks frame protocol {version}, this router speaks {PROTOCOL_VERSION}")]
    Version { name: String, version: u32 },
    #[error("no hello within {0:?}")]
    Timeout(Duration),
    #[error("its first message did not answer initialize")]
    NotInitialized,
    #[error("it closed its stdout before answering initialize")]
    ClosedBeforeInitialize,
    #[error("initialize failed: {0}")]
    InitializeFailed(String),
    #[error("{0}")]
    Io(String),
}

impl HandshakeError {
    /// The answer to a module that attached over the socket.
    pub(crate) fn attach_status(&self) -> Status {
        match self {
            Self::NotHello | Self::Closed => Status::invalid_argument("an attached module starts with Hello"),
            Self::InvalidName(why) => Status::invalid_argument(why.clone()),
            Self::Version { name, version } => Status::failed_precondition(format!(
                "module {name} speaks frame protocol {version}, this router speaks {PROTOCOL_VERSION}"
            )),
            Self::Timeout(_) => Status::deadline_exceeded("no Hello in time"),
            other => Status::unavailable(other.to_string()),
        }
    }
}

/// Reads a frames module's `Hello`, checks it (its name is `expected`, or
/// any valid service name for a module that attached on its own), and
/// answers `Welcome` with the config `config_for` picks for it. The caller
/// bounds it with [`within`].
pub(crate) async fn hello(
    reader: &mut LinkReader,
    writer: &mut LinkWriter,
    router: RouterIdentity,
    expected: Option<&str>,
    config_for: impl FnOnce(&pb::Hello) -> serde_json::Value,
) -> Result<pb::Hello, HandshakeError> {
    let hello = match reader.read().await {
        Ok(Some(Frame { kind: Some(Kind::Hello(hello)) })) => hello,
        Ok(Some(_)) => return Err(HandshakeError::NotHello),
        Ok(None) => return Err(HandshakeError::Closed),
        Err(e) => return Err(HandshakeError::Link(e.to_string())),
    };
    match expected {
        Some(expected) if hello.name != expected => {
            return Err(HandshakeError::WrongName { found: hello.name, expected: expected.to_owned() });
        }
        Some(_) => {}
        None => crate::manifest::validate_name(&hello.name).map_err(HandshakeError::InvalidName)?,
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(HandshakeError::Version { name: hello.name, version: hello.protocol_version });
    }
    let welcome = pb::Welcome {
        router_id: router.id.to_string(),
        epoch: router.epoch,
        config_json: serde_json::to_vec(&config_for(&hello)).unwrap_or_default().into(),
    };
    writer
        .write(&Frame { kind: Some(Kind::Welcome(welcome)) })
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    Ok(hello)
}

/// Sends a JSON-RPC module `initialize` with its config on `stdin`, and
/// reads its answer, which may declare its methods.
pub(crate) async fn initialize(
    reader: &mut LinkReader,
    stdin: &mut ByteWriter,
    config: &serde_json::Value,
) -> Result<Declared, HandshakeError> {
    let io = |e: std::io::Error| HandshakeError::Io(e.to_string());
    stdin.write_all(&jsonrpc::initialize(config)).await.map_err(io)?;
    stdin.flush().await.map_err(io)?;
    match reader.read().await {
        Ok(Some(Frame { kind: Some(Kind::Reply(r)) })) if r.id == jsonrpc::INITIALIZE_ID => match r.outcome {
            Some(pb::reply::Outcome::Error(e)) => Err(HandshakeError::InitializeFailed(e.message)),
            Some(pb::reply::Outcome::Payload(p)) => {
                Declared::from_initialize(Some(&p.data)).map_err(HandshakeError::InitializeFailed)
            }
            None => Ok(Declared::default()),
        },
        Ok(Some(_)) => Err(HandshakeError::NotInitialized),
        Ok(None) => Err(HandshakeError::ClosedBeforeInitialize),
        Err(e) => Err(HandshakeError::Io(e.to_string())),
    }
}

/// `handshake`, or [`HandshakeError::Timeout`] once `deadline` has passed.
pub(crate) async fn within<T>(
    deadline: Duration,
    handshake: impl Future<Output = Result<T, HandshakeError>>,
) -> Result<T, HandshakeError> {
    tokio::time::timeout(deadline, handshake).await.unwrap_or(Err(HandshakeError::Timeout(deadline)))
}
