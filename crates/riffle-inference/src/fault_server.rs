//! A model server for tests and benchmarks, on 127.0.0.1: it speaks the OpenAI
//! `/v1/embeddings` and `/v1/chat/completions` protocol over HTTP/1.1 (keep-alive), serves
//! at most `capacity` requests at once, and injects the faults a real server shows.
//!
//! - Above capacity it either answers 429 (with or without `Retry-After`) or queues the
//!   request until a slot frees ([`Overload`]).
//! - Each request takes `service` ms; `capacity` and `service` can change while it runs.
//! - Faults, drawn per request from a seeded generator or scripted for the next requests:
//!   500, 429 with and without `Retry-After`, a stall (no answer), a reset connection, an
//!   answer trickled out a few bytes at a time, JSON that does not parse ([`Fault`]).
//! - It logs every input it was asked about (the per-id log of the tests), the idempotency
//!   keys, and counts requests, 429s and the most requests it served at once.
//!
//! The embedding of a text is [`embedding_of`], so a test can check every row's answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the server does above its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Answers 429, with `Retry-After: n` seconds when given.
    Reject {
        /// The `Retry-After` header's seconds.
        retry_after: Option<u32>,
    },
    /// Waits for a slot.
    Queue,
}

/// A fault injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500.
    ServerError,
    /// HTTP 429, with `Retry-After: n` seconds when given.
    RateLimited(Option<u32>),
    /// HTTP 400 (a refused request).
    BadRequest,
    /// No answer for this many ms (then the connection closes).
    Stall(u64),
    /// The connection closes without an answer.
    Reset,
    /// The answer is written a few bytes at a time, this many ms apart.
    Trickle(u64),
    /// The answer is not JSON.
    Malformed,
}

/// The server's settings, changeable while it runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests served at once.
    pub capacity: usize,
    /// What happens above capacity.
    pub overload: Overload,
    /// Time to serve one request, ms.
    pub service: u64,
    /// Extra time per input row, ms (a batch costs more than one row).
    pub per_row: f64,
    /// Dimension of the embeddings.
    pub dim: usize,
    /// Chance that a request draws a random fault, and which faults it draws from.
    pub fault_rate: f64,
    /// The faults drawn at random.
    pub faults: Vec<Fault>,
    /// The generator's seed.
    pub seed: u64,
    /// Inputs that are refused with a 400 whenever a request holds them (poison rows).
    pub poison: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            capacity: 8,
            overload: Overload::Queue,
            service: 1,
            per_row: 0.0,
            dim: 4,
            fault_rate: 0.0,
            faults: Vec::new(),
            seed: 7,
            poison: Vec::new(),
        }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests answered 429 (overload and faults).
    pub rejected: AtomicU64,
    /// Faults injected.
    pub faults: AtomicU64,
    /// Requests answered with a result.
    pub answered: AtomicU64,
    /// Requests being served now.
    pub serving: AtomicUsize,
    /// The most served at once.
    pub max_serving: AtomicUsize,
}

#[derive(Debug)]
struct Shared {
    config: Mutex<ServerConfig>,
    scripted: Mutex<VecDeque<Fault>>,
    rng: Mutex<u64>,
    stats: ServerStats,
    /// Every input asked about, in arrival order (texts, or chat prompts).
    log: Mutex<Vec<String>>,
    keys: Mutex<Vec<String>>,
    freed: Notify,
    stopped: AtomicBool,
    /// Service latencies (ms from arrival to answer) of answered requests.
    latencies: Mutex<Vec<u64>>,
}

/// A running server; it stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The embedding the server gives `text`: `[length, then a value per byte hash]`, `dim` long.
pub fn embedding_of(text: &str, dim: usize) -> Vec<f32> {
    let mut vector = Vec::with_capacity(dim);
    vector.push(text.len() as f32);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    for i in 1..dim {
        hash = hash.rotate_left(13).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
        vector.push((hash % 1000) as f32 / 1000.0);
    }
    vector
}

