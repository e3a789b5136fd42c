//! Dialing a router by the endpoint it published in a remote directory
//! (etcd): `tcp:HOST:PORT` or `tls:HOST:PORT`, with the mesh's token. The
//! one place that decides, for the CLI's frontends and for SDK modules
//! re-attaching across machines alike, which endpoint takes which
//! credentials, and that a client holding the mesh CA never sends its
//! token in clear text (no downgrade).

use tonic::transport::Channel;

use crate::{
    tcp::{self, Token},
    tls::ClientTls,
};

/// Why a channel to a router's published endpoint could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Refused for good, whoever is in office: the token, the router's
    /// certificate, or TLS asked for on one side only. Looking again
    /// would not help.
    #[error("{0}")]
    Refused(String),
    /// The endpoint is neither `tcp:` nor `tls:`.
    #[error("{0}")]
    BadEndpoint(String),
    /// Not reachable now (dead and its lease not lapsed yet, or not
    /// listening yet): worth another look.
    #[error("{0}")]
    Unreachable(String),
}

/// A channel to the router that published `endpoint`, over TCP (inside
/// TLS for a `tls:` endpoint, which `tls` must then be given for) with
/// `token`. A `tcp:` endpoint with `tls` given is refused: the caller
/// asked for TLS, and the token is not sent in clear text.
pub async fn endpoint(endpoint: &str, token: &Token, tls: Option<&ClientTls>) -> Result<Channel, DialError> {
    let addr = match (endpoint.split_once(':'), tls) {
        (Some(("tcp", addr)), None) | (Some(("tls", addr)), Some(_)) => addr,
        (Some(("tcp", _)), Some(_)) => {
            return Err(DialError::Refused(format!(
                "UNAUTHENTICATED: the router at {endpoint} does not serve TLS, and --tls-ca asks for it: \
                 the token is not sent in clear text"
            )));
        }
        (Some(("tls", _)), None) => {
            return Err(DialError::Refused(format!(
                "UNAUTHENTICATED: the router at {endpoint} serves TLS: give --tls-ca FILE (POLIS_TLS_CA), \
                 the mesh CA's certificate"
            )));
        }
        _ => {
            return Err(DialError::BadEndpoint(format!(
                "UNAVAILABLE: the router's endpoint {endpoint:?} is not tcp: or tls:"
            )));
        }
    };
    match tcp::connect_channel(addr, token, tls.cloned()).await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            let why = deepest(&e);
            if why.starts_with("UNAUTHENTICATED") || why.starts_with("TLS with the router") {
                Err(DialError::Refused(format!("{why} (router at {endpoint})")))
            } else {
                Err(DialError::Unreachable(format!("cannot connect to the router at {endpoint}: {why}")))
            }
        }
    }
}

/// The innermost cause's text: a connector's own error, under tonic's
/// "transport error".
fn deepest(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_that_is_not_tcp_or_tls_is_refused_naming_it() {
        let err = endpoint("unix:/run/router.sock", &Token::new("t"), None).await.unwrap_err();
        assert!(
            matches!(&err, DialError::BadEndpoint(why) if why.contains("\"unix:/run/router.sock\" is not tcp: or tls:")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_tls_endpoint_without_the_mesh_ca_is_refused() {
        let err = endpoint("tls:127.0.0.1:1", &Token::new("t"), None).await.unwrap_err();
        assert!(
            matches!(&err, DialError::Refused(why) if why.contains("serves TLS: give --tls-ca FILE")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_router_that_does_not_listen_is_unreachable_not_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = endpoint(&format!("tcp:{addr}"), &Token::new("t"), None).await.unwrap_err();
        assert!(matches!(err, DialError::Unreachable(_)), "{err}");
    }
}
