//! `IMAGE`, `FILE` and `AUDIO`: Arrow structs tagged with Riffle's extension names.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};

use crate::EXTENSION_NAME_KEY;

/// Extension name of decoded images.
pub const IMAGE: &str = "riffle.image";
/// Extension name of object references.
pub const FILE: &str = "riffle.file";
/// Extension name of decoded audio.
pub const AUDIO: &str = "riffle.audio";

/// A decoded image: height, width, mode (`L`, `LA`, `RGB`, `RGBA`, ...) and its pixels,
/// row-major, channels interleaved (HWC).
pub fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("height", DataType::UInt32, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("pixels", DataType::Binary, false),
    ]))
}

/// A reference to bytes in an object store: the URI, an optional byte range, and the
/// bytes themselves when they were small enough to carry inline.
pub fn file_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("uri", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, true),
        Field::new("size", DataType::UInt64, true),
        Field::new("bytes", DataType::Binary, true),
    ]))
}

/// Decoded audio: sample rate, channel count, and interleaved f32 samples.
pub fn audio_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("sample_rate", DataType::UInt32, false),
        Field::new("channels", DataType::UInt16, false),
        Field::new(
            "samples",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    ]))
}

/// A field of one of these types, tagged with its extension name.
pub fn media_field(name: &str, extension: &str, nullable: bool) -> Option<Field> {
    let data_type = match extension {
        IMAGE => image_type(),
        FILE => file_type(),
        AUDIO => audio_type(),
        _ => return None,
    };
    let metadata = HashMap::from([(EXTENSION_NAME_KEY.to_string(), extension.to_string())]);
    Some(Field::new(name, data_type, nullable).with_metadata(metadata))
}

/// The extension name of a field, if it is one of Riffle's media types.
pub fn media_extension(field: &Field) -> Option<&str> {
    field
        .metadata()
        .get(EXTENSION_NAME_KEY)
        .map(String::as_str)
        .filter(|name| [IMAGE, FILE, AUDIO].contains(name))
}
