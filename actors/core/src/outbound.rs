//! The outbound-request guard: requests to destinations a tenant chose (a webhook's URL, a
//! page `web_fetch` reaches through a wildcard host) never reach loopback, private,
//! link-local, multicast, shared (CGNAT), reserved or cloud-metadata addresses, unless the
//! operator allow-lists their network.
//!
//! The check is made on the addresses the client connects to: a guarded client resolves
//! names through [`OutboundGuard`] (a `reqwest` DNS resolver that drops refused addresses),
//! so a name that resolves to a public address when checked and to 127.0.0.1 when
//! connecting (DNS rebinding) is refused at connect time. Literal addresses in a URL, which
//! a client does not resolve, are checked with the URL, and so is every redirect. A guarded
//! client uses no proxy (a proxy would resolve the name itself).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;

/// A further check of each redirect's URL (an allow-list of hosts, say).
pub type RedirectCheck = Arc<dyn Fn(&reqwest::Url) -> Result<(), String> + Send + Sync>;

/// Addresses of one name used, at most.
pub const ADDRS_MAX: usize = 16;
/// Redirects a guarded client follows, at most.
pub const REDIRECTS_MAX: usize = 5;

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The address is of a kind only the operator may allow.
    // The address itself is left out of the message, which reaches tenants: they learn that
    // a name is internal, not where it points.
    #[error(
        "{host} is refused: it is or resolves to a {kind} address (the operator may allow its network)"
    )]
    Refused {
        /// The host as named.
        host: String,
        /// The address it is or resolved to.
        ip: IpAddr,
        /// `loopback`, `private`, `link-local`, …
        kind: &'static str,
    },
    /// Not an `http`/`https` URL with a host.
    #[error("{0}")]
    BadUrl(String),
    /// The name did not resolve.
    #[error("{host} does not resolve: {why}")]
    Unresolved {
        /// The host.
        host: String,
        /// Why.
        why: String,
    },
}

/// `e` and its sources, joined with `: ` (a source already in the text is not repeated): a
/// refused destination says why, as the guard's reason is a source of `reqwest`'s error.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The kind of `ip` when it is one a tenant may not reach, else `None`.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if ip.is_unspecified() || a == 0 => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip == Ipv4Addr::new(169, 254, 169, 254)
            || ip == Ipv4Addr::new(100, 100, 100, 200) =>
        {
            "cloud-metadata"
        }
        () if ip.is_private() => "private",
        () if ip.is_link_local() => "link-local",
        () if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        () if ip.is_multicast() => "multicast",
        () if ip.is_broadcast() => "broadcast",
        () if a >= 240 => "reserved",
        () if a == 192 && b == 0 && c == 0 => "reserved (IETF)",
        () if a == 198 && (18..20).contains(&b) => "benchmarking",
        () if ip.is_documentation() => "documentation",
        () => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    Some(match () {
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_loopback() => "loopback",
        // AWS's IPv6 instance metadata.
        () if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "cloud-metadata",
        () if (s[0] & 0xfe00) == 0xfc00 => "private (unique local)",
        () if (s[0] & 0xffc0) == 0xfe80 => "link-local",
        () if (s[0] & 0xffc0) == 0xfec0 => "site-local",
        () if ip.is_multicast() => "multicast",
        // IPv4-compatible (deprecated) and NAT64 well-known prefix carry an IPv4 address.
        () if s[..6] == [0; 6] => return classify_v4(ipv4_in(ip)),
        () if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] => {
            return classify_v4(ipv4_in(ip));
        }
        // Local-use NAT64 (64:ff9b:1::/48) and IPv4-translated (::ffff:0:a.b.c.d).
        () if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 => return classify_v4(ipv4_in(ip)),
        () if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 => {
            return classify_v4(ipv4_in(ip));
        }
        // 6to4 carries an IPv4 address in bits 16..48.
        () if s[0] == 0x2002 => {
            return classify_v4(Ipv4Addr::new(
                (s[1] >> 8) as u8,
                s[1] as u8,
                (s[2] >> 8) as u8,
                s[2] as u8,
            ));
        }
        () if s[0] == 0x2001 && s[1] == 0xdb8 => "documentation",
        () if s[0] == 0x2001 && s[1] == 0 => "Teredo",
        () if s[0] == 0x100 && s[1..4] == [0; 3] => "discard-only",
        () => return None,
    })
}

fn ipv4_in(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// How a guard resolves names: the system's resolver, or one a test gives.
pub trait NameResolver: Send + Sync + 'static {
    /// The addresses of `host` (ports are ignored).
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system's resolver (`getaddrinfo` through tokio).
struct SystemResolver;

impl NameResolver for SystemResolver {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .take(ADDRS_MAX)
                .collect())
        })
    }
}

