//! Sentence embeddings in process: a BERT-style encoder as ONNX (all-MiniLM-L6-v2 and its
//! kin), its `tokenizer.json`, mean pooling over the attention mask, and L2 normalisation:
//! what sentence-transformers computes, without Python.
//!
//! The tokenizer pads each request to its longest row (a `tokenizer.json` that pads to a
//! fixed length is overridden) and truncates at `max-length` tokens. The model gets
//! `input_ids`, `attention_mask` and `token_type_ids` as its inputs name them; its first
//! output is the last hidden state `[rows, tokens, dim]` (pooled here) or an already pooled
//! `[rows, dim]`. The session is the ONNX backend's, shared per process.
//!
//! A `path` ending in `.safetensors` is the encoder's weights instead (with `config.json`
//! beside them), run by candle ([`crate::candle_bert`], the `candle` feature).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::backend::{Answer, Backend, CallError, Request, Usage};
use crate::columns;
use crate::onnx::{SharedSession, session};
use crate::options::SentenceOptions;

/// What computes the token vectors.
#[derive(Clone)]
enum Encoder {
    /// An ONNX encoder, with its input names in the order it takes them.
    Onnx {
        session: SharedSession,
        inputs: Vec<String>,
    },
    /// Safetensors weights run by candle.
    #[cfg(feature = "candle")]
    Candle(Arc<crate::candle_bert::Bert>),
}

/// A sentence-embedding model; see the module docs.
pub struct SentenceBackend {
    label: String,
    path: PathBuf,
    encoder: Encoder,
    tokenizer: Arc<Tokenizer>,
    dim: usize,
    normalize: bool,
    outputs: SchemaRef,
}

impl std::fmt::Debug for SentenceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SentenceBackend {
    /// Loads (or shares) the model and its tokenizer for one text input and one VECTOR
    /// output.
    pub fn new(
        model: &str,
        options: &SentenceOptions,
        descriptor: usize,
        outputs: SchemaRef,
    ) -> Result<Self, String> {
        if descriptor != 1 || outputs.fields().len() != 1 {
            return Err(format!(
                "model {model}: a sentence-embedding model takes one text column and gives one \
                 VECTOR column"
            ));
        }
        let dim = match outputs.fields()[0].data_type() {
            DataType::FixedSizeList(item, size) if item.data_type() == &DataType::Float32 => {
                *size as usize
            }
            other => {
                return Err(format!(
                    "model {model}: its OUTPUT must be VECTOR(FLOAT, n), not {other}"
                ));
            }
        };
        let path = PathBuf::from(&options.path);
        let encoder = if path.extension().is_some_and(|e| e == "safetensors") {
            safetensors_encoder(&path, options.config.as_deref())
        } else {
            onnx_encoder(&path, options)
        }
        .map_err(|e| format!("model {model}: {e}"))?;
        let tokenizer = tokenizer(&options.tokenizer, options.max_length)
            .map_err(|e| format!("model {model}: {e}"))?;
        Ok(Self {
            label: format!("sentence-embedding:{}", path.display()),
            path,
            encoder,
            tokenizer,
            dim,
            normalize: options.normalize,
            outputs,
        })
    }
}

fn onnx_encoder(path: &std::path::Path, options: &SentenceOptions) -> Result<Encoder, String> {
    let session = session(path, options.threads, options.library.as_deref())?;
    let inputs: Vec<String> = {
        let session = session.lock().unwrap_or_else(|p| p.into_inner());
        session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect()
    };
    for name in &inputs {
        if !matches!(
            name.as_str(),
            "input_ids" | "attention_mask" | "token_type_ids"
        ) {
            return Err(format!(
                "{} takes an input {name}; a sentence encoder takes input_ids, attention_mask \
                 and token_type_ids",
                path.display()
            ));
        }
    }
    Ok(Encoder::Onnx { session, inputs })
}

#[cfg(feature = "candle")]
fn safetensors_encoder(path: &std::path::Path, config: Option<&str>) -> Result<Encoder, String> {
    let config = config.map_or_else(|| path.with_file_name("config.json"), PathBuf::from);
    Ok(Encoder::Candle(crate::candle_bert::load(path, &config)?))
}

#[cfg(not(feature = "candle"))]
fn safetensors_encoder(path: &std::path::Path, _config: Option<&str>) -> Result<Encoder, String> {
    Err(format!(
        "{} is a safetensors model, which this build of Riffle cannot run: build it with the \
         `candle` feature (cargo build --features riffle-inference/candle), or give the model \
         as ONNX",
        path.display()
    ))
}

impl Encoder {
    /// The last hidden state (or pooled vectors) of a padded batch, as shape and values.
    fn run(
        &self,
        path: &std::path::Path,
        (ids, mask, types): (&[i64], &[i64], &[i64]),
        rows: usize,
        tokens: usize,
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        match self {
            Encoder::Onnx { session, inputs } => {
                let mut values: Vec<ort::session::SessionInputValue<'_>> = Vec::new();
                for name in inputs {
                    let data = match name.as_str() {
                        "input_ids" => ids,
                        "attention_mask" => mask,
                        _ => types,
                    };
                    let tensor = Tensor::from_array((vec![rows, tokens], data.to_vec()))
                        .map_err(|e| e.to_string())?;
                    values.push(tensor.into_dyn().into());
                }
                let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
                let results = session
                    .run(values.as_slice())
                    .map_err(|e| format!("running {}: {e}", path.display()))?;
                let (shape, hidden) = results[0]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| format!("the model's first output: {e}"))?;
                Ok((shape.iter().copied().collect(), hidden.to_vec()))
            }
            #[cfg(feature = "candle")]
            Encoder::Candle(bert) => bert.hidden(ids, mask, types, rows, tokens),
        }
    }
}

