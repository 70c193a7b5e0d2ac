//! Which addresses `url_download` may reach: pure decisions, no I/O.
//!
//! A query over untrusted rows must not turn Riffle into a proxy into the network it runs
//! in: cloud metadata endpoints (`169.254.169.254`), the machine's own services, private
//! networks. So every address a request would connect to, after DNS resolution and on every
//! redirect, is checked against [`non_public`]; the options `'url.allow-private'` and
//! `'url.allowed-hosts'` open the door where the user wants it open. The HTTP client
//! ([`super::http`]) applies the policy where the connection is made.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use riffle_common::{Options, Result};

/// Which hosts and addresses HTTP requests may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `'url.allow-private'`: any address.
    allow_private: bool,
    /// `'url.allowed-hosts'`: host names (lower case, no trailing dot) reachable whatever
    /// they resolve to.
    hosts: BTreeSet<String>,
    /// `'url.allowed-hosts'` entries that are addresses: reachable, whichever name led there.
    addresses: BTreeSet<IpAddr>,
}

/// A connection the policy refuses: to which host and address, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    host: String,
    address: IpAddr,
    reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host == self.address.to_string() {
            write!(f, "refused to connect to {}", self.address)?;
        } else {
            write!(f, "refused to connect to {host} at {}", self.address)?;
        }
        write!(
            f,
            ": it is {}, and url_download reaches only public addresses; to allow it, \
             SET 'url.allowed-hosts' = '{host}' or SET 'url.allow-private' = 'true'",
            self.reason
        )
    }
}

impl std::error::Error for Refused {}

impl UrlPolicy {
    /// The policy the options set: public addresses only, unless `'url.allow-private'` or
    /// `'url.allowed-hosts'` say otherwise.
    pub fn from_options(options: &Options) -> Result<Self> {
        let mut policy = Self {
            allow_private: options.get_bool("url.allow-private")?,
            ..Self::default()
        };
        let hosts = options.get("url.allowed-hosts").unwrap_or_default();
        for entry in hosts.split(',').map(normalize_host) {
            if entry.is_empty() {
                continue;
            }
            match entry.parse::<IpAddr>() {
                Ok(address) => policy.addresses.insert(canonical(address)),
                Err(_) => policy.hosts.insert(entry),
            };
        }
        Ok(policy)
    }

    /// A policy that allows every address (tests, trusted jobs).
    pub fn allow_all() -> Self {
        Self {
            allow_private: true,
            ..Self::default()
        }
    }

    /// Whether `host` (as written in the URL) may reach any address it resolves to.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow_private || self.hosts.contains(&normalize_host(host))
    }

    /// Checks one address that `host` resolved to (or is, for an address literal).
    pub fn check(&self, host: &str, address: IpAddr) -> std::result::Result<(), Refused> {
        if self.host_allowed(host) || self.addresses.contains(&canonical(address)) {
            return Ok(());
        }
        match non_public(address) {
            None => Ok(()),
            Some(reason) => Err(Refused {
                host: host.to_string(),
                address,
                reason,
            }),
        }
    }

    /// Checks a URL whose host is an address literal (`http://10.0.0.1/`,
    /// `http://[::1]/`, `http://2130706433/`), which reaches no resolver. Named hosts pass
    /// here and are checked when they resolve.
    pub fn check_url(&self, url: &url::Url) -> std::result::Result<(), Refused> {
        let address = match url.host() {
            Some(url::Host::Ipv4(address)) => IpAddr::V4(address),
            Some(url::Host::Ipv6(address)) => IpAddr::V6(address),
            Some(url::Host::Domain(_)) | None => return Ok(()),
        };
        self.check(&address.to_string(), address)
    }
}

