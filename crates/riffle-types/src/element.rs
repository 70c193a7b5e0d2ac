//! The element types of tensors and vectors.

use std::fmt;

use datafusion::arrow::datatypes::DataType;
use riffle_common::{Result, RiffleError};

/// The element type of a tensor or vector: one enum for every crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// 8-bit unsigned integer (pixels).
    UInt8,
    /// 16-bit unsigned integer.
    UInt16,
    /// 32-bit unsigned integer.
    UInt32,
    /// 64-bit unsigned integer.
    UInt64,
    /// 8-bit signed integer (quantized embeddings).
    Int8,
    /// 16-bit signed integer (PCM audio).
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer (token ids).
    Int64,
    /// IEEE half precision.
    Float16,
    /// bfloat16, stored as its 16 raw bits (`UInt16`), since Arrow has no bfloat16.
    BFloat16,
    /// IEEE single precision.
    Float32,
    /// IEEE double precision.
    Float64,
}

impl ElementType {
    /// Every element type.
    pub const ALL: [ElementType; 12] = [
        Self::UInt8,
        Self::UInt16,
        Self::UInt32,
        Self::UInt64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Float16,
        Self::BFloat16,
        Self::Float32,
        Self::Float64,
    ];

    /// The Arrow type that stores one element.
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::UInt8 => DataType::UInt8,
            Self::UInt16 | Self::BFloat16 => DataType::UInt16,
            Self::UInt32 => DataType::UInt32,
            Self::UInt64 => DataType::UInt64,
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float16 => DataType::Float16,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
        }
    }

    /// The element type stored as `data_type` (bfloat16 is indistinguishable from `UInt16`
    /// by type alone and comes back as `UInt16`).
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Self::ALL
            .into_iter()
            .filter(|t| *t != Self::BFloat16)
            .find(|t| t.arrow_type() == *data_type)
    }

    /// Parses an element type as SQL writes it: `FLOAT`, `DOUBLE`, `TINYINT`, `UINT8`,
    /// `FLOAT16`, `BFLOAT16`, ... (case does not matter).
    pub fn from_sql(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "UINT8" | "TINYINT UNSIGNED" | "UTINYINT" => Self::UInt8,
            "UINT16" | "USMALLINT" => Self::UInt16,
            "UINT32" | "UINT" | "UINTEGER" => Self::UInt32,
            "UINT64" | "UBIGINT" => Self::UInt64,
            "INT8" | "TINYINT" => Self::Int8,
            "INT16" | "SMALLINT" => Self::Int16,
            "INT32" | "INT" | "INTEGER" => Self::Int32,
            "INT64" | "BIGINT" => Self::Int64,
            "FLOAT16" | "HALF" => Self::Float16,
            "BFLOAT16" => Self::BFloat16,
            "FLOAT" | "FLOAT32" | "REAL" => Self::Float32,
            "DOUBLE" | "FLOAT64" => Self::Float64,
            other => {
                return Err(RiffleError::user(format!("unknown element type '{other}'"))
                    .with_hint("use one of UINT8, INT8, INT16, INT32, INT64, FLOAT16, BFLOAT16, FLOAT, DOUBLE"));
            }
        })
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            Self::UInt8 | Self::Int8 => 1,
            Self::UInt16 | Self::Int16 | Self::Float16 | Self::BFloat16 => 2,
            Self::UInt32 | Self::Int32 | Self::Float32 => 4,
            Self::UInt64 | Self::Int64 | Self::Float64 => 8,
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::UInt8 => "UINT8",
            Self::UInt16 => "UINT16",
            Self::UInt32 => "UINT32",
            Self::UInt64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Float16 => "FLOAT16",
            Self::BFloat16 => "BFLOAT16",
            Self::Float32 => "FLOAT",
            Self::Float64 => "DOUBLE",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_and_arrow_types_agree() {
        for element in ElementType::ALL {
            let parsed = ElementType::from_sql(&element.to_string()).unwrap();
            assert_eq!(parsed, element);
            if element != ElementType::BFloat16 {
                assert_eq!(
                    ElementType::from_arrow(&element.arrow_type()),
                    Some(element)
                );
            }
        }
        assert!(ElementType::from_sql("complex").is_err());
    }
}