/// A resolver with fixed answers: names map to addresses, other names do not resolve (for
/// tests that must not leave 127.0.0.0/8, and for pinning names).
#[derive(Debug, Default)]
pub struct StaticResolver(Vec<(String, Vec<IpAddr>)>);

impl StaticResolver {
    /// Answers `names`.
    pub fn new<S: Into<String>>(names: Vec<(S, Vec<IpAddr>)>) -> Self {
        Self(names.into_iter().map(|(n, a)| (n.into(), a)).collect())
    }
}

impl NameResolver for StaticResolver {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let found = self
            .0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&host))
            .map(|(_, a)| a.clone());
        Box::pin(async move {
            found.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: no such name"),
                )
            })
        })
    }
}

/// The guard: the networks the operator allows, and the resolver. Cheap to clone.
#[derive(Clone)]
pub struct OutboundGuard {
    allow: Arc<Vec<IpNet>>,
    resolver: Arc<dyn NameResolver>,
}

impl std::fmt::Debug for OutboundGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundGuard")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

impl Default for OutboundGuard {
    /// Nothing allowed, the system resolver.
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl OutboundGuard {
    /// A guard that lets through the networks of `allow`, resolving with the system.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
            resolver: Arc::new(SystemResolver),
        }
    }

    /// Parses allow-list entries (`10.1.0.0/16`, `192.168.1.5`, `fd00::/8`).
    ///
    /// # Errors
    /// The first entry that is neither an address nor a network.
    pub fn parse_allow(entries: &[String]) -> Result<Vec<IpNet>, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{e:?} is neither an IP address nor a CIDR network"))
            })
            .collect()
    }

    /// The same guard resolving names with `resolver` (tests map names to addresses).
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn NameResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Whether `ip` may be reached, for `host`.
    ///
    /// # Errors
    /// [`OutboundError::Refused`].
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        match classify(ip) {
            Some(kind) if !self.allow.iter().any(|n| n.contains(&ip)) => {
                Err(OutboundError::Refused {
                    host: host.to_owned(),
                    ip,
                    kind,
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks what can be checked of `url` without resolving: an `http`/`https` URL with a
    /// host, whose host, if it is an address, may be reached.
    ///
    /// # Errors
    /// [`OutboundError`].
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), OutboundError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::BadUrl(format!(
                "{url}: only http and https URLs"
            )));
        }
        match url.host() {
            None => Err(OutboundError::BadUrl(format!("{url}: no host"))),
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// Resolves `host` and keeps the addresses that may be reached; refused when none may.
    ///
    /// # Errors
    /// [`OutboundError::Refused`] (the first refused address), or
    /// [`OutboundError::Unresolved`].
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_ip(host, ip)?;
            return Ok(vec![ip]);
        }
        let addrs =
            self.resolver
                .lookup(host.to_owned())
                .await
                .map_err(|e| OutboundError::Unresolved {
                    host: host.to_owned(),
                    why: e.to_string(),
                })?;
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for ip in addrs.into_iter().take(ADDRS_MAX) {
            match self.check_ip(host, ip) {
                Ok(()) => ok.push(ip),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        // A name with one refused address is refused whole: which address a client picks
        // is not ours to choose.
        if let Some(e) = first_refusal {
            return Err(e);
        }
        if ok.is_empty() {
            return Err(OutboundError::Unresolved {
                host: host.to_owned(),
                why: "no address".into(),
            });
        }
        Ok(ok)
    }

    /// A client built from `builder` that resolves through this guard, follows at most
    /// [`REDIRECTS_MAX`] redirects (each checked, and passed to `also` when given), and uses
    /// no proxy.
    ///
    /// # Errors
    /// The builder's error.
    pub fn client(
        &self,
        builder: reqwest::ClientBuilder,
        also: Option<RedirectCheck>,
    ) -> reqwest::Result<reqwest::Client> {
        let guard = self.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= REDIRECTS_MAX {
                return attempt.error("too many redirects");
            }
            if let Err(e) = guard.check_url(attempt.url()) {
                return attempt.error(e);
            }
            if let Some(check) = &also
                && let Err(e) = check(attempt.url())
            {
                return attempt.error(e);
            }
            attempt.follow()
        });
        self.resolving_client(builder.redirect(policy))
    }

    /// A client built from `builder` (its redirect policy kept: give it `none`, or check
    /// redirects with [`OutboundGuard::check_url`]) that resolves through this guard and
    /// uses no proxy.
    ///
    /// # Errors
    /// The builder's error.
    pub fn resolving_client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> reqwest::Result<reqwest::Client> {
        builder
            .dns_resolver(Arc::new(self.clone()))
            .no_proxy()
            .build()
    }

    /// Checks `url` and resolves its host: what a destination a tenant names must pass when
    /// it is given (the connection is checked again when it is made).
    ///
    /// # Errors
    /// [`OutboundError`].
    pub async fn check_destination(&self, url: &reqwest::Url) -> Result<(), OutboundError> {
        self.check_url(url)?;
        match url.host() {
            Some(url::Host::Domain(host)) => self.resolve(host).await.map(|_| ()),
            _ => Ok(()),
        }
    }
}

