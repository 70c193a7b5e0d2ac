//! Columns as tensors and tensors as columns, for the backends that speak tensors (in-process
//! ONNX, KServe v2 servers).
//!
//! A request's input column becomes one tensor `[rows, ...row shape]`: a `VECTOR` column's
//! rows have shape `[dim]`, a `TENSOR` column's its declared shape, a variable-shape tensor
//! column's the shape its rows share (rows of different shapes cannot form one tensor: an
//! error naming both), and a number column's `[]`. Values keep their element type, so that a
//! float32 image tensor reaches a float32 model without a detour through doubles.
//!
//! An answer's tensor `[rows, ...]` fills an OUTPUT column: a `VECTOR`/`TENSOR` column when
//! the row's element count matches, a number column when each row has one value.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array,
    Int64Array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type,
};

/// A cast that fails on a value it cannot keep, instead of making it NULL.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};

/// A tensor's values, flat, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// int64.
    I64(Vec<i64>),
    /// int32.
    I32(Vec<i32>),
}

impl Values {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// As float32 (moved when already float32).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Values::F32(v) => v,
            Values::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            Values::I64(v) => v.into_iter().map(|x| x as f32).collect(),
            Values::I32(v) => v.into_iter().map(|x| x as f32).collect(),
        }
    }

    /// As float64.
    pub fn into_f64(self) -> Vec<f64> {
        match self {
            Values::F32(v) => v.into_iter().map(f64::from).collect(),
            Values::F64(v) => v,
            Values::I64(v) => v.into_iter().map(|x| x as f64).collect(),
            Values::I32(v) => v.into_iter().map(f64::from).collect(),
        }
    }

    /// As int64 (floats truncated).
    pub fn into_i64(self) -> Vec<i64> {
        match self {
            Values::F32(v) => v.into_iter().map(|x| x as i64).collect(),
            Values::F64(v) => v.into_iter().map(|x| x as i64).collect(),
            Values::I64(v) => v,
            Values::I32(v) => v.into_iter().map(i64::from).collect(),
        }
    }

    /// As int32 (floats truncated, wide integers saturated).
    pub fn into_i32(self) -> Vec<i32> {
        match self {
            Values::F32(v) => v.into_iter().map(|x| x as i32).collect(),
            Values::F64(v) => v.into_iter().map(|x| x as i32).collect(),
            Values::I64(v) => v
                .into_iter()
                .map(|x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect(),
            Values::I32(v) => v,
        }
    }

    /// The values as a flat Arrow array.
    pub fn into_array(self) -> ArrayRef {
        match self {
            Values::F32(v) => Arc::new(Float32Array::from(v)),
            Values::F64(v) => Arc::new(Float64Array::from(v)),
            Values::I64(v) => Arc::new(Int64Array::from(v)),
            Values::I32(v) => Arc::new(Int32Array::from(v)),
        }
    }

    /// A flat Arrow array's values (narrow integers widened to int32, halves to float32).
    fn from_array(values: &ArrayRef) -> Result<Self, String> {
        if values.null_count() > 0 {
            return Err("a tensor holds a NULL element, which cannot go to the model".into());
        }
        Ok(match values.data_type() {
            DataType::Float32 => {
                Values::F32(values.as_primitive::<Float32Type>().values().to_vec())
            }
            DataType::Float64 => {
                Values::F64(values.as_primitive::<Float64Type>().values().to_vec())
            }
            DataType::Int64 => Values::I64(values.as_primitive::<Int64Type>().values().to_vec()),
            DataType::Int32 => Values::I32(values.as_primitive::<Int32Type>().values().to_vec()),
            DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => {
                let wide = cast(values, &DataType::Int32).map_err(|e| e.to_string())?;
                Values::I32(wide.as_primitive::<Int32Type>().values().to_vec())
            }
            DataType::UInt32 | DataType::UInt64 => {
                let wide = cast_with_options(values, &DataType::Int64, &STRICT)
                    .map_err(|e| format!("{e} (a value above the largest INT64)"))?;
                Values::I64(wide.as_primitive::<Int64Type>().values().to_vec())
            }
            DataType::Float16 => {
                let wide = cast(values, &DataType::Float32).map_err(|e| e.to_string())?;
                Values::F32(wide.as_primitive::<Float32Type>().values().to_vec())
            }
            other => return Err(format!("{other} values cannot go to a model")),
        })
    }
}

