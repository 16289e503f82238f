//! The outbound address guard: ConnectWise calls reach public addresses only, checked on the
//! address actually connected to.
//!
//! * [`is_forbidden_address`] — the one rule: loopback, private, link-local, reserved,
//!   documentation, multicast… in every form an IPv4 address can be embedded in IPv6.
//! * [`CwHttp`] — the only HTTP client a [`crate::CwClient`] takes: no redirects, no proxy, and a
//!   DNS resolver that drops forbidden addresses from every lookup (so DNS rebinding and a URL
//!   stored before a configuration change are covered), plus [`CwHttp::check_url`] before every
//!   request for what the resolver never sees (IP literals, the scheme).
use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::{CwError, CwErrorKind};

/// How long one DNS lookup may take (the request's own timeout covers the rest).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `ip` must never be connected to: anything but a public unicast address, including
/// the IPv4 address embedded in IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses.
pub fn is_forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", including 0.0.0.0
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (b & 0xC0) == 64) // carrier-grade NAT 100.64/10
        || (a == 169 && b == 254) // link-local (cloud metadata)
        || (a == 172 && (b & 0xF0) == 16) // private 172.16/12
        || (a == 192 && b == 168) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b & 0xFE) == 18) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_forbidden_v4(v4);
    }
    let s = ip.segments();
    // Only global unicast (2000::/3) is ever a ConnectWise site; below are its special blocks.
    (s[0] & 0xE000) != 0x2000
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23: Teredo 2001::/32, benchmarking, ORCHID
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
}

/// The IPv4 address an IPv6 address stands for, for the forms that route to one: IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`, and 6to4 `2002:aabb:ccdd::/48`. (`::` and `::1` are not IPv4-compatible.)
/// The local-use NAT64 prefix `64:ff9b:1::/48` is outside 2000::/3 and so forbidden whole.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// Loopback or private (RFC 1918, IPv6 unique-local), in any embedded form: what a lab or the
/// tests may reach when `CW_ALLOW_HTTP` is set. Link-local (cloud metadata), multicast and the
/// unspecified address stay forbidden even then.
fn is_loopback_or_private(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => embedded_v4(v6),
    };
    match (ip, v4) {
        (_, Some(v4)) => v4.is_loopback() || v4.is_private(),
        (IpAddr::V6(v6), None) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        (IpAddr::V4(_), None) => false,
    }
}

/// Which destinations ConnectWise calls may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Production: `https` to public addresses only.
    PublicOnly,
    /// `CW_ALLOW_HTTP`: also `http`, loopback and private addresses (tests, on-premises labs).
    AllowPrivate,
}

impl AddressPolicy {
    /// The policy for the `CW_ALLOW_HTTP` setting.
    pub fn from_allow_http(allow_http: bool) -> Self {
        if allow_http { AddressPolicy::AllowPrivate } else { AddressPolicy::PublicOnly }
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(self, ip: IpAddr) -> bool {
        !is_forbidden_address(ip) || (self == AddressPolicy::AllowPrivate && is_loopback_or_private(ip))
    }

    /// Whether `scheme` may be used.
    pub fn permits_scheme(self, scheme: &str) -> bool {
        scheme == "https" || (scheme == "http" && self == AddressPolicy::AllowPrivate)
    }
}

/// Why a destination was refused (the resolver's error, found again in reqwest's error chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenDestination {
    /// The host as written in the URL.
    pub host: String,
}

impl fmt::Display for ForbiddenDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is, or resolves only to, a loopback, private or reserved address", self.host)
    }
}

impl std::error::Error for ForbiddenDestination {}

/// A DNS lookup: the system resolver in production, a scripted one in tests.
pub trait HostLookup: Send + Sync + 'static {
    /// Every address `host` resolves to.
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0))).await {
                Ok(found) => Ok(found?.map(|a| a.ip()).collect()),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("looking up {host} timed out"))),
            }
        })
    }
}

