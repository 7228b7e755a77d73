//! Where a remote XMPP domain's servers are (RFC 6120 §3.2, XEP-0368, RFC 2782).
//!
//! In order: a static route from `[s2s.routes]` replaces DNS for its domain (STARTTLS, as on a
//! normal s2s port). Otherwise both `_xmpps-server._tcp.<domain>` (direct TLS) and
//! `_xmpp-server._tcp.<domain>` (STARTTLS) are looked up and their records mixed into one list
//! ordered by RFC 2782 priority and weight, as XEP-0368 §2 says. A record whose target is `.`
//! says that service is decidedly not offered: an `xmpps` one rules out direct TLS only, an
//! `xmpp` one STARTTLS; and once either was seen there is no A/AAAA fallback (XEP-0368 §4).
//! Without any SRV record (NXDOMAIN included) the domain itself is tried on port 5269, if it has
//! an address at all; a domain with none of these yields no target, which the caller reports
//! as `remote-server-not-found`.
//!
//! JID domains arrive Unicode-normalised; they are looked up in their IDNA A-label form, as
//! fully qualified names so the resolver's search list never applies. The resolver reads
//! `/etc/resolv.conf`; without one it asks a resolver on the local host. Live SRV lookups are
//! tested here against a tiny DNS responder on loopback (this machine has no internet).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use rand::Rng;

use crate::policy::normalise_domain;

/// The port of a domain without SRV records (RFC 6120 §3.2.2).
pub const DEFAULT_PORT: u16 = 5269;

/// Most SRV records used per lookup: each may cost a connection attempt.
pub const MAX_SRV_RECORDS: usize = 32;

/// Most addresses used per host.
pub const MAX_ADDRESSES: usize = 16;

/// One place to connect to, before its name is resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A host name (A-label form, no trailing dot) or an IP address literal.
    pub host: String,
    pub port: u16,
    /// XEP-0368 direct TLS (TLS at once, ALPN `xmpp-server`); otherwise STARTTLS.
    pub direct_tls: bool,
}

/// Finds the targets of remote domains.
pub struct Resolver {
    routes: BTreeMap<String, Target>,
    dns: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// `routes` is the `[s2s.routes]` table: domain → "host:port" (an IP, `[IPv6]`, or a host
    /// name). A static route uses STARTTLS. Uses the system's DNS configuration.
    pub fn new(routes: &BTreeMap<String, String>) -> Result<Resolver, String> {
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => builder.build(),
            Err(e) => {
                tracing::warn!(
                    "s2s: no system DNS configuration ({e}); asking a resolver on localhost"
                );
                let servers = [
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ]
                .into_iter()
                .map(NameServerConfig::udp_and_tcp)
                .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioRuntimeProvider::default(),
                )
                .build()
            }
        }
        .map_err(|e| format!("s2s DNS resolver: {e}"))?;
        Ok(Resolver {
            routes: parse_routes(routes)?,
            dns,
        })
    }

    /// Like [`Resolver::new`], but asking these DNS servers (UDP and TCP) instead of the
    /// system's: a private resolver, or a test's.
    pub fn with_name_servers(
        routes: &BTreeMap<String, String>,
        servers: &[SocketAddr],
    ) -> Result<Resolver, String> {
        let servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let dns = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| format!("s2s DNS resolver: {e}"))?;
        Ok(Resolver {
            routes: parse_routes(routes)?,
            dns,
        })
    }

    /// The static route for `domain`, if `[s2s.routes]` has one.
    pub fn route(&self, domain: &str) -> Option<&Target> {
        self.routes.get(&normalise_domain(domain))
    }

    /// Ordered candidates: the static route, else the SRV targets of both services mixed by
    /// RFC 2782 priority and weight, else the domain on port 5269. Empty: the domain does not
    /// exist for XMPP (→ `remote-server-not-found`).
    pub async fn targets(&self, domain: &str) -> Vec<Target> {
        if let Some(route) = self.route(domain) {
            return vec![route.clone()];
        }
        let Some(name) = fqdn(domain) else {
            return Vec::new();
        };
        let (tls, plain) = tokio::join!(
            self.srv(&name, "_xmpps-server._tcp", true),
            self.srv(&name, "_xmpp-server._tcp", false),
        );
        let refused = tls.refused || plain.refused;
        let mut records = tls.records;
        records.extend(plain.records);
        records.truncate(MAX_SRV_RECORDS);
        if !records.is_empty() {
            let mut rng = rand::thread_rng();
            return rfc2782_order(records, &mut |max| rng.gen_range(0..=max))
                .into_iter()
                .map(|r| r.target)
                .collect();
        }
        if refused {
            return Vec::new();
        }
        // No SRV at all: the domain itself, if it has an address (RFC 6120 §3.2.2).
        match self.dns.lookup_ip(name.clone()).await {
            Ok(ips) if ips.iter().next().is_some() => vec![Target {
                host: ascii(&name),
                port: DEFAULT_PORT,
                direct_tls: false,
            }],
            _ => Vec::new(),
        }
    }

    /// Host name → socket addresses (A and AAAA) for one target; an IP literal is itself.
    /// Empty when the name does not resolve.
    pub async fn addresses(&self, target: &Target) -> Vec<SocketAddr> {
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, target.port)];
        }
        let Some(name) = fqdn(host) else {
            return Vec::new();
        };
        match self.dns.lookup_ip(name).await {
            Ok(ips) => ips
                .iter()
                .take(MAX_ADDRESSES)
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect(),
            Err(e) => {
                tracing::debug!(host, "s2s: no address: {e}");
                Vec::new()
            }
        }
    }

    async fn srv(&self, domain: &Name, service: &str, direct_tls: bool) -> SrvSet {
        let mut set = SrvSet::default();
        let name = match Name::from_ascii(service).and_then(|s| s.append_domain(domain)) {
            Ok(n) => n,
            Err(_) => return set,
        };
        let lookup = match self.dns.srv_lookup(name).await {
            Ok(l) => l,
            // NXDOMAIN or no records: simply none of this service. Other failures (timeouts)
            // count the same; the fallback lookup meets the same trouble and says so.
            Err(e) => {
                if !e.is_no_records_found() {
                    tracing::debug!(%domain, service, "s2s: SRV lookup failed: {e}");
                }
                return set;
            }
        };
        for record in lookup.answers() {
            if let RData::SRV(srv) = &record.data {
                if srv.target.is_root() {
                    set.refused = true;
                    continue;
                }
                set.records.push(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    target: Target {
                        host: ascii(&srv.target),
                        port: srv.port,
                        direct_tls,
                    },
                });
            }
        }
        set
    }
}

