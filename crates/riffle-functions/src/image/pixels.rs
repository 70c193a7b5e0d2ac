//! Decoded images and their Arrow form (`riffle.image` structs).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, StringBuilder, StructArray, UInt32Builder,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::error::{DataFusionError, Result};
use riffle_types::media;

/// How the channels of a pixel are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    L,
    LA,
    Rgb,
    Rgba,
}

impl Mode {
    pub(crate) fn channels(self) -> usize {
        match self {
            Mode::L => 1,
            Mode::LA => 2,
            Mode::Rgb => 3,
            Mode::Rgba => 4,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::L => "L",
            Mode::LA => "LA",
            Mode::Rgb => "RGB",
            Mode::Rgba => "RGBA",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Mode> {
        match name.to_ascii_uppercase().as_str() {
            "L" => Some(Mode::L),
            "LA" => Some(Mode::LA),
            "RGB" => Some(Mode::Rgb),
            "RGBA" => Some(Mode::Rgba),
            _ => None,
        }
    }
}

/// A decoded image: 8 bits per channel, rows top to bottom, channels interleaved (HWC).
///
/// The pixels are borrowed when read from an Arrow column (no copy of what may be
/// megabytes per row) and owned when a function made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image<'a> {
    pub width: u32,
    pub height: u32,
    pub mode: Mode,
    pub pixels: Cow<'a, [u8]>,
}

impl Image<'static> {
    /// From the `image` crate's decoded image, converted to 8 bits per channel.
    pub(crate) fn from_dynamic(image: image::DynamicImage) -> Image<'static> {
        use image::DynamicImage as D;
        let (width, height) = (image.width(), image.height());
        let (mode, pixels) = match image {
            D::ImageLuma8(buffer) => (Mode::L, buffer.into_raw()),
            D::ImageLumaA8(buffer) => (Mode::LA, buffer.into_raw()),
            D::ImageRgb8(buffer) => (Mode::Rgb, buffer.into_raw()),
            D::ImageRgba8(buffer) => (Mode::Rgba, buffer.into_raw()),
            D::ImageLuma16(_) => (Mode::L, image.to_luma8().into_raw()),
            D::ImageLumaA16(_) => (Mode::LA, image.to_luma_alpha8().into_raw()),
            other if other.color().has_alpha() => (Mode::Rgba, other.to_rgba8().into_raw()),
            other => (Mode::Rgb, other.to_rgb8().into_raw()),
        };
        Image {
            width,
            height,
            mode,
            pixels: Cow::Owned(pixels),
        }
    }
}

impl Image<'_> {
    /// As the `image` crate's image (copies the pixels).
    pub(crate) fn to_dynamic(&self) -> Result<image::DynamicImage, String> {
        use image::{DynamicImage as D, ImageBuffer};
        let (w, h, p) = (self.width, self.height, self.pixels.to_vec());
        let bad = || "the pixel buffer does not match the width, height and mode".to_string();
        Ok(match self.mode {
            Mode::L => D::ImageLuma8(ImageBuffer::from_raw(w, h, p).ok_or_else(bad)?),
            Mode::LA => D::ImageLumaA8(ImageBuffer::from_raw(w, h, p).ok_or_else(bad)?),
            Mode::Rgb => D::ImageRgb8(ImageBuffer::from_raw(w, h, p).ok_or_else(bad)?),
            Mode::Rgba => D::ImageRgba8(ImageBuffer::from_raw(w, h, p).ok_or_else(bad)?),
        })
    }
}

/// The return field of functions producing images: an `IMAGE` column.
pub(crate) fn image_field(name: &str) -> FieldRef {
    let field = media::media_field(name, media::IMAGE, true)
        .unwrap_or_else(|| Field::new(name, media::image_type(), true));
    Arc::new(field)
}

/// Reads an `IMAGE` column.
pub(crate) fn read_images<'a>(
    function: &str,
    array: &'a ArrayRef,
) -> Result<Vec<Option<Image<'a>>>> {
    let wrong = || {
        DataFusionError::Plan(format!(
            "{function}: expected an IMAGE (from image_decode), got {}",
            array.data_type()
        ))
    };
    let DataType::Struct(_) = array.data_type() else {
        return Err(wrong());
    };
    let images = array.as_struct();
    let column = |name: &str| images.column_by_name(name).ok_or_else(wrong);
    let heights = column("height")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(wrong)?;
    let widths = column("width")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(wrong)?;
    let modes = column("mode")?.as_string_opt::<i32>().ok_or_else(wrong)?;
    let pixels = column("pixels")?.as_binary_opt::<i32>().ok_or_else(wrong)?;
    (0..images.len())
        .map(|row| {
            if images.is_null(row) {
                return Ok(None);
            }
            let mode = Mode::parse(modes.value(row)).ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "{function}: unknown image mode '{}'",
                    modes.value(row)
                ))
            })?;
            Ok(Some(Image {
                width: widths.value(row),
                height: heights.value(row),
                mode,
                pixels: Cow::Borrowed(pixels.value(row)),
            }))
        })
        .collect()
}

/// Builds an `IMAGE` column.
pub(crate) fn build_images(images: &[Option<Image<'_>>]) -> Result<ArrayRef> {
    let mut heights = UInt32Builder::with_capacity(images.len());
    let mut widths = UInt32Builder::with_capacity(images.len());
    let mut modes = StringBuilder::new();
    let total = images.iter().flatten().map(|i| i.pixels.len()).sum();
    let mut pixels = BinaryBuilder::with_capacity(images.len(), total);
    for image in images {
        match image {
            Some(image) => {
                heights.append_value(image.height);
                widths.append_value(image.width);
                modes.append_value(image.mode.name());
                pixels.append_value(&image.pixels);
            }
            // The children are NULL too, so that `image['width']` of a NULL image is NULL.
            None => {
                heights.append_null();
                widths.append_null();
                modes.append_null();
                pixels.append_null();
            }
        }
    }
    let DataType::Struct(fields) = media::image_type() else {
        return Err(DataFusionError::Internal("IMAGE is not a struct".into()));
    };
    let nulls = NullBuffer::from(images.iter().map(Option::is_some).collect::<Vec<_>>());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(heights.finish()),
        Arc::new(widths.finish()),
        Arc::new(modes.finish()),
        Arc::new(pixels.finish()),
    ];
    Ok(Arc::new(StructArray::try_new(
        fields,
        columns,
        Some(nulls),
    )?))
}
