//! JPEG decoding at a reduced size through libjpeg-turbo (feature `turbojpeg`).
//!
//! A JPEG stores 8x8 blocks of frequencies; libjpeg-turbo can decode them straight to 1/2,
//! 1/4 or 1/8 of the size, doing a fraction of the inverse transforms and colour
//! conversion (Pillow's "draft" mode). When a picture is decoded only to be resized to
//! something smaller, decoding at the smallest such size that is still at least the target
//! saves most of the decode; the resize then does the rest with its proper filter. The
//! library is the system's `libturbojpeg` (Debian's `libturbojpeg0-dev`).

use std::os::raw::{c_int, c_ulong};

use turbojpeg_sys as tj;

use super::Mode;

/// One decompressor per thread, destroyed with the thread.
struct Decompressor(tj::tjhandle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from tjInitDecompress and is destroyed once.
            unsafe { tj::tjDestroy(self.0) };
        }
    }
}

thread_local! {
    static DECOMPRESSOR: Decompressor = Decompressor(
        // SAFETY: tjInitDecompress has no preconditions; NULL (failure) is checked on use.
        unsafe { tj::tjInitDecompress() },
    );
}

/// Decodes the JPEG in `bytes` into `scratch` at the smallest of 1/1, 1/2, 1/4, 1/8 of its
/// size that is at least `min_width` x `min_height`: its width, height, mode and byte
/// length there; `None` if libjpeg-turbo cannot decode it (the caller falls back to the
/// pure-Rust decoder, which gives the error).
pub(super) fn decode_scaled(
    bytes: &[u8],
    min_width: u32,
    min_height: u32,
    scratch: &mut Vec<u8>,
) -> Option<(u32, u32, Mode, usize)> {
    DECOMPRESSOR.with(|decompressor| {
        let handle = decompressor.0;
        if handle.is_null() {
            return None;
        }
        let (mut width, mut height, mut subsampling, mut colorspace) = (0, 0, 0, 0);
        // SAFETY: the pointers are to live locals and to `bytes`, whose length is passed.
        let read = unsafe {
            tj::tjDecompressHeader3(
                handle,
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                &mut width,
                &mut height,
                &mut subsampling,
                &mut colorspace,
            )
        };
        if read != 0 || width <= 0 || height <= 0 {
            return None;
        }
        let gray = colorspace == tj::TJCS_TJCS_GRAY as c_int;
        // CMYK and YCCK pictures decode only to CMYK: leave them to the other decoder.
        if colorspace == tj::TJCS_TJCS_CMYK as c_int || colorspace == tj::TJCS_TJCS_YCCK as c_int {
            return None;
        }
        let scaled = |dim: c_int, denominator: c_int| (dim + denominator - 1) / denominator;
        let denominator = [8, 4, 2, 1]
            .into_iter()
            .find(|&d| {
                scaled(width, d) as u32 >= min_width && scaled(height, d) as u32 >= min_height
            })
            .unwrap_or(1);
        let (out_width, out_height) = (scaled(width, denominator), scaled(height, denominator));
        let (channels, format, mode) = if gray {
            (1, tj::TJPF_TJPF_GRAY, Mode::L)
        } else {
            (3, tj::TJPF_TJPF_RGB, Mode::Rgb)
        };
        let size = out_width as usize * out_height as usize * channels;
        if scratch.len() < size {
            scratch.resize(size, 0);
        }
        // SAFETY: `scratch` holds at least out_width * out_height * channels bytes, which
        // is what tjDecompress2 writes for that size and a packed pitch (0).
        let decoded = unsafe {
            tj::tjDecompress2(
                handle,
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                scratch.as_mut_ptr(),
                out_width,
                0,
                out_height,
                format as c_int,
                0,
            )
        };
        (decoded == 0).then_some((out_width as u32, out_height as u32, mode, size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_at_the_smallest_size_still_large_enough() {
        let picture = image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        });
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(picture)
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .unwrap();
        let jpeg = jpeg.into_inner();
        let mut scratch = Vec::new();
        let (width, height, mode, size) = decode_scaled(&jpeg, 224, 224, &mut scratch).unwrap();
        assert_eq!(
            (width, height, mode, size),
            (320, 240, Mode::Rgb, 320 * 240 * 3)
        );
        let (width, height, _, _) = decode_scaled(&jpeg, 600, 400, &mut scratch).unwrap();
        assert_eq!((width, height), (640, 480));
        assert!(decode_scaled(b"not a jpeg", 1, 1, &mut Vec::new()).is_none());

        // Decoding at half size, then resizing to 224x224, stays close to decoding at full
        // size and resizing: the reduced decode is a box filter in the frequency domain.
        let algorithm =
            fast_image_resize::ResizeAlg::Convolution(fast_image_resize::FilterType::Bilinear);
        let (width, height, mode, size) = decode_scaled(&jpeg, 224, 224, &mut scratch).unwrap();
        let half = super::super::pixels::Image {
            width,
            height,
            mode,
            pixels: std::borrow::Cow::Borrowed(&scratch[..size]),
        };
        let from_half = super::super::transform::resize(&half, 224, 224, algorithm).unwrap();
        let full = super::super::codec::decode(&jpeg).unwrap();
        let from_full = super::super::transform::resize(&full, 224, 224, algorithm).unwrap();
        let mse = from_half
            .pixels
            .iter()
            .zip(from_full.pixels.iter())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            / from_half.pixels.len() as f64;
        let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
        assert!(psnr > 30.0, "PSNR {psnr:.1} dB");
    }
}
