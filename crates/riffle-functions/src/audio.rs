//! Audio functions over `AUDIO` values (sample rate, channels, interleaved f32 samples).
//!
//! | function | does |
//! |---|---|
//! | `audio_decode(bytes [, on_error])` | WAV, FLAC, MP3, Ogg Vorbis (symphonia, pure Rust) -> `AUDIO` |
//! | `audio_resample(audio, rate [, on_error])` | to another sample rate (windowed-sinc, band-limited) |
//! | `audio_split(audio, seconds)` | a list of pieces of `seconds` each (the last may be shorter); `UNNEST` makes rows |
//! | `audio_duration(audio)` | seconds, as a double |
//!
//! A file whose header promises more frames than it holds (a truncated download) is an
//! error, not a shorter clip.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, Float64Array, ListArray, ListBuilder, StructArray,
    UInt16Builder, UInt32Builder,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float32Type, UInt16Type, UInt32Type,
};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use riffle_types::media;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as AudioError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::row_errors::{on_error, settle};

/// The audio functions.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    [
        ("audio_decode", 1..=2),
        ("audio_resample", 2..=3),
        ("audio_split", 2..=2),
        ("audio_duration", 1..=1),
    ]
    .into_iter()
    .map(|(name, arity)| {
        Arc::new(ScalarUDF::from(AudioFunction {
            name,
            arity,
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    })
    .collect()
}

/// Decoded audio.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Audio {
    pub(crate) sample_rate: u32,
    pub(crate) channels: u16,
    /// Interleaved: frame 0 of every channel, then frame 1, ...
    pub(crate) samples: Vec<f32>,
}

impl Audio {
    fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }
}

/// Decodes any container and codec symphonia knows, to interleaved f32.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Audio, String> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions {
                enable_gapless: true,
                ..FormatOptions::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(|_| {
            let start: String = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("not a WAV/FLAC/MP3/Ogg Vorbis file (starts with 0x{start})")
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("no audio track")?;
    let track_id = track.id;
    let promised = track.codec_params.n_frames;
    let mut sample_rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut channels = track.codec_params.channels.map_or(0, |c| c.count() as u16);
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| format!("unsupported codec: {e}"))?;
    let mut samples = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(AudioError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("corrupt stream: {e}")),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder
            .decode(&packet)
            .map_err(|e| format!("corrupt audio data: {e}"))?;
        let spec = *decoded.spec();
        sample_rate = spec.rate;
        channels = spec.channels.count() as u16;
        let needed = decoded.capacity() as u64;
        let reusable = buffer
            .as_ref()
            .is_some_and(|b| b.capacity() as u64 >= needed * u64::from(channels));
        if !reusable {
            buffer = Some(SampleBuffer::new(needed, spec));
        }
        if let Some(buffer) = buffer.as_mut() {
            buffer.copy_interleaved_ref(decoded);
            samples.extend_from_slice(buffer.samples());
        }
    }
    if channels == 0 || sample_rate == 0 {
        return Err("no sample rate or channel count in the stream".into());
    }
    let audio = Audio {
        sample_rate,
        channels,
        samples,
    };
    if let Some(promised) = promised
        && (audio.frames() as u64) < promised
    {
        return Err(format!(
            "truncated: the header promises {promised} frames, the data holds {}",
            audio.frames()
        ));
    }
    if audio.samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(audio)
}