#[derive(Default)]
struct SrvSet {
    records: Vec<SrvRecord>,
    /// A `.` target was seen: the service is decidedly not offered.
    refused: bool,
}

/// A SRV record reduced to what ordering and connecting need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub target: Target,
}

/// RFC 2782 order: ascending priority; within one priority, repeatedly pick a record at random
/// with probability proportional to its weight, weight-0 records placed first so they are
/// picked only when the draw is 0 (rarely, while weighted ones remain). `pick(max)` must return
/// a uniform number in `0..=max`.
pub fn rfc2782_order(
    mut records: Vec<SrvRecord>,
    pick: &mut dyn FnMut(u64) -> u64,
) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == priority) {
            group.push(r);
        }
        // Stable: weight-0 records first, the others in the order given.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let draw = pick(total).min(total);
            let mut running = 0;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u64::from(r.weight);
                if running >= draw {
                    chosen = i;
                    break;
                }
            }
            out.push(group.remove(chosen));
        }
    }
    out
}

/// Parses `[s2s.routes]`: domain → "host:port".
fn parse_routes(routes: &BTreeMap<String, String>) -> Result<BTreeMap<String, Target>, String> {
    routes
        .iter()
        .map(|(domain, value)| {
            let (host, port) = parse_host_port(value)
                .ok_or_else(|| format!("s2s.routes: {domain} = {value:?} is not \"host:port\""))?;
            Ok((
                normalise_domain(domain),
                Target {
                    host,
                    port,
                    direct_tls: false,
                },
            ))
        })
        .collect()
}

/// "host:port", "1.2.3.4:port" or "[v6]:port" → (host, port); the port must not be 0.
pub fn parse_host_port(value: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:")?;
        v6.parse::<Ipv6Addr>().ok()?;
        (v6.to_owned(), port)
    } else {
        let (host, port) = value.rsplit_once(':')?;
        // A bare IPv6 address is ambiguous with its port; it needs brackets.
        if host.is_empty() || host.contains(':') || host.chars().any(char::is_whitespace) {
            return None;
        }
        (host.to_owned(), port)
    };
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((host, port))
}

