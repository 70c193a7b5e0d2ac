//! The OpenAI-compatible HTTP backend: `/v1/embeddings` (many rows a request) and
//! `/v1/chat/completions` (one row a request by default; a prompt template over the input
//! columns, a system prompt, sampling options, and structured output through
//! `response_format`, parsed into the model's OUTPUT columns).
//!
//! The API key goes in an `Authorization` header and nowhere else: not in errors, not in
//! `Debug`, not in EXPLAIN.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde_json::{Value, json};

use crate::backend::{Answer, Backend, CallError, Request, Usage};
use crate::columns;
use crate::hints::ServerHints;
use crate::http;
use crate::options::{OpenAiOptions, OpenAiTask, Overflow};
use crate::vision;

/// Characters per token, for estimates before the server counts.
const CHARS_PER_TOKEN: u64 = 4;

/// A model behind an OpenAI-compatible server.
#[derive(Debug)]
pub struct OpenAiBackend {
    options: OpenAiOptions,
    /// The model's declared outputs.
    outputs: SchemaRef,
    /// The input columns' names (for the prompt template).
    input_names: Vec<String>,
    client: reqwest::Client,
    /// The endpoint without credentials or query.
    endpoint: String,
}

impl OpenAiBackend {
    /// A backend for `options`, filling `outputs` from inputs named `input_names`.
    pub fn new(
        model: &str,
        options: OpenAiOptions,
        input_names: Vec<String>,
        outputs: SchemaRef,
    ) -> Result<Self, String> {
        if outputs.fields().is_empty() {
            return Err(format!("model {model} declares no OUTPUT column"));
        }
        match options.task {
            OpenAiTask::Embeddings => {
                if outputs.fields().len() != 1 {
                    return Err(format!(
                        "model {model} calls /v1/embeddings, which gives one output; it \
                         declares {}",
                        outputs.fields().len()
                    ));
                }
                if input_names.len() != 1 {
                    return Err(format!(
                        "model {model} calls /v1/embeddings, which embeds one text column; the \
                         call passes {}",
                        input_names.len()
                    ));
                }
            }
            OpenAiTask::Chat => {
                if outputs.fields().len() > 1 && options.response_format.is_none() {
                    return Err(format!(
                        "model {model} declares {} outputs; a chat model fills several only \
                         with a 'response-format' (a JSON schema whose properties are the \
                         OUTPUT columns)",
                        outputs.fields().len()
                    ));
                }
            }
        }
        for field in outputs.fields() {
            columns::check_output(field).map_err(|e| format!("model {model}: {e}"))?;
        }
        let endpoint = options
            .endpoint
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let client = http::client()?;
        Ok(Self {
            options,
            outputs,
            input_names,
            client,
            endpoint,
        })
    }

    /// The prompt of each row: the template with `{column}` replaced, or the only column.
    /// Image columns (see [`vision`]) are not text: a template's `{image}` is left empty,
    /// and without a template the prompt is the first text column (or empty when the row
    /// has only images).
    fn prompts(&self, inputs: &RecordBatch) -> Vec<Option<String>> {
        let schema = inputs.schema();
        let is_image: Vec<bool> = schema
            .fields()
            .iter()
            .map(|f| vision::is_image_input(f))
            .collect();
        let first_text = is_image.iter().position(|image| !image);
        (0..inputs.num_rows())
            .map(|row| match &self.options.prompt_template {
                None => match first_text {
                    Some(index) => columns::display_value(inputs.column(index), row),
                    None => Some(String::new()),
                },
                Some(template) => {
                    let mut prompt = template.clone();
                    for ((name, column), image) in
                        self.input_names.iter().zip(inputs.columns()).zip(&is_image)
                    {
                        let value = if *image {
                            String::new()
                        } else {
                            columns::display_value(column, row).unwrap_or_default()
                        };
                        prompt = prompt.replace(&format!("{{{name}}}"), &value);
                    }
                    Some(prompt)
                }
            })
            .collect()
    }

    /// Each image column's data URLs (see [`vision`]).
    #[allow(clippy::type_complexity)]
    fn images(
        &self,
        inputs: &RecordBatch,
    ) -> Result<Vec<Vec<Option<Result<String, String>>>>, CallError> {
        let schema = inputs.schema();
        schema
            .fields()
            .iter()
            .zip(inputs.columns())
            .filter(|(field, _)| vision::is_image_input(field))
            .map(|(field, column)| {
                vision::data_urls(field, column).map_err(|e| self.malformed_input(&e))
            })
            .collect()
    }