/// A column as one tensor: its flat values and the shape of one row; see the module docs.
pub fn column_tensor(field: &Field, column: &ArrayRef) -> Result<(Values, Vec<usize>), String> {
    if column.null_count() > 0 {
        return Err(format!(
            "column {} has a NULL row, which cannot go to the model",
            field.name()
        ));
    }
    match column.data_type() {
        DataType::FixedSizeList(_, size) => {
            let list = column.as_fixed_size_list();
            // A TENSOR column's rows have its declared shape; a VECTOR's, its dimension.
            let shape = riffle_types::TensorType::from_field(field)
                .map_or(vec![*size as usize], |tensor| tensor.shape);
            let size = *size as usize;
            let values = list.values().slice(list.offset() * size, list.len() * size);
            Ok((Values::from_array(&values)?, shape))
        }
        DataType::Struct(_) => variable_shape_tensor(field, column),
        DataType::Float32
        | DataType::Float64
        | DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8 => Ok((Values::from_array(column)?, Vec::new())),
        other => Err(format!(
            "column {} is {other}, which cannot go to a tensor model (numbers, VECTOR or TENSOR \
             can)",
            field.name()
        )),
    }
}

/// The type of a tensor column's elements as the column stores them (before
/// [`column_tensor`] widens narrow integers), for protocols that name it (KServe's
/// `UINT8`).
pub fn element_type(column: &ArrayRef) -> DataType {
    match column.data_type() {
        DataType::FixedSizeList(item, _) => item.data_type().clone(),
        DataType::Struct(fields) => match fields.find("data").map(|(_, f)| f.data_type()) {
            Some(DataType::List(item) | DataType::LargeList(item)) => item.data_type().clone(),
            _ => column.data_type().clone(),
        },
        other => other.clone(),
    }
}

/// A variable-shape tensor column whose rows share one shape, as one tensor.
fn variable_shape_tensor(field: &Field, column: &ArrayRef) -> Result<(Values, Vec<usize>), String> {
    let parts = column.as_struct();
    let (Some(data), Some(shapes)) = (parts.column_by_name("data"), parts.column_by_name("shape"))
    else {
        return Err(format!(
            "column {} is a struct, not a tensor, and cannot go to a tensor model",
            field.name()
        ));
    };
    let Some(shapes) = shapes.as_fixed_size_list_opt() else {
        return Err(format!(
            "column {}'s shape is {}, not a list of dimensions",
            field.name(),
            shapes.data_type()
        ));
    };
    let ndim = shapes.value_length() as usize;
    let dims = cast(shapes.values(), &DataType::Int64).map_err(|e| e.to_string())?;
    let dims = dims.as_primitive::<Int64Type>().values();
    let row_shape = |row: usize| -> Vec<usize> {
        let start = (shapes.offset() + row) * ndim;
        dims[start..start + ndim]
            .iter()
            .map(|&d| d.max(0) as usize)
            .collect()
    };
    let first = if column.is_empty() {
        Vec::new()
    } else {
        row_shape(0)
    };
    for row in 1..column.len() {
        let shape = row_shape(row);
        if shape != first {
            return Err(format!(
                "column {} holds tensors of shape {first:?} and {shape:?} in one request; a model \
                 takes one shape (resize the images first, or CAST the column to a TENSOR of the \
                 model's shape)",
                field.name()
            ));
        }
    }
    let values = match data.data_type() {
        DataType::List(_) => {
            let list = data.as_list::<i32>();
            let start = list.value_offsets()[0] as usize;
            let end = list.value_offsets()[list.len()] as usize;
            list.values().slice(start, end - start)
        }
        DataType::LargeList(_) => {
            let list = data.as_list::<i64>();
            let start = list.value_offsets()[0] as usize;
            let end = list.value_offsets()[list.len()] as usize;
            list.values().slice(start, end - start)
        }
        other => {
            return Err(format!(
                "column {}'s tensor data is {other}, not a list",
                field.name()
            ));
        }
    };
    let per_row: usize = first.iter().product();
    if values.len() != per_row * column.len() {
        return Err(format!(
            "column {} holds {} values for {} tensors of shape {first:?}: a row's data does not \
             match its shape",
            field.name(),
            values.len(),
            column.len()
        ));
    }
    Ok((Values::from_array(&values)?, first))
}