/// A reqwest resolver that keeps only the addresses the policy permits; a name left with none is
/// an error ([`ForbiddenDestination`]). Every new connection resolves again, so an answer that
/// changes between the save-time check and a later call (DNS rebinding) is judged when it counts.
pub struct GuardedResolver {
    policy: AddressPolicy,
    lookup: Arc<dyn HostLookup>,
}

impl GuardedResolver {
    /// A resolver over `lookup` enforcing `policy`.
    pub fn new(policy: AddressPolicy, lookup: Arc<dyn HostLookup>) -> Self {
        GuardedResolver { policy, lookup }
    }

    /// The permitted addresses of `host` (port 0: reqwest fills in the URL's).
    pub async fn permitted(&self, host: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let found = self.lookup.lookup(host).await?;
        let kept: Vec<SocketAddr> = found.into_iter().filter(|ip| self.policy.permits(*ip)).map(|ip| SocketAddr::new(ip, 0)).collect();
        if kept.is_empty() {
            return Err(Box::new(ForbiddenDestination { host: host.to_string() }));
        }
        Ok(kept)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = GuardedResolver { policy: self.policy, lookup: self.lookup.clone() };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.permitted(&host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of ConnectWise calls: follows no redirect (a 3xx is an error), ignores proxy
/// settings (the guard must judge the real destination), and resolves through
/// [`GuardedResolver`]. Cheap to clone.
#[derive(Clone)]
pub struct CwHttp {
    client: reqwest::Client,
    policy: AddressPolicy,
    sandbox: Option<SandboxOrigin>,
}

/// The one loopback origin a [`CwHttp`] may reach whatever its policy: the demo's in-process
/// sandbox ConnectWise (`api --demo`). It is an exception for exactly this `http` origin — its
/// name, pinned to its socket address without any DNS lookup, and that address itself (the
/// sandbox's own paging links use it) — not a switch that opens loopback or private addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxOrigin {
    /// The host name the tenant's `siteUrl` uses, e.g. `connectwise-sandbox.localhost`.
    pub host: String,
    /// Where the sandbox listens (a loopback address and port).
    pub addr: SocketAddr,
}

impl SandboxOrigin {
    /// The sandbox's site URL, `http://{host}:{port}`.
    pub fn site_url(&self) -> String {
        format!("http://{}:{}", self.host, self.addr.port())
    }

    /// Whether `url` is on this origin: `http`, this port, and this name or address.
    pub fn matches(&self, url: &Url) -> bool {
        let host_matches = match url.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case(&self.host),
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4) == self.addr.ip(),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6) == self.addr.ip(),
            None => false,
        };
        url.scheme() == "http" && url.port() == Some(self.addr.port()) && host_matches
    }
}

impl fmt::Debug for CwHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CwHttp").field("policy", &self.policy).field("sandbox", &self.sandbox).finish()
    }
}

