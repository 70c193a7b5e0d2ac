//! Resizing, cropping, converting and turning images into tensors.

use std::mem::MaybeUninit;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListBuilder, Float32Array, Int32Builder, ListArray,
    StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use fast_image_resize as fr;
use riffle_types::{ElementType, VariableShapeTensorType};

use super::pixels::{Image, Mode, build_images, image_field, read_images};
use super::{as_array, on_error, par_rows, settle, string_literal};

pub(super) fn functions() -> Vec<Arc<ScalarUDF>> {
    [
        ("image_resize", 3..=5),
        ("image_crop", 5..=6),
        ("image_center_crop", 3..=4),
        ("image_convert", 2..=3),
        ("image_to_tensor", 1..=4),
    ]
    .into_iter()
    .map(|(name, arity)| {
        Arc::new(ScalarUDF::from(ImageFunction {
            name,
            arity,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    })
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ImageFunction {
    name: &'static str,
    arity: std::ops::RangeInclusive<usize>,
    signature: Signature,
}

fn tensor_type() -> VariableShapeTensorType {
    VariableShapeTensorType {
        element: ElementType::Float32,
        ndim: 3,
    }
}

/// A constant argument as an unsigned integer.
fn constant_u32(function: &str, what: &str, arg: &ColumnarValue) -> Result<u32> {
    let ColumnarValue::Scalar(value) = arg else {
        return Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a constant"
        )));
    };
    match value.cast_to(&DataType::Int64)? {
        ScalarValue::Int64(Some(n)) if n >= 0 && n <= u32::MAX as i64 => Ok(n as u32),
        _ => Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a whole number of pixels, not {value}"
        ))),
    }
}

fn constant_string(function: &str, what: &str, arg: &ColumnarValue) -> Result<String> {
    match arg {
        ColumnarValue::Scalar(value) => string_literal(value)
            .ok_or_else(|| DataFusionError::Plan(format!("{function}: {what} must be a string"))),
        _ => Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a constant"
        ))),
    }
}

/// Per-channel constants for normalization (`[0.485, 0.456, 0.406]`).
fn constant_floats(function: &str, what: &str, arg: &ColumnarValue) -> Result<Vec<f32>> {
    let ColumnarValue::Scalar(value) = arg else {
        return Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a constant list"
        )));
    };
    let array = value.to_array()?;
    let values = match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value(0),
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(0),
        _ => {
            return Err(DataFusionError::Plan(format!(
                "{function}: {what} must be a list of numbers such as [0.5, 0.5, 0.5]"
            )));
        }
    };
    let values = datafusion::arrow::compute::cast(&values, &DataType::Float64)?;
    Ok(values
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .map(|v| *v as f32)
        .collect())
}

fn filter(function: &str, name: &str) -> Result<fr::ResizeAlg> {
    use fr::{FilterType, ResizeAlg};
    Ok(match name.to_ascii_lowercase().as_str() {
        "nearest" => ResizeAlg::Nearest,
        "bilinear" | "linear" => ResizeAlg::Convolution(FilterType::Bilinear),
        "bicubic" | "cubic" => ResizeAlg::Convolution(FilterType::CatmullRom),
        "lanczos" | "lanczos3" => ResizeAlg::Convolution(FilterType::Lanczos3),
        "box" => ResizeAlg::Convolution(FilterType::Box),
        other => {
            return Err(DataFusionError::Plan(format!(
                "{function}: unknown filter '{other}' (use nearest, bilinear, bicubic, lanczos3 or box)"
            )));
        }
    })
}

fn pixel_type(mode: Mode) -> fr::PixelType {
    match mode {
        Mode::L => fr::PixelType::U8,
        Mode::LA => fr::PixelType::U8x2,
        Mode::Rgb => fr::PixelType::U8x3,
        Mode::Rgba => fr::PixelType::U8x4,
    }
}