impl FaultServer {
    /// Starts a server on 127.0.0.1, on a free port.
    pub async fn start(config: ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(config.seed | 1),
            config: Mutex::new(config),
            scripted: Mutex::new(VecDeque::new()),
            stats: ServerStats::default(),
            log: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
            freed: Notify::new(),
            stopped: AtomicBool::new(false),
            latencies: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, Arc::clone(&accepting)));
            }
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The embeddings endpoint's full URL.
    pub fn embeddings_url(&self) -> String {
        format!("{}/v1/embeddings", self.base_url())
    }

    /// The chat endpoint's full URL.
    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.base_url())
    }

    /// Changes the settings (capacity, service time, faults) from the next request on.
    pub fn configure(&self, change: impl FnOnce(&mut ServerConfig)) {
        change(&mut lock(&self.shared.config));
        self.shared.freed.notify_waiters();
    }

    /// The next requests get these faults, in order, before any drawn at random.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.scripted).extend(faults);
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// Every input asked about, in arrival order.
    pub fn log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Every idempotency key received, in arrival order.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.shared.keys).clone()
    }

    /// Service latencies of answered requests, ms from arrival (queueing included).
    pub fn latencies(&self) -> Vec<u64> {
        lock(&self.shared.latencies).clone()
    }

    /// Forgets the log, keys, latencies and counters.
    pub fn reset_counts(&self) {
        lock(&self.shared.log).clear();
        lock(&self.shared.keys).clear();
        lock(&self.shared.latencies).clear();
        let stats = &self.shared.stats;
        for counter in [
            &stats.requests,
            &stats.rejected,
            &stats.faults,
            &stats.answered,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        stats.max_serving.store(0, Ordering::Relaxed);
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn random(&self) -> f64 {
        let mut state = lock(&self.rng);
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fault(&self) -> Option<Fault> {
        if let Some(fault) = lock(&self.scripted).pop_front() {
            return Some(fault);
        }
        let config = lock(&self.config);
        if config.faults.is_empty() || config.fault_rate <= 0.0 {
            return None;
        }
        drop(config);
        let draw = self.random();
        let pick = self.random();
        let config = lock(&self.config);
        (draw < config.fault_rate).then(|| {
            config.faults
                [((pick * config.faults.len() as f64) as usize).min(config.faults.len() - 1)]
        })
    }

    /// Takes a serving slot: `Ok` when it got one, `Err(retry_after)` when rejected.
    async fn admit(&self) -> Result<(), Option<u32>> {
        loop {
            let freed = self.freed.notified();
            let (capacity, overload) = {
                let config = lock(&self.config);
                (config.capacity, config.overload)
            };
            let serving = self.stats.serving.load(Ordering::SeqCst);
            if serving < capacity {
                if self
                    .stats
                    .serving
                    .compare_exchange(serving, serving + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.stats
                        .max_serving
                        .fetch_max(serving + 1, Ordering::SeqCst);
                    return Ok(());
                }
                continue;
            }
            match overload {
                Overload::Reject { retry_after } => return Err(retry_after),
                Overload::Queue => {
                    tokio::select! {
                        _ = freed => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        }
    }

    fn free(&self) {
        self.stats.serving.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_waiters();
    }
}

/// One HTTP/1.1 request: method, path, headers (lowercase names), body.
struct HttpRequest {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<HttpRequest> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 8192];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let path = request_line.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buffer.len() < body_start + length {
        let mut chunk = [0u8; 65536];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    buffer.drain(..body_start + length);
    Some(HttpRequest {
        path,
        headers,
        body,
    })
}

fn response(status: u16, extra_headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn rejection(retry_after: Option<u32>) -> Vec<u8> {
    let headers: Vec<(&str, String)> = retry_after
        .map(|s| vec![("retry-after", s.to_string())])
        .unwrap_or_default();
    response(
        429,
        &headers,
        br#"{"error":{"message":"overloaded","type":"rate_limit"}}"#,
    )
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let arrived = std::time::Instant::now();
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some((_, key)) = request.headers.iter().find(|(n, _)| n == "idempotency-key") {
            lock(&shared.keys).push(key.clone());
        }
        let answer = match shared.fault() {
            Some(fault) => {
                shared.stats.faults.fetch_add(1, Ordering::Relaxed);
                match fault {
                    Fault::ServerError => {
                        response(500, &[], br#"{"error":{"message":"injected failure"}}"#)
                    }
                    Fault::RateLimited(retry_after) => {
                        shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        rejection(retry_after)
                    }
                    Fault::BadRequest => response(400, &[], br#"{"error":{"message":"refused"}}"#),
                    Fault::Stall(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        return;
                    }
                    Fault::Reset => return,
                    Fault::Malformed => response(200, &[], b"{\"data\": [tru"),
                    Fault::Trickle(gap) => {
                        let Some(Ok(body)) = serve(&shared, &request, arrived).await else {
                            continue;
                        };
                        let bytes = response(200, &[], &body);
                        for piece in bytes.chunks(16) {
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(gap)).await;
                        }
                        continue;
                    }
                }
            }
            None => match shared.admit().await {
                Err(retry_after) => {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    rejection(retry_after)
                }
                Ok(()) => {
                    let body = serve(&shared, &request, arrived).await;
                    shared.free();
                    match body {
                        Some(Ok(body)) => {
                            lock(&shared.latencies).push(arrived.elapsed().as_millis() as u64);
                            shared.stats.answered.fetch_add(1, Ordering::Relaxed);
                            response(200, &[], &body)
                        }
                        Some(Err(status)) => {
                            response(status, &[], br#"{"error":{"message":"refused"}}"#)
                        }
                        None => response(400, &[], br#"{"error":{"message":"bad request"}}"#),
                    }
                }
            },
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Waits until `ms` after `from`, or after the wait for a slot when that was longer (a
/// slot's service starts when it is taken). Tokio's timer fires on the first millisecond
/// tick after its deadline, so the deadline is set half a millisecond early: the wait is
/// `ms` on average, give or take half a millisecond.
async fn service_time(from: std::time::Instant, ms: f64) {
    let admitted = std::time::Instant::now();
    let start = if admitted.duration_since(from) > Duration::from_millis(1) {
        admitted
    } else {
        from
    };
    let micros = ((ms * 1000.0) as u64).saturating_sub(500);
    tokio::time::sleep_until((start + Duration::from_micros(micros)).into()).await;
}

/// Serves one request (after its service time): the body, or a status to refuse with.
async fn serve(
    shared: &Shared,
    request: &HttpRequest,
    arrived: std::time::Instant,
) -> Option<Result<Vec<u8>, u16>> {
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    let (service, per_row, dim, poison) = {
        let config = lock(&shared.config);
        (
            config.service,
            config.per_row,
            config.dim,
            config.poison.clone(),
        )
    };
    if request.path.ends_with("/v1/embeddings") {
        let inputs: Vec<String> = match body.get("input")? {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            _ => return None,
        };
        lock(&shared.log).extend(inputs.iter().cloned());
        let wait = service as f64 + per_row * inputs.len() as f64;
        service_time(arrived, wait).await;
        if inputs.iter().any(|input| poison.contains(input)) {
            return Some(Err(400));
        }
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedding_of(text, dim)}))
            .collect();
        let tokens: usize = inputs.iter().map(|t| t.len() / 4 + 1).sum();
        Some(Ok(serde_json::to_vec(&json!({
            "object": "list",
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }))
        .unwrap_or_default()))
    } else if request.path.ends_with("/v1/chat/completions") {
        let content = body
            .get("messages")?
            .as_array()?
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
            .get("content")?;
        let prompt = match content {
            Value::String(text) => text.clone(),
            // A vision request: its text, then what each image is.
            Value::Array(parts) => describe_parts(parts)?,
            _ => return None,
        };
        lock(&shared.log).push(prompt.clone());
        service_time(arrived, service as f64).await;
        if poison.contains(&prompt) {
            return Some(Err(400));
        }
        // A structured answer when asked for one: the prompt's length and its upper case. A
        // classification (ai_classify's prompt): the first label the text holds, else
        // "unknown".
        let classify = prompt
            .split_once("labels: ")
            .and_then(|(_, rest)| rest.split_once(". Answer with the label only."))
            .zip(prompt.split_once("Text: "));
        let content = if let Some(((labels, _), (_, text))) = classify {
            let text = text.to_lowercase();
            labels
                .split(", ")
                .find(|label| text.contains(&label.to_lowercase()))
                .unwrap_or("unknown")
                .to_string()
        } else if body.get("response_format").is_some() {
            json!({"length": prompt.len(), "upper": prompt.to_uppercase()}).to_string()
        } else {
            format!("echo: {prompt}")
        };
        Some(Ok(serde_json::to_vec(&json!({
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt.len() / 4 + 1, "completion_tokens": content.len() / 4 + 1}
        }))
        .unwrap_or_default()))
    } else {
        Some(Err(404))
    }
}

/// A vision message's parts as text: the text parts, then `[MIME WIDTHxHEIGHT]` for each
/// image, decoded from its data URL (`[not an image]` when it does not decode).
fn describe_parts(parts: &[Value]) -> Option<String> {
    use base64::Engine;
    let mut text = Vec::new();
    for part in parts {
        match part.get("type")?.as_str()? {
            "text" => text.push(part.get("text")?.as_str()?.to_string()),
            "image_url" => {
                let url = part.get("image_url")?.get("url")?.as_str()?;
                let (head, data) = url.strip_prefix("data:")?.split_once(";base64,")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .ok()?;
                text.push(match image::load_from_memory(&bytes) {
                    Ok(picture) => format!("[{head} {}x{}]", picture.width(), picture.height()),
                    Err(_) => "[not an image]".to_string(),
                });
            }
            _ => return None,
        }
    }
    Some(text.join(" "))
}
