//! Image functions over `IMAGE` values (decoded pixels) and encoded bytes.
//!
//! | function | does |
//! |---|---|
//! | `image_decode(bytes [, on_error])` | JPEG, PNG, WebP, GIF (first frame), BMP, TIFF -> `IMAGE` |
//! | `image_encode(image, format [, quality])` | `IMAGE` -> bytes (`'png'`, `'jpeg'`, `'webp'` (lossless), `'bmp'`, `'tiff'`) |
//! | `image_resize(image, width, height [, filter])` | SIMD resize (`'nearest'`, `'bilinear'`, `'bicubic'`, `'lanczos3'`) |
//! | `image_crop(image, x, y, width, height)` | a rectangle of the image |
//! | `image_center_crop(image, width, height)` | the centered rectangle |
//! | `image_convert(image, mode)` | to `'L'`, `'LA'`, `'RGB'` or `'RGBA'` |
//! | `image_to_tensor(image [, layout])` | float32 values in [0, 1], `'CHW'` (default) or `'HWC'` |
//! | `image_metadata(bytes)` | format, width, height, color type, read from the header only |
//! | `is_valid_image(bytes)` | whether the bytes decode |
//!
//! Functions that can fail on one row take a last argument `on_error`: `'raise'` (the
//! default) stops the job with an error naming the function and what was wrong; `'null'`
//! yields NULL for that row. Rows of a batch are processed on several threads.

mod codec;
mod pixels;
mod transform;
#[cfg(feature = "turbojpeg")]
mod turbo;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

pub(crate) use crate::row_errors::{on_error, settle};
pub(crate) use crate::string_literal;
pub(crate) use pixels::Mode;

/// The images of an `IMAGE` column as PNG files, `None` for a NULL row (for callers outside
/// SQL: a vision model's request carries its images encoded).
pub fn png_files(column: &ArrayRef) -> std::result::Result<Vec<Option<Vec<u8>>>, String> {
    let images = pixels::read_images("png_files", column).map_err(|e| e.to_string())?;
    images
        .iter()
        .map(|image| {
            image
                .as_ref()
                .map(|image| codec::encode(image, "png", 90))
                .transpose()
        })
        .collect()
}

/// The image functions.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    let mut functions = codec::functions();
    functions.extend(transform::functions());
    functions
}

/// An argument as an array of `rows` rows (constants repeated).
pub(crate) fn as_array(arg: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    arg.clone().into_array(rows)
}

/// Runs `work` on every item, in order, on rayon's pool of one thread per core.
///
/// The pool is shared by every task of every job in the process, so that two subtasks
/// decoding at once do not start twice as many threads as there are cores, and a slow row
/// does not leave a core idle (work stealing). The calling thread waits for rayon: on a
/// tokio worker it first hands its other tasks (downloads, channels) to another thread (see
/// [`blocking`]), so that CPU work never stalls the I/O that feeds it.
pub(crate) fn par_map<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() < 2 {
        return items.into_iter().map(&work).collect();
    }
    blocking(|| items.into_par_iter().with_max_len(1).map(work).collect())
}

/// Runs `work` on every row (see [`par_map`]).
pub(crate) fn par_rows<T: Send>(rows: usize, work: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    use rayon::prelude::*;
    if rows < 2 {
        return (0..rows).map(&work).collect();
    }
    blocking(|| {
        (0..rows)
            .into_par_iter()
            .with_max_len(1)
            .map(work)
            .collect()
    })
}

/// Runs `wait`, which blocks the thread, telling a multi-threaded tokio runtime first
/// (`block_in_place`), so that the worker's other tasks move to another thread meanwhile.
/// Elsewhere (a current-thread runtime, a plain thread, a rayon worker) it just runs.
fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let on_worker = rayon::current_thread_index().is_none()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    }
}