pub(crate) fn resize(
    image: &Image,
    width: u32,
    height: u32,
    algorithm: fr::ResizeAlg,
) -> std::result::Result<Image<'static>, String> {
    if width == 0 || height == 0 {
        return Err(format!("cannot resize to {width}x{height}"));
    }
    if image.width == 0 || image.height == 0 {
        return Err("the image is empty".into());
    }
    let source = fr::images::ImageRef::new(
        image.width,
        image.height,
        &image.pixels,
        pixel_type(image.mode),
    )
    .map_err(|e| e.to_string())?;
    let mut target = fr::images::Image::new(width, height, pixel_type(image.mode));
    thread_local! {
        /// A resizer per thread: it keeps its scratch buffers between images.
        static RESIZER: std::cell::RefCell<fr::Resizer> = std::cell::RefCell::new(fr::Resizer::new());
    }
    RESIZER
        .with(|resizer| {
            resizer.borrow_mut().resize(
                &source,
                &mut target,
                &fr::ResizeOptions::new().resize_alg(algorithm),
            )
        })
        .map_err(|e| e.to_string())?;
    Ok(Image {
        width,
        height,
        mode: image.mode,
        pixels: target.into_vec().into(),
    })
}

fn crop(
    image: &Image,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
) -> std::result::Result<Image<'static>, String> {
    let fits = x.checked_add(width).is_some_and(|r| r <= image.width)
        && y.checked_add(height).is_some_and(|b| b <= image.height);
    if !fits || width == 0 || height == 0 {
        return Err(format!(
            "the rectangle {width}x{height} at ({x}, {y}) is not inside the {}x{} image",
            image.width, image.height
        ));
    }
    let channels = image.mode.channels();
    let stride = image.width as usize * channels;
    let mut pixels = Vec::with_capacity(width as usize * height as usize * channels);
    for row in y as usize..(y + height) as usize {
        let start = row * stride + x as usize * channels;
        pixels.extend_from_slice(&image.pixels[start..start + width as usize * channels]);
    }
    Ok(Image {
        width,
        height,
        mode: image.mode,
        pixels: pixels.into(),
    })
}

fn convert<'a>(image: &Image<'a>, mode: Mode) -> std::result::Result<Image<'a>, String> {
    if image.mode == mode {
        return Ok(image.clone());
    }
    let dynamic = image.to_dynamic()?;
    let pixels = match mode {
        Mode::L => dynamic.to_luma8().into_raw(),
        Mode::LA => dynamic.to_luma_alpha8().into_raw(),
        Mode::Rgb => dynamic.to_rgb8().into_raw(),
        Mode::Rgba => dynamic.to_rgba8().into_raw(),
    };
    Ok(Image {
        width: image.width,
        height: image.height,
        mode,
        pixels: pixels.into(),
    })
}

/// Float values in [0, 1], then `(v - mean[c]) / std[c]`, in CHW or HWC order, written
/// into `out` (which holds `height * width * channels` values); returns the shape.
fn to_tensor_into(
    image: &Image,
    chw: bool,
    mean: &[f32],
    std: &[f32],
    out: &mut [MaybeUninit<f32>],
) -> std::result::Result<[i32; 3], String> {
    let channels = image.mode.channels();
    for (what, values) in [("mean", mean), ("std", std)] {
        if !values.is_empty() && values.len() != channels {
            return Err(format!(
                "{what} has {} values for an image with {channels} channels",
                values.len()
            ));
        }
    }
    if std.contains(&0.0) {
        return Err("std has a zero".into());
    }
    let (h, w) = (image.height as usize, image.width as usize);
    if image.pixels.len() != h * w * channels || out.len() != image.pixels.len() {
        return Err("the pixel buffer does not match the width, height and mode".into());
    }
    // (v / 255 - mean) * (1 / std), per channel: exactly v / 255 without mean and std,
    // as torchvision's ToTensor.
    let mut means = [0f32; 4];
    let mut scales = [1f32; 4];
    for channel in 0..channels {
        means[channel] = mean.get(channel).copied().unwrap_or(0.0);
        scales[channel] = 1.0 / std.get(channel).copied().unwrap_or(1.0);
    }
    if chw {
        let plane = h * w;
        for channel in 0..channels {
            let (m, s) = (means[channel], scales[channel]);
            let target = &mut out[channel * plane..(channel + 1) * plane];
            for (value, pixel) in target
                .iter_mut()
                .zip(image.pixels.iter().skip(channel).step_by(channels))
            {
                value.write((f32::from(*pixel) / 255.0 - m) * s);
            }
        }
        Ok([channels as i32, h as i32, w as i32])
    } else {
        for (value, (index, pixel)) in out.iter_mut().zip(image.pixels.iter().enumerate()) {
            let channel = index % channels;
            value.write((f32::from(*pixel) / 255.0 - means[channel]) * scales[channel]);
        }
        Ok([h as i32, w as i32, channels as i32])
    }
}

