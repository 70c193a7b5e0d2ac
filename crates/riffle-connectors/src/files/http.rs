//! HTTP(S) GETs for `url_download`: retries, and the [`UrlPolicy`] applied where the
//! connection is made.
//!
//! Checking a URL's host before the request is not enough: a name can resolve to a private
//! address (or to a public one when checked and a private one when connected, DNS
//! rebinding), and a public server can redirect anywhere. So the policy sits in three
//! places, each seeing the address that will really be used:
//!
//! - a DNS resolver ([`PolicyResolver`]) that drops refused addresses from what a name
//!   resolves to, so the connection can only go to an address that was checked;
//! - a check of address literals (`http://10.0.0.1/`, `http://[::1]/`, `http://2130706433/`),
//!   which reach no resolver, before the request and on every redirect;
//! - redirects followed through the same checks (a custom redirect policy; named hosts of
//!   a redirect go through the resolver again).
//!
//! Proxies from the environment (`HTTP_PROXY`) are not used: through a proxy, the proxy
//! resolves and connects, out of the policy's sight.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::url_policy::{Refused, UrlPolicy};

/// Attempts at one HTTP request before its row fails.
pub const HTTP_ATTEMPTS: u32 = 5;
/// The longest one HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed at most (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// An HTTP client for one [`UrlPolicy`]: built on first use, then shared by every task and
/// batch of the session, so that connections are pooled.
#[derive(Debug)]
pub(crate) struct HttpFetcher {
    policy: Arc<UrlPolicy>,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl HttpFetcher {
    pub(crate) fn new(policy: UrlPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                let resolver = PolicyResolver {
                    policy: Arc::clone(&self.policy),
                };
                reqwest::Client::builder()
                    .timeout(HTTP_TIMEOUT)
                    .user_agent(concat!("riffle/", env!("CARGO_PKG_VERSION")))
                    .no_proxy()
                    .dns_resolver(Arc::new(resolver))
                    .redirect(redirects(Arc::clone(&self.policy)))
                    .build()
                    .map_err(|e| format!("cannot start an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// GET with retries: connection errors, timeouts, 429 and 5xx are retried with
    /// exponential backoff (honoring a `Retry-After` of a few seconds); other statuses and
    /// refused addresses fail at once.
    pub(crate) async fn get(
        &self,
        uri: &str,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Bytes, String> {
        let url = reqwest::Url::parse(uri).map_err(|e| format!("invalid URL: {e}"))?;
        self.policy.check_url(&url).map_err(|e| e.to_string())?;
        let client = self.client()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = client.get(url.clone());
            if let Some((offset, size)) = range {
                let end = size.map(|s| (offset + s).saturating_sub(1).to_string());
                request = request.header(
                    reqwest::header::RANGE,
                    format!("bytes={offset}-{}", end.unwrap_or_default()),
                );
            }
            let (failure, retry_after) = match request.send().await {
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(bytes) => return Ok(bytes),
                    Err(error) => (format!("reading the body failed: {error}"), None),
                },
                Ok(response) => {
                    let status = response.status();
                    let transient = status.as_u16() == 429 || status.is_server_error();
                    let failure = format!("HTTP {status}");
                    if !transient {
                        return Err(failure);
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|seconds| Duration::from_secs(seconds.min(10)));
                    (failure, retry_after)
                }
                Err(error) if error.is_builder() => return Err(format!("invalid URL: {error}")),
                Err(error) => {
                    if let Some(refused) = refusal(&error) {
                        return Err(refused.to_string());
                    }
                    (describe(&error), None)
                }
            };
            if attempt >= HTTP_ATTEMPTS {
                return Err(format!("{failure} (after {attempt} attempts)"));
            }
            tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
        }
    }
}

/// Resolves names as the system does, keeping only the addresses the policy allows.
struct PolicyResolver {
    policy: Arc<UrlPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(&host, address.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            match refused {
                Some(why) if allowed.is_empty() => Err(Box::new(why) as _),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// Follows redirects whose target passes the policy (address literals here; names when
/// the resolver sees them).
fn redirects(policy: Arc<UrlPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            let error = format!("more than {MAX_REDIRECTS} redirects");
            return attempt.error(error);
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// The policy's refusal, if that is why the request failed.
fn refusal(error: &reqwest::Error) -> Option<&Refused> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

/// 100 ms, 200 ms, 400 ms, ... (at most 5 s), each with up to a quarter added at random so
/// that many tasks do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.pow(attempt.saturating_sub(1).min(6));
    let base = base.min(Duration::from_secs(5));
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    base + base / 4 * jitter / 1000
}

/// A reqwest error with its cause (reqwest's own message omits it).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(
            backoff(1) >= Duration::from_millis(100) && backoff(1) < Duration::from_millis(130)
        );
        assert!(backoff(3) >= Duration::from_millis(400));
        assert!(backoff(20) <= Duration::from_millis(6250));
    }
}
