//! The option keys of `CREATE MODEL ... WITH (...)` and of `ML_PREDICT`'s `MAP[...]`: one
//! table of every key, its default and what it means, and the reading of a model's options
//! into an [`InferenceConfig`].
//!
//! Flink's keys are accepted unchanged, so that Flink DDL and queries port as they are; where
//! a Flink key and a Riffle key say the same thing ([`PAIRS`]), either may be given, and both
//! given with different values is an error. An unknown key is an error naming it and the
//! valid keys. `docs/inference-options.md` renders this table.

use std::collections::BTreeMap;

use riffle_common::{Result, RiffleError};

use crate::Millis;
use crate::breaker::BreakerConfig;
use crate::policy::OnError;
use crate::spend::SpendCap;

/// Where a key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any provider, in the model's options or in `ML_PREDICT`'s map.
    Any,
    /// The OpenAI-compatible provider's model options.
    OpenAi,
    /// The Triton (KServe v2) provider's model options.
    Triton,
    /// The in-process ONNX provider's model options.
    Onnx,
    /// Python user code in worker processes (`map_batches`, `@riffle.udf`): set by the
    /// Python front.
    Python,
}

/// One option key.
#[derive(Debug, Clone, Copy)]
pub struct OptionKey {
    /// The key, as written.
    pub key: &'static str,
    /// Its default, as written (`None`: none, or it depends on the provider).
    pub default: Option<&'static str>,
    /// Where it applies.
    pub scope: Scope,
    /// Whose key it is: `"flink"` or `"riffle"`.
    pub origin: &'static str,
    /// What it means.
    pub doc: &'static str,
}

const fn key(
    key: &'static str,
    default: Option<&'static str>,
    scope: Scope,
    origin: &'static str,
    doc: &'static str,
) -> OptionKey {
    OptionKey {
        key,
        default,
        scope,
        origin,
        doc,
    }
}

