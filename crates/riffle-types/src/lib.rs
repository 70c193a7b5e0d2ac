//! Riffle's multimodal types on Arrow.
//!
//! | logical type | Arrow representation |
//! |---|---|
//! | `VECTOR(dtype, dim)` | `FixedSizeList<dtype>(dim)` |
//! | `TENSOR(dtype, [d1, d2, ...])` | canonical extension `arrow.fixed_shape_tensor` over `FixedSizeList<dtype>(d1 * d2 * ...)` |
//! | `IMAGE` | extension `riffle.image`: struct of height, width, mode, HWC pixel bytes |
//! | `FILE` | extension `riffle.file`: struct of uri, offset, size, inline bytes |
//! | `AUDIO` | extension `riffle.audio`: struct of sample rate, channels, f32 samples |
//!
//! Entry points: [`ElementType`] (the one element-dtype enum), [`VectorType`],
//! [`TensorType`], the struct types in [`media`], and [`RiffleTypePlanner`], which teaches
//! DataFusion's SQL planner these type names (in `CREATE TABLE` and `CAST`).

#![warn(missing_docs)]

mod element;
pub mod media;
mod planner;
mod tensor;

pub use element::ElementType;
pub use planner::RiffleTypePlanner;
pub use tensor::{TensorType, VariableShapeTensorType, VectorType};

use datafusion::arrow::datatypes::Field;

/// A column's type as Riffle's SQL writes it: `VECTOR(FLOAT, 384)`, `TENSOR(FLOAT, [3, 224,
/// 224])`, `IMAGE`, `FILE`, `AUDIO`, or else Arrow's name for it.
pub fn display_type(field: &Field) -> String {
    if let Some(tensor) = TensorType::from_field(field) {
        return tensor.to_string();
    }
    if let Some(tensor) = VariableShapeTensorType::from_field(field) {
        return tensor.to_string();
    }
    if let Some(extension) = media::media_extension(field) {
        return extension.trim_start_matches("riffle.").to_ascii_uppercase();
    }
    if let Some(vector) = VectorType::from_data_type(field.data_type()) {
        return vector.to_string();
    }
    field.data_type().to_string()
}

/// Field metadata key naming an Arrow extension type.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Field metadata key holding an Arrow extension type's parameters.
pub const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";