/// A tensor of `shape` (rows first) with flat `values`, as a column of `field`'s type; `name`
/// is the tensor's, for errors.
pub fn tensor_column(
    name: &str,
    shape: &[i64],
    values: ArrayRef,
    field: &Field,
    rows: usize,
) -> Result<ArrayRef, String> {
    if shape.first().copied() != Some(rows as i64) || shape.iter().any(|d| *d < 0) {
        return Err(format!("output {name} has shape {shape:?} for {rows} rows"));
    }
    let per_row = shape[1..]
        .iter()
        .try_fold(1i64, |total, d| total.checked_mul(*d))
        .filter(|per_row| per_row.checked_mul(rows as i64).is_some())
        .ok_or_else(|| format!("output {name} has shape {shape:?}, too large to hold"))?;
    if values.len() as i64 != per_row * rows as i64 {
        return Err(format!(
            "output {name} has shape {shape:?} but {} values",
            values.len()
        ));
    }
    match field.data_type() {
        DataType::FixedSizeList(item, size) => {
            if per_row != *size as i64 {
                return Err(format!(
                    "output {name} gives rows of shape {:?}, but OUTPUT column {} is {}",
                    &shape[1..],
                    field.name(),
                    riffle_types::TensorType::from_field(field).map_or_else(
                        || format!("a vector of {size}"),
                        |tensor| tensor.to_string()
                    )
                ));
            }
            let values = cast_with_options(&values, item.data_type(), &STRICT)
                .map_err(|e| format!("output {name} into OUTPUT column {}: {e}", field.name()))?;
            Ok(Arc::new(
                FixedSizeListArray::try_new(Arc::clone(item), *size, values, None)
                    .map_err(|e| e.to_string())?,
            ))
        }
        _ if per_row == 1 => cast_with_options(&values, field.data_type(), &STRICT)
            .map_err(|e| format!("output {name} into OUTPUT column {}: {e}", field.name())),
        other => Err(format!(
            "output {name} gives rows of shape {:?}, which a {other} column cannot hold (declare \
             VECTOR(FLOAT, {per_row}))",
            &shape[1..]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ListArray, StructArray};
    use datafusion::arrow::buffer::OffsetBuffer;
    use riffle_types::{ElementType, VariableShapeTensorType};

    fn variable(shapes: &[[i32; 2]]) -> (Field, ArrayRef) {
        let kind = VariableShapeTensorType {
            element: ElementType::Float32,
            ndim: 2,
        };
        let field = kind.field("t", true);
        let lengths: Vec<usize> = shapes.iter().map(|s| (s[0] * s[1]) as usize).collect();
        let total: usize = lengths.iter().sum();
        let data = ListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(Float32Array::from_iter_values((0..total).map(|v| v as f32))),
            None,
        );
        let flat: Vec<i32> = shapes.iter().flatten().copied().collect();
        let shape = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            2,
            Arc::new(Int32Array::from(flat)),
            None,
        );
        let DataType::Struct(fields) = kind.storage_type() else {
            unreachable!()
        };
        let array = StructArray::new(fields, vec![Arc::new(data), Arc::new(shape)], None);
        (field, Arc::new(array))
    }

    #[test]
    fn variable_shape_rows_of_one_shape_make_one_tensor() {
        let (field, column) = variable(&[[2, 3], [2, 3]]);
        let (values, shape) = column_tensor(&field, &column).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(values, Values::F32((0..12).map(|v| v as f32).collect()));
        // A slice starts at its own rows.
        let (values, _) = column_tensor(&field, &column.slice(1, 1)).unwrap();
        assert_eq!(values, Values::F32((6..12).map(|v| v as f32).collect()));
    }

    #[test]
    fn variable_shape_rows_of_two_shapes_are_refused_naming_both() {
        let (field, column) = variable(&[[2, 3], [3, 2]]);
        let error = column_tensor(&field, &column).unwrap_err();
        assert!(
            error.contains("[2, 3]") && error.contains("[3, 2]"),
            "{error}"
        );
    }

    #[test]
    fn a_tensor_fills_a_vector_column_only_when_its_rows_fit() {
        let field = Field::new(
            "v",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 2),
            true,
        );
        let values: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0]));
        let column = tensor_column("out", &[2, 2], Arc::clone(&values), &field, 2).unwrap();
        assert_eq!(column.len(), 2);
        let error = tensor_column("out", &[1, 4], values, &field, 1).unwrap_err();
        assert!(error.contains("[4]"), "{error}");
    }
}
