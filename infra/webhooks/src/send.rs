//! Sending one signed webhook: a POST to a URL the policy allows, no redirects followed, a
//! deadline, and at most a few KiB of the answer read. What came of it decides whether the
//! delivery is retried.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::TargetPolicy;

/// Most bytes of a receiver's answer read (kept for the delivery log).
pub const ANSWER_BYTES: usize = 4096;

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why there was no usable answer, or what the answer said when it refused.
    pub error: Option<String>,
    pub latency: Duration,
    /// How long the receiver asked to wait (`Retry-After` on a 429 or 503).
    pub retry_after: Option<Duration>,
    /// Whether this kind of failure is worth another attempt.
    pub retry: bool,
}

impl Attempt {
    /// A 2xx answer.
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends webhooks within a [`TargetPolicy`].
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
}

impl Sender {
    /// A sender whose calls each end within `timeout`.
    pub fn new(policy: TargetPolicy, timeout: Duration) -> Result<Sender, String> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(PolicyResolver(policy.clone()))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .no_proxy()
            .user_agent(concat!("Wharf-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Sender { client, policy })
    }

    /// Checks a URL before it is accepted: `http` or `https`, a host the policy allows, and, for
    /// an address written as such, an address it allows. Names are checked again on every
    /// call, on what they resolve to then.
    pub fn check_url(policy: &TargetPolicy, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not hold credentials".into());
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("must name a host")?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<std::net::IpAddr>() {
            Ok(ip) => policy.check_ip(ip)?,
            Err(_) => policy.check_host(host)?,
        }
        Ok(parsed)
    }

    /// POSTs `body` to `url` with `headers`. Never fails: what went wrong is in the attempt.
    pub async fn post(&self, url: &str, headers: http::HeaderMap, body: bytes::Bytes) -> Attempt {
        let started = Instant::now();
        let refused = |error: String| Attempt {
            status: None,
            error: Some(error),
            latency: started.elapsed(),
            retry_after: None,
            retry: false,
        };
        let url = match Self::check_url(&self.policy, url) {
            Ok(u) => u,
            Err(why) => return refused(format!("refused by the callback policy: {why}")),
        };
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                // A name resolving only to refused addresses fails in the resolver: that is the
                // policy's refusal, not a network error, and retrying changes nothing.
                let text = chain(&e);
                let policy = text.contains(REFUSED_BY_POLICY);
                return Attempt {
                    status: None,
                    error: Some(if e.is_timeout() {
                        format!("no answer in time: {text}")
                    } else {
                        text
                    }),
                    latency: started.elapsed(),
                    retry_after: None,
                    retry: !policy,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer = read_bounded(response).await;
        let latency = started.elapsed();
        let ok = (200..300).contains(&status);
        Attempt {
            status: Some(status),
            error: (!ok).then(|| {
                if (300..400).contains(&status) {
                    format!("answered {status}: redirects are not followed")
                } else {
                    format!("answered {status}: {answer}")
                }
            }),
            latency,
            retry_after,
            // Connection errors, timeouts, 429 and 5xx are worth another try; any other
            // answer says the receiver will not take this delivery.
            retry: !ok && (status == 429 || status >= 500),
        }
    }
}

/// At most [`ANSWER_BYTES`] of an answer's body, as one line of text.
async fn read_bounded(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(ANSWER_BYTES);
    // One line, for logs and tables: runs of white space become one space.
    String::from_utf8_lossy(&kept)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const REFUSED_BY_POLICY: &str = "refused by the callback policy";

/// Resolves names as the system does, then keeps only the addresses the policy allows: the
/// connection can only be made to an address that was checked.
struct PolicyResolver(Arc<TargetPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.check_ip(a.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let shown: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{REFUSED_BY_POLICY}: {host} resolves to {} only, which callbacks may not reach",
                    shown.join(", ")
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
