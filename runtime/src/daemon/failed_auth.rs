//! Failed authentications: limited per client address before anything is written, and
//! audited as at most two bounded entries per address and minute (the first failure at once,
//! the count of the rest when the minute is over).
//!
//! The client address is the connection's peer, or, when the peer is a trusted proxy
//! (`[auth] trusted_proxies`), the right-most `X-Forwarded-For` entry that is not one. An
//! IPv6 client counts as its /64 network (one host holds a whole /64). Loopback gets no
//! exemption.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;

use axum::http::HeaderMap;
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

/// Client addresses tracked at once; failures from further ones share one bucket (the
/// unspecified address), so memory stays bounded under a spray from many addresses.
pub const SOURCES_MAX: usize = 10_000;
/// `X-Forwarded-For` entries read, at most.
pub const FORWARDED_MAX: usize = 32;

/// `[auth]`: failed-authentication limits and the proxies whose `X-Forwarded-For` is trusted.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Failed authentications allowed per client address and minute; more are answered 429.
    pub failures_per_minute: u32,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for AuthSection {
    /// 60 failures per minute, no trusted proxy.
    fn default() -> Self {
        Self {
            failures_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

impl AuthSection {
    /// Checks every value.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.failures_per_minute == 0 {
            return Err(("auth.failures_per_minute", "must be at least 1".into()));
        }
        self.proxies().map(|_| ())
    }

    fn proxies(&self) -> Result<Vec<IpNet>, (&'static str, String)> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        (
                            "auth.trusted_proxies",
                            format!("{p:?} is neither an IP address nor a CIDR network"),
                        )
                    })
            })
            .collect()
    }
}

/// What to do with one failed authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The first from its address this minute: audit it now.
    Audit,
    /// Counted; audited with the minute's count.
    Counted,
    /// Over the limit: answer 429, retry after this many seconds. Counted, nothing written.
    Limited(u64),
}

/// Failures of one address in one minute.
#[derive(Debug)]
struct Window {
    minute: u64,
    count: u64,
}

/// The failed-authentication limiter and counter of a daemon.
#[derive(Debug)]
pub struct FailedAuth {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    windows: DashMap<IpAddr, Window>,
    proxies: Vec<IpNet>,
}

/// Failures beyond the first of one address in one minute, to audit.
#[derive(Debug, PartialEq, Eq)]
pub struct Repeated {
    /// The address (an IPv6 /64 as its network address).
    pub source: IpAddr,
    /// The minute (since the Unix epoch).
    pub minute: u64,
    /// Failures after the first.
    pub more: u64,
}

impl FailedAuth {
    /// A limiter for `config` (validated: an unparsable proxy is left out).
    pub fn new(config: &AuthSection) -> Self {
        let per_minute = NonZeroU32::new(config.failures_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            windows: DashMap::new(),
            proxies: config.proxies().unwrap_or_default(),
        }
    }

    /// The client of a request from `peer` with `headers`, as limits count it.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let Some(peer) = peer.map(|p| p.ip()) else {
            return IpAddr::from([0, 0, 0, 0]);
        };
        let mut client = peer;
        if self.trusted(peer) {
            // Right to left: each trusted proxy appended the address it got the request from;
            // the left-most entries are the client's own words, so only the right-most
            // FORWARDED_MAX are read.
            let forwarded: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect();
            for hop in forwarded.iter().rev().take(FORWARDED_MAX) {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    break;
                };
                client = ip;
                if !self.trusted(ip) {
                    break;
                }
            }
        }
        source_of(client)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(&ip))
    }

    /// Counts a failure from `source` at `now_ms`.
    pub fn failure(&self, source: IpAddr, now_ms: u64) -> Failure {
        let minute = now_ms / 60_000;
        let source = if self.windows.len() >= SOURCES_MAX && !self.windows.contains_key(&source) {
            IpAddr::from([0, 0, 0, 0])
        } else {
            source
        };
        let first = {
            let mut w = self
                .windows
                .entry(source)
                .or_insert(Window { minute, count: 0 });
            if w.minute != minute {
                // The sweeper has not written the old minute yet: it is counted into this one.
                w.minute = minute;
            }
            w.count += 1;
            w.count == 1
        };
        if let Err(not_until) = self.limiter.check_key(&source) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Failure::Limited(wait.as_secs().max(1));
        }
        if first {
            Failure::Audit
        } else {
            Failure::Counted
        }
    }

    /// Takes the windows of minutes before `now_ms`: the failures after each one's first.
    pub fn finished(&self, now_ms: u64) -> Vec<Repeated> {
        let minute = now_ms / 60_000;
        let mut out = Vec::new();
        self.windows.retain(|source, w| {
            if w.minute >= minute {
                return true;
            }
            if w.count > 1 {
                out.push(Repeated {
                    source: *source,
                    minute: w.minute,
                    more: w.count - 1,
                });
            }
            false
        });
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        out
    }
}