/// The tokenizer of `path` truncating at `max_length`, loaded once per process.
fn tokenizer(path: &str, max_length: usize) -> Result<Arc<Tokenizer>, String> {
    type Cache = Mutex<HashMap<(String, usize), Arc<Tokenizer>>>;
    static TOKENIZERS: OnceLock<Cache> = OnceLock::new();
    let mut cache = TOKENIZERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let key = (path.to_string(), max_length);
    if let Some(tokenizer) = cache.get(&key) {
        return Ok(Arc::clone(tokenizer));
    }
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| format!("{path} is not a tokenizer.json that loads: {e}"))?;
    // Pad to the longest row of a request, not to the file's fixed length.
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..PaddingParams::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            ..TruncationParams::default()
        }))
        .map_err(|e| format!("truncation at {max_length}: {e}"))?;
    let tokenizer = Arc::new(tokenizer);
    cache.insert(key, Arc::clone(&tokenizer));
    Ok(tokenizer)
}

/// Mean of the token vectors the mask keeps, per row; then L2-normalised if asked.
fn pool(hidden: &[f32], shape: &[i64], mask: &[i64], normalize: bool) -> Vec<Vec<f32>> {
    let (rows, tokens, dim) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
    (0..rows)
        .map(|row| {
            let mut sum = vec![0f32; dim];
            let mut kept = 0f32;
            for token in 0..tokens {
                if mask[row * tokens + token] == 0 {
                    continue;
                }
                kept += 1.0;
                let start = (row * tokens + token) * dim;
                for (s, v) in sum.iter_mut().zip(&hidden[start..start + dim]) {
                    *s += v;
                }
            }
            sum.iter_mut().for_each(|s| *s /= kept.max(1e-9));
            if normalize {
                let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                sum.iter_mut().for_each(|s| *s /= norm);
            }
            sum
        })
        .collect()
}

#[async_trait]
impl Backend for SentenceBackend {
    fn endpoint(&self) -> &str {
        &self.label
    }

    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let texts = columns::strings(&request.inputs.columns()[0])
            .map_err(|e| CallError::malformed(format!("the text input: {e}")))?;
        let sent: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].is_some()).collect();
        let mut vectors: Vec<Option<Vec<f64>>> = vec![None; texts.len()];
        let mut tokens_in = 0u64;
        if !sent.is_empty() {
            let batch: Vec<String> = sent
                .iter()
                .map(|&i| texts[i].clone().unwrap_or_default())
                .collect();
            let tokenizer = Arc::clone(&self.tokenizer);
            let encoder = self.encoder.clone();
            let (dim, normalize) = (self.dim, self.normalize);
            let path = self.path.clone();
            let (pooled, counted) =
                tokio::task::spawn_blocking(move || -> Result<(Vec<Vec<f32>>, u64), String> {
                    let encodings = tokenizer
                        .encode_batch(batch, true)
                        .map_err(|e| format!("tokenizing: {e}"))?;
                    let rows = encodings.len();
                    let tokens = encodings.first().map_or(0, |e| e.len());
                    let gather = |pick: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<i64> {
                        encodings
                            .iter()
                            .flat_map(|e| pick(e).iter().map(|v| i64::from(*v)))
                            .collect()
                    };
                    let ids = gather(&|e| e.get_ids());
                    let mask = gather(&|e| e.get_attention_mask());
                    let types = gather(&|e| e.get_type_ids());
                    let counted = mask.iter().filter(|m| **m != 0).count() as u64;
                    let (shape, hidden) =
                        encoder.run(&path, (&ids, &mask, &types), rows, tokens)?;
                    let hidden = hidden.as_slice();
                    let pooled = match shape.as_slice() {
                        [_, _, width] if *width as usize == dim => {
                            pool(hidden, &shape, &mask, normalize)
                        }
                        [_, width] if *width as usize == dim => hidden
                            .chunks(dim)
                            .map(|row| pool(row, &[1, 1, dim as i64], &[1], normalize).remove(0))
                            .collect(),
                        _ => {
                            return Err(format!(
                                "the model gives {shape:?}, and the OUTPUT is VECTOR(FLOAT, {dim})"
                            ));
                        }
                    };
                    Ok((pooled, counted))
                })
                .await
                .map_err(|e| CallError::malformed(format!("the model's run stopped: {e}")))?
                .map_err(CallError::malformed)?;
            tokens_in = counted;
            for (row, vector) in sent.iter().zip(pooled) {
                vectors[*row] = Some(vector.into_iter().map(f64::from).collect());
            }
        }
        let column: ArrayRef =
            columns::vectors(&self.outputs.fields()[0], vectors).map_err(CallError::malformed)?;
        Ok(Answer {
            columns: vec![column],
            row_errors: Vec::new(),
            usage: Some(Usage {
                input_tokens: tokens_in,
                output_tokens: 0,
            }),
            hints: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_the_kept_tokens_and_normalises() {
        // Two rows of two tokens of width 2; the second row's second token is padding.
        let hidden = [1.0, 0.0, 3.0, 0.0, 0.0, 2.0, 9.0, 9.0];
        let pooled = pool(&hidden, &[2, 2, 2], &[1, 1, 1, 0], false);
        assert_eq!(pooled, vec![vec![2.0, 0.0], vec![0.0, 2.0]]);
        let normalised = pool(&hidden, &[2, 2, 2], &[1, 1, 1, 0], true);
        assert_eq!(normalised, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }
}