/// Every key a model or an `ML_PREDICT` call accepts.
pub const OPTION_KEYS: &[OptionKey] = &[
    key(
        "provider",
        None,
        Scope::Any,
        "flink",
        "'openai', 'triton' (KServe v2: Triton, MLServer, KServe), 'onnx' or 'sentence-embedding'; required",
    ),
    key(
        "task",
        None,
        Scope::Any,
        "flink",
        "what the model does (accepted, informational)",
    ),
    // ML_PREDICT's map (Flink), also accepted as model options.
    key(
        "async",
        Some("true"),
        Scope::Any,
        "flink",
        "calls are always asynchronous; 'false' is accepted and changes nothing",
    ),
    key(
        "capacity",
        None,
        Scope::Any,
        "flink",
        "requests in flight at most, a number: the same as concurrency",
    ),
    key(
        "max-concurrent-operations",
        None,
        Scope::Any,
        "flink",
        "the same as capacity",
    ),
    key(
        "timeout",
        None,
        Scope::Any,
        "flink",
        "time a row may take, retries included (e.g. '30 s'): the same as deadline; for 'triton' models, Flink's per-request timeout",
    ),
    key(
        "output-mode",
        Some("ordered"),
        Scope::Any,
        "flink",
        "'ordered' or 'allow_unordered': whether results keep input order between watermarks",
    ),
    // The OpenAI provider (Flink).
    key(
        "endpoint",
        None,
        Scope::Any,
        "flink",
        "the full URL of /v1/embeddings or /v1/chat/completions (OpenAI), or the server's base URL, http(s)://host:port for REST or grpc://host:port for gRPC (Triton); or env RIFFLE_OPENAI_ENDPOINT",
    ),
    key(
        "api-key",
        None,
        Scope::OpenAi,
        "flink",
        "the API key; or env OPENAI_API_KEY; never logged",
    ),
    key(
        "model",
        None,
        Scope::OpenAi,
        "flink",
        "the model's name at the provider",
    ),
    key(
        "dimension",
        None,
        Scope::OpenAi,
        "flink",
        "embedding dimension asked of the server",
    ),
    key(
        "system-prompt",
        None,
        Scope::OpenAi,
        "flink",
        "chat: the system message",
    ),
    key(
        "temperature",
        None,
        Scope::OpenAi,
        "flink",
        "chat: sampling temperature",
    ),
    key(
        "top-p",
        None,
        Scope::OpenAi,
        "flink",
        "chat: nucleus sampling",
    ),
    key(
        "stop",
        None,
        Scope::OpenAi,
        "flink",
        "chat: stop sequences, comma-separated",
    ),
    key(
        "max-tokens",
        None,
        Scope::OpenAi,
        "flink",
        "chat: tokens to generate at most",
    ),
    key(
        "response-format",
        None,
        Scope::OpenAi,
        "flink",
        "chat: 'text', 'json_object', or a JSON schema object (structured output into the OUTPUT columns)",
    ),
    key(
        "max-context-size",
        None,
        Scope::OpenAi,
        "flink",
        "tokens (estimated) a row may send",
    ),
    key(
        "context-overflow-action",
        Some("truncated-tail"),
        Scope::OpenAi,
        "flink",
        "a row over max-context-size (estimated at 4 characters a token): 'truncated-tail', 'truncated-head', 'skipped' (NULL result) or 'error' (a row error)",
    ),
    key(
        "python.payload",
        None,
        Scope::Python,
        "riffle",
        "the pickled function or class and its arguments (base64; cloudpickle), opaque to the engine",
    ),
    key(
        "python.function",
        None,
        Scope::Python,
        "riffle",
        "what the user code is called in errors and logs: 'map_batches(Model)'",
    ),
    key(
        "python.executable",
        Some("python3"),
        Scope::Python,
        "riffle",
        "the Python interpreter the workers run (the Python front passes sys.executable)",
    ),
    key(
        "python.path",
        None,
        Scope::Python,
        "riffle",
        "the workers' PYTHONPATH (the Python front passes its sys.path, so that functions pickled by reference import)",
    ),
    key(
        "python.num-cpus",
        Some("1"),
        Scope::Python,
        "riffle",
        "CPU threads each worker may use: its OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS",
    ),
    key(
        "python.num-gpus",
        Some("0"),
        Scope::Python,
        "riffle",
        "GPUs each worker gets, through CUDA_VISIBLE_DEVICES: a fraction (workers share a GPU) or a whole number",
    ),
    key(
        "python.prestart",
        None,
        Scope::Python,
        "riffle",
        "workers started when the job starts, so that they load while it reads its first rows (the rest start as batches wait for them); default: the lowest concurrency",
    ),
    key(
        "python.output-rows",
        Some("one-per-row"),
        Scope::Python,
        "riffle",
        "'one-per-row', or 'any' (map_batches: a batch may give any number of rows; the model's one OUTPUT column is then a LIST of STRUCT holding a batch's rows on its first row)",
    ),
    key(
        "python.timeout",
        None,
        Scope::Python,
        "riffle",
        "a batch taking longer is a WorkerTimeoutError: the worker is killed (and the batch retried up to max-retries)",
    ),
    key(
        "error-handling-strategy",
        None,
        Scope::OpenAi,
        "flink",
        "'retry', 'failover' (null result) or 'ignore' (null result): maps to on-error",
    ),
    key(
        "retry-num",
        None,
        Scope::OpenAi,
        "flink",
        "retries of a request at most: the same as max-retries",
    ),
    key(
        "retry-backoff-strategy",
        Some("exponential"),
        Scope::OpenAi,
        "flink",
        "accepted; the backoff is always exponential with full jitter",
    ),
    key(
        "retry-backoff-base-interval",
        Some("500 ms"),
        Scope::Any,
        "flink",
        "the backoff's base",
    ),
    key(
        "retry-fallback-strategy",
        Some("fail"),
        Scope::OpenAi,
        "flink",
        "after the last retry: 'fail' or 'null'",
    ),
    // The Triton provider (Flink).
    key(
        "model-name",
        None,
        Scope::Triton,
        "flink",
        "the model's name on the server",
    ),
    key(
        "model-version",
        None,
        Scope::Triton,
        "flink",
        "the model's version on the server",
    ),
    key(
        "output-names",
        None,
        Scope::Triton,
        "riffle",
        "the server outputs to ask for, comma-separated, one per OUTPUT column in order (default: the server's default outputs, matched by name, else in order)",
    ),
    key(
        "max-retries",
        Some("4"),
        Scope::Any,
        "flink",
        "retries of a request at most (attempts = 1 + retries)",
    ),
    // Riffle's own.
    key(
        "concurrency",
        Some("adaptive"),
        Scope::Any,
        "riffle",
        "'adaptive' or a number of requests in flight per endpoint",
    ),
    key(
        "concurrency.min",
        Some("1"),
        Scope::Any,
        "riffle",
        "adaptive concurrency: the lowest limit",
    ),
    key(
        "concurrency.max",
        Some("64"),
        Scope::Any,
        "riffle",
        "adaptive concurrency: the highest limit, and requests started per subtask at most",
    ),
    key(
        "batch-rows",
        None,
        Scope::Any,
        "riffle",
        "rows per request at most (32 for embeddings, 1 for chat)",
    ),
    key(
        "batch-tokens",
        None,
        Scope::Any,
        "riffle",
        "estimated tokens per request at most (providers that estimate tokens: openai), from the batch's average row",
    ),
    key(
        "batch-bytes",
        Some("4 MiB"),
        Scope::Any,
        "riffle",
        "bytes of input per request at most",
    ),
    key(
        "linger",
        Some("5 ms"),
        Scope::Any,
        "riffle",
        "how long a request's first row waits for others",
    ),
    key(
        "request-timeout",
        Some("60 s"),
        Scope::Any,
        "riffle",
        "time one attempt may take",
    ),
    key(
        "deadline",
        Some("10 min"),
        Scope::Any,
        "riffle",
        "time a row may take, retries included",
    ),
    key(
        "max-requests-per-second",
        None,
        Scope::Any,
        "riffle",
        "a rate limit per endpoint",
    ),
    key(
        "max-tokens-per-minute",
        None,
        Scope::Any,
        "riffle",
        "a token rate limit per endpoint (estimated, corrected by usage)",
    ),
    key(
        "on-error",
        Some("fail"),
        Scope::Any,
        "riffle",
        "a row that failed for good: 'fail', 'null' or 'default' (with an __error column)",
    ),
    key(
        "fallback-model",
        None,
        Scope::Any,
        "riffle",
        "a model of the catalog, with the same OUTPUT columns, that takes the rows while this model's circuit breaker is open (instead of holding them back)",
    ),
    key(
        "spend.max-tokens",
        None,
        Scope::Any,
        "riffle",
        "tokens (in and out, as the server counted them, else estimated) this call may spend in one job; when reached the job stops taking input and ends cleanly with the rows answered so far",
    ),
    key(
        "spend.max-cost",
        None,
        Scope::Any,
        "riffle",
        "the same cap as an amount of money, from price.input-tokens and price.output-tokens",
    ),
    key(
        "price.input-tokens",
        None,
        Scope::Any,
        "riffle",
        "the price of a million input tokens (for spend.max-cost and the job's report)",
    ),
    key(
        "price.output-tokens",
        None,
        Scope::Any,
        "riffle",
        "the price of a million output tokens",
    ),
    key(
        "max-error-fraction",
        Some("0.01"),
        Scope::Any,
        "riffle",
        "with on-error null/default, the job fails past this share of failed rows (judged after 1000 rows)",
    ),
    key(
        "circuit-breaker.failure-rate",
        Some("0.5"),
        Scope::Any,
        "riffle",
        "the breaker opens past this share of failed requests over 10 s (at least 20)",
    ),
    key(
        "circuit-breaker.consecutive-failures",
        Some("10"),
        Scope::Any,
        "riffle",
        "or after this many failures in a row",
    ),
    key(
        "circuit-breaker.max-open-duration",
        Some("10 min"),
        Scope::Any,
        "riffle",
        "the job fails when the breaker stays open this long",
    ),
    key(
        "prompt-template",
        None,
        Scope::OpenAi,
        "riffle",
        "chat: the prompt, with {column} for each input column",
    ),
    key(
        "labels",
        None,
        Scope::OpenAi,
        "riffle",
        "chat: a JSON array of labels the answer must be one of (ai_classify sets it)",
    ),
    // The in-process sentence-embedding provider (Riffle's).
    key(
        "tokenizer",
        None,
        Scope::Onnx,
        "riffle",
        "sentence-embedding: the model's tokenizer.json",
    ),
    key(
        "config",
        None,
        Scope::Onnx,
        "riffle",
        "sentence-embedding with a .safetensors path: the model's config.json (default: the one beside the weights); needs the `candle` feature",
    ),
    key(
        "max-length",
        Some("256"),
        Scope::Onnx,
        "riffle",
        "sentence-embedding: tokens per text at most (longer texts are truncated)",
    ),
    key(
        "normalize",
        Some("true"),
        Scope::Onnx,
        "riffle",
        "sentence-embedding: L2-normalise the pooled vector",
    ),
    // The in-process ONNX provider (Riffle's).
    key(
        "path",
        None,
        Scope::Onnx,
        "riffle",
        "onnx: the model file (.onnx), loaded once per process",
    ),
    key(
        "onnx.threads",
        None,
        Scope::Onnx,
        "riffle",
        "onnx: ONNX Runtime's intra-op threads (its default: all cores)",
    ),
    key(
        "onnx.runtime-library",
        None,
        Scope::Onnx,
        "riffle",
        "onnx: libonnxruntime's path; else ORT_DYLIB_PATH, else the onnxruntime Python package's",
    ),
];

