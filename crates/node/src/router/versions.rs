//! Versions and features on a frontend's session: the router picks the
//! session protocol from what the frontend's `SessionHello` lists, or
//! refuses it with `FAILED_PRECONDITION` saying which side to upgrade, and
//! announces its own version and features in `SessionWelcome`. See
//! `polis_mesh::versions` for what each version number means.

use polis_mesh::{
    pb,
    versions::{self, SESSION_PROTOCOLS, features},
};
use tonic::Status;

/// This router's polis version.
pub(crate) const ROUTER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The optional features this router serves. `events` and `module-calls`
/// join the list with the code that serves them.
pub(crate) const FEATURES: &[&str] =
    &[features::EVENTS, features::MODULE_CALLS, features::INTROSPECT, features::MONITOR];

/// The session protocol for `hello`, or the refusal that says which side
/// to upgrade.
pub(crate) fn negotiate(hello: &pb::SessionHello) -> Result<u32, Status> {
    versions::negotiate(&hello.protocol_versions, SESSION_PROTOCOLS, ROUTER_VERSION)
        .map_err(Status::failed_precondition)
}

/// What a welcome says of this router, beyond its identity.
pub(crate) fn welcome(protocol_version: u32) -> pb::SessionWelcome {
    pb::SessionWelcome {
        router_version: ROUTER_VERSION.to_owned(),
        protocol_version,
        features: features(),
        ..Default::default()
    }
}

/// [`FEATURES`] as owned strings.
pub(crate) fn features() -> Vec<String> {
    FEATURES.iter().map(|f| (*f).to_owned()).collect()
}