/// Every image as a tensor: the values of all rows go into one buffer, each row's part
/// filled in place on the worker threads, and become the tensor column without a copy.
fn images_to_tensors(
    name: &str,
    images: &[Option<Image>],
    chw: bool,
    mean: &[f32],
    std: &[f32],
) -> Result<ArrayRef> {
    let lengths: Vec<usize> = images
        .iter()
        .map(|i| i.as_ref().map_or(0, |i| i.pixels.len()))
        .collect();
    // Every value is written exactly once below, so the buffer is not zeroed first (for a
    // batch of 224x224 RGB tensors that saves writing 600 KB per row twice).
    let total: usize = lengths.iter().sum();
    let mut values: Vec<f32> = Vec::with_capacity(total);
    let mut parts = Vec::with_capacity(images.len());
    let mut rest = &mut values.spare_capacity_mut()[..total];
    for (image, &length) in images.iter().zip(&lengths) {
        let (part, tail) = rest.split_at_mut(length);
        parts.push((image.as_ref(), part));
        rest = tail;
    }
    let shapes = super::par_map(parts, |(image, part)| {
        image
            .map(|image| to_tensor_into(image, chw, mean, std, part))
            .transpose()
    });
    let shapes = settle(name, crate::row_errors::OnError::Raise, shapes)?;
    // SAFETY: `settle` returned, so every row succeeded: `to_tensor_into` checks its inputs
    // before writing and, once it writes, initializes its whole part (one value per pixel
    // and channel, `part.len()` of them); NULL rows have parts of length 0. The parts tile
    // the first `total` slots of the capacity, so all of them are initialized.
    unsafe { values.set_len(total) };
    let data = ListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(Float32Array::from(values)),
        Some(NullBuffer::from(
            shapes.iter().map(Option::is_some).collect::<Vec<_>>(),
        )),
    )?;
    let mut shape_builder = FixedSizeListBuilder::new(Int32Builder::new(), 3)
        .with_field(Field::new("item", DataType::Int32, false));
    for shape in &shapes {
        shape_builder
            .values()
            .append_slice(&shape.unwrap_or([0, 0, 0]));
        shape_builder.append(shape.is_some());
    }
    let DataType::Struct(fields) = tensor_type().storage_type() else {
        return Err(DataFusionError::Internal(
            "a variable-shape tensor is a struct".into(),
        ));
    };
    let nulls = NullBuffer::from(shapes.iter().map(Option::is_some).collect::<Vec<_>>());
    Ok(Arc::new(StructArray::try_new(
        fields,
        vec![Arc::new(data), Arc::new(shape_builder.finish())],
        Some(nulls),
    )?))
}

