//! Text functions: `text_chunk` and `text_normalize`.
//!
//! `text_chunk(text, size [, overlap [, unit [, tokenizer]]])` cuts a text into pieces of at
//! most `size` characters (`unit => 'chars'`, the default) or tokens (`unit => 'tokens'`,
//! with `tokenizer => 'path/to/tokenizer.json'`), each starting `size - overlap` units after
//! the previous one, and returns them as a list; `UNNEST` turns the list into rows (`SELECT
//! unnest(text_chunk(body, 512, 64)) AS chunk FROM docs`). Token pieces are spans of the
//! original text, from their first token's start to their last token's end.
//!
//! `text_normalize(text [, lowercase])` applies Unicode NFKC normalization, turns every run of
//! whitespace into one space and trims the ends; `lowercase` (default false) also lowercases.
//!
//! `token_count(text, tokenizer)` counts the tokens of a HuggingFace tokenizer loaded from a
//! local `tokenizer.json` (padding and truncation off, no special tokens). Each tokenizer is
//! loaded once per process.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use unicode_normalization::UnicodeNormalization;

/// The text functions.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(TextFunction::new("text_chunk", 2..=5))),
        Arc::new(ScalarUDF::from(TextFunction::new("text_normalize", 1..=2))),
        Arc::new(ScalarUDF::from(TextFunction::new("token_count", 2..=2))),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextFunction {
    name: &'static str,
    arity: std::ops::RangeInclusive<usize>,
    signature: Signature,
}

impl TextFunction {
    fn new(name: &'static str, arity: std::ops::RangeInclusive<usize>) -> Self {
        Self {
            name,
            arity,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn constant_number(
    function: &str,
    what: &str,
    arg: Option<&ColumnarValue>,
    default: i64,
) -> Result<i64> {
    match arg {
        None => Ok(default),
        Some(ColumnarValue::Scalar(value)) => match value.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(n)) => Ok(n),
            _ => Err(DataFusionError::Plan(format!(
                "{function}: {what} must be a number"
            ))),
        },
        Some(_) => Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a constant"
        ))),
    }
}

/// Pieces of `size` characters, each `step` after the previous; the last piece ends the text.
pub(crate) fn chunk(text: &str, size: usize, step: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let end = (start + size).min(chars.len());
        pieces.push(chars[start..end].iter().collect());
        if end == chars.len() {
            break;
        }
        start += step;
    }
    pieces
}

pub(crate) fn normalize(text: &str, lowercase: bool) -> String {
    let normalized: String = text.nfkc().collect();
    let joined = normalized.split_whitespace().collect::<Vec<_>>().join(" ");
    if lowercase {
        joined.to_lowercase()
    } else {
        joined
    }
}