/// Keys that say the same thing: (Flink's, Riffle's).
pub const PAIRS: &[(&str, &str)] = &[
    ("capacity", "concurrency"),
    ("max-concurrent-operations", "concurrency"),
    ("timeout", "deadline"),
    ("error-handling-strategy", "on-error"),
    ("retry-num", "max-retries"),
];

/// The keys as a Markdown table (docs/inference-options.md is this table, checked by a
/// test), with the pairs of keys that say the same thing.
pub fn options_markdown() -> String {
    let mut text = String::from(
        "# Model and ML_PREDICT options\n\n\
         Generated from `riffle_inference::options::OPTION_KEYS`; a test fails when this file \
         and the table drift apart. Keys are given in `CREATE MODEL ... WITH (...)` or in \
         `ML_PREDICT`'s `MAP[...]` (the call's win). An unknown key is an error that lists \
         these.\n\n| key | default | applies to | from | meaning |\n|---|---|---|---|---|\n",
    );
    for option in OPTION_KEYS {
        let scope = match option.scope {
            Scope::Any => "any provider",
            Scope::OpenAi => "openai",
            Scope::Triton => "triton",
            Scope::Onnx => "onnx",
            Scope::Python => "python",
        };
        text.push_str(&format!(
            "| `{}` | {} | {scope} | {} | {} |\n",
            option.key,
            option.default.map_or("-".to_string(), |d| format!("`{d}`")),
            option.origin,
            option.doc.replace('|', "\\|")
        ));
    }
    text.push_str(
        "\n## Flink's keys and Riffle's that say the same thing\n\n\
         Either may be given; both given with different values is an error.\n\n\
         | Flink | Riffle |\n|---|---|\n",
    );
    for (flink, riffle) in PAIRS {
        text.push_str(&format!("| `{flink}` | `{riffle}` |\n"));
    }
    text.push_str(
        "\n`error-handling-strategy`: `retry` is `on-error` = `fail` after the retries, \
         `failover` and `ignore` are `null`. `retry-num` = n is `max-retries` = n (attempts \
         = n + 1); the retry budget (at most 20% of an endpoint's requests over 10 s, plus \
         10) holds for both.\n",
    );
    text
}

/// What the model is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// An OpenAI-compatible server.
    OpenAi(OpenAiOptions),
    /// An ONNX model run in this process.
    Onnx(OnnxOptions),
    /// A sentence encoder run in this process.
    Sentence(SentenceOptions),
    /// A KServe v2 server (Triton, MLServer, KServe): Flink's 'triton'.
    Triton(TritonOptions),
    /// Python user code in a pool of worker processes.
    Python(crate::python::PythonOptions),
}

/// The KServe v2 provider's options.
#[derive(Debug, Clone, PartialEq)]
pub struct TritonOptions {
    /// `http(s)://host:port` (REST) or `grpc://host:port` (gRPC).
    pub endpoint: String,
    /// The model's name on the server.
    pub model_name: String,
    /// The model's version on the server.
    pub model_version: Option<String>,
    /// Server outputs asked for, one per OUTPUT column (empty: the server's defaults).
    pub output_names: Vec<String>,
}