impl reqwest::dns::Resolve for OutboundGuard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.resolve(&host).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_classified_and_public_ones_pass() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud-metadata"),
            ("169.254.10.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("fd00::1", "private (unique local)"),
            ("fd00:ec2::254", "cloud-metadata"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2002:7f00:1::", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud-metadata"),
            ("64:ff9b:1::a00:1", "private"),
            ("::ffff:0:7f00:1", "loopback"),
            ("2001:db8::1", "documentation"),
        ] {
            assert_eq!(classify(ip(addr)), Some(kind), "{addr}");
        }
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(classify(ip(addr)), None, "{addr}");
        }
    }

    fn guard(allow: &[&str]) -> OutboundGuard {
        let allow: Vec<String> = allow.iter().map(|a| (*a).to_string()).collect();
        OutboundGuard::new(OutboundGuard::parse_allow(&allow).unwrap()).with_resolver(Arc::new(
            StaticResolver::new(vec![
                ("metadata.test", vec![ip("169.254.169.254")]),
                ("intranet.test", vec![ip("10.0.0.7")]),
                ("mixed.test", vec![ip("93.184.216.34"), ip("192.168.0.1")]),
                ("public.test", vec![ip("93.184.216.34")]),
            ]),
        ))
    }

    #[tokio::test]
    async fn names_are_refused_by_what_they_resolve_to_unless_allowed() {
        let g = guard(&[]);
        assert!(matches!(
            g.resolve("metadata.test").await,
            Err(OutboundError::Refused {
                kind: "cloud-metadata",
                ..
            })
        ));
        assert!(g.resolve("intranet.test").await.is_err());
        assert!(
            g.resolve("mixed.test").await.is_err(),
            "one internal address refuses the name"
        );
        assert_eq!(
            g.resolve("public.test").await.unwrap(),
            vec![ip("93.184.216.34")]
        );
        assert!(matches!(
            g.resolve("nowhere.test").await,
            Err(OutboundError::Unresolved { .. })
        ));
        assert!(g.resolve("[::1]").await.is_err());
        let allowed = guard(&["10.0.0.0/8"]);
        assert_eq!(
            allowed.resolve("intranet.test").await.unwrap(),
            vec![ip("10.0.0.7")]
        );
        assert!(allowed.resolve("metadata.test").await.is_err());
        assert!(OutboundGuard::parse_allow(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn literal_addresses_and_schemes_are_checked_in_the_url() {
        let g = guard(&[]);
        for bad in [
            "http://127.0.0.1:22/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f000001/",
            "http://2130706433/",
            "ftp://public.test/",
            "file:///etc/passwd",
        ] {
            let url = reqwest::Url::parse(bad).unwrap();
            assert!(g.check_url(&url).is_err(), "{bad}");
        }
        assert!(
            g.check_url(&reqwest::Url::parse("https://public.test/x").unwrap())
                .is_ok()
        );
    }

    /// The refusal comes before any connection: a listener on 127.0.0.1 that a name maps to
    /// has nothing to accept afterwards (a connection made would be in its backlog).
    #[tokio::test]
    async fn a_guarded_client_refuses_at_connect_time_and_never_connects() {
        use futures_util::FutureExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let g = OutboundGuard::default().with_resolver(Arc::new(StaticResolver::new(vec![(
            "rebind.test",
            vec![ip("127.0.0.1")],
        )])));
        let client = g.client(reqwest::Client::builder(), None).unwrap();
        // A name: refused by the resolver the client connects through.
        let e = client
            .get(format!("http://rebind.test:{port}/"))
            .send()
            .await
            .unwrap_err();
        let chain = format!("{e:?}");
        assert!(chain.contains("loopback"), "{chain}");
        // A literal address: refused by the URL check before any request.
        let literal = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert!(g.check_url(&literal).is_err());
        assert!(
            listener.accept().now_or_never().is_none(),
            "a connection reached the listener"
        );
    }
}
