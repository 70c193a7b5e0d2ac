//! Vector functions: `cosine_similarity`, `l2_distance`, `inner_product`,
//! `vector_normalize`.
//!
//! Arguments are vectors: `VECTOR(dtype, dim)` columns (fixed-size lists), lists of numbers
//! (such as the literal `[0.1, 0.2, 0.3]`), or a mix, one side possibly a constant query
//! vector. Each row's pair is computed in f64 over contiguous values, without a row-at-a-time
//! Arrow access. A NULL vector gives NULL; vectors of different lengths are an error naming
//! the function and the row; the cosine of a zero vector is NULL (it has no direction).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Float64Builder,
    GenericListArray, OffsetSizeTrait,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The vector functions.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(PairFunction::new(Pair::Cosine))),
        Arc::new(ScalarUDF::from(PairFunction::new(Pair::L2))),
        Arc::new(ScalarUDF::from(PairFunction::new(Pair::Inner))),
        Arc::new(ScalarUDF::from(Normalize::new())),
    ]
}

/// The vectors of one argument, as f64 values and per-row ranges.
struct Vectors {
    values: Float64Array,
    /// `(start, len)` of each row, or `None` for a NULL vector.
    rows: Vec<Option<(usize, usize)>>,
}

impl Vectors {
    /// Reads an argument; a constant is repeated `rows` times.
    fn from_arg(function: &str, arg: &ColumnarValue, rows: usize) -> Result<Self> {
        let (array, constant) = match arg {
            ColumnarValue::Array(array) => (Arc::clone(array), false),
            ColumnarValue::Scalar(scalar) => (scalar.to_array_of_size(1)?, true),
        };
        let (values, ranges): (ArrayRef, Vec<Option<(usize, usize)>>) = match array.data_type() {
            DataType::FixedSizeList(_, dim) => {
                let list = array.as_fixed_size_list();
                let dim = *dim as usize;
                let ranges = (0..list.len())
                    .map(|i| list.is_valid(i).then_some((i * dim, dim)))
                    .collect();
                (Arc::clone(list.values()), ranges)
            }
            DataType::List(_) => list_ranges(array.as_list::<i32>()),
            DataType::LargeList(_) => list_ranges(array.as_list::<i64>()),
            DataType::Null => (
                Arc::new(Float64Array::from(Vec::<f64>::new())) as ArrayRef,
                vec![None; array.len()],
            ),
            other => {
                return Err(DataFusionError::Plan(format!(
                    "{function}: expected a vector (VECTOR, or a list of numbers), got {other}"
                )));
            }
        };
        let values = cast(&values, &DataType::Float64)?;
        let values = values
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
            .clone();
        if values.null_count() > 0 {
            // A NULL vector's slots may hold anything; only the elements of present vectors
            // must be present.
            for (row, range) in ranges.iter().enumerate() {
                if let Some((start, len)) = range
                    && (*start..start + len).any(|i| values.is_null(i))
                {
                    return Err(DataFusionError::Execution(format!(
                        "{function}: row {row}: the vector holds a NULL element; vectors must be complete"
                    )));
                }
            }
        }
        let rows = if constant {
            vec![ranges.first().copied().flatten(); rows]
        } else {
            ranges
        };
        Ok(Self { values, rows })
    }

    fn row(&self, row: usize) -> Option<&[f64]> {
        self.rows[row].map(|(start, len)| &self.values.values()[start..start + len])
    }
}

/// The values of a list array and each row's `(start, len)`, `None` for NULL rows.
fn list_ranges<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
) -> (ArrayRef, Vec<Option<(usize, usize)>>) {
    let offsets = list.value_offsets();
    let ranges = (0..list.len())
        .map(|i| {
            list.is_valid(i).then(|| {
                let start = offsets[i].as_usize();
                (start, offsets[i + 1].as_usize() - start)
            })
        })
        .collect();
    (Arc::clone(list.values()), ranges)
}

fn check_vector_type(function: &str, data_type: &DataType) -> Result<()> {
    let item = match data_type {
        DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item) => item,
        DataType::Null => return Ok(()),
        other => {
            return Err(DataFusionError::Plan(format!(
                "{function}: expected a vector (VECTOR, or a list of numbers), got {other}"
            )));
        }
    };
    if item.data_type().is_numeric() || item.data_type() == &DataType::Null {
        Ok(())
    } else {
        Err(DataFusionError::Plan(format!(
            "{function}: expected a vector of numbers, got a list of {}",
            item.data_type()
        )))
    }
}

