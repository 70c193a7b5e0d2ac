//! Decoding, encoding and inspecting image bytes.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, StringBuilder, StructArray, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use super::pixels::{Image, build_images, image_field, read_images};
use super::{as_array, on_error, par_rows, settle, string_literal};

pub(super) fn functions() -> Vec<Arc<ScalarUDF>> {
    [
        BytesFunction::new("image_decode", 1..=2),
        BytesFunction::new("image_metadata", 1..=1),
        BytesFunction::new("is_valid_image", 1..=1),
        BytesFunction::new("image_encode", 2..=4),
    ]
    .into_iter()
    .map(|f| Arc::new(ScalarUDF::from(f)))
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BytesFunction {
    name: &'static str,
    arity: std::ops::RangeInclusive<usize>,
    signature: Signature,
}

impl BytesFunction {
    fn new(name: &'static str, arity: std::ops::RangeInclusive<usize>) -> Self {
        Self {
            name,
            arity,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn metadata_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("format", DataType::Utf8, true),
        Field::new("width", DataType::UInt32, true),
        Field::new("height", DataType::UInt32, true),
    ]))
}

/// The bytes of a binary argument.
pub(super) fn binary(function: &str, array: &ArrayRef) -> Result<BinaryArray> {
    match array.data_type() {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null => {
            let cast = datafusion::arrow::compute::cast(array, &DataType::Binary)?;
            Ok(cast.as_binary::<i32>().clone())
        }
        other => Err(DataFusionError::Plan(format!(
            "{function}: expected image bytes (BINARY), got {other}"
        ))),
    }
}

/// Why bytes are not an image, with their first bytes so that an HTML error page or a
/// truncated download is recognisable.
fn not_an_image(bytes: &[u8], error: image::ImageError) -> String {
    let head: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    match error {
        image::ImageError::Unsupported(_) => {
            format!("not a JPEG/PNG/WebP/GIF/BMP/TIFF image (starts with 0x{head})")
        }
        other if bytes.is_empty() => format!("empty bytes ({other})"),
        other => format!("cannot decode the image ({other}; starts with 0x{head})"),
    }
}

/// The largest decode buffer a thread keeps between pictures (a 12-megapixel RGB photo).
const KEPT_SCRATCH_BYTES: usize = 36 << 20;

thread_local! {
    /// Full-size pixels of the last JPEG this thread decoded on the way to a smaller image.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decodes `bytes` and hands the image to `work`, which makes something smaller of it (a
/// resized image). JPEGs are decoded by zune-jpeg straight into a buffer this thread
/// reuses, so the full-size pixels are never allocated, zeroed or copied per image; other
/// formats, and JPEGs zune-jpeg rejects (for the error message), go through [`decode`].
///
/// `at_least` is the size `work` will bring the picture down to: with the `turbojpeg`
/// feature, a JPEG is decoded at the smallest fraction of its size (1/2, 1/4, 1/8) that
/// still covers it.
pub(crate) fn with_decoded<R>(
    bytes: &[u8],
    at_least: (u32, u32),
    work: impl FnOnce(&Image) -> std::result::Result<R, String>,
) -> std::result::Result<R, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return work(&decode(bytes)?);
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let result = match decode_jpeg_at_least(bytes, at_least, &mut scratch) {
            Some(image) => work(&image),
            None => decode(bytes).and_then(|image| work(&image)),
        };
        // Keep the buffer for pictures of ordinary size; let a huge one go.
        if scratch.capacity() > KEPT_SCRATCH_BYTES {
            *scratch = Vec::new();
        }
        result
    })
}

/// A JPEG decoded into `scratch`, at reduced size where the `turbojpeg` feature allows.
#[cfg_attr(not(feature = "turbojpeg"), allow(unused_variables))]
fn decode_jpeg_at_least<'a>(
    bytes: &[u8],
    (width, height): (u32, u32),
    scratch: &'a mut Vec<u8>,
) -> Option<Image<'a>> {
    #[cfg(feature = "turbojpeg")]
    if let Some((width, height, mode, size)) =
        super::turbo::decode_scaled(bytes, width, height, scratch)
    {
        return Some(Image {
            width,
            height,
            mode,
            pixels: std::borrow::Cow::Borrowed(&scratch[..size]),
        });
    }
    decode_jpeg_into(bytes, scratch)
}

/// A JPEG decoded into `scratch` (grown as needed, never cleared); `None` if zune-jpeg
/// cannot decode it.
fn decode_jpeg_into<'a>(bytes: &[u8], scratch: &'a mut Vec<u8>) -> Option<Image<'a>> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let mut decoder = zune_jpeg::JpegDecoder::new(ZCursor::new(bytes));
    decoder.decode_headers().ok()?;
    let (colorspace, mode) = match decoder.input_colorspace()? {
        ColorSpace::Luma => (ColorSpace::Luma, super::Mode::L),
        _ => (ColorSpace::RGB, super::Mode::Rgb),
    };
    decoder.set_options(DecoderOptions::default().jpeg_set_out_colorspace(colorspace));
    let (width, height) = decoder.dimensions()?;
    let size = decoder.output_buffer_size()?;
    if scratch.len() < size {
        scratch.resize(size, 0);
    }
    decoder.decode_into(&mut scratch[..size]).ok()?;
    Some(Image {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        mode,
        pixels: std::borrow::Cow::Borrowed(&scratch[..size]),
    })
}

pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Image<'static>, String> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let decoded = reader
        .decode()
        .map_err(|error| not_an_image(bytes, error))?;
    Ok(Image::from_dynamic(decoded))
}