impl ScalarUDFImpl for ImageFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        crate::check_arity(self.name, &self.arity, arg_types.len())?;
        Ok(if self.name == "image_to_tensor" {
            tensor_type().storage_type()
        } else {
            riffle_types::media::image_type()
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types = crate::arg_types(&args);
        self.return_type(&types)?;
        Ok(if self.name == "image_to_tensor" {
            Arc::new(tensor_type().field(self.name, true))
        } else {
            image_field(self.name)
        })
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match fuse_decode(self.name, &args) {
            Some(fused) => Ok(ExprSimplifyResult::Simplified(fused)),
            None => Ok(ExprSimplifyResult::Original(args)),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name;
        let rows = args.number_rows;
        let input = as_array(&args.args[0], rows)?;
        if name == "image_resize" && !matches!(input.data_type(), DataType::Struct(_)) {
            return resize_encoded(&args, &input);
        }
        let images = read_images(name, &input)?;
        let arg = |i: usize| &args.args[i];
        if name == "image_to_tensor" {
            let chw = match args.args.get(1) {
                None => true,
                Some(layout) => match constant_string(name, "layout", layout)?
                    .to_ascii_uppercase()
                    .as_str()
                {
                    "CHW" => true,
                    "HWC" => false,
                    other => {
                        return Err(DataFusionError::Plan(format!(
                            "{name}: layout must be 'CHW' or 'HWC', not '{other}'"
                        )));
                    }
                },
            };
            let mean = match args.args.get(2) {
                Some(a) => constant_floats(name, "mean", a)?,
                None => Vec::new(),
            };
            let std = match args.args.get(3) {
                Some(a) => constant_floats(name, "std", a)?,
                None => Vec::new(),
            };
            return Ok(ColumnarValue::Array(images_to_tensors(
                name, &images, chw, &mean, &std,
            )?));
        }
        let (results, policy) = match name {
            "image_resize" => {
                let width = constant_u32(name, "width", arg(1))?;
                let height = constant_u32(name, "height", arg(2))?;
                let algorithm = match args.args.get(3) {
                    Some(f) => filter(name, &constant_string(name, "filter", f)?)?,
                    None => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
                };
                let policy = on_error(name, args.args.get(4))?;
                (
                    par_rows(rows, |row| {
                        images[row]
                            .as_ref()
                            .map(|i| resize(i, width, height, algorithm))
                            .transpose()
                    }),
                    policy,
                )
            }
            "image_crop" => {
                let [x, y, width, height] =
                    [1, 2, 3, 4].map(|i| constant_u32(name, "the rectangle", arg(i)));
                let (x, y, width, height) = (x?, y?, width?, height?);
                let policy = on_error(name, args.args.get(5))?;
                (
                    par_rows(rows, |row| {
                        images[row]
                            .as_ref()
                            .map(|i| crop(i, x, y, width, height))
                            .transpose()
                    }),
                    policy,
                )
            }
            "image_center_crop" => {
                let width = constant_u32(name, "width", arg(1))?;
                let height = constant_u32(name, "height", arg(2))?;
                let policy = on_error(name, args.args.get(3))?;
                (
                    par_rows(rows, |row| {
                        images[row]
                            .as_ref()
                            .map(|i| {
                                let x = i.width.saturating_sub(width) / 2;
                                let y = i.height.saturating_sub(height) / 2;
                                crop(i, x, y, width, height)
                            })
                            .transpose()
                    }),
                    policy,
                )
            }
            _ => {
                let mode_name = constant_string(name, "mode", arg(1))?;
                let mode = Mode::parse(&mode_name).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "{name}: unknown mode '{mode_name}' (use L, LA, RGB or RGBA)"
                    ))
                })?;
                let policy = on_error(name, args.args.get(2))?;
                (
                    par_rows(rows, |row| {
                        images[row].as_ref().map(|i| convert(i, mode)).transpose()
                    }),
                    policy,
                )
            }
        };
        Ok(ColumnarValue::Array(build_images(&settle(
            name, policy, results,
        )?)?))
    }
}

/// `image_resize(image_decode(bytes), ...)` as `image_resize(bytes, ...)`: each row is
/// decoded and resized in one pass, so the full-size pixels never become an Arrow column
/// (for a 640x480 picture that saves three copies of 900 KB). Only when both calls treat
/// bad rows the same way: the decode's `on_error` absent or equal to the resize's.
fn fuse_decode(name: &str, args: &[Expr]) -> Option<Expr> {
    if name != "image_resize" {
        return None;
    }
    let Some(Expr::ScalarFunction(inner)) = args.first() else {
        return None;
    };
    if inner.func.name() != "image_decode" || inner.args.is_empty() {
        return None;
    }
    let policy = |arg: Option<&Expr>| match arg {
        None => Some("raise".to_string()),
        Some(Expr::Literal(value, _)) => string_literal(value).map(|s| s.to_ascii_lowercase()),
        Some(_) => None,
    };
    if policy(inner.args.get(1))? != policy(args.get(4))? {
        return None;
    }
    let mut fused = args.to_vec();
    fused[0] = inner.args[0].clone();
    let resize = ScalarUDF::from(ImageFunction {
        name: "image_resize",
        arity: 3..=5,
        signature: Signature::variadic_any(Volatility::Immutable),
    });
    Some(resize.call(fused))
}

