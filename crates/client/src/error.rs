//! [`ClientError`], the one mapping of what went wrong for a frontend, and
//! the gRPC code names that every polis frontend prints.

use tonic::{Code, Status};

use crate::connect::ConnectError;

/// What can go wrong for a frontend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No router could be reached or launched: `UNAVAILABLE: …`, like any
    /// error a frontend prints, but for a refused mesh directory (its own
    /// words).
    #[error("{}", connect_line(.0))]
    Connect(#[from] ConnectError),
    /// The router or the module answered with an error, or the router went
    /// away during the call (then the code is `UNAVAILABLE`).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Call(Status),
    /// A payload was not JSON.
    #[error("INTERNAL: the reply is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The mesh directory failed: `FAILED_PRECONDITION: …`.
    #[error("FAILED_PRECONDITION: {0}")]
    Discovery(#[from] polis_discovery::Error),
}

impl ClientError {
    /// Whether no router ran the call (it never left this process, or its
    /// router left office without reading it): then trying again is safe.
    pub(crate) fn was_not_run(&self) -> bool {
        matches!(self, ClientError::Call(status) if crate::frames::was_not_run(status))
            || crate::reach::is_transient(self)
    }

    /// The gRPC code: `Unavailable` when no router could be had.
    pub fn code(&self) -> Code {
        match self {
            ClientError::Call(status) => status.code(),
            ClientError::Connect(ConnectError::Discovery(_)) => Code::FailedPrecondition,
            ClientError::Connect(_) => Code::Unavailable,
            ClientError::Json(_) => Code::Internal,
            ClientError::Discovery(_) => Code::FailedPrecondition,
        }
    }
}

/// A status becomes a `Call` error through [`from_transport`], so that every
/// path (unary calls, streams, sessions, admin calls) reports a broken
/// connection the same way.
impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Call(from_transport(status))
    }
}

/// A status made by the transport, not sent by the router (the connection
/// broke mid-call, or nobody listens), is the router being unavailable:
/// tonic reports some of these as `UNKNOWN` ("transport error") or
/// `CANCELLED`, which a caller cannot tell from a module's own answer.
pub(crate) fn from_transport(status: Status) -> Status {
    // tonic reports its own deadline as CANCELLED "Timeout expired": a
    // deadline that passes is DEADLINE_EXCEEDED, on every path.
    let timed_out = std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::TimeoutExpired>());
    if status.code() == Code::Cancelled && (timed_out || status.message() == "Timeout expired") {
        return Status::deadline_exceeded("no reply within the call's deadline (the router took too long)");
    }
    let from_transport = std::error::Error::source(&status).is_some();
    if from_transport && matches!(status.code(), Code::Unknown | Code::Unavailable | Code::Cancelled) {
        Status::unavailable(format!("the router went away during the call ({})", status.message()))
    } else {
        status
    }
}

fn connect_line(err: &ConnectError) -> String {
    match err {
        // A refused mesh directory is the setup's fault, not the router's.
        ConnectError::Discovery(e) => format!("FAILED_PRECONDITION: {e}"),
        other => format!("UNAVAILABLE: {other}"),
    }
}

pub use polis_mesh::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_mesh_directory_names_its_code() {
        let refused = || polis_discovery::Error::NotADirectory { path: "/tmp/a-file".into() };
        for err in
            [ClientError::Discovery(refused()), ClientError::Connect(ConnectError::Discovery(refused()))]
        {
            assert_eq!(err.code(), Code::FailedPrecondition);
            let text = err.to_string();
            assert!(
                text.starts_with("FAILED_PRECONDITION: mesh directory /tmp/a-file is not a directory"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_status_the_router_sent_keeps_its_code_and_message() {
        let err = ClientError::from(Status::not_found("no module named x"));
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.to_string(), "NOT_FOUND: no module named x");
    }

    #[test]
    fn a_status_made_by_a_broken_transport_is_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let mut status = Status::unknown("transport error");
        status.set_source(std::sync::Arc::new(io));
        let err = ClientError::from(status);
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.to_string().starts_with("UNAVAILABLE: the router went away"), "{err}");
    }

    #[test]
    fn tonics_own_timeout_is_deadline_exceeded_not_cancelled() {
        let mut status = Status::cancelled("Timeout expired");
        status.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        assert_eq!(ClientError::from(status).code(), Code::DeadlineExceeded);
    }

    #[test]
    fn a_router_that_cannot_be_reached_is_unavailable_with_its_code_in_the_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = ClientError::from(ConnectError::Socket { path: "/m/router.sock".into(), source: io });
        assert!(
            err.to_string().starts_with("UNAVAILABLE: cannot connect to the router at /m/router.sock"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_error_from_a_module_stays_unknown() {
        assert_eq!(ClientError::from(Status::unknown("the module said so")).code(), Code::Unknown);
    }
}
