//! What a function does with a row it cannot process: the `on_error` argument.
//!
//! Every function that can fail on one row takes `on_error`: `'raise'` (the default) stops
//! the job with an error naming the function, the row and what was wrong; `'null'` yields
//! NULL for that row.
//!
//! Each such function also has a `try_` twin (`try_image_decode(bytes)`), built by
//! [`try_function`], that returns a struct of the value and the reason the row failed:
//! `SELECT r['value'] AS image, r['error'] AS error FROM (SELECT try_image_decode(b) AS r
//! FROM t)`. The error is a column like any other: select it, filter on it, write it out.

use std::cell::RefCell;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::string_literal;

/// What a function does with a row it cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop the job with an error naming the function, the row and the reason.
    Raise,
    /// Yield NULL for the row.
    Null,
}

/// Reads an `on_error` argument (`'raise'` or `'null'`).
pub fn on_error(function: &str, arg: Option<&ColumnarValue>) -> Result<OnError> {
    if CAPTURED.with(|captured| captured.borrow().is_some()) {
        // A `try_` twin is running this function: failures become its error column.
        return Ok(OnError::Null);
    }
    match arg {
        None => Ok(OnError::Raise),
        Some(ColumnarValue::Scalar(value)) => match string_literal(value).as_deref() {
            Some(s) if s.eq_ignore_ascii_case("raise") => Ok(OnError::Raise),
            Some(s) if s.eq_ignore_ascii_case("null") => Ok(OnError::Null),
            _ => Err(DataFusionError::Plan(format!(
                "{function}: on_error must be 'raise' or 'null', not {value}"
            ))),
        },
        Some(_) => Err(DataFusionError::Plan(format!(
            "{function}: on_error must be a constant, 'raise' or 'null'"
        ))),
    }
}

/// Applies the `on_error` policy to per-row results: the first error, or NULLs.
pub fn settle<T>(
    function: &str,
    policy: OnError,
    results: Vec<std::result::Result<Option<T>, String>>,
) -> Result<Vec<Option<T>>> {
    if policy == OnError::Null {
        CAPTURED.with(|captured| {
            if let Some(reasons) = captured.borrow_mut().as_mut() {
                *reasons = results
                    .iter()
                    .map(|result| result.as_ref().err().cloned())
                    .collect();
            }
        });
    }
    results
        .into_iter()
        .enumerate()
        .map(|(row, result)| match (result, policy) {
            (Ok(value), _) => Ok(value),
            (Err(_), OnError::Null) => Ok(None),
            (Err(reason), OnError::Raise) => Err(DataFusionError::Execution(format!(
                "{function}: row {row} of the batch: {reason}; pass on_error => 'null' to skip bad rows, or call try_{function} to keep the reason in a column"
            ))),
        })
        .collect()
}

thread_local! {
    /// While a `try_` twin runs its function on this thread: the reasons rows failed.
    static CAPTURED: RefCell<Option<Vec<Option<String>>>> = const { RefCell::new(None) };
}

/// The `try_` twin of a function that takes `on_error`.
pub fn try_function(inner: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(TryFunction {
        name: format!("try_{}", inner.name()),
        inner,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TryFunction {
    name: String,
    inner: Arc<ScalarUDF>,
}

/// `{value, error}`, with the function's own value field.
fn try_fields(value: FieldRef) -> Fields {
    Fields::from(vec![
        value
            .as_ref()
            .clone()
            .with_name("value")
            .with_nullable(true),
        Field::new("error", DataType::Utf8, true),
    ])
}

impl ScalarUDFImpl for TryFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{} computes its type from its argument fields",
            self.name
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let value = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(Field::new(
            &self.name,
            DataType::Struct(try_fields(value)),
            false,
        )))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let DataType::Struct(fields) = args.return_field.data_type().clone() else {
            return Err(DataFusionError::Internal(format!(
                "{} returns a struct",
                self.name
            )));
        };
        args.return_field = Arc::clone(&fields[0]);
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
        let value = self.inner.invoke_with_args(args);
        let reasons = CAPTURED.with(|captured| captured.borrow_mut().take());
        let value = value?.into_array(rows)?;
        let mut reasons = reasons.unwrap_or_default();
        reasons.resize(rows, None);
        let errors: ArrayRef = Arc::new(StringArray::from(reasons));
        let value: ArrayRef = if value.data_type() == fields[0].data_type() {
            value
        } else {
            datafusion::arrow::compute::cast(&value, fields[0].data_type())?
        };
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            fields,
            vec![value, errors],
            None,
        )?)))
    }
}

/// `raise_error(message)`: stops the job with `message` at the first row where it is not
/// NULL, and is NULL everywhere else. Under `CASE WHEN <bad> THEN raise_error(...) END` it
/// fails with a message built from the row (its source file, its key), which a function
/// deep in an expression cannot know.
pub fn raise_error() -> ScalarUDF {
    ScalarUDF::new_from_impl(RaiseError {
        signature: Signature::any(1, datafusion::logical_expr::Volatility::Volatile),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RaiseError {
    signature: Signature,
}

impl ScalarUDFImpl for RaiseError {
    fn name(&self) -> &str {
        "raise_error"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Null)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let messages = datafusion::arrow::compute::cast(
            &args.args[0].clone().into_array(args.number_rows)?,
            &DataType::Utf8,
        )?;
        let messages = messages
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("raise_error: not text".into()))?;
        match messages.iter().flatten().next() {
            Some(message) => Err(DataFusionError::Execution(message.to_string())),
            None => Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::Null)),
        }
    }
}
