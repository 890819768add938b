//! Requests to addresses someone else chose (chat and webhook targets of a repository or a
//! pipeline's `notify:`) go through one guarded client: every name is resolved here and only
//! public addresses are kept, so the connection is made to an address that was checked (a
//! name resolving to 127.0.0.1 the second time, DNS rebinding, does not pass); an address
//! written in the URL (`http://127.1`, `http://2130706433`, `http://[::1]`, which the URL
//! parser normalises) and every redirect's target are checked the same way. Loopback,
//! private, link-local (cloud metadata), shared, unspecified and multicast ranges are refused
//! unless a server admin allows a range (`--notify-allow-net CIDR`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a request was not sent: its address is one the policy refuses. Carried inside the
/// client's errors (from the resolver and the redirect check), so a caller can tell a
/// refusal, which trying again will not change, from a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    /// The refusal among `error`'s causes, if that is why it failed.
    pub fn cause_of<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
        let mut cause: Option<&'e (dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return Some(refused);
            }
            cause = e.source();
        }
        None
    }
}

/// Which addresses requests may reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Ranges a server admin allows although they are not public.
    pub allowed: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Why `ip` may not be reached, or `None`.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let ip = match ip {
            // `::ffff:127.0.0.1` is 127.0.0.1.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => v4_refusal(v4),
            IpAddr::V6(v6) => v6_refusal(v6),
        }
    }

    /// Checks a URL's host when it is an address (names are checked as they resolve).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(Refused("the URL has no host".to_owned())),
        };
        match self.refusal(ip) {
            Some(kind) => Err(refused(&ip.to_string(), ip, kind)),
            None => Ok(()),
        }
    }

    /// The client for such requests: this policy's resolver, the same check on every
    /// redirect (at most 5), and no proxy from the environment (a proxy would resolve names
    /// where they are not checked).
    pub fn client(&self) -> reqwest::Client {
        let redirects = self.clone();
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("more than 5 redirects");
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            }))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }
}

fn refused(host: &str, ip: IpAddr, kind: &str) -> Refused {
    Refused(format!(
        "refused to send to {host}: it is {ip}, a {kind} address; a server admin can allow the range with --notify-allow-net"
    ))
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if a == 0 || ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("reserved")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("reserved (IETF protocol)")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("reserved (benchmarking)")
    } else {
        None
    }
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("private (unique local)")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if let Some(v4) = embedded_v4(ip) {
        v4_refusal(v4)
    } else {
        None
    }
}

/// The IPv4 address inside NAT64 (`64:ff9b::/96`), 6to4 (`2002::/16`) and the old
/// IPv4-compatible (`::a.b.c.d`) forms, which reach it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        Some(from(s[6], s[7]))
    } else {
        None
    }
}

/// Resolves with the system's resolver and keeps only the addresses the policy allows.
struct GuardedResolver {
    policy: OutboundPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    Some(kind) => {
                        refusal.get_or_insert_with(|| refused(&host, addr.ip(), kind));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                return Err(match refusal {
                    Some(refusal) => Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>,
                    None => format!("{host} has no address").into(),
                });
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_url(url: &str) -> bool {
        let url = reqwest::Url::parse(url).expect("a URL");
        OutboundPolicy::default().check_url(&url).is_err()
    }

    #[test]
    fn private_addresses_are_refused_however_they_are_spelled() {
        for url in [
            "http://127.0.0.1:8080/internal/admin",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            assert!(refused_url(url), "{url} passed");
        }
        for url in [
            "https://hooks.slack.com/services/T/B/x",
            "http://93.184.216.34/",
            "http://[2606:2800:220:1::]/",
        ] {
            assert!(!refused_url(url), "{url} was refused");
        }
    }

    #[test]
    fn an_allowed_range_passes_and_nothing_else() {
        let policy = OutboundPolicy {
            allowed: vec!["127.0.0.0/8".parse().expect("a range")],
        };
        assert_eq!(policy.refusal("127.0.0.1".parse().expect("ip")), None);
        assert!(policy.refusal("10.0.0.1".parse().expect("ip")).is_some());
        assert!(policy.refusal("::1".parse().expect("ip")).is_some());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_resolution() {
        let resolver = GuardedResolver {
            policy: OutboundPolicy::default(),
        };
        let name: Name = "localhost".parse().expect("a name");
        let Err(e) = resolver.resolve(name).await else {
            panic!("localhost resolved to an allowed address");
        };
        let refused = Refused::cause_of(e.as_ref()).expect("a refusal, not a failure");
        assert!(refused.0.contains("loopback"), "{refused}");
    }

    /// The client's error says it was a refusal, for a name and for a redirect alike, so
    /// the notifier does not try again.
    #[tokio::test]
    async fn the_clients_errors_carry_the_refusal() {
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = internal.local_addr().expect("bound").port();
        let client = OutboundPolicy::default().client();
        let by_name = client
            .post(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("refused");
        assert!(Refused::cause_of(&by_name).is_some(), "{by_name:?}");

        let redirector = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("binds");
        let redirector_addr = redirector.local_addr().expect("bound");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut stream, _)) = redirector.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}/admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let allowing = OutboundPolicy {
            allowed: vec!["127.0.0.2/32".parse().expect("a range")],
        };
        let redirected = allowing
            .client()
            .post(format!("http://{redirector_addr}/"))
            .send()
            .await
            .expect_err("the redirect is refused");
        assert!(Refused::cause_of(&redirected).is_some(), "{redirected:?}");
    }
}
