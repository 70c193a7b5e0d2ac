//! Riffle's type names in SQL: `VECTOR(FLOAT, 384)`, `TENSOR(FLOAT, [3, 224, 224])`,
//! `IMAGE`, `FILE`, `AUDIO`, in `CREATE TABLE` and `CAST`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::sql::sqlparser::ast;

use crate::element::ElementType;
use crate::media::{AUDIO, FILE, IMAGE, media_field};
use crate::tensor::{TensorType, VariableShapeTensorType, VectorType};

/// Plans Riffle's type names for DataFusion's SQL planner.
///
/// SQL's type modifiers cannot hold brackets, so `riffle-sql` rewrites
/// `TENSOR(FLOAT, [3, 224, 224])` to `TENSOR(FLOAT, 3, 224, 224)` before parsing; both forms
/// are accepted.
#[derive(Debug, Default)]
pub struct RiffleTypePlanner;

fn plan_error(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

/// The Arrow type of a scalar SQL type (a map's keys and values).
fn scalar_type(sql_type: &ast::DataType) -> Option<DataType> {
    let name = sql_type.to_string().to_ascii_uppercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Some(match base {
        "STRING" | "VARCHAR" | "TEXT" | "CHAR" => DataType::Utf8,
        "TINYINT" => DataType::Int8,
        "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "BYTES" | "VARBINARY" => DataType::Binary,
        _ => return None,
    })
}

impl TypePlanner for RiffleTypePlanner {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        // Flink's binary types: BYTES and VARBINARY(n) are variable-length, BINARY(n) fixed.
        let binary = match sql_type {
            ast::DataType::Bytes(_) | ast::DataType::Varbinary(_) | ast::DataType::Blob(_) => {
                Some(DataType::Binary)
            }
            ast::DataType::Binary(None) => Some(DataType::Binary),
            ast::DataType::Binary(Some(length)) => Some(DataType::FixedSizeBinary(
                i32::try_from(*length)
                    .map_err(|_| plan_error(format!("BINARY({length}) is too long")))?,
            )),
            _ => None,
        };
        if let Some(binary) = binary {
            return Ok(Some(Arc::new(Field::new("", binary, true))));
        }
        // Flink's MAP<K, V> (riffle-sql writes it MAP(K, V)), of scalar keys and values.
        if let ast::DataType::Map(key, value) = sql_type {
            let scalar = |t: &ast::DataType| {
                scalar_type(t).ok_or_else(|| {
                    plan_error(format!(
                        "MAP<{key}, {value}>: {t} is not a key or value type Riffle reads in a \
                         MAP yet (text, integers, floats, booleans)"
                    ))
                })
            };
            let entries = Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", scalar(key)?, false),
                        Field::new("value", scalar(value)?, true),
                    ]
                    .into(),
                ),
                false,
            );
            return Ok(Some(Arc::new(Field::new(
                "",
                DataType::Map(Arc::new(entries), false),
                true,
            ))));
        }
        let ast::DataType::Custom(name, modifiers) = sql_type else {
            return Ok(None);
        };
        let name = name.to_string().to_ascii_uppercase();
        // Flink's TIMESTAMP_LTZ(p): an instant, stored in UTC.
        if name == "TIMESTAMP_LTZ" {
            let precision = match modifiers.as_slice() {
                [] => 6,
                [p] => p.parse::<u8>().map_err(|_| {
                    plan_error(format!("TIMESTAMP_LTZ: '{p}' is not a precision (0 to 9)"))
                })?,
                _ => return Err(plan_error("TIMESTAMP_LTZ takes one precision".into())),
            };
            let unit = match precision {
                0 => TimeUnit::Second,
                1..=3 => TimeUnit::Millisecond,
                4..=6 => TimeUnit::Microsecond,
                7..=9 => TimeUnit::Nanosecond,
                _ => {
                    return Err(plan_error(format!(
                        "TIMESTAMP_LTZ({precision}): the precision is 0 to 9"
                    )));
                }
            };
            return Ok(Some(Arc::new(Field::new(
                "",
                DataType::Timestamp(unit, Some("UTC".into())),
                true,
            ))));
        }
        let element = |text: &str| {
            ElementType::from_sql(text).map_err(|e| plan_error(format!("{name}: {}", e.message())))
        };
        let number = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| plan_error(format!("{name}: '{text}' is not a dimension")))
        };
        let field = match name.as_str() {
            "VECTOR" => {
                let [element_name, dim] = modifiers.as_slice() else {
                    return Err(plan_error(
                        "VECTOR takes an element type and a dimension, as in VECTOR(FLOAT, 384)"
                            .into(),
                    ));
                };
                let vector = VectorType {
                    element: element(element_name)?,
                    dim: number(dim)?,
                };
                if vector.dim == 0 {
                    return Err(plan_error("VECTOR needs a dimension above 0".into()));
                }
                Field::new("", vector.data_type(), true)
            }
            // TENSOR(dtype) without a shape: tensors whose shape varies by row, of rank 3
            // (channels, height, width: what image_to_tensor makes).
            "TENSOR" if modifiers.len() == 1 => VariableShapeTensorType {
                element: element(&modifiers[0])?,
                ndim: 3,
            }
            .field("", true),
            "TENSOR" => {
                let Some((element_name, dims)) = modifiers.split_first() else {
                    return Err(plan_error("TENSOR takes an element type and a shape, as in TENSOR(FLOAT, [3, 224, 224])".into()));
                };
                let shape = dims.iter().map(|d| number(d)).collect::<Result<Vec<_>>>()?;
                let tensor = TensorType::try_new(element(element_name)?, shape)
                    .map_err(|e| plan_error(e.message().to_string()))?;
                tensor.field("", true)
            }
            "IMAGE" | "FILE" | "AUDIO" => {
                if !modifiers.is_empty() {
                    return Err(plan_error(format!("{name} takes no parameters")));
                }
                let extension = match name.as_str() {
                    "IMAGE" => IMAGE,
                    "FILE" => FILE,
                    _ => AUDIO,
                };
                match media_field("", extension, true) {
                    Some(field) => field,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(field)))
    }
}