/// Host names compare in lower case, without brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Why `address` is not a public unicast address, or `None` when it is.
pub fn non_public(address: IpAddr) -> Option<String> {
    match address {
        IpAddr::V4(v4) => non_public_v4(v4).map(str::to_string),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = address.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified address (0.0.0.0/8)",
        (127, _, _) => "a loopback address",
        (10, _, _) | (192, 168, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (169, 254, _) => "a link-local address (where cloud metadata services answer)",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (192, 88, 99) => "a 6to4 relay address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn non_public_v6(address: Ipv6Addr) -> Option<String> {
    let segments = address.segments();
    let embedded = |reason: &str, v4: Ipv4Addr| {
        non_public_v4(v4).map(|inner| format!("{reason} of {v4}, {inner}"))
    };
    if address.is_unspecified() {
        return Some("the unspecified address".into());
    }
    if address.is_loopback() {
        return Some("a loopback address".into());
    }
    if let Some(v4) = address.to_ipv4_mapped() {
        return embedded("an IPv4-mapped form", v4);
    }
    let low_v4 = || {
        let [.., a, b, c, d] = address.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match segments {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        [0, 0, 0, 0, 0, 0, _, _] => return embedded("an IPv4-compatible form", low_v4()),
        // NAT64: the gateway connects to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return embedded("a NAT64 form", low_v4()),
        [0x64, 0xff9b, 1, ..] => "a local NAT64 address".into(),
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            return embedded("a 6to4 form", Ipv4Addr::new(a, b, c, d));
        }
        [0x100, 0, 0, 0, ..] => "a discard address".into(),
        [0x2001, 0xdb8, ..] => "a documentation address".into(),
        [0x2001, 0..=0x1ff, ..] => "an IETF protocol address (Teredo and others)".into(),
        [0x3fff, 0..=0x0fff, ..] => "a documentation address".into(),
        [first, ..] if first & 0xfe00 == 0xfc00 => "a unique-local address (fc00::/7)".into(),
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address".into(),
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address".into(),
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        non_public(text.parse().unwrap()).is_some()
    }

    #[test]
    fn non_public_addresses_are_recognized_in_every_form() {
        for address in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(refused(address), "{address} should be refused");
        }
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!refused(address), "{address} is public");
        }
    }

    #[test]
    fn options_open_hosts_and_addresses() {
        let mut options = Options::new();
        let closed = UrlPolicy::from_options(&options).unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let error = closed.check("localhost", loopback).unwrap_err().to_string();
        assert!(
            error.contains("refused to connect to localhost at 127.0.0.1")
                && error.contains("loopback")
                && error.contains("'url.allowed-hosts' = 'localhost'")
                && error.contains("'url.allow-private' = 'true'"),
            "{error}"
        );
        options
            .set("url.allowed-hosts", " Files.Internal. , 10.0.0.7,[::1]")
            .unwrap();
        let policy = UrlPolicy::from_options(&options).unwrap();
        assert!(
            policy
                .check("files.internal", "10.9.9.9".parse().unwrap())
                .is_ok()
        );
        assert!(policy.check("other", "10.0.0.7".parse().unwrap()).is_ok());
        assert!(policy.check("[::1]", "::1".parse().unwrap()).is_ok());
        assert!(
            policy
                .check("other", "::ffff:10.0.0.7".parse().unwrap())
                .is_ok()
        );
        assert!(policy.check("other", "10.0.0.8".parse().unwrap()).is_err());
        options.set("url.allow-private", "true").unwrap();
        let open = UrlPolicy::from_options(&options).unwrap();
        assert!(open.check("anything", loopback).is_ok());
    }

    #[test]
    fn address_literals_in_any_notation_are_checked() {
        let policy = UrlPolicy::default();
        for url in [
            "http://127.0.0.1:8080/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(policy.check_url(&url).is_err(), "{url} should be refused");
        }
        let named = url::Url::parse("http://example.com/").unwrap();
        assert!(
            policy.check_url(&named).is_ok(),
            "names are checked when resolved"
        );
        let error = policy
            .check_url(&url::Url::parse("http://2130706433/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("refused to connect to 127.0.0.1: it is a loopback address"),
            "{error}"
        );
    }
}