/// How often finished minutes are written to the audit log.
pub const AUDIT_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Writes the counts of finished minutes to the audit log every [`AUDIT_EVERY`] until
/// `stop` (and once more then).
pub fn spawn_auditor(state: super::http::Shared, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(AUDIT_EVERY) => false,
            };
            // On stop, the current minute is written too.
            let now = aios_actors::protocol::unix_ms() + if stopping { 60_000 } else { 0 };
            for r in state.failed_auth.finished(now) {
                let event = super::audit::AuditEvent {
                    action: "auth_failed".into(),
                    outcome: "denied".into(),
                    detail: format!(
                        "{} more failed authentications from {} in the minute from {} ms",
                        r.more,
                        r.source,
                        r.minute * 60_000
                    ),
                    ..super::audit::AuditEvent::default()
                };
                if let Err(e) = state.audit.append(event, false).await {
                    tracing::error!(error = %e, "audit append");
                }
            }
            if stopping {
                break;
            }
        }
    });
}

/// An address as failures are counted: IPv6 by its /64 network (IPv4-mapped as IPv4).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(per_minute: u32, proxies: &[&str]) -> FailedAuth {
        FailedAuth::new(&AuthSection {
            failures_per_minute: per_minute,
            trusted_proxies: proxies.iter().map(|p| (*p).to_string()).collect(),
        })
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let none = auth(60, &[]);
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        // An untrusted peer's header is ignored: a client cannot pick its own bucket.
        assert_eq!(
            none.client(Some(peer), &headers(&["1.2.3.4"])),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        let proxied = auth(60, &["10.0.0.0/24", "192.168.1.1"]);
        // The right-most entry that is not a trusted proxy; the ones left of it are the
        // client's own words.
        assert_eq!(
            proxied.client(Some(peer), &headers(&["6.6.6.6, 1.2.3.4", "192.168.1.1"])),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(
            proxied.client(Some(peer), &HeaderMap::new()),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        // A client that sends many entries of its own cannot push the proxy's out of view.
        let mut many: Vec<String> = (0..100).map(|i| format!("6.6.6.{i}")).collect();
        many.push("1.2.3.4".into());
        assert_eq!(
            proxied.client(Some(peer), &headers(&[&many.join(", ")])),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            proxied.client(Some(peer), &headers(&["junk, 10.0.0.9"])),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        // IPv6 counts by /64, IPv4-mapped as IPv4.
        let v6: SocketAddr = "[2001:db8:1:2:3:4:5:6]:1".parse().unwrap();
        assert_eq!(
            none.client(Some(v6), &HeaderMap::new()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let mapped: SocketAddr = "[::ffff:1.2.3.4]:1".parse().unwrap();
        assert_eq!(
            none.client(Some(mapped), &HeaderMap::new()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn failures_over_the_limit_are_refused_and_one_entry_per_minute_is_audited() {
        let a = auth(3, &[]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t = 10 * 60_000;
        assert_eq!(a.failure(ip, t), Failure::Audit);
        assert_eq!(a.failure(ip, t + 1), Failure::Counted);
        assert_eq!(a.failure(ip, t + 2), Failure::Counted);
        assert!(matches!(a.failure(ip, t + 3), Failure::Limited(s) if (1..=60).contains(&s)));
        // Another address has its own budget.
        assert_eq!(a.failure(other, t + 4), Failure::Audit);
        // Nothing is finished within the minute.
        assert!(a.finished(t + 59_999).is_empty());
        let mut done = a.finished(t + 60_000);
        done.sort_by_key(|r| r.source);
        assert_eq!(
            done,
            vec![Repeated {
                source: ip,
                minute: 10,
                more: 3
            }]
        );
        assert!(a.windows.is_empty());
    }

    #[test]
    fn sources_beyond_the_bound_share_one_bucket() {
        let a = auth(1_000_000, &[]);
        for i in 1..=SOURCES_MAX as u32 {
            a.failure(IpAddr::from(i.to_be_bytes()), 0);
        }
        assert_eq!(a.failure("9.9.9.9".parse().unwrap(), 0), Failure::Audit);
        assert_eq!(a.failure("9.9.9.8".parse().unwrap(), 0), Failure::Counted);
        assert!(a.windows.len() <= SOURCES_MAX + 1);
    }

    #[test]
    fn the_section_is_validated() {
        assert!(AuthSection::default().validate().is_ok());
        let zero = AuthSection {
            failures_per_minute: 0,
            ..AuthSection::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "auth.failures_per_minute");
        let bad = AuthSection {
            trusted_proxies: vec!["10.0.0.0/33".into()],
            ..AuthSection::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "auth.trusted_proxies");
    }
}
