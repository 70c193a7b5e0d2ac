//! `tensor_fixed_shape(tensor, 'TENSOR(FLOAT, [3, 224, 224])')`: tensors of any shape (a
//! variable-shape tensor column such as `image_to_tensor`'s, a fixed-shape one, or a list of
//! numbers) as the declared fixed-shape `TENSOR`, which is what an image model's input and a
//! table's `TENSOR(dtype, [shape])` column want.
//!
//! `CAST(t AS TENSOR(...))` and `INSERT INTO` a `TENSOR(...)` column plan onto it (Arrow's
//! cast knows no way from a struct of data and shape to a fixed-size list). Elements are cast
//! to the declared element type. A row of another shape is an error naming the row and both
//! shapes (or, with `on_error => 'null'`, NULL); a NULL row stays NULL.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, GenericListArray, OffsetSizeTrait,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use riffle_types::{ElementType, TensorType};

use crate::row_errors;

/// The function's name.
pub const TENSOR_FIXED_SHAPE: &str = "tensor_fixed_shape";

/// The tensor functions.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::from(FixedShape::new()))]
}

/// Reads `TENSOR(FLOAT, [3, 224, 224])` (also without the brackets).
pub fn parse_tensor_type(text: &str) -> std::result::Result<TensorType, String> {
    let wrong = || {
        format!("'{text}' is not a fixed-shape tensor type such as 'TENSOR(FLOAT, [3, 224, 224])'")
    };
    let inner = text
        .trim()
        .strip_prefix("TENSOR")
        .or_else(|| text.trim().strip_prefix("tensor"))
        .map(str::trim)
        .and_then(|rest| rest.strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(wrong)?;
    let mut parts = inner
        .split(',')
        .map(|p| p.trim().trim_matches(['[', ']']).trim());
    let element = ElementType::from_sql(parts.next().ok_or_else(wrong)?)
        .map_err(|e| e.message().to_string())?;
    let shape = parts
        .map(|d| d.parse::<usize>().map_err(|_| wrong()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    TensorType::try_new(element, shape).map_err(|e| e.message().to_string())
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FixedShape {
    signature: Signature,
}

impl FixedShape {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn target(args: &[Option<&datafusion::scalar::ScalarValue>]) -> Result<TensorType> {
    let text = args
        .get(1)
        .copied()
        .flatten()
        .and_then(crate::string_literal)
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{TENSOR_FIXED_SHAPE}: the second argument must be a constant tensor type, \
                 such as 'TENSOR(FLOAT, [3, 224, 224])'"
            ))
        })?;
    parse_tensor_type(&text)
        .map_err(|e| DataFusionError::Plan(format!("{TENSOR_FIXED_SHAPE}: {e}")))
}

/// Each row's values (a slice of the flat values) and shape, or `None` for a NULL row.
struct Rows {
    values: ArrayRef,
    rows: Vec<Option<(usize, usize, Vec<usize>)>>,
}

fn rows_of(input: &ArrayRef) -> Result<Rows> {
    let mut rows = Vec::with_capacity(input.len());
    let values = match input.data_type() {
        DataType::Struct(_) => {
            let parts = input.as_struct();
            let (Some(data), Some(shapes)) =
                (parts.column_by_name("data"), parts.column_by_name("shape"))
            else {
                return Err(not_a_tensor(input.data_type()));
            };
            let data = data
                .as_list_opt::<i32>()
                .ok_or_else(|| not_a_tensor(input.data_type()))?;
            let shapes = shapes
                .as_fixed_size_list_opt()
                .ok_or_else(|| not_a_tensor(input.data_type()))?;
            let ndim = shapes.value_length() as usize;
            let dims = cast(shapes.values(), &DataType::Int64)?;
            let dims = dims.as_primitive::<Int64Type>();
            let offsets = data.value_offsets();
            for row in 0..input.len() {
                if input.is_null(row) || data.is_null(row) {
                    rows.push(None);
                    continue;
                }
                let at = (shapes.offset() + row) * ndim;
                let shape = (at..at + ndim)
                    .map(|i| dims.value(i).max(0) as usize)
                    .collect();
                let start = offsets[row] as usize;
                rows.push(Some((start, offsets[row + 1] as usize - start, shape)));
            }
            Arc::clone(data.values())
        }
        DataType::FixedSizeList(_, size) => {
            let list = input.as_fixed_size_list();
            let size = *size as usize;
            for row in 0..input.len() {
                rows.push(input.is_valid(row).then(|| {
                    (
                        (list.offset() + row) * size,
                        size,
                        // The rows of a fixed-shape column have its declared shape, which the
                        // argument's field carries; a plain fixed-size list is one-dimensional.
                        vec![size],
                    )
                }));
            }
            Arc::clone(list.values())
        }
        DataType::List(_) => list_rows(input.as_list::<i32>(), &mut rows),
        DataType::LargeList(_) => list_rows(input.as_list::<i64>(), &mut rows),
        // CAST(NULL AS TENSOR(...)): every row NULL.
        DataType::Null => {
            rows.resize(input.len(), None);
            datafusion::arrow::array::new_empty_array(&DataType::Float32)
        }
        other => return Err(not_a_tensor(other)),
    };
    Ok(Rows { values, rows })
}

/// A list's rows (each one-dimensional) into `rows`; its values.
fn list_rows<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    rows: &mut Vec<Option<(usize, usize, Vec<usize>)>>,
) -> ArrayRef {
    let offsets = list.value_offsets();
    for row in 0..list.len() {
        let start = offsets[row].as_usize();
        let len = offsets[row + 1].as_usize() - start;
        rows.push(list.is_valid(row).then(|| (start, len, vec![len])));
    }
    Arc::clone(list.values())
}