/// `image_resize` of encoded bytes: decode and resize each row in one pass.
fn resize_encoded(args: &ScalarFunctionArgs, input: &ArrayRef) -> Result<ColumnarValue> {
    let name = "image_resize";
    let bytes = super::codec::binary(name, input)?;
    let width = constant_u32(name, "width", &args.args[1])?;
    let height = constant_u32(name, "height", &args.args[2])?;
    let algorithm = match args.args.get(3) {
        Some(f) => filter(name, &constant_string(name, "filter", f)?)?,
        None => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
    };
    let policy = on_error(name, args.args.get(4))?;
    let results = par_rows(args.number_rows, |row| {
        if bytes.is_null(row) {
            return Ok(None);
        }
        super::codec::with_decoded(bytes.value(row), (width, height), |image| {
            resize(image, width, height, algorithm)
        })
        .map(Some)
    });
    Ok(ColumnarValue::Array(build_images(&settle(
        name, policy, results,
    )?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_tensor(
        image: &Image,
        chw: bool,
        mean: &[f32],
        std: &[f32],
    ) -> std::result::Result<(Vec<f32>, [i32; 3]), String> {
        let mut values = vec![MaybeUninit::new(0f32); image.pixels.len()];
        let shape = to_tensor_into(image, chw, mean, std, &mut values)?;
        // SAFETY: every slot was initialized to 0.0 above.
        Ok((
            values.iter().map(|v| unsafe { v.assume_init() }).collect(),
            shape,
        ))
    }

    fn gradient(width: u32, height: u32) -> Image<'static> {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
            }
        }
        Image {
            width,
            height,
            mode: Mode::Rgb,
            pixels: pixels.into(),
        }
    }

    #[test]
    fn crop_takes_the_rectangle_and_rejects_one_outside() {
        let image = gradient(10, 8);
        let cropped = crop(&image, 2, 3, 4, 2).unwrap();
        assert_eq!((cropped.width, cropped.height), (4, 2));
        assert_eq!(
            &cropped.pixels[0..3],
            &image.pixels[(3 * 10 + 2) * 3..(3 * 10 + 2) * 3 + 3]
        );
        assert!(crop(&image, 8, 0, 4, 2).unwrap_err().contains("not inside"));
    }

    #[test]
    fn resize_keeps_a_flat_image_flat() {
        let image = Image {
            width: 50,
            height: 40,
            mode: Mode::Rgb,
            pixels: [10u8, 200, 30].repeat(2000).into(),
        };
        let algorithm = fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3);
        let resized = resize(&image, 17, 23, algorithm).unwrap();
        assert_eq!(resized.pixels.len(), 17 * 23 * 3);
        assert!(resized.pixels.chunks(3).all(|p| p == [10, 200, 30]));
    }

    #[test]
    fn tensors_are_chw_or_hwc_and_normalized() {
        let image = Image {
            width: 2,
            height: 1,
            mode: Mode::Rgb,
            pixels: vec![255, 0, 51, 0, 255, 102].into(),
        };
        let (chw, shape) = to_tensor(&image, true, &[], &[]).unwrap();
        assert_eq!(shape, [3, 1, 2]);
        assert_eq!(chw, vec![1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
        let (hwc, shape) = to_tensor(&image, false, &[0.5, 0.5, 0.5], &[0.5, 0.5, 0.5]).unwrap();
        assert_eq!(shape, [1, 2, 3]);
        assert!((hwc[0] - 1.0).abs() < 1e-6 && (hwc[1] + 1.0).abs() < 1e-6);
    }
}