/// The in-process sentence-embedding provider's options.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceOptions {
    /// The encoder: ONNX, or safetensors weights (the `candle` feature).
    pub path: String,
    /// Its tokenizer.json.
    pub tokenizer: String,
    /// The config.json of safetensors weights (default: beside them).
    pub config: Option<String>,
    /// Tokens per text at most.
    pub max_length: usize,
    /// Whether the pooled vector is L2-normalised.
    pub normalize: bool,
    /// Intra-op threads.
    pub threads: Option<usize>,
    /// libonnxruntime's path.
    pub library: Option<String>,
}

/// The in-process ONNX provider's options.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxOptions {
    /// The model file.
    pub path: String,
    /// Intra-op threads.
    pub threads: Option<usize>,
    /// libonnxruntime's path.
    pub library: Option<String>,
}

/// The OpenAI-compatible provider's options.
#[derive(Clone, PartialEq)]
pub struct OpenAiOptions {
    /// The full URL of `/v1/embeddings` or `/v1/chat/completions`.
    pub endpoint: String,
    /// Which of the two.
    pub task: OpenAiTask,
    /// Sent as a bearer token; never printed.
    pub api_key: Option<String>,
    /// The model's name at the provider.
    pub model: Option<String>,
    /// Embedding dimension asked of the server.
    pub dimension: Option<usize>,
    /// Chat: the system message.
    pub system_prompt: Option<String>,
    /// Chat: the prompt, `{column}` replaced by the row's value.
    pub prompt_template: Option<String>,
    /// Chat: sampling temperature.
    pub temperature: Option<f64>,
    /// Chat: nucleus sampling.
    pub top_p: Option<f64>,
    /// Chat: stop sequences.
    pub stop: Vec<String>,
    /// Chat: tokens to generate at most.
    pub max_tokens: Option<u64>,
    /// Chat: `response_format`, as JSON.
    pub response_format: Option<serde_json::Value>,
    /// Tokens (estimated) a row may send, and what to do with a longer one.
    pub max_context: Option<(u64, Overflow)>,
    /// Chat: the answer must be one of these (a classification); otherwise a row error.
    pub labels: Vec<String>,
}

/// What happens to a row longer than `max-context-size` (Flink's `context-overflow-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the start, cut the end.
    TruncateTail,
    /// Keep the end, cut the start.
    TruncateHead,
    /// Send nothing; the result is NULL.
    Skip,
    /// A row error.
    Error,
}

