//! One JSON request over HTTP, as the HTTP backends (OpenAI-compatible, KServe v2 REST) send
//! it: failures classified for the retry policy, the server's limit hints read, and no URL in
//! any message (a URL may hold credentials).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::backend::CallError;
use crate::hints::ServerHints;
use crate::retry::Failure;

/// A client for model servers: no proxy (servers are often on loopback or a private
/// network), and many idle connections kept per host.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("riffle/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends `request` (already holding its body and headers) and reads a JSON answer; `label`
/// names the endpoint in errors.
pub async fn send_json(
    request: reqwest::RequestBuilder,
    label: &str,
) -> Result<(Value, ServerHints), CallError> {
    let response = request.send().await.map_err(|e| CallError {
        failure: Some(if e.is_timeout() {
            Failure::Timeout
        } else {
            Failure::Connection
        }),
        message: format!("POST {label}: {}", without_url(&e)),
        hints: ServerHints::default(),
    })?;
    let status = response.status().as_u16();
    let hints = ServerHints::from_headers(
        response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        unix_ms(),
    );
    let bytes = response.bytes().await.map_err(|e| CallError {
        failure: Some(Failure::Connection),
        message: format!("reading the answer of {label}: {}", without_url(&e)),
        hints,
    })?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&bytes);
        let text: String = text.chars().take(300).collect();
        return Err(CallError {
            failure: Some(Failure::Http(status)),
            message: format!("{label} answered HTTP {status}: {}", text.trim()),
            hints,
        });
    }
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        CallError::malformed(format!(
            "{label} answered with JSON that does not parse: {e}"
        ))
    })?;
    Ok((value, hints))
}

/// A reqwest error's text without the URL it carries (a URL may hold credentials).
pub fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