    fn malformed_input(&self, what: &str) -> CallError {
        CallError::malformed(format!("a request to {}: {what}", self.endpoint))
    }

    /// A row's text within `max-context-size`: `Ok(None)` when it is skipped, `Err` when
    /// it is a row error.
    fn fit(&self, text: String) -> Result<Option<String>, String> {
        let Some((tokens, overflow)) = self.options.max_context else {
            return Ok(Some(text));
        };
        let limit = (tokens * CHARS_PER_TOKEN) as usize;
        let chars = text.chars().count();
        if chars <= limit {
            return Ok(Some(text));
        }
        match overflow {
            Overflow::TruncateTail => Ok(Some(text.chars().take(limit).collect())),
            Overflow::TruncateHead => Ok(Some(text.chars().skip(chars - limit).collect())),
            Overflow::Skip => Ok(None),
            Overflow::Error => Err(format!(
                "the row's text is about {} tokens, more than max-context-size = {tokens}",
                (chars as u64).div_ceil(CHARS_PER_TOKEN)
            )),
        }
    }

    /// The rows' texts fitted to the context; rows over it that are errors in `errors`.
    fn fitted(
        &self,
        texts: Vec<Option<String>>,
        errors: &mut Vec<(usize, &'static str, String)>,
    ) -> Vec<Option<String>> {
        texts
            .into_iter()
            .enumerate()
            .map(|(row, text)| match text.map(|t| self.fit(t)) {
                None => None,
                Some(Ok(fitted)) => fitted,
                Some(Err(message)) => {
                    errors.push((row, "context_overflow", message));
                    None
                }
            })
            .collect()
    }

    async fn post(&self, body: &Value, key: &str) -> Result<(Value, ServerHints), CallError> {
        let mut request = self
            .client
            .post(&self.options.endpoint)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(serde_json::to_vec(body).unwrap_or_default());
        if let Some(api_key) = &self.options.api_key {
            request = request.bearer_auth(api_key);
        }
        http::send_json(request, &self.endpoint).await
    }

    async fn embeddings(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let texts = columns::strings(&request.inputs.columns()[0])
            .map_err(|e| CallError::malformed(format!("the embedding input: {e}")))?;
        let mut row_errors = Vec::new();
        let texts = self.fitted(texts, &mut row_errors);
        let sent: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].is_some()).collect();
        let mut vectors: Vec<Option<Vec<f64>>> = vec![None; texts.len()];
        let mut usage = None;
        let mut hints = ServerHints::default();
        if !sent.is_empty() {
            let mut body = json!({
                "input": sent.iter().map(|&i| texts[i].as_deref().unwrap_or("")).collect::<Vec<_>>(),
                "encoding_format": "float",
            });
            if let Some(model) = &self.options.model {
                body["model"] = json!(model);
            }
            if let Some(dimension) = self.options.dimension {
                body["dimensions"] = json!(dimension);
            }
            let (answer, answer_hints) = self.post(&body, request.idempotency_key).await?;
            hints = answer_hints;
            let data = answer
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| self.malformed("has no \"data\" list"))?;
            if data.len() != sent.len() {
                return Err(self.malformed(&format!(
                    "holds {} embeddings for {} inputs",
                    data.len(),
                    sent.len()
                )));
            }
            for (position, item) in data.iter().enumerate() {
                let index = item
                    .get("index")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize)
                    .unwrap_or(position);
                let row = *sent.get(index).ok_or_else(|| {
                    self.malformed(&format!("names input {index}, which was not sent"))
                })?;
                let vector = item
                    .get("embedding")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.malformed("has an item without an \"embedding\" list"))?
                    .iter()
                    .map(Value::as_f64)
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| self.malformed("has an embedding that is not all numbers"))?;
                vectors[row] = Some(vector);
            }
            usage = answer.get("usage").map(|u| Usage {
                input_tokens: u
                    .get("prompt_tokens")
                    .or_else(|| u.get("total_tokens"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                output_tokens: 0,
            });
        }
        let column =
            columns::vectors(&self.outputs.fields()[0], vectors).map_err(|e| self.malformed(&e))?;
        Ok(Answer {
            columns: vec![column],
            row_errors,
            usage,
            hints,
        })
    }

    async fn chat(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let mut row_errors = Vec::new();
        let prompts = self.fitted(self.prompts(request.inputs), &mut row_errors);
        let rows = prompts.len();
        let mut answers: Vec<Option<Value>> = vec![None; rows];
        let mut usage = Usage::default();
        let mut hints = ServerHints::default();
        let structured = self.options.response_format.is_some()
            && self
                .options
                .response_format
                .as_ref()
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str)
                != Some("text");
        // One request per row (the API takes one conversation a request); rows of a larger
        // batch go one after the other under this request's permit.
        let images = self.images(request.inputs)?;
        for (row, prompt) in prompts.into_iter().enumerate() {
            let Some(prompt) = prompt else { continue };
            let mut messages = Vec::new();
            if let Some(system) = &self.options.system_prompt {
                messages.push(json!({"role": "system", "content": system}));
            }
            if images.is_empty() {
                messages.push(json!({"role": "user", "content": prompt}));
            } else {
                // A vision model's message: the text, then the row's images.
                let mut parts = vec![json!({"type": "text", "text": prompt})];
                let mut bad = None;
                for column in &images {
                    match &column[row] {
                        None => {}
                        Some(Ok(url)) => parts.push(json!({
                            "type": "image_url",
                            "image_url": {"url": url}
                        })),
                        Some(Err(reason)) => bad = Some(reason.clone()),
                    }
                }
                if let Some(reason) = bad {
                    row_errors.push((row, "not_an_image", reason));
                    continue;
                }
                messages.push(json!({"role": "user", "content": parts}));
            }
            let mut body = json!({ "messages": messages });
            if let Some(model) = &self.options.model {
                body["model"] = json!(model);
            }
            if let Some(t) = self.options.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(p) = self.options.top_p {
                body["top_p"] = json!(p);
            }
            if !self.options.stop.is_empty() {
                body["stop"] = json!(self.options.stop);
            }
            if let Some(m) = self.options.max_tokens {
                body["max_tokens"] = json!(m);
            }
            if let Some(format) = &self.options.response_format {
                body["response_format"] = format.clone();
            }
            let key = format!("{}-{row}", request.idempotency_key);
            let (answer, answer_hints) = self.post(&body, &key).await?;
            hints = answer_hints;
            let content = answer
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| self.malformed("has no choices[0].message.content"))?;
            if let Some(u) = answer.get("usage") {
                usage.input_tokens += u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
                usage.output_tokens += u
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            if structured {
                match serde_json::from_str::<Value>(content) {
                    Ok(value @ Value::Object(_)) => answers[row] = Some(value),
                    Ok(_) | Err(_) => row_errors.push((
                        row,
                        "unparsable_output",
                        format!(
                            "the model's answer is not the JSON object its response-format asks \
                             for: {}",
                            content.chars().take(200).collect::<String>()
                        ),
                    )),
                }
            } else if !self.options.labels.is_empty() {
                // A classification: the answer must name one of the labels.
                let answer = content.trim().trim_matches(|c: char| c == '"' || c == '.');
                match self
                    .options
                    .labels
                    .iter()
                    .find(|label| label.eq_ignore_ascii_case(answer))
                {
                    Some(label) => answers[row] = Some(Value::String(label.clone())),
                    None => row_errors.push((
                        row,
                        "not_a_label",
                        format!(
                            "the model answered '{}', which is none of the labels {}",
                            answer.chars().take(100).collect::<String>(),
                            self.options.labels.join(", ")
                        ),
                    )),
                }
            } else {
                answers[row] = Some(Value::String(content.to_string()));
            }
        }
        let mut columns = Vec::with_capacity(self.outputs.fields().len());
        for field in self.outputs.fields() {
            let values: Vec<Option<Value>> = answers
                .iter()
                .map(|answer| match answer {
                    Some(Value::Object(object)) => object.get(field.name()).cloned(),
                    other => other.clone(),
                })
                .collect();
            columns.push(columns::scalars(field, &values).map_err(|e| self.malformed(&e))?);
        }
        Ok(Answer {
            columns,
            row_errors,
            usage: Some(usage),
            hints,
        })
    }

    fn malformed(&self, what: &str) -> CallError {
        CallError::malformed(format!("the answer of {} {what}", self.endpoint))
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn estimate_tokens(&self, inputs: &RecordBatch) -> u64 {
        let chars: u64 = self
            .prompts(inputs)
            .iter()
            .map(|p| p.as_ref().map_or(0, |p| p.len() as u64))
            .sum();
        chars / CHARS_PER_TOKEN + inputs.num_rows() as u64
    }

    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError> {
        match self.options.task {
            OpenAiTask::Embeddings => self.embeddings(request).await,
            OpenAiTask::Chat => self.chat(request).await,
        }
    }
}