/// The functions of two vectors that return a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pair {
    Cosine,
    L2,
    Inner,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PairFunction {
    pair: Pair,
    signature: Signature,
}

impl PairFunction {
    fn new(pair: Pair) -> Self {
        Self {
            pair,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl ScalarUDFImpl for PairFunction {
    fn name(&self) -> &str {
        match self.pair {
            Pair::Cosine => "cosine_similarity",
            Pair::L2 => "l2_distance",
            Pair::Inner => "inner_product",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        for data_type in arg_types {
            check_vector_type(self.name(), data_type)?;
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let rows = args.number_rows;
        let left = Vectors::from_arg(name, &args.args[0], rows)?;
        let right = Vectors::from_arg(name, &args.args[1], rows)?;
        let mut out = Float64Builder::with_capacity(rows);
        for row in 0..rows {
            let (Some(a), Some(b)) = (left.row(row), right.row(row)) else {
                out.append_null();
                continue;
            };
            if a.len() != b.len() {
                return Err(DataFusionError::Execution(format!(
                    "{name}: row {row}: vectors of different lengths ({} and {})",
                    a.len(),
                    b.len()
                )));
            }
            match self.pair {
                Pair::Inner => out.append_value(dot(a, b)),
                Pair::L2 => out.append_value(
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (x - y) * (x - y))
                        .sum::<f64>()
                        .sqrt(),
                ),
                Pair::Cosine => {
                    let norms = dot(a, a).sqrt() * dot(b, b).sqrt();
                    if norms == 0.0 {
                        out.append_null();
                    } else {
                        out.append_value(dot(a, b) / norms);
                    }
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `vector_normalize(v)`: `v` scaled to length 1 (a zero vector stays zero). Float vectors
/// keep their element type; integer vectors become FLOAT vectors.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Normalize {
    signature: Signature,
}

impl Normalize {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Normalize {
    fn name(&self) -> &str {
        "vector_normalize"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        check_vector_type(self.name(), &arg_types[0])?;
        Ok(match &arg_types[0] {
            DataType::FixedSizeList(item, dim) => {
                let element = if item.data_type() == &DataType::Float64 {
                    DataType::Float64
                } else {
                    DataType::Float32
                };
                DataType::FixedSizeList(Arc::new(Field::new("item", element, true)), *dim)
            }
            _ => DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let vectors = Vectors::from_arg(self.name(), &args.args[0], rows)?;
        let return_type = args.return_field.data_type().clone();
        let mut values = Vec::new();
        let mut offsets = vec![0i32];
        let mut validity = Vec::with_capacity(rows);
        let dim = match &return_type {
            DataType::FixedSizeList(_, dim) => Some(*dim as usize),
            _ => None,
        };
        for row in 0..rows {
            match vectors.row(row) {
                Some(v) => {
                    let norm = dot(v, v).sqrt();
                    values.extend(v.iter().map(|x| if norm == 0.0 { 0.0 } else { x / norm }));
                    validity.push(true);
                }
                None => {
                    values.extend(std::iter::repeat_n(0.0, dim.unwrap_or(0)));
                    validity.push(false);
                }
            }
            offsets.push(values.len() as i32);
        }
        let nulls = Some(NullBuffer::from(validity));
        let array: ArrayRef = match return_type {
            DataType::FixedSizeList(item, dim) => {
                let values: ArrayRef = if item.data_type() == &DataType::Float64 {
                    Arc::new(Float64Array::from(values))
                } else {
                    Arc::new(Float32Array::from_iter_values(
                        values.iter().map(|v| *v as f32),
                    ))
                };
                Arc::new(FixedSizeListArray::try_new(item, dim, values, nulls)?)
            }
            DataType::List(item) => Arc::new(datafusion::arrow::array::ListArray::try_new(
                item,
                datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
                Arc::new(Float64Array::from(values)),
                nulls,
            )?),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "vector_normalize: unexpected return type {other}"
                )));
            }
        };
        Ok(ColumnarValue::Array(array))
    }
}