/// Band-limited resampling: each output sample is a Hann-windowed sinc sum of the input
/// around its position, with the cutoff at the lower of the two Nyquist frequencies.
pub(crate) fn resample(audio: &Audio, rate: u32) -> Audio {
    if rate == audio.sample_rate || audio.samples.is_empty() {
        return Audio {
            sample_rate: rate,
            ..audio.clone()
        };
    }
    const ZERO_CROSSINGS: f64 = 16.0;
    let channels = usize::from(audio.channels.max(1));
    let frames = audio.frames();
    let ratio = f64::from(rate) / f64::from(audio.sample_rate);
    let cutoff = ratio.min(1.0);
    let half_width = ZERO_CROSSINGS / cutoff;
    let out_frames = ((frames as f64) * ratio).round() as usize;
    let mut out = vec![0f32; out_frames * channels];
    let mut sums = vec![0f64; channels];
    for j in 0..out_frames {
        let center = j as f64 / ratio;
        let first = ((center - half_width).ceil().max(0.0)) as usize;
        let last = ((center + half_width).floor() as usize).min(frames - 1);
        sums.fill(0.0);
        let mut weight_sum = 0f64;
        for k in first..=last {
            let x = k as f64 - center;
            let window = 0.5 + 0.5 * (std::f64::consts::PI * x / half_width).cos();
            let t = x * cutoff;
            let sinc = if t.abs() < 1e-12 {
                1.0
            } else {
                (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
            };
            let weight = window * sinc;
            weight_sum += weight;
            let frame = &audio.samples[k * channels..(k + 1) * channels];
            for (sum, sample) in sums.iter_mut().zip(frame) {
                *sum += f64::from(*sample) * weight;
            }
        }
        // Dividing by the weights' sum keeps a constant signal constant (unity DC gain).
        let norm = if weight_sum.abs() > 1e-9 {
            weight_sum
        } else {
            1.0
        };
        for (out, sum) in out[j * channels..(j + 1) * channels].iter_mut().zip(&sums) {
            *out = (sum / norm) as f32;
        }
    }
    Audio {
        sample_rate: rate,
        channels: audio.channels,
        samples: out,
    }
}

/// Pieces of `seconds` each; the last holds what is left.
pub(crate) fn split(audio: &Audio, seconds: f64) -> Vec<Audio> {
    let channels = usize::from(audio.channels.max(1));
    let frames_per_piece = ((seconds * f64::from(audio.sample_rate)).round() as usize).max(1);
    audio
        .samples
        .chunks(frames_per_piece * channels)
        .map(|piece| Audio {
            sample_rate: audio.sample_rate,
            channels: audio.channels,
            samples: piece.to_vec(),
        })
        .collect()
}

fn audio_field(name: &str) -> FieldRef {
    let field = media::media_field(name, media::AUDIO, true)
        .unwrap_or_else(|| Field::new(name, media::audio_type(), true));
    Arc::new(field)
}

/// Reads an `AUDIO` column.
fn read_audio(function: &str, array: &ArrayRef) -> Result<Vec<Option<Audio>>> {
    let wrong = || {
        DataFusionError::Plan(format!(
            "{function}: expected AUDIO (from audio_decode), got {}",
            array.data_type()
        ))
    };
    let DataType::Struct(_) = array.data_type() else {
        return Err(wrong());
    };
    let audio = array.as_struct();
    let column = |name: &str| audio.column_by_name(name).ok_or_else(wrong);
    let rates = column("sample_rate")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(wrong)?;
    let channels = column("channels")?
        .as_primitive_opt::<UInt16Type>()
        .ok_or_else(wrong)?;
    let samples = column("samples")?.as_list_opt::<i32>().ok_or_else(wrong)?;
    Ok((0..audio.len())
        .map(|row| {
            (!audio.is_null(row)).then(|| Audio {
                sample_rate: rates.value(row),
                channels: channels.value(row),
                samples: samples
                    .value(row)
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec(),
            })
        })
        .collect())
}

/// Builds an `AUDIO` column.
fn build_audio(values: &[Option<Audio>]) -> Result<StructArray> {
    let mut rates = UInt32Builder::with_capacity(values.len());
    let mut channels = UInt16Builder::with_capacity(values.len());
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut samples = ListBuilder::new(Float32Builder::new()).with_field(item);
    for value in values {
        match value {
            Some(audio) => {
                rates.append_value(audio.sample_rate);
                channels.append_value(audio.channels);
                samples.values().append_slice(&audio.samples);
                samples.append(true);
            }
            None => {
                rates.append_null();
                channels.append_null();
                samples.append(false);
            }
        }
    }
    let DataType::Struct(fields) = media::audio_type() else {
        return Err(DataFusionError::Internal("AUDIO is not a struct".into()));
    };
    let nulls = NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>());
    Ok(StructArray::try_new(
        fields,
        vec![
            Arc::new(rates.finish()),
            Arc::new(channels.finish()),
            Arc::new(samples.finish()),
        ],
        Some(nulls),
    )?)
}

fn constant_f64(function: &str, what: &str, arg: &ColumnarValue) -> Result<f64> {
    match arg {
        ColumnarValue::Scalar(value) => match value.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(v)) if v > 0.0 && v.is_finite() => Ok(v),
            _ => Err(DataFusionError::Plan(format!(
                "{function}: {what} must be a number above 0, not {value}"
            ))),
        },
        ColumnarValue::Array(_) => Err(DataFusionError::Plan(format!(
            "{function}: {what} must be a constant"
        ))),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AudioFunction {
    name: &'static str,
    arity: std::ops::RangeInclusive<usize>,
    signature: Signature,
}

