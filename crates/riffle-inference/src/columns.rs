//! Model answers into Arrow columns of the model's declared OUTPUT types, and input columns
//! into the values a request sends.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, FixedSizeListArray, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, StringBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field};
use serde_json::Value;

/// The strings of a text column (`None` for NULL), or why it is not text.
pub fn strings(column: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let values: Vec<Option<String>> = match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        other => return Err(format!("a text column is needed, not {other}")),
    };
    Ok(values)
}

/// A row's value as prompt text: strings as they are, other types as Arrow prints them.
pub fn display_value(column: &ArrayRef, row: usize) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    if let Ok(mut values) = strings(&column.slice(row, 1)) {
        return values.pop().flatten();
    }
    datafusion::arrow::util::display::array_value_to_string(column, row).ok()
}

/// Embeddings as a column of `field`'s type: `VECTOR(FLOAT, n)` (a fixed-size list, whose
/// size every vector must have) or a list of floats.
pub fn vectors(field: &Field, rows: Vec<Option<Vec<f64>>>) -> Result<ArrayRef, String> {
    let (item, size) = match field.data_type() {
        DataType::FixedSizeList(item, size) => (item, Some(*size as usize)),
        DataType::List(item) => (item, None),
        other => {
            return Err(format!(
                "output {} is {other}; an embedding needs VECTOR(FLOAT, n) or ARRAY<FLOAT>",
                field.name()
            ));
        }
    };
    let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
    let mut lengths = Vec::with_capacity(rows.len());
    let mut flat: Vec<f64> = Vec::new();
    for row in &rows {
        match (row, size) {
            (Some(vector), Some(size)) if vector.len() != size => {
                return Err(format!(
                    "an embedding of {} values came back, but output {} declares {size}",
                    vector.len(),
                    field.name()
                ));
            }
            (Some(vector), _) => {
                flat.extend(vector);
                lengths.push(vector.len());
            }
            (None, Some(size)) => {
                flat.extend(std::iter::repeat_n(0.0, size));
                lengths.push(size);
            }
            (None, None) => lengths.push(0),
        }
    }
    let values: ArrayRef = match item.data_type() {
        DataType::Float32 => {
            let mut builder = Float32Builder::with_capacity(flat.len());
            flat.iter().for_each(|v| builder.append_value(*v as f32));
            Arc::new(builder.finish())
        }
        DataType::Float64 => {
            let mut builder = Float64Builder::with_capacity(flat.len());
            flat.iter().for_each(|v| builder.append_value(*v));
            Arc::new(builder.finish())
        }
        other => {
            return Err(format!(
                "output {} holds {other}; embeddings are FLOAT or DOUBLE",
                field.name()
            ));
        }
    };
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let array: ArrayRef = match size {
        Some(size) => Arc::new(
            FixedSizeListArray::try_new(Arc::clone(item), size as i32, values, nulls)
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(
            ListArray::try_new(
                Arc::clone(item),
                OffsetBuffer::from_lengths(lengths),
                values,
                nulls,
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    Ok(array)
}

/// JSON values (one per row, `None` for NULL) as a column of `field`'s type: text, integers,
/// floats and booleans.
pub fn scalars(field: &Field, rows: &[Option<Value>]) -> Result<ArrayRef, String> {
    let wrong = |value: &Value| {
        format!(
            "output {} is {}, and {value} is not one",
            field.name(),
            field.data_type()
        )
    };
    let array: ArrayRef = match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut builder = StringBuilder::new();
            for row in rows {
                match row {
                    None | Some(Value::Null) => builder.append_null(),
                    Some(Value::String(text)) => builder.append_value(text),
                    Some(other) => builder.append_value(other.to_string()),
                }
            }
            let array: ArrayRef = Arc::new(builder.finish());
            datafusion::arrow::compute::cast(&array, field.data_type())
                .map_err(|e| e.to_string())?
        }
        DataType::Int64 | DataType::Int32 => {
            let mut builder = Int64Builder::new();
            for row in rows {
                match row {
                    None | Some(Value::Null) => builder.append_null(),
                    Some(value) => {
                        builder.append_value(value.as_i64().ok_or_else(|| wrong(value))?)
                    }
                }
            }
            let array: ArrayRef = Arc::new(builder.finish());
            if field.data_type() == &DataType::Int32 {
                let mut narrow = Int32Builder::new();
                for value in array.as_primitive::<datafusion::arrow::datatypes::Int64Type>() {
                    match value.map(i32::try_from) {
                        None => narrow.append_null(),
                        Some(Ok(v)) => narrow.append_value(v),
                        Some(Err(_)) => {
                            return Err(format!("output {} overflows INT", field.name()));
                        }
                    }
                }
                Arc::new(narrow.finish())
            } else {
                array
            }
        }
        DataType::Float64 | DataType::Float32 => {
            let mut builder = Float64Builder::new();
            for row in rows {
                match row {
                    None | Some(Value::Null) => builder.append_null(),
                    Some(value) => {
                        builder.append_value(value.as_f64().ok_or_else(|| wrong(value))?)
                    }
                }
            }
            let array: ArrayRef = Arc::new(builder.finish());
            datafusion::arrow::compute::cast(&array, field.data_type())
                .map_err(|e| e.to_string())?
        }
        DataType::Boolean => {
            let mut builder = BooleanBuilder::new();
            for row in rows {
                match row {
                    None | Some(Value::Null) => builder.append_null(),
                    Some(value) => {
                        builder.append_value(value.as_bool().ok_or_else(|| wrong(value))?)
                    }
                }
            }
            Arc::new(builder.finish())
        }
        other => {
            return Err(format!(
                "output {} is {other}, which structured output cannot fill yet (text, \
                 integers, floats and booleans can)",
                field.name()
            ));
        }
    };
    Ok(array)
}

/// Whether a column of `field`'s type can be filled from a model's answer.
pub fn check_output(field: &Field) -> Result<(), String> {
    let rows = [None];
    match field.data_type() {
        DataType::FixedSizeList(..) | DataType::List(_) => vectors(field, vec![None]).map(|_| ()),
        _ => scalars(field, &rows).map(|_| ()),
    }
}
