//! Riffle's built-in multimodal functions, as DataFusion scalar UDFs, so that SQL, the Rust
//! DataFrame API and (later) Python call the same functions by the same names.
//!
//! Entry point: [`all_functions`], which the session registers. So far: the vector
//! functions in [`vector`], the image functions in [`image`], the text functions in
//! [`text`], the audio functions in [`audio`], and [`tensor`]'s `tensor_fixed_shape`.

#![warn(missing_docs)]

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::ScalarUDF;

pub mod audio;
pub mod image;
pub mod parameters;
pub mod row_errors;
pub mod tensor;
pub mod text;
pub mod vector;

/// The types of the arguments a function's return field is asked for.
pub(crate) fn arg_types(
    args: &datafusion::logical_expr::ReturnFieldArgs,
) -> Vec<datafusion::arrow::datatypes::DataType> {
    args.arg_fields
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

/// Checks the number of arguments a function was called with.
pub(crate) fn check_arity(
    name: &str,
    arity: &std::ops::RangeInclusive<usize>,
    given: usize,
) -> datafusion::error::Result<()> {
    if arity.contains(&given) {
        return Ok(());
    }
    Err(datafusion::error::DataFusionError::Plan(format!(
        "{name} takes {} to {} arguments, not {given}",
        arity.start(),
        arity.end()
    )))
}

/// A string constant's value.
pub fn string_literal(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Every built-in function.
pub fn all_functions() -> Vec<Arc<ScalarUDF>> {
    let mut functions = vector::functions();
    functions.extend(image::functions());
    functions.extend(text::functions());
    functions.extend(audio::functions());
    functions.extend(tensor::functions());
    let twins: Vec<Arc<ScalarUDF>> = functions
        .iter()
        .filter(|f| parameters::takes_on_error(f.name()))
        .map(|f| Arc::new(row_errors::try_function(Arc::clone(f))))
        .collect();
    functions.extend(twins);
    functions.push(Arc::new(row_errors::raise_error()));
    functions
}
