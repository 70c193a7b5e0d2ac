//! Images for vision chat models: an `IMAGE` column (decoded pixels, sent as PNG) or a bytes
//! column (an encoded image, sent as it is) becomes an OpenAI `image_url` content part with
//! a data URL, beside the row's text.

use base64::Engine;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field};
use riffle_types::media::{IMAGE, media_extension};

/// Whether a column of `field`'s type goes to a chat model as images.
pub fn is_image_input(field: &Field) -> bool {
    media_extension(field) == Some(IMAGE)
        || matches!(
            field.data_type(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
}

/// The MIME type of an encoded image, from its first bytes.
fn mime(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some("image/webp"),
        _ => None,
    }
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Each row's image as a data URL: `None` for NULL, `Some(Err)` for bytes that are not an
/// image a vision model takes (a row error).
pub fn data_urls(
    field: &Field,
    column: &ArrayRef,
) -> Result<Vec<Option<Result<String, String>>>, String> {
    let not_an_image = |bytes: &[u8]| {
        format!(
            "column {} holds {} bytes that are not a JPEG, PNG, GIF or WebP image",
            field.name(),
            bytes.len()
        )
    };
    let encoded = |bytes: &[u8]| match mime(bytes) {
        Some(mime) => Ok(data_url(mime, bytes)),
        None => Err(not_an_image(bytes)),
    };
    Ok(match column.data_type() {
        DataType::Binary => column
            .as_binary::<i32>()
            .iter()
            .map(|b| b.map(encoded))
            .collect(),
        DataType::LargeBinary => column
            .as_binary::<i64>()
            .iter()
            .map(|b| b.map(encoded))
            .collect(),
        DataType::BinaryView => column
            .as_binary_view()
            .iter()
            .map(|b| b.map(encoded))
            .collect(),
        DataType::Struct(_) => riffle_functions::image::png_files(column)
            .map_err(|e| format!("column {}: {e}", field.name()))?
            .into_iter()
            .map(|png| png.map(|png| Ok(data_url("image/png", &png))))
            .collect(),
        other => {
            return Err(format!(
                "column {} is {other}, not an image a chat model takes",
                field.name()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_images_are_named_by_their_bytes() {
        assert_eq!(mime(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(mime(b"\\x89PNG"), None);
        assert_eq!(mime(&[0x89, b'P', b'N', b'G', 13, 10]), Some("image/png"));
        assert_eq!(mime(b"RIFF1234WEBPVP8 "), Some("image/webp"));
        assert_eq!(mime(b"<html>"), None);
        assert_eq!(data_url("image/png", b"ab"), "data:image/png;base64,YWI=");
    }
}