fn not_a_tensor(data_type: &DataType) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{TENSOR_FIXED_SHAPE}: expected a tensor (TENSOR, a variable-shape tensor such as \
         image_to_tensor's, or a list of numbers), got {data_type}"
    ))
}

impl ScalarUDFImpl for FixedShape {
    fn name(&self) -> &str {
        TENSOR_FIXED_SHAPE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        crate::check_arity(TENSOR_FIXED_SHAPE, &(2..=3), arg_types.len())?;
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{TENSOR_FIXED_SHAPE}'s type comes from its arguments"
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let tensor = target(args.scalar_arguments)?;
        Ok(Arc::new(tensor.field(TENSOR_FIXED_SHAPE, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let tensor = TensorType::from_field(&args.return_field).ok_or_else(|| {
            DataFusionError::Internal(format!("{TENSOR_FIXED_SHAPE} planned without its type"))
        })?;
        let on_error = row_errors::on_error(TENSOR_FIXED_SHAPE, args.args.get(2))?;
        let input = match &args.args[0] {
            ColumnarValue::Array(array) => Arc::clone(array),
            ColumnarValue::Scalar(scalar) => scalar.to_array_of_size(args.number_rows)?,
        };
        // A fixed-shape argument's rows have the shape its field declares.
        let declared = TensorType::from_field(&args.arg_fields[0]).map(|t| t.shape);
        let Rows { values, rows } = rows_of(&input)?;
        let item = tensor.element.arrow_type();
        let values = cast(&values, &item)?;
        let size = tensor.len();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows.len());
        let mut results = Vec::with_capacity(rows.len());
        let filler = datafusion::arrow::array::new_null_array(&item, size);
        for entry in rows {
            match entry {
                None => {
                    pieces.push(Arc::clone(&filler));
                    results.push(Ok(None));
                }
                Some((start, len, shape)) => {
                    let shape = declared.clone().unwrap_or(shape);
                    let fits = shape == tensor.shape
                        // A flat list of the right length fills the declared shape.
                        || (shape.len() == 1 && len == size);
                    if fits && len == size {
                        pieces.push(values.slice(start, len));
                        results.push(Ok(Some(())));
                    } else {
                        pieces.push(Arc::clone(&filler));
                        results.push(Err(format!(
                            "a tensor of shape {shape:?} is not {tensor} (shape {:?})",
                            tensor.shape
                        )));
                    }
                }
            }
        }
        let valid: Vec<bool> = row_errors::settle(TENSOR_FIXED_SHAPE, on_error, results)?
            .iter()
            .map(Option::is_some)
            .collect();
        let refs: Vec<&dyn Array> = pieces.iter().map(|p| p.as_ref()).collect();
        let flat = if refs.is_empty() {
            datafusion::arrow::array::new_empty_array(&item)
        } else {
            concat(&refs)?
        };
        let DataType::FixedSizeList(field, _) = tensor.storage_type() else {
            unreachable!("a tensor's storage is a fixed-size list")
        };
        let nulls = NullBuffer::from(valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Ok(ColumnarValue::Array(Arc::new(FixedSizeListArray::try_new(
            field,
            size as i32,
            flat,
            nulls,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_types_parse_with_and_without_brackets() {
        let tensor = parse_tensor_type("TENSOR(FLOAT, [3, 224, 224])").unwrap();
        assert_eq!(tensor.shape, vec![3, 224, 224]);
        assert_eq!(tensor.element, ElementType::Float32);
        assert_eq!(
            parse_tensor_type("TENSOR(DOUBLE, 2, 2)").unwrap().shape,
            vec![2, 2]
        );
        assert!(parse_tensor_type("VECTOR(FLOAT, 3)").is_err());
        assert!(parse_tensor_type("TENSOR(FLOAT, [0, 2])").is_err());
    }
}
