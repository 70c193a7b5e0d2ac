//! `VECTOR(dtype, dim)` and `TENSOR(dtype, [shape])`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use riffle_common::{Result, RiffleError};

use crate::element::ElementType;
use crate::{EXTENSION_METADATA_KEY, EXTENSION_NAME_KEY};

/// The canonical Arrow extension name of fixed-shape tensors.
pub const FIXED_SHAPE_TENSOR: &str = "arrow.fixed_shape_tensor";

/// An embedding: `dim` elements, stored as `FixedSizeList<element>(dim)` as vector stores
/// expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VectorType {
    /// Element type.
    pub element: ElementType,
    /// Number of elements.
    pub dim: usize,
}

impl VectorType {
    /// The Arrow type of a vector column.
    pub fn data_type(&self) -> DataType {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", self.element.arrow_type(), true)),
            self.dim as i32,
        )
    }

    /// The vector type an Arrow type stores, if it is a fixed-size list of numbers.
    pub fn from_data_type(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::FixedSizeList(item, dim) if *dim >= 0 => Some(Self {
                element: ElementType::from_arrow(item.data_type())?,
                dim: *dim as usize,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for VectorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VECTOR({}, {})", self.element, self.dim)
    }
}

/// A fixed-shape tensor, stored as Arrow's canonical `arrow.fixed_shape_tensor` extension:
/// a `FixedSizeList` of all elements in row-major order, with the shape in the field's
/// metadata, so that pyarrow and numpy read it as a tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub element: ElementType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor type; fails on an empty shape or a zero dimension.
    pub fn try_new(element: ElementType, shape: Vec<usize>) -> Result<Self> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(RiffleError::user(format!(
                "a tensor shape needs at least one dimension and no zero dimension, not {shape:?}"
            )));
        }
        Ok(Self { element, shape })
    }

    /// Number of elements of one tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether a tensor of this type holds no element (never, for a valid type).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage type: a fixed-size list of every element.
    pub fn storage_type(&self) -> DataType {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", self.element.arrow_type(), true)),
            self.len() as i32,
        )
    }

    /// A field of this type, with the extension metadata.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let shape: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        let metadata = HashMap::from([
            (
                EXTENSION_NAME_KEY.to_string(),
                FIXED_SHAPE_TENSOR.to_string(),
            ),
            (
                EXTENSION_METADATA_KEY.to_string(),
                format!("{{\"shape\":[{}]}}", shape.join(",")),
            ),
        ]);
        Field::new(name, self.storage_type(), nullable).with_metadata(metadata)
    }

    /// The tensor type of a field carrying the `arrow.fixed_shape_tensor` extension.
    pub fn from_field(field: &Field) -> Option<Self> {
        if field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str) != Some(FIXED_SHAPE_TENSOR)
        {
            return None;
        }
        let metadata: serde_json::Value =
            serde_json::from_str(field.metadata().get(EXTENSION_METADATA_KEY)?).ok()?;
        let shape = metadata
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<_>>>()?;
        let DataType::FixedSizeList(item, _) = field.data_type() else {
            return None;
        };
        Self::try_new(ElementType::from_arrow(item.data_type())?, shape).ok()
    }
}

impl fmt::Display for VariableShapeTensorType {
    // `TENSOR(FLOAT)` declares rank 3; other ranks say theirs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ndim == 3 {
            write!(f, "TENSOR({})", self.element)
        } else {
            write!(f, "TENSOR({}, rank {})", self.element, self.ndim)
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        write!(f, "TENSOR({}, [{}])", self.element, shape.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_fields_carry_the_canonical_extension() {
        let tensor = TensorType::try_new(ElementType::Float32, vec![3, 224, 224]).unwrap();
        let field = tensor.field("pixels", true);
        assert_eq!(
            field.metadata()[EXTENSION_NAME_KEY],
            "arrow.fixed_shape_tensor"
        );
        assert_eq!(
            field.metadata()[EXTENSION_METADATA_KEY],
            "{\"shape\":[3,224,224]}"
        );
        assert_eq!(TensorType::from_field(&field), Some(tensor.clone()));
        assert_eq!(tensor.len(), 3 * 224 * 224);
        assert!(TensorType::try_new(ElementType::Float32, vec![3, 0]).is_err());
    }

    #[test]
    fn vectors_are_fixed_size_lists() {
        let vector = VectorType {
            element: ElementType::Float32,
            dim: 384,
        };
        assert_eq!(
            VectorType::from_data_type(&vector.data_type()),
            Some(vector)
        );
        assert_eq!(vector.to_string(), "VECTOR(FLOAT, 384)");
    }
}

/// The canonical Arrow extension name of tensors whose shape varies by row.
pub const VARIABLE_SHAPE_TENSOR: &str = "arrow.variable_shape_tensor";

/// Tensors of `ndim` dimensions whose shape varies by row (decoded images of different
/// sizes), stored as Arrow's canonical `arrow.variable_shape_tensor`: a struct of the values
/// (`data`, a list) and the shape (`shape`, `ndim` int32s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VariableShapeTensorType {
    /// Element type.
    pub element: ElementType,
    /// Number of dimensions.
    pub ndim: usize,
}

impl VariableShapeTensorType {
    /// The storage type.
    pub fn storage_type(&self) -> DataType {
        DataType::Struct(
            vec![
                Field::new(
                    "data",
                    DataType::List(Arc::new(Field::new(
                        "item",
                        self.element.arrow_type(),
                        false,
                    ))),
                    false,
                ),
                Field::new(
                    "shape",
                    DataType::FixedSizeList(
                        Arc::new(Field::new("item", DataType::Int32, false)),
                        self.ndim as i32,
                    ),
                    false,
                ),
            ]
            .into(),
        )
    }

    /// The variable-shape tensor type of a field carrying the `arrow.variable_shape_tensor`
    /// extension.
    pub fn from_field(field: &Field) -> Option<Self> {
        if field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str)
            != Some(VARIABLE_SHAPE_TENSOR)
        {
            return None;
        }
        let DataType::Struct(fields) = field.data_type() else {
            return None;
        };
        let data = fields.find("data")?.1;
        let shape = fields.find("shape")?.1;
        let (DataType::List(item), DataType::FixedSizeList(_, ndim)) =
            (data.data_type(), shape.data_type())
        else {
            return None;
        };
        Some(Self {
            element: ElementType::from_arrow(item.data_type())?,
            ndim: (*ndim).max(0) as usize,
        })
    }

    /// A field of this type, with the extension metadata.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let metadata = HashMap::from([
            (
                EXTENSION_NAME_KEY.to_string(),
                VARIABLE_SHAPE_TENSOR.to_string(),
            ),
            (EXTENSION_METADATA_KEY.to_string(), "{}".to_string()),
        ]);
        Field::new(name, self.storage_type(), nullable).with_metadata(metadata)
    }
}
