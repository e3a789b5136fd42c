//! `etcd://HOST:PORT[,HOST:PORT…]/PREFIX[?ttl=SECONDS]`: which etcd
//! cluster, which mesh in it (the key prefix), and the lease TTL.

use std::{str::FromStr, time::Duration};

use polis_discovery::Error;

/// The lease TTL when the address names none: short, since a router whose
/// lease lapses is replaced only after it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// A parsed etcd discovery address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `HOST:PORT` of each member given.
    pub endpoints: Vec<String>,
    /// The key prefix of the mesh, without a trailing `/`, such as `/polis/alice`.
    pub prefix: String,
    /// The TTL of every lease this node takes.
    pub ttl: Duration,
}

impl Address {
    /// The endpoints as given, for messages.
    pub fn members(&self) -> String {
        self.endpoints.join(",")
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(given: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadAddress { given: given.to_owned(), reason: reason.to_owned() };
        let rest =
            given.strip_prefix("etcd://").ok_or_else(|| bad("expected etcd://HOST:PORT[,…]/PREFIX"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, prefix) = rest
            .split_once('/')
            .ok_or_else(|| bad("no /PREFIX after the members: the mesh needs a key prefix"))?;
        let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        for e in &endpoints {
            let Some((host, port)) = e.rsplit_once(':') else { return Err(bad("each member is HOST:PORT")) };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad(&format!("member {e:?} is not HOST:PORT")));
            }
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(bad("the prefix must be one or more non-empty names, without . or .."));
        }
        let mut ttl = DEFAULT_TTL;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ttl", secs)) => match secs.parse::<u64>() {
                    Ok(s) if (1..=3600).contains(&s) => ttl = Duration::from_secs(s),
                    _ => return Err(bad("ttl is a whole number of seconds from 1 to 3600")),
                },
                _ => return Err(bad(&format!("unknown option {pair:?} (known: ttl=SECONDS)"))),
            }
        }
        Ok(Self { endpoints, prefix: format!("/{prefix}"), ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_prefix_and_ttl_parse() {
        let a: Address = "etcd://10.0.0.1:2379,h2:2379/polis/alice?ttl=2".parse().unwrap();
        assert_eq!(a.endpoints, ["10.0.0.1:2379", "h2:2379"]);
        assert_eq!(a.prefix, "/polis/alice");
        assert_eq!(a.ttl, Duration::from_secs(2));
        let b: Address = "etcd://localhost:2379/m/".parse().unwrap();
        assert_eq!((b.prefix.as_str(), b.ttl), ("/m", DEFAULT_TTL));
    }

    #[test]
    fn bad_addresses_are_refused_naming_what_is_wrong() {
        for (given, why) in [
            ("http://h:1/m", "expected etcd://"),
            ("etcd://h:1", "no /PREFIX"),
            ("etcd://h:1/", "prefix must be"),
            ("etcd://h/m", "HOST:PORT"),
            ("etcd://h:x/m", "is not HOST:PORT"),
            ("etcd://h:1/a/../b", "without . or .."),
            ("etcd://h:1/m?ttl=0", "ttl is"),
            ("etcd://h:1/m?tls=1", "unknown option"),
        ] {
            let err = given.parse::<Address>().unwrap_err().to_string();
            assert!(err.starts_with("INVALID_ARGUMENT: ") && err.contains(why), "{given}: {err}");
        }
    }
}