pub(super) fn encode(
    image: &Image,
    format: &str,
    quality: u8,
) -> std::result::Result<Vec<u8>, String> {
    let dynamic = image.to_dynamic()?;
    let mut out = Cursor::new(Vec::new());
    match format.to_ascii_lowercase().as_str() {
        "jpeg" | "jpg" => {
            // JPEG has no alpha channel.
            let rgb = match image.mode {
                super::Mode::L => dynamic,
                super::Mode::LA => image::DynamicImage::ImageLuma8(dynamic.to_luma8()),
                _ => image::DynamicImage::ImageRgb8(dynamic.to_rgb8()),
            };
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            rgb.write_with_encoder(encoder).map_err(|e| e.to_string())?;
        }
        "png" => dynamic
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?,
        "webp" => dynamic
            .write_to(&mut out, image::ImageFormat::WebP)
            .map_err(|e| e.to_string())?,
        "bmp" => dynamic
            .write_to(&mut out, image::ImageFormat::Bmp)
            .map_err(|e| e.to_string())?,
        "tiff" => dynamic
            .write_to(&mut out, image::ImageFormat::Tiff)
            .map_err(|e| e.to_string())?,
        other => {
            return Err(format!(
                "unknown format '{other}' (use png, jpeg, webp, bmp or tiff)"
            ));
        }
    }
    Ok(out.into_inner())
}

impl ScalarUDFImpl for BytesFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        crate::check_arity(self.name, &self.arity, arg_types.len())?;
        Ok(match self.name {
            "image_decode" => riffle_types::media::image_type(),
            "image_metadata" => metadata_type(),
            "is_valid_image" => DataType::Boolean,
            _ => DataType::Binary,
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types = crate::arg_types(&args);
        let data_type = self.return_type(&types)?;
        if self.name == "image_decode" {
            return Ok(image_field(self.name));
        }
        Ok(Arc::new(Field::new(self.name, data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let name = self.name;
        let output: ArrayRef = match name {
            "image_decode" => {
                let bytes = binary(name, &as_array(&args.args[0], rows)?)?;
                let policy = on_error(name, args.args.get(1))?;
                let results = par_rows(rows, |row| {
                    if bytes.is_null(row) {
                        return Ok(None);
                    }
                    decode(bytes.value(row)).map(Some)
                });
                build_images(&settle(name, policy, results)?)?
            }
            "is_valid_image" => {
                let bytes = binary(name, &as_array(&args.args[0], rows)?)?;
                let valid = par_rows(rows, |row| {
                    (!bytes.is_null(row)).then(|| decode(bytes.value(row)).is_ok())
                });
                Arc::new(BooleanArray::from(valid))
            }
            "image_metadata" => {
                let bytes = binary(name, &as_array(&args.args[0], rows)?)?;
                let mut formats = StringBuilder::new();
                let mut widths = UInt32Builder::new();
                let mut heights = UInt32Builder::new();
                for row in 0..rows {
                    let header = (!bytes.is_null(row))
                        .then(|| {
                            let reader = image::ImageReader::new(Cursor::new(bytes.value(row)))
                                .with_guessed_format()
                                .ok()?;
                            let format = reader.format()?;
                            let (width, height) = reader.into_dimensions().ok()?;
                            Some((format, width, height))
                        })
                        .flatten();
                    match header {
                        Some((format, width, height)) => {
                            formats.append_value(format!("{format:?}").to_lowercase());
                            widths.append_value(width);
                            heights.append_value(height);
                        }
                        None => {
                            formats.append_null();
                            widths.append_null();
                            heights.append_null();
                        }
                    }
                }
                let DataType::Struct(fields) = metadata_type() else {
                    return Err(DataFusionError::Internal("metadata is a struct".into()));
                };
                Arc::new(StructArray::try_new(
                    fields,
                    vec![
                        Arc::new(formats.finish()),
                        Arc::new(widths.finish()),
                        Arc::new(heights.finish()),
                    ],
                    None,
                )?)
            }
            _ => {
                let input = as_array(&args.args[0], rows)?;
                let images = read_images(name, &input)?;
                let format = match &args.args[1] {
                    ColumnarValue::Scalar(value) => string_literal(value).ok_or_else(|| {
                        DataFusionError::Plan(format!("{name}: the format must be a string"))
                    })?,
                    _ => {
                        return Err(DataFusionError::Plan(format!(
                            "{name}: the format must be a constant"
                        )));
                    }
                };
                let quality = match args.args.get(2) {
                    None => 90,
                    Some(ColumnarValue::Scalar(value)) => {
                        let quality = value.cast_to(&DataType::Int64)?;
                        match quality {
                            datafusion::common::ScalarValue::Int64(Some(q))
                                if (1..=100).contains(&q) =>
                            {
                                q as u8
                            }
                            _ => {
                                return Err(DataFusionError::Plan(format!(
                                    "{name}: quality must be a number from 1 to 100"
                                )));
                            }
                        }
                    }
                    Some(_) => {
                        return Err(DataFusionError::Plan(format!(
                            "{name}: quality must be a constant"
                        )));
                    }
                };
                let policy = on_error(name, args.args.get(3))?;
                let results = par_rows(rows, |row| match &images[row] {
                    Some(image) => encode(image, &format, quality).map(Some),
                    None => Ok(None),
                });
                let encoded = settle(name, policy, results)?;
                Arc::new(BinaryArray::from_iter(encoded))
            }
        };
        Ok(ColumnarValue::Array(output))
    }
}
