//! Which versions talk: the session protocol a frontend and a router
//! negotiate in `SessionHello` / `SessionWelcome`, and the optional
//! features each side announces.
//!
//! Three numbers, three layers:
//! - the preamble's `u16` ([`crate::preamble::VERSION`]) is the framing of
//!   a frame session on `router.sock`: the magic, then `u32`-length-prefixed
//!   protobuf frames. It changes only if those bytes change, and a router
//!   refuses another with `FAILED_PRECONDITION` before any frame;
//! - the session protocol ([`SESSION_PROTOCOLS`]) is what the frames and
//!   messages of a frontend's session mean, over frames or gRPC alike. A
//!   frontend lists the versions it speaks; the router picks the highest
//!   both speak, or refuses the session saying which side to upgrade;
//! - the module protocol ([`crate::PROTOCOL_VERSION`], in `Hello`) is the
//!   router ↔ module link.
//!
//! Additions that old peers may ignore (a new field, a new optional
//! feature) bump none of them: they are announced as [`features`] instead.

/// The session protocol versions this build speaks, oldest first.
pub const SESSION_PROTOCOLS: &[u32] = &[1];

/// Optional features, announced in `SessionHello.features` and
/// `SessionWelcome.features`. A frontend uses one only when the router
/// announced it; one it does not know of it ignores.
pub mod features {
    /// Publish / subscribe frames.
    pub const EVENTS: &str = "events";
    /// Modules calling other services on their own link.
    pub const MODULE_CALLS: &str = "module-calls";
    /// `Admin.Describe`: what a module serves.
    pub const INTROSPECT: &str = "introspect";
    /// `Admin.Monitor`: the live tap of calls and events.
    pub const MONITOR: &str = "monitor";
}

/// The session protocol a frontend speaking `client` (empty: 1 only, a
/// frontend older than the field) and a router speaking `router` agree on:
/// the highest both speak. Without one, the message says which side to
/// upgrade; `router_version` is the router's polis version.
pub fn negotiate(client: &[u32], router: &[u32], router_version: &str) -> Result<u32, String> {
    let client: &[u32] = if client.is_empty() { &[1] } else { client };
    if let Some(common) = client.iter().filter(|v| router.contains(v)).max() {
        return Ok(*common);
    }
    let list = |versions: &[u32]| {
        let mut versions = versions.to_vec();
        versions.sort_unstable();
        versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    };
    let (client_max, router_max) = (client.iter().max(), router.iter().max());
    let upgrade = if client_max > router_max {
        format!("upgrade the router (polis {router_version})")
    } else {
        "upgrade the client".to_owned()
    };
    Err(format!(
        "this client speaks protocol {}, the router speaks {}: {upgrade}",
        list(client),
        list(router)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_common_version_is_chosen() {
        assert_eq!(negotiate(&[1, 2], &[1], "0.1.0"), Ok(1));
        assert_eq!(negotiate(&[1, 2], &[2, 3], "0.3.0"), Ok(2));
        assert_eq!(negotiate(&[], &[1], "0.1.0"), Ok(1), "no list is protocol 1");
    }

    #[test]
    fn no_common_version_says_which_side_to_upgrade() {
        assert_eq!(
            negotiate(&[2], &[1], "0.1.0").unwrap_err(),
            "this client speaks protocol 2, the router speaks 1: upgrade the router (polis 0.1.0)"
        );
        assert_eq!(
            negotiate(&[1], &[2, 3], "0.9.0").unwrap_err(),
            "this client speaks protocol 1, the router speaks 2, 3: upgrade the client"
        );
    }
}