impl ScalarUDFImpl for TextFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        crate::check_arity(self.name, &self.arity, arg_types.len())?;
        if !matches!(
            arg_types[0],
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
        ) {
            return Err(DataFusionError::Plan(format!(
                "{}: expected text, got {}",
                self.name, arg_types[0]
            )));
        }
        Ok(match self.name {
            "text_chunk" => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            "token_count" => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name;
        let rows = args.number_rows;
        let texts = datafusion::arrow::compute::cast(
            &args.args[0].clone().into_array(rows)?,
            &DataType::Utf8,
        )?;
        let texts = texts.as_string::<i32>();
        if name == "text_chunk" {
            let size = constant_number(name, "size", args.args.get(1), 0)?;
            let overlap = constant_number(name, "overlap", args.args.get(2), 0)?;
            if size <= 0 || overlap < 0 || overlap >= size {
                return Err(DataFusionError::Plan(format!(
                    "{name}: size must be above 0 and overlap from 0 to size - 1 (size {size}, overlap {overlap})"
                )));
            }
            let unit = match args.args.get(3) {
                None => "chars".to_string(),
                Some(ColumnarValue::Scalar(value)) => crate::string_literal(value)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                Some(_) => String::new(),
            };
            let tokenizer = match unit.as_str() {
                "chars" => None,
                "tokens" => Some(load_tokenizer(&constant_path(name, args.args.get(4))?)?),
                _ => {
                    return Err(DataFusionError::Plan(format!(
                        "{name}: unit must be 'chars' or 'tokens'"
                    )));
                }
            };
            let (size, step) = (size as usize, (size - overlap) as usize);
            let mut out = ListBuilder::new(StringBuilder::new());
            for row in 0..rows {
                if texts.is_null(row) {
                    out.append(false);
                    continue;
                }
                let text = texts.value(row);
                let pieces = match &tokenizer {
                    None => chunk(text, size, step),
                    Some(tokenizer) => chunk_tokens(tokenizer, text, size, step).map_err(|e| {
                        DataFusionError::Execution(format!("{name}: row {row} of the batch: {e}"))
                    })?,
                };
                for piece in pieces {
                    out.values().append_value(piece);
                }
                out.append(true);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        if name == "token_count" {
            let tokenizer = load_tokenizer(&constant_path(name, args.args.get(1))?)?;
            let mut out = datafusion::arrow::array::Int64Builder::with_capacity(rows);
            for row in 0..rows {
                if texts.is_null(row) {
                    out.append_null();
                    continue;
                }
                let encoding = tokenizer.encode(texts.value(row), false).map_err(|e| {
                    DataFusionError::Execution(format!("{name}: row {row} of the batch: {e}"))
                })?;
                out.append_value(encoding.len() as i64);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let lowercase = match args.args.get(1) {
            None => false,
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(flag)))) => *flag,
            Some(_) => {
                return Err(DataFusionError::Plan(format!(
                    "{name}: lowercase must be true or false"
                )));
            }
        };
        let mut out = StringBuilder::new();
        for row in 0..rows {
            if texts.is_null(row) {
                out.append_null();
            } else {
                out.append_value(normalize(texts.value(row), lowercase));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The tokenizer at `path`, loaded once, with padding and truncation off so that counts are
/// the text's own.
/// The tokenizer argument: a constant path to a `tokenizer.json`.
fn constant_path(function: &str, arg: Option<&ColumnarValue>) -> Result<String> {
    match arg {
        Some(ColumnarValue::Scalar(value)) => crate::string_literal(value),
        _ => None,
    }
    .filter(|path| !path.is_empty())
    .ok_or_else(|| {
        DataFusionError::Plan(format!(
            "{function}: the tokenizer must be a constant path to a tokenizer.json"
        ))
    })
}

/// Pieces of `size` tokens, each `step` tokens after the previous, as spans of the original
/// text (from the first token's start to the last token's end).
pub(crate) fn chunk_tokens(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    size: usize,
    step: usize,
) -> std::result::Result<Vec<String>, String> {
    let encoding = tokenizer.encode(text, false).map_err(|e| e.to_string())?;
    let offsets = encoding.get_offsets();
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < offsets.len() {
        let end = (start + size).min(offsets.len());
        let span = offsets[start].0..offsets[end - 1].1;
        let piece = text
            .get(span.clone())
            .ok_or_else(|| format!("the tokenizer gave offsets {span:?} inside a character"))?;
        pieces.push(piece.to_string());
        if end == offsets.len() {
            break;
        }
        start += step;
    }
    Ok(pieces)
}

fn load_tokenizer(path: &str) -> Result<Arc<tokenizers::Tokenizer>> {
    static LOADED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokenizers::Tokenizer>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tokenizer) = loaded.get(path) {
        return Ok(Arc::clone(tokenizer));
    }
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| {
        DataFusionError::Plan(format!(
            "token_count: cannot load the tokenizer '{path}': {e}"
        ))
    })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| DataFusionError::Plan(format!("token_count: tokenizer '{path}': {e}")))?;
    let tokenizer = Arc::new(tokenizer);
    loaded.insert(path.to_string(), Arc::clone(&tokenizer));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_overlap_and_cover_the_text() {
        assert_eq!(chunk("abcdefghij", 4, 3), vec!["abcd", "defg", "ghij"]);
        assert_eq!(chunk("abcdefghij", 4, 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(chunk("héllo wörld", 6, 6), vec!["héllo ", "wörld"]);
        assert!(chunk("", 4, 2).is_empty());
    }

    #[test]
    fn token_counts_come_from_the_tokenizer_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(
            &path,
            r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
                "post_processor": null, "decoder": null,
                "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2, ",": 3},
                          "unk_token": "[UNK]"}}"#,
        )
        .unwrap();
        let tokenizer = load_tokenizer(path.to_str().unwrap()).unwrap();
        assert_eq!(
            tokenizer.encode("Hello, world again", false).unwrap().len(),
            4
        );
        let missing = load_tokenizer("/no/such/tokenizer.json")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("cannot load the tokenizer '/no/such/tokenizer.json'"),
            "{missing}"
        );
    }

    #[test]
    fn normalize_folds_compatibility_forms_and_whitespace() {
        assert_eq!(normalize("  ﬁne\u{00A0}\t TEXT  ", false), "fine TEXT");
        assert_eq!(normalize("Ｒｉｆｆｌｅ", true), "riffle");
    }
}