/// The fully qualified A-label form of a domain, or `None` if it is not a DNS name.
fn fqdn(domain: &str) -> Option<Name> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() || d.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut name = Name::from_utf8(d).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// A name as a host string: A-labels, no trailing dot.
fn ascii(name: &Name) -> String {
    let s = name.to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_resolver::proto::rr::Record;
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use std::sync::Arc;

    fn rec(priority: u16, weight: u16, host: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            target: Target {
                host: host.to_owned(),
                port: 5269,
                direct_tls: false,
            },
        }
    }

    fn hosts(v: &[SrvRecord]) -> Vec<&str> {
        v.iter().map(|r| r.target.host.as_str()).collect()
    }

    #[test]
    fn rfc2782_lowest_priority_first() {
        let records = vec![rec(20, 0, "c"), rec(5, 0, "a"), rec(10, 0, "b")];
        let out = rfc2782_order(records, &mut |_| 0);
        assert_eq!(hosts(&out), ["a", "b", "c"]);
    }

    #[test]
    fn rfc2782_weighted_selection_follows_the_draw() {
        // Weights 10, 30, 60: running sums 10, 40, 100.
        let group = || vec![rec(1, 10, "w10"), rec(1, 30, "w30"), rec(1, 60, "w60")];
        // Draw 100 of 100 → w60; then of 40: draw 40 → w30; then w10.
        let mut draws = vec![100, 40, 10].into_iter();
        let out = rfc2782_order(group(), &mut |_| draws.next().unwrap());
        assert_eq!(hosts(&out), ["w60", "w30", "w10"]);
        // Draw 11 → w30 (10 < 11 <= 40); then of 70: draw 5 → w10; then w60.
        let mut draws = vec![11, 5, 60].into_iter();
        let out = rfc2782_order(group(), &mut |_| draws.next().unwrap());
        assert_eq!(hosts(&out), ["w30", "w10", "w60"]);
        // The totals offered to the draw shrink as records are taken.
        let mut seen = Vec::new();
        rfc2782_order(group(), &mut |max| {
            seen.push(max);
            max
        });
        assert_eq!(seen, [100, 40, 10]);
    }

    #[test]
    fn rfc2782_weight_zero_only_on_a_zero_draw() {
        let group = || vec![rec(1, 5, "w5"), rec(1, 0, "zero")];
        // Weight-0 records are placed first: a draw of 0 picks one.
        let out = rfc2782_order(group(), &mut |_| 0);
        assert_eq!(hosts(&out), ["zero", "w5"]);
        // Any other draw picks a weighted record; the zero one comes last.
        let out = rfc2782_order(group(), &mut |max| max);
        assert_eq!(hosts(&out), ["w5", "zero"]);
        // All weight 0: the total is 0, order kept.
        let all_zero = vec![rec(1, 0, "a"), rec(1, 0, "b"), rec(1, 0, "c")];
        let out = rfc2782_order(all_zero, &mut |max| {
            assert_eq!(max, 0);
            0
        });
        assert_eq!(hosts(&out), ["a", "b", "c"]);
    }

    #[test]
    fn rfc2782_random_order_is_roughly_proportional() {
        let mut rng = rand::thread_rng();
        let mut first_heavy = 0;
        for _ in 0..2000 {
            let out = rfc2782_order(vec![rec(1, 1, "light"), rec(1, 9, "heavy")], &mut |max| {
                rng.gen_range(0..=max)
            });
            if out[0].target.host == "heavy" {
                first_heavy += 1;
            }
        }
        // Expected 9/11: RFC 2782 draws from 0..=10, and 0 and 1 both pick "light".
        assert!((1500..=1950).contains(&first_heavy), "{first_heavy}");
    }

    #[test]
    fn a_hostile_draw_out_of_range_is_clamped() {
        let out = rfc2782_order(vec![rec(1, 1, "a"), rec(1, 1, "b")], &mut |_| u64::MAX);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            parse_host_port("10.0.0.5:5269"),
            Some(("10.0.0.5".into(), 5269))
        );
        assert_eq!(
            parse_host_port("xmpp.partner.example:5270"),
            Some(("xmpp.partner.example".into(), 5270))
        );
        assert_eq!(parse_host_port("[::1]:5269"), Some(("::1".into(), 5269)));
        for bad in [
            "::1:5269",
            "host",
            "host:",
            ":5269",
            "host:0",
            "host:65536",
            "[::1]5269",
            "[nope]:5269",
            "a b:5269",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn static_routes_come_first_and_are_normalised() {
        let routes = BTreeMap::from([
            ("Partner.Example".to_owned(), "127.0.0.1:15269".to_owned()),
            ("v6.example".to_owned(), "[::1]:5270".to_owned()),
        ]);
        let r = Resolver::new(&routes).unwrap();
        assert_eq!(
            r.targets("partner.example").await,
            [Target {
                host: "127.0.0.1".into(),
                port: 15269,
                direct_tls: false
            }]
        );
        let v6 = r.targets("v6.example.").await;
        assert_eq!(
            r.addresses(&v6[0]).await,
            ["[::1]:5270".parse::<SocketAddr>().unwrap()]
        );
        let bad = BTreeMap::from([("x.example".to_owned(), "nope".to_owned())]);
        assert!(Resolver::new(&bad).unwrap_err().contains("x.example"));
    }

    /// A DNS responder on loopback UDP answering from a fixed table; NXDOMAIN otherwise.
    async fn dns_server(table: Vec<Record>) -> SocketAddr {
        let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                let mut found = false;
                for q in &query.queries {
                    reply.add_query(q.clone());
                    for r in &table {
                        if r.name == q.name && r.record_type() == q.query_type {
                            reply.add_answer(r.clone());
                            found = true;
                        }
                    }
                }
                if !found {
                    let known = query
                        .queries
                        .iter()
                        .any(|q| table.iter().any(|r| r.name == q.name));
                    reply.metadata.response_code = if known {
                        ResponseCode::NoError
                    } else {
                        ResponseCode::NXDomain
                    };
                }
                let _ = sock.send_to(&reply.to_vec().unwrap(), peer).await;
            }
        });
        addr
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    fn a(owner: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A(Ipv4Addr::from(ip))))
    }

    #[tokio::test]
    async fn live_srv_lookup_mixes_both_services_by_priority() {
        let table = vec![
            srv("_xmpps-server._tcp.b.test.", 5, 0, 5270, "tls.b.test."),
            srv("_xmpp-server._tcp.b.test.", 10, 0, 5269, "plain.b.test."),
            srv("_xmpp-server._tcp.b.test.", 1, 0, 15269, "first.b.test."),
            a("tls.b.test.", [127, 0, 0, 7]),
            a("b.test.", [127, 0, 0, 9]),
        ];
        let ns = dns_server(table).await;
        let r = Resolver::with_name_servers(&BTreeMap::new(), &[ns]).unwrap();
        let t = r.targets("b.test").await;
        assert_eq!(
            t,
            [
                Target {
                    host: "first.b.test".into(),
                    port: 15269,
                    direct_tls: false
                },
                Target {
                    host: "tls.b.test".into(),
                    port: 5270,
                    direct_tls: true
                },
                Target {
                    host: "plain.b.test".into(),
                    port: 5269,
                    direct_tls: false
                },
            ]
        );
        assert_eq!(
            r.addresses(&t[1]).await,
            ["127.0.0.7:5270".parse::<SocketAddr>().unwrap()]
        );
        // A target without an address resolves to nothing.
        assert!(r.addresses(&t[2]).await.is_empty());
    }

    #[tokio::test]
    async fn live_fallback_and_unavailable_and_missing() {
        let table = vec![
            // c.test: no SRV, but an address → c.test:5269.
            a("c.test.", [127, 0, 0, 3]),
            // d.test: "." for STARTTLS and nothing else → not available, no fallback.
            srv("_xmpp-server._tcp.d.test.", 0, 0, 0, "."),
            a("d.test.", [127, 0, 0, 4]),
            // e.test: "." for direct TLS only → the STARTTLS record is used.
            srv("_xmpps-server._tcp.e.test.", 0, 0, 0, "."),
            srv("_xmpp-server._tcp.e.test.", 0, 0, 5269, "xmpp.e.test."),
        ];
        let ns = dns_server(table).await;
        let r = Resolver::with_name_servers(&BTreeMap::new(), &[ns]).unwrap();
        assert_eq!(
            r.targets("c.test").await,
            [Target {
                host: "c.test".into(),
                port: DEFAULT_PORT,
                direct_tls: false
            }]
        );
        assert_eq!(r.targets("d.test").await, []);
        assert_eq!(
            r.targets("e.test").await,
            [Target {
                host: "xmpp.e.test".into(),
                port: 5269,
                direct_tls: false
            }]
        );
        // No records at all: the domain does not exist.
        assert_eq!(r.targets("nowhere.test").await, []);
        assert_eq!(r.targets("").await, []);
        assert_eq!(r.targets("127.0.0.1").await, []);
    }

    #[tokio::test]
    async fn live_idna_domain_is_looked_up_in_a_label_form() {
        let table = vec![srv(
            "_xmpp-server._tcp.xn--cole-9oa.test.",
            0,
            0,
            5269,
            "xmpp.xn--cole-9oa.test.",
        )];
        let ns = dns_server(table).await;
        let r = Resolver::with_name_servers(&BTreeMap::new(), &[ns]).unwrap();
        assert_eq!(
            r.targets("école.test").await,
            [Target {
                host: "xmpp.xn--cole-9oa.test".into(),
                port: 5269,
                direct_tls: false
            }]
        );
    }
}
