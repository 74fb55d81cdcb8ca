//! Where outbound calls may go. A callback URL comes from a tenant; without a policy, Wharf
//! would POST wherever it says, including the platform's own network (a cloud metadata service
//! at 169.254.169.254, a database's admin port on 10.0.0.5). By default only public addresses
//! are called: loopback, private, link-local, shared, multicast and unspecified addresses are
//! refused, checked on the addresses a name resolves to (so a public name pointing inside is
//! refused too) and on the address actually connected to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The targets outbound calls may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetPolicy {
    /// Also call loopback, private and link-local addresses (a receiver inside the platform's
    /// network, or tests). Off by default.
    pub allow_private: bool,
    /// When not empty, only these hosts (exact names, or `*.example.com` for its subdomains).
    pub allowed_hosts: Vec<String>,
    /// Never these hosts (same forms), whatever else allows them.
    pub denied_hosts: Vec<String>,
}

impl TargetPolicy {
    /// Whether a URL's host name may be called at all (before its addresses are known).
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.denied_hosts.iter().any(|p| matches(p, &host)) {
            return Err(format!("{host} is on the denied hosts list"));
        }
        if !self.allowed_hosts.is_empty() && !self.allowed_hosts.iter().any(|p| matches(p, &host)) {
            return Err(format!("{host} is not on the allowed hosts list"));
        }
        Ok(())
    }

    /// Whether an address may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is a loopback, private, link-local or otherwise internal address, which \
                 callbacks may not reach (callbacks.allow_private)"
            ))
        }
    }
}

/// `pattern` is a host name, or `*.` and a domain whose subdomains it names.
fn matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => pattern == host,
    }
}

/// An address of the public internet: not loopback, private (RFC 1918, unique local),
/// link-local, shared (RFC 6598), multicast, broadcast, unspecified, documentation or
/// benchmarking space. An IPv4 address mapped into IPv6 is judged as the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_by_default() {
        let policy = TargetPolicy::default();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(policy.check_ip(ip).is_err(), "{internal} must be refused");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(policy.check_ip(public.parse().unwrap()).is_ok(), "{public}");
        }
        let open = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        assert!(open.check_ip("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn host_lists_take_names_and_subdomains() {
        let policy = TargetPolicy {
            allow_private: false,
            allowed_hosts: vec!["*.example.com".into(), "api.partner.io".into()],
            denied_hosts: vec!["evil.example.com".into()],
        };
        assert!(policy.check_host("hooks.example.com").is_ok());
        assert!(policy.check_host("API.partner.io.").is_ok());
        assert!(policy.check_host("example.com").is_err());
        assert!(policy.check_host("evil.example.com").is_err());
        assert!(policy.check_host("other.io").is_err());
        assert!(TargetPolicy::default().check_host("anything.io").is_ok());
    }
}