impl std::fmt::Debug for OpenAiOptions {
    // The API key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiOptions")
            .field("endpoint", &self.endpoint)
            .field("task", &self.task)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// An OpenAI endpoint's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiTask {
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/chat/completions`.
    Chat,
}

/// How many requests may be in flight at an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Found by the adaptive limiter, between `min` and `max`.
    Adaptive {
        /// The lowest limit.
        min: usize,
        /// The highest limit.
        max: usize,
    },
    /// A fixed number.
    Fixed(usize),
}

impl Concurrency {
    /// Requests one subtask starts at most (the limiter decides how many of them go).
    pub fn per_subtask(&self) -> usize {
        match *self {
            Concurrency::Adaptive { max, .. } => max,
            Concurrency::Fixed(n) => n,
        }
    }

    /// The fewest requests a subtask runs at once (where the adaptive limiter starts from
    /// or may fall back to).
    pub fn lowest(&self) -> usize {
        match *self {
            Concurrency::Adaptive { min, .. } => min,
            Concurrency::Fixed(n) => n,
        }
    }
}

/// Everything the inference operator needs to know, read from a model's options and the
/// call's.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceConfig {
    /// The model's name (for errors).
    pub model: String,
    /// The backend.
    pub provider: Provider,
    /// Requests in flight.
    pub concurrency: Concurrency,
    /// Rows per request at most.
    pub batch_rows: usize,
    /// Bytes per request at most.
    pub batch_bytes: u64,
    /// Estimated tokens per request at most.
    pub batch_tokens: Option<u64>,
    /// How long a request's first row waits for others.
    pub linger: Millis,
    /// Time one attempt may take.
    pub request_timeout: Millis,
    /// Time a row may take, retries included.
    pub deadline: Millis,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The backoff's base.
    pub backoff_base: Millis,
    /// Rate limits per endpoint.
    pub max_requests_per_second: Option<f64>,
    /// Token rate limit per endpoint.
    pub max_tokens_per_minute: Option<f64>,
    /// A row that failed for good.
    pub on_error: OnError,
    /// The job fails past this share of failed rows.
    pub max_error_fraction: f64,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The job fails when the breaker stays open this long.
    pub max_open: Millis,
    /// Whether results keep input order.
    pub ordered: bool,
    /// The job's spend cap on this call.
    pub spend: SpendCap,
    /// Requests per subtask prepared beyond the endpoint's limit (see
    /// [`InferenceConfig::requests_per_subtask`]).
    pub ready_ahead: usize,
}

fn invalid(model: &str, key: &str, value: &str, expected: &str) -> RiffleError {
    RiffleError::user(format!(
        "model {model}: option '{key}' = '{value}' is not valid: {expected}"
    ))
}

/// Merges a model's options with a call's (the call's win), checking every key and pair.
pub fn merge_options(
    model: &str,
    model_options: &BTreeMap<String, String>,
    call_options: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut merged = model_options.clone();
    for (key, value) in call_options {
        merged.insert(key.clone(), value.clone());
    }
    for key in merged.keys() {
        if !OPTION_KEYS.iter().any(|known| known.key == key) {
            let valid: Vec<&str> = OPTION_KEYS.iter().map(|known| known.key).collect();
            return Err(
                RiffleError::user(format!("model {model}: unknown option '{key}'"))
                    .with_hint(format!("valid options are: {}", valid.join(", "))),
            );
        }
    }
    Ok(merged)
}

/// A duration such as `30 s`, `500ms`, `2 min`, `1h` or a bare number of milliseconds.
pub fn parse_duration(value: &str) -> Option<Millis> {
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        _ => return None,
    };
    Some((number * factor).round() as Millis)
}

/// A size such as `4 MiB`, `512kb` or a bare number of bytes.
fn parse_bytes(value: &str) -> Option<u64> {
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "b" => 1.0,
        "kb" | "kib" | "k" => 1024.0,
        "mb" | "mib" | "m" => 1024.0 * 1024.0,
        "gb" | "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor) as u64)
}

/// Reads options by key, with the model's name for errors.
struct Reader<'a> {
    model: &'a str,
    options: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// The value of a Flink/Riffle pair, refusing two different values.
    fn pair(
        &self,
        flink: &'static str,
        riffle: &'static str,
    ) -> Result<Option<(&'static str, String)>> {
        match (self.get(flink), self.get(riffle)) {
            (Some(a), Some(b)) if a.trim() != b.trim() => Err(RiffleError::user(format!(
                "model {}: '{flink}' = '{a}' and '{riffle}' = '{b}' say the same thing \
                 differently",
                self.model
            ))
            .with_hint(format!("give one of '{flink}' and '{riffle}'"))),
            (Some(a), _) => Ok(Some((flink, a.to_string()))),
            (None, Some(b)) => Ok(Some((riffle, b.to_string()))),
            (None, None) => Ok(None),
        }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| invalid(self.model, key, value, expected)),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Millis>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_duration(value)
                .map(Some)
                .ok_or_else(|| invalid(self.model, key, value, "a duration such as '30 s'")),
        }
    }
}

impl InferenceConfig {
    /// Reads the merged options of model `model` (see [`merge_options`]).
    pub fn from_options(model: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let read = Reader { model, options };
        let provider_name = read.get("provider").ok_or_else(|| {
            RiffleError::user(format!("model {model} has no 'provider' option"))
                .with_hint("add 'provider' = 'openai' (or 'triton') to the model's WITH options")
        })?;
        let provider = match provider_name.trim().to_ascii_lowercase().as_str() {
            "openai" => Provider::OpenAi(openai_options(&read)?),
            "onnx" => Provider::Onnx(OnnxOptions {
                path: resolve_path(model, "path", read.get("path"))?,
                threads: read.parse("onnx.threads", "a number of threads")?,
                library: read.get("onnx.runtime-library").map(str::to_string),
            }),
            "sentence-embedding" => Provider::Sentence(SentenceOptions {
                path: resolve_path(model, "path", read.get("path"))?,
                tokenizer: resolve_path(model, "tokenizer", read.get("tokenizer"))?,
                config: match read.get("config") {
                    Some(_) => Some(resolve_path(model, "config", read.get("config"))?),
                    None => None,
                },
                max_length: read
                    .parse("max-length", "a number of tokens")?
                    .unwrap_or(256),
                normalize: read
                    .parse("normalize", "'true' or 'false'")?
                    .unwrap_or(true),
                threads: read.parse("onnx.threads", "a number of threads")?,
                library: read.get("onnx.runtime-library").map(str::to_string),
            }),
            "triton" | "kserve" => Provider::Triton(TritonOptions {
                endpoint: read
                    .get("endpoint")
                    .ok_or_else(|| {
                        RiffleError::user(format!("model {model} has no 'endpoint' option"))
                            .with_hint(
                                "give the server's base URL: 'http://host:port' (REST) or \
                                 'grpc://host:port' (gRPC)",
                            )
                    })?
                    .trim()
                    .to_string(),
                model_name: read
                    .get("model-name")
                    .ok_or_else(|| {
                        RiffleError::user(format!("model {model} has no 'model-name' option"))
                            .with_hint("give the model's name on the server")
                    })?
                    .trim()
                    .to_string(),
                model_version: read
                    .get("model-version")
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty()),
                output_names: read
                    .get("output-names")
                    .map(|names| {
                        names
                            .split(',')
                            .map(|n| n.trim().to_string())
                            .filter(|n| !n.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            "python" => Provider::Python(crate::python::PythonOptions::read(
                model,
                |key| read.get(key),
                read.duration("python.timeout")?,
            )?),
            other => {
                return Err(RiffleError::user(format!(
                    "model {model}: unknown provider '{other}'"
                ))
                .with_hint(
                    "providers are 'openai' (OpenAI-compatible servers), 'triton' (KServe v2 \
                     servers: Triton, MLServer, KServe), 'onnx' and 'sentence-embedding' (in \
                     process)",
                ));
            }
        };
        for option in OPTION_KEYS {
            let applies = match option.scope {
                Scope::Any => true,
                Scope::OpenAi => matches!(provider, Provider::OpenAi(_)),
                Scope::Onnx => matches!(provider, Provider::Onnx(_) | Provider::Sentence(_)),
                Scope::Triton => matches!(provider, Provider::Triton(_)),
                Scope::Python => matches!(provider, Provider::Python(_)),
            };
            if !applies && options.contains_key(option.key) {
                return Err(RiffleError::user(format!(
                    "model {model}: option '{}' does not apply to provider '{provider_name}'",
                    option.key
                )));
            }
        }
        let chat = matches!(&provider, Provider::OpenAi(o) if o.task == OpenAiTask::Chat);

        let concurrency = match read
            .pair("capacity", "concurrency")?
            .or(read.pair("max-concurrent-operations", "concurrency")?)
        {
            None => None,
            Some((_, value)) if value.trim().eq_ignore_ascii_case("adaptive") => None,
            Some((key, value)) => match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(Concurrency::Fixed(n)),
                _ => {
                    return Err(invalid(
                        model,
                        key,
                        &value,
                        "'adaptive' or a number above 0",
                    ));
                }
            },
        };
        let in_process = matches!(provider, Provider::Onnx(_) | Provider::Sentence(_));
        // An in-process model left at its default runs one call at a time, with one more
        // request per subtask prepared behind it, so that the model never waits for the
        // rows' preprocessing (benchmark c).
        let ready_ahead = usize::from(in_process && concurrency.is_none());
        let concurrency = match concurrency {
            Some(fixed) => fixed,
            // One call at a time: the model parallelises itself over the cores (ONNX
            // Runtime's intra-op threads), and a second call in flight only competes for
            // them (benchmark b: 0.96x of Python's rows/s with 2, 1.00x with 1).
            None if in_process && read.get("concurrency.max").is_none() => Concurrency::Fixed(1),
            None => {
                let min = read.parse("concurrency.min", "a number")?.unwrap_or(1usize);
                let max = read
                    .parse("concurrency.max", "a number")?
                    .unwrap_or(64usize);
                if min == 0 || min > max {
                    return Err(RiffleError::user(format!(
                        "model {model}: concurrency.min ({min}) must be at least 1 and at most \
                         concurrency.max ({max})"
                    )));
                }
                Concurrency::Adaptive { min, max }
            }
        };
        let batch_rows = read
            .parse("batch-rows", "a number of rows above 0")?
            .unwrap_or(if chat { 1 } else { 32usize });
        if batch_rows == 0 {
            return Err(invalid(
                model,
                "batch-rows",
                "0",
                "a number of rows above 0",
            ));
        }
        let batch_tokens = match read.parse::<u64>("batch-tokens", "a number of tokens above 0")? {
            Some(0) => {
                return Err(invalid(
                    model,
                    "batch-tokens",
                    "0",
                    "a number of tokens above 0",
                ));
            }
            other => other,
        };
        let batch_bytes = match read.get("batch-bytes") {
            None => 4 << 20,
            Some(value) => parse_bytes(value)
                .filter(|bytes| *bytes > 0)
                .ok_or_else(|| invalid(model, "batch-bytes", value, "a size such as '4 MiB'"))?,
        };
        let deadline = match read.pair("timeout", "deadline")? {
            None => 600_000,
            Some((key, value)) => parse_duration(&value)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| invalid(model, key, &value, "a duration such as '30 s'"))?,
        };
        let max_retries = match read.pair("retry-num", "max-retries")? {
            None => 4,
            Some((key, value)) => value
                .trim()
                .parse::<u32>()
                .map_err(|_| invalid(model, key, &value, "a number of retries"))?,
        };
        let on_error = match read.pair("error-handling-strategy", "on-error")? {
            None => match read.get("retry-fallback-strategy") {
                Some(value) if value.trim().eq_ignore_ascii_case("null") => OnError::Null,
                _ => OnError::Fail,
            },
            Some(("error-handling-strategy", value)) => {
                match value.trim().to_ascii_lowercase().as_str() {
                    "retry" => OnError::Fail,
                    "failover" | "ignore" => OnError::Null,
                    _ => {
                        return Err(invalid(
                            model,
                            "error-handling-strategy",
                            &value,
                            "'retry', 'failover' or 'ignore'",
                        ));
                    }
                }
            }
            Some((key, value)) => {
                OnError::parse(&value).map_err(|expected| invalid(model, key, &value, &expected))?
            }
        };
        let ordered = match read.get("output-mode") {
            None => true,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "ordered" => true,
                "allow_unordered" | "unordered" => false,
                _ => {
                    return Err(invalid(
                        model,
                        "output-mode",
                        value,
                        "'ordered' or 'allow_unordered'",
                    ));
                }
            },
        };
        let breaker_defaults = BreakerConfig::default();
        let failure_share = read
            .parse("circuit-breaker.failure-rate", "a share between 0 and 1")?
            .unwrap_or(breaker_defaults.failure_share);
        if !(0.0..=1.0).contains(&failure_share) || failure_share == 0.0 {
            return Err(invalid(
                model,
                "circuit-breaker.failure-rate",
                &failure_share.to_string(),
                "a share above 0, at most 1",
            ));
        }
        let max_error_fraction = read
            .parse("max-error-fraction", "a share between 0 and 1")?
            .unwrap_or(0.01f64);
        if !(0.0..=1.0).contains(&max_error_fraction) {
            return Err(invalid(
                model,
                "max-error-fraction",
                &max_error_fraction.to_string(),
                "a share between 0 and 1",
            ));
        }
        let spend = SpendCap {
            max_tokens: read.parse("spend.max-tokens", "a number of tokens")?,
            max_cost: read.parse("spend.max-cost", "an amount such as 12.50")?,
            input_price: read
                .parse("price.input-tokens", "a price per million tokens")?
                .unwrap_or(0.0),
            output_price: read
                .parse("price.output-tokens", "a price per million tokens")?
                .unwrap_or(0.0),
        };
        if spend.max_cost.is_some() && spend.input_price <= 0.0 {
            // Estimated tokens count at the input price: without it an embedding model's
            // spend would stay 0 and the cap would never act.
            return Err(RiffleError::user(format!(
                "model {model}: 'spend.max-cost' needs the model's prices"
            ))
            .with_hint("add 'price.input-tokens' and 'price.output-tokens' (per million tokens)"));
        }
        if spend.is_set() && matches!(provider, Provider::Onnx(_) | Provider::Triton(_)) {
            // These count no tokens: a cap would never act.
            return Err(RiffleError::user(format!(
                "model {model}: provider '{provider_name}' counts no tokens, so a spend cap \
                 (spend.max-tokens, spend.max-cost) cannot apply to it"
            ))
            .with_hint("spend caps apply to 'openai' and 'sentence-embedding' models"));
        }
        Ok(Self {
            model: model.to_string(),
            provider,
            concurrency,
            batch_rows,
            batch_bytes,
            batch_tokens,
            linger: read.duration("linger")?.unwrap_or(5),
            request_timeout: read.duration("request-timeout")?.unwrap_or(60_000).max(1),
            deadline,
            max_attempts: max_retries.saturating_add(1),
            backoff_base: read
                .duration("retry-backoff-base-interval")?
                .unwrap_or(500)
                .max(1),
            max_requests_per_second: read.parse("max-requests-per-second", "a number")?,
            max_tokens_per_minute: read.parse("max-tokens-per-minute", "a number")?,
            on_error,
            max_error_fraction,
            breaker: BreakerConfig {
                failure_share,
                consecutive: read
                    .parse("circuit-breaker.consecutive-failures", "a number")?
                    .unwrap_or(breaker_defaults.consecutive),
                ..breaker_defaults
            },
            max_open: read
                .duration("circuit-breaker.max-open-duration")?
                .unwrap_or(600_000),
            ordered,
            spend,
            ready_ahead,
        })
    }

    /// Requests one subtask starts and keeps at most: those the endpoint's limit lets run,
    /// and `ready_ahead` more waiting with their rows ready.
    pub fn requests_per_subtask(&self) -> usize {
        self.concurrency.per_subtask() + self.ready_ahead
    }
}

/// A file option: a path, or `python-package:NAME/FILE`, a file inside an installed Python
/// package (models that PyPI packages ship), found with `python3`.
fn resolve_path(model: &str, key: &str, value: Option<&str>) -> Result<String> {
    let value = value.ok_or_else(|| {
        RiffleError::user(format!("model {model} has no '{key}'"))
            .with_hint(format!("give the file as '{key}'"))
    })?;
    let Some(rest) = value.strip_prefix("python-package:") else {
        return Ok(value.to_string());
    };
    // Asked once per process: planning reads a model's options many times.
    type Found = std::sync::Mutex<BTreeMap<String, String>>;
    static FOUND: std::sync::OnceLock<Found> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    if let Some(path) = found.lock().unwrap_or_else(|p| p.into_inner()).get(rest) {
        return Ok(path.clone());
    }
    let (package, file) = rest.split_once('/').unwrap_or((rest, ""));
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util, sys; spec = importlib.util.find_spec(sys.argv[1]); \
             print(list(spec.submodule_search_locations)[0] if spec else '')",
            package,
        ])
        .output()
        .map_err(|e| {
            RiffleError::user(format!(
                "model {model}: cannot run python3 to find {package}: {e}"
            ))
        })?;
    let folder = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if folder.is_empty() {
        return Err(RiffleError::user(format!(
            "model {model}: '{key}' names the Python package {package}, which is not installed"
        ))
        .with_hint(format!("pip install {}", package.replace('_', "-"))));
    }
    let path = std::path::Path::new(&folder)
        .join(file)
        .display()
        .to_string();
    found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(rest.to_string(), path.clone());
    Ok(path)
}

fn openai_options(read: &Reader<'_>) -> Result<OpenAiOptions> {
    let model = read.model;
    let endpoint = match read.get("endpoint") {
        Some(endpoint) => endpoint.trim().to_string(),
        None => std::env::var("RIFFLE_OPENAI_ENDPOINT").map_err(|_| {
            RiffleError::user(format!("model {model} has no 'endpoint'")).with_hint(
                "give the full URL of /v1/embeddings or /v1/chat/completions as 'endpoint', \
                 or set RIFFLE_OPENAI_ENDPOINT",
            )
        })?,
    };
    let path = endpoint
        .split('?')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    let task = if path.ends_with("/embeddings") {
        OpenAiTask::Embeddings
    } else if path.ends_with("/chat/completions") {
        OpenAiTask::Chat
    } else {
        return Err(invalid(
            model,
            "endpoint",
            &endpoint,
            "the full URL of /v1/embeddings or /v1/chat/completions",
        ));
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(invalid(
            model,
            "endpoint",
            &endpoint,
            "an http:// or https:// URL",
        ));
    }
    let api_key = read
        .get("api-key")
        .map(str::to_string)
        .or_else(|| std::env::var("OPENAI_API_KEY").ok());
    let response_format = match read.get("response-format") {
        None => None,
        Some(value) => {
            let trimmed = value.trim();
            Some(match trimmed {
                "text" | "json_object" => serde_json::json!({ "type": trimmed }),
                _ => {
                    let schema: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
                        invalid(
                            model,
                            "response-format",
                            value,
                            &format!("'text', 'json_object' or a JSON schema ({e})"),
                        )
                    })?;
                    if schema.get("type").and_then(|t| t.as_str()) == Some("json_schema") {
                        schema
                    } else {
                        serde_json::json!({
                            "type": "json_schema",
                            "json_schema": { "name": "output", "schema": schema, "strict": true }
                        })
                    }
                }
            })
        }
    };
    Ok(OpenAiOptions {
        endpoint,
        task,
        api_key,
        model: read.get("model").map(str::to_string),
        dimension: read.parse("dimension", "a number")?,
        system_prompt: read.get("system-prompt").map(str::to_string),
        prompt_template: read.get("prompt-template").map(str::to_string),
        temperature: read.parse("temperature", "a number")?,
        top_p: read.parse("top-p", "a number")?,
        stop: read
            .get("stop")
            .map(|s| s.split(',').map(|p| p.to_string()).collect())
            .unwrap_or_default(),
        max_tokens: read.parse("max-tokens", "a number")?,
        response_format,
        labels: match read.get("labels") {
            None => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<String>>(text)
                .map_err(|_| invalid(model, "labels", text, "a JSON array of strings"))?,
        },
        max_context: match read.parse::<u64>("max-context-size", "a number of tokens")? {
            None => None,
            Some(tokens) => {
                let action = read
                    .get("context-overflow-action")
                    .unwrap_or("truncated-tail");
                let overflow = match action.trim().to_ascii_lowercase().as_str() {
                    "truncated-tail" => Overflow::TruncateTail,
                    "truncated-head" => Overflow::TruncateHead,
                    "skipped" => Overflow::Skip,
                    "error" => Overflow::Error,
                    _ => {
                        return Err(invalid(
                            model,
                            "context-overflow-action",
                            action,
                            "'truncated-tail', 'truncated-head', 'skipped' or 'error'",
                        ));
                    }
                };
                Some((tokens.max(1), overflow))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const EMBED: &[(&str, &str)] = &[
        ("provider", "openai"),
        ("endpoint", "http://127.0.0.1:1/v1/embeddings"),
    ];

    #[test]
    fn defaults_follow_the_task() {
        let config = InferenceConfig::from_options("m", &options(EMBED)).unwrap();
        assert_eq!(config.batch_rows, 32);
        assert_eq!(
            config.concurrency,
            Concurrency::Adaptive { min: 1, max: 64 }
        );
        assert_eq!(config.on_error, OnError::Fail);
        assert!(config.ordered);
        let chat = options(&[
            ("provider", "openai"),
            ("endpoint", "http://127.0.0.1:1/v1/chat/completions"),
        ]);
        let config = InferenceConfig::from_options("m", &chat).unwrap();
        assert_eq!(config.batch_rows, 1);
    }

    #[test]
    fn flink_keys_map_onto_riffles() {
        let mut given = options(EMBED);
        given.extend(options(&[
            ("capacity", "8"),
            ("timeout", "30 s"),
            ("error-handling-strategy", "ignore"),
            ("retry-num", "2"),
            ("output-mode", "allow_unordered"),
        ]));
        let config = InferenceConfig::from_options("m", &given).unwrap();
        assert_eq!(config.concurrency, Concurrency::Fixed(8));
        assert_eq!(config.deadline, 30_000);
        assert_eq!(config.on_error, OnError::Null);
        assert_eq!(config.max_attempts, 3);
        assert!(!config.ordered);
    }

    #[test]
    fn a_pair_given_twice_differently_is_an_error() {
        let mut given = options(EMBED);
        given.extend(options(&[("capacity", "8"), ("concurrency", "4")]));
        let error = InferenceConfig::from_options("m", &given).unwrap_err();
        assert!(error.message().contains("'capacity' = '8'"), "{error}");
        given.insert("concurrency".into(), "8".into());
        InferenceConfig::from_options("m", &given).unwrap();
    }

    #[test]
    fn unknown_keys_and_providers_are_named() {
        let error = merge_options("m", &options(EMBED), &options(&[("capacty", "8")])).unwrap_err();
        assert!(error.message().contains("'capacty'"), "{error}");
        assert!(error.hint().unwrap().contains("capacity"));
        let error = InferenceConfig::from_options(
            "m",
            &options(&[("provider", "nope"), ("endpoint", "http://x/v1/embeddings")]),
        )
        .unwrap_err();
        assert!(
            error.message().contains("unknown provider 'nope'"),
            "{error}"
        );
        let error = InferenceConfig::from_options(
            "m",
            &options(&[("provider", "openai"), ("endpoint", "http://x/v1/complete")]),
        )
        .unwrap_err();
        assert!(error.message().contains("'endpoint'"), "{error}");
    }

    #[test]
    fn the_api_key_is_never_printed() {
        let mut given = options(EMBED);
        given.insert("api-key".into(), "sk-secret".into());
        let config = InferenceConfig::from_options("m", &given).unwrap();
        assert!(!format!("{config:?}").contains("sk-secret"));
    }

    #[test]
    fn the_docs_table_is_the_option_table() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/inference-options.md"
        );
        if std::env::var_os("RIFFLE_UPDATE_DOCS").is_some() {
            std::fs::write(path, options_markdown()).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == options_markdown(),
            "docs/inference-options.md is out of date: run RIFFLE_UPDATE_DOCS=1 cargo test -p \
             riffle-inference the_docs_table"
        );
    }

    #[test]
    fn durations_and_sizes_read_with_units() {
        assert_eq!(parse_duration("30 s"), Some(30_000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("2 min"), Some(120_000));
        assert_eq!(parse_duration("250"), Some(250));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_bytes("4 MiB"), Some(4 << 20));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
    }
}