impl CwHttp {
    /// A client enforcing `policy` with the system resolver.
    pub fn new(policy: AddressPolicy) -> Result<Self, reqwest::Error> {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// A client enforcing `policy` over `lookup` (tests script DNS answers with it).
    pub fn with_lookup(policy: AddressPolicy, lookup: Arc<dyn HostLookup>) -> Result<Self, reqwest::Error> {
        Self::build(policy, lookup, None)
    }

    /// A client enforcing `policy` that may also reach `sandbox` (and nothing else that the policy
    /// refuses): the process running the demo's sandbox ConnectWise.
    pub fn with_sandbox(policy: AddressPolicy, sandbox: SandboxOrigin) -> Result<Self, reqwest::Error> {
        Self::build(policy, Arc::new(SystemLookup), Some(sandbox))
    }

    fn build(policy: AddressPolicy, lookup: Arc<dyn HostLookup>, sandbox: Option<SandboxOrigin>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(policy, lookup))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64);
        if let Some(s) = &sandbox {
            // Pinned: the sandbox's name never goes to DNS (nor through the guarded resolver).
            builder = builder.resolve(&s.host, s.addr);
        }
        Ok(CwHttp { client: builder.build()?, policy, sandbox })
    }

    /// The sandbox origin this client may reach, if any.
    pub fn sandbox(&self) -> Option<&SandboxOrigin> {
        self.sandbox.as_ref()
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> AddressPolicy {
        self.policy
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// What the resolver cannot see, checked before every request: the scheme (`http` only with
    /// [`AddressPolicy::AllowPrivate`], so a URL stored while it was allowed is refused once it is
    /// not) and a host written as an IP address (connected to without any lookup).
    pub fn check_url(&self, url: &Url) -> Result<(), CwError> {
        if self.sandbox.as_ref().is_some_and(|s| s.matches(url)) {
            return Ok(());
        }
        if !self.policy.permits_scheme(url.scheme()) {
            let m = format!("the ConnectWise site must use https, not {}", url.scheme());
            return Err(CwError::new(CwErrorKind::InvalidUrl(m), Duration::ZERO));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(CwError::new(CwErrorKind::InvalidUrl("the ConnectWise site has no host".into()), Duration::ZERO)),
        };
        if self.policy.permits(ip) {
            Ok(())
        } else {
            Err(CwError::new(CwErrorKind::ForbiddenAddress(ForbiddenDestination { host: ip.to_string() }.to_string()), Duration::ZERO))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s} is not an IP address"))
    }

    /// Every example of the issue and of each reserved range, and public addresses beside them.
    #[test]
    fn forbidden_address_table() {
        let forbidden = [
            // IPv4
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "255.255.255.255",
            // IPv6: loopback, unspecified, unique-local, link-local, site-local, multicast, discard
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            // IPv4-mapped, -translated and -compatible forms of internal addresses
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0.0.0.0",
            // NAT64 of internal addresses, and the local-use NAT64 prefix whole
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8",
            "64:ff9b:1:ffff::1",
            // 6to4 of internal addresses
            "2002:7f00:1::",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:1::1",
            "2002:a9fe:a9fe::",
            // Teredo, other IETF protocol assignments, documentation
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "3fff::1",
            // Outside global unicast
            "4000::1",
            "8000::1",
            "c000::1",
        ];
        for s in forbidden {
            assert!(is_forbidden_address(ip(s)), "{s} must be forbidden");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "52.1.2.3",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.0.3.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "169.253.0.1",
            // Public IPv6, and public IPv4 in the forms that route to it
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:200::1",
            "::8.8.8.8",
        ];
        for s in public {
            assert!(!is_forbidden_address(ip(s)), "{s} must be allowed");
        }
    }

    #[test]
    fn allow_private_opens_loopback_and_private_only() {
        let lab = AddressPolicy::AllowPrivate;
        for s in ["127.0.0.1", "10.1.2.3", "192.168.1.1", "172.20.0.1", "::1", "fd00::1", "::ffff:127.0.0.1", "64:ff9b::a00:1"] {
            assert!(lab.permits(ip(s)), "{s}");
            assert!(!AddressPolicy::PublicOnly.permits(ip(s)), "{s}");
        }
        for s in ["169.254.169.254", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "fe80::1", "100.64.0.1", "192.0.0.1"] {
            assert!(!lab.permits(ip(s)), "{s} stays forbidden in a lab");
        }
        assert!(lab.permits(ip("8.8.8.8")) && AddressPolicy::PublicOnly.permits(ip("8.8.8.8")));
        assert!(lab.permits_scheme("http") && !AddressPolicy::PublicOnly.permits_scheme("http"));
        assert!(AddressPolicy::PublicOnly.permits_scheme("https") && !lab.permits_scheme("ftp"));
    }

    #[tokio::test]
    async fn ip_literal_hosts_and_schemes_are_checked_before_a_request() {
        let strict = CwHttp::new(AddressPolicy::PublicOnly).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        for bad in [
            "https://127.0.0.1",
            "https://[::1]",
            "https://[::127.0.0.1]",
            "https://[64:ff9b::7f00:1]",
            "https://[2002:7f00:1::]",
            "https://192.0.0.1",
            "https://240.0.0.1",
            "https://2130706433", // 127.0.0.1 written as one number
            "https://0x7f.1",
            "https://[::ffff:169.254.169.254]",
        ] {
            let e = strict.check_url(&url(bad)).expect_err(bad);
            assert_eq!(e.code(), "CW_ADDRESS_REFUSED", "{bad}");
        }
        assert_eq!(strict.check_url(&url("http://8.8.8.8")).expect_err("http").code(), "CW_INVALID_URL");
        assert!(strict.check_url(&url("https://8.8.8.8")).is_ok());
        assert!(strict.check_url(&url("https://api-na.myconnectwise.net")).is_ok(), "names are judged by the resolver");
        let lab = CwHttp::new(AddressPolicy::AllowPrivate).unwrap();
        assert!(lab.check_url(&url("http://127.0.0.1:8080")).is_ok());
        assert_eq!(lab.check_url(&url("http://169.254.169.254")).expect_err("metadata").code(), "CW_ADDRESS_REFUSED");
    }

    #[tokio::test]
    async fn the_sandbox_exception_is_its_own_origin_only() {
        let addr: SocketAddr = "127.0.0.1:41234".parse().expect("addr");
        let sandbox = SandboxOrigin { host: "connectwise-sandbox.localhost".into(), addr };
        assert_eq!(sandbox.site_url(), "http://connectwise-sandbox.localhost:41234");
        let http = CwHttp::with_sandbox(AddressPolicy::PublicOnly, sandbox.clone()).expect("client");
        let url = |s: &str| Url::parse(s).expect("url");
        assert!(http.check_url(&url("http://connectwise-sandbox.localhost:41234/sandbox/apis/3.0/system/info")).is_ok());
        assert!(http.check_url(&url("http://127.0.0.1:41234/sandbox/apis/3.0/company/companies?page=2")).is_ok());
        for other in [
            "http://127.0.0.1:41235",
            "http://127.0.0.2:41234",
            "https://127.0.0.1:41234",
            "http://connectwise-sandbox.localhost:41235",
            "http://10.0.0.1:41234",
            "http://other.localhost:41234",
            "http://8.8.8.8:41234",
        ] {
            assert!(http.check_url(&url(other)).is_err(), "{other} is not the sandbox");
        }
        // Without the exception, the sandbox is refused like any loopback address.
        let plain = CwHttp::new(AddressPolicy::PublicOnly).expect("client");
        assert!(plain.check_url(&url(&sandbox.site_url())).is_err());
        assert!(plain.sandbox().is_none() && http.sandbox() == Some(&sandbox));
    }

    /// Answers a public address first, then a private one (DNS rebinding).
    struct Rebinding(std::sync::Mutex<u32>);

    impl HostLookup for Rebinding {
        fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let mut n = self.0.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            let answer = if *n == 1 { vec![ip("52.1.2.3")] } else { vec![ip("10.0.0.5"), ip("::ffff:127.0.0.1")] };
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn the_resolver_judges_every_lookup() {
        let resolver = GuardedResolver::new(AddressPolicy::PublicOnly, Arc::new(Rebinding(std::sync::Mutex::new(0))));
        let first = resolver.permitted("cw.example.com").await.expect("a public answer");
        assert_eq!(first, vec![SocketAddr::new(ip("52.1.2.3"), 0)]);
        let second = resolver.permitted("cw.example.com").await.expect_err("a private answer");
        assert!(second.downcast_ref::<ForbiddenDestination>().is_some(), "{second}");
        // Through reqwest's trait too.
        let via_trait = resolver.resolve("cw.example.com".parse().expect("name")).await;
        assert!(via_trait.is_err());
    }
}