impl ScalarUDFImpl for AudioFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        crate::check_arity(self.name, &self.arity, arg_types.len())?;
        Ok(match self.name {
            "audio_split" => DataType::List(audio_field("item")),
            "audio_duration" => DataType::Float64,
            _ => media::audio_type(),
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types = crate::arg_types(&args);
        let data_type = self.return_type(&types)?;
        Ok(match self.name {
            "audio_decode" | "audio_resample" => audio_field(self.name),
            _ => Arc::new(Field::new(self.name, data_type, true)),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name;
        let rows = args.number_rows;
        let input = args.args[0].clone().into_array(rows)?;
        let output: ArrayRef = match name {
            "audio_decode" => {
                let bytes = match input.data_type() {
                    DataType::Binary => input.as_binary::<i32>().clone(),
                    other => {
                        return Err(DataFusionError::Plan(format!(
                            "{name}: expected bytes (BINARY), got {other}"
                        )));
                    }
                };
                let policy = on_error(name, args.args.get(1))?;
                let results = crate::image::par_rows(rows, |row| {
                    if bytes.is_null(row) {
                        return Ok(None);
                    }
                    decode(bytes.value(row)).map(Some)
                });
                Arc::new(build_audio(&settle(name, policy, results)?)?)
            }
            "audio_resample" => {
                let rate = constant_f64(name, "the rate", &args.args[1])?;
                if rate > f64::from(u32::MAX) {
                    return Err(DataFusionError::Plan(format!(
                        "{name}: the rate {rate} is too high"
                    )));
                }
                let policy = on_error(name, args.args.get(2))?;
                let audio = read_audio(name, &input)?;
                let results = crate::image::par_rows(rows, |row| {
                    Ok(audio[row].as_ref().map(|a| resample(a, rate as u32)))
                });
                Arc::new(build_audio(&settle(name, policy, results)?)?)
            }
            "audio_split" => {
                let seconds = constant_f64(name, "seconds", &args.args[1])?;
                let audio = read_audio(name, &input)?;
                let mut offsets = vec![0i32];
                let mut nulls = Vec::with_capacity(rows);
                let mut pieces = Vec::new();
                for value in &audio {
                    if let Some(audio) = value {
                        pieces.extend(split(audio, seconds).into_iter().map(Some));
                    }
                    nulls.push(value.is_some());
                    offsets.push(pieces.len() as i32);
                }
                Arc::new(ListArray::try_new(
                    audio_field("item"),
                    datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
                    Arc::new(build_audio(&pieces)?),
                    Some(NullBuffer::from(nulls)),
                )?)
            }
            _ => {
                let audio = read_audio(name, &input)?;
                Arc::new(Float64Array::from_iter(audio.iter().map(|a| {
                    a.as_ref()
                        .map(|a| a.frames() as f64 / f64::from(a.sample_rate.max(1)))
                })))
            }
        };
        Ok(ColumnarValue::Array(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV file.
    pub(crate) fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    fn tone(rate: u32, hz: f64, seconds: f64) -> Vec<i16> {
        (0..(f64::from(rate) * seconds) as usize)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (0.5 * (2.0 * std::f64::consts::PI * hz * t).sin() * 32767.0) as i16
            })
            .collect()
    }

    #[test]
    fn wav_decodes_and_truncation_is_an_error() {
        let bytes = wav(8000, 1, &tone(8000, 440.0, 0.5));
        let audio = decode(&bytes).unwrap();
        assert_eq!((audio.sample_rate, audio.channels), (8000, 1));
        assert_eq!(audio.samples.len(), 4000);
        assert!(
            (audio.samples[10] - 0.5 * (2.0 * std::f32::consts::PI * 440.0 * 10.0 / 8000.0).sin())
                .abs()
                < 1e-3
        );
        let error = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        let error = decode(b"<html>").unwrap_err();
        assert!(
            error.contains("not a WAV/FLAC/MP3/Ogg Vorbis file (starts with 0x3c68746d)"),
            "{error}"
        );
        assert!(decode(b"").is_err());
    }

    #[test]
    fn resampling_keeps_a_tone_and_removes_what_cannot_be_represented() {
        let rate = 48_000;
        let audio = decode(&wav(rate, 1, &tone(rate, 440.0, 1.0))).unwrap();
        let down = resample(&audio, 16_000);
        assert_eq!(down.sample_rate, 16_000);
        assert_eq!(down.samples.len(), 16_000);
        // The 440 Hz tone survives: compare with the ideal tone away from the edges.
        let worst = (1000..15000)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                let ideal = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
                (f64::from(down.samples[i]) - ideal).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst < 0.01, "{worst}");
        // A 12 kHz tone is above the new Nyquist (8 kHz): it must mostly vanish, not alias.
        let high = decode(&wav(rate, 1, &tone(rate, 12_000.0, 1.0))).unwrap();
        let down = resample(&high, 16_000);
        let rms = (down.samples[1000..15000]
            .iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>()
            / 14000.0)
            .sqrt();
        assert!(rms < 0.02, "aliased energy {rms}");
    }

    #[test]
    fn split_cuts_pieces_of_equal_length() {
        let audio = Audio {
            sample_rate: 10,
            channels: 2,
            samples: (0..50).map(|i| i as f32).collect(),
        };
        let pieces = split(&audio, 1.0);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].samples.len(), 20);
        assert_eq!(pieces[2].samples.len(), 10);
        assert_eq!(pieces[1].samples[0], 20.0);
    }
}
