//! Audio decoding of files written by libsndfile (through Python's soundfile): WAV, FLAC,
//! Ogg Vorbis and MP3, plus truncated and mislabeled files.

use std::process::Command;

use super::{query_error, rows, session};

/// Writes a 1.5 s stereo tone (440 Hz left, 660 Hz right) at 44.1 kHz in four formats,
/// a truncated FLAC and a PNG named `.wav`.
fn audio_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np, soundfile as sf
out = sys.argv[1]
t = np.arange(int(44100 * 1.5)) / 44100
x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
for fmt, sub, ext in [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                      ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")]:
    sf.write(f"{out}/tone.{ext}", x, 44100, format=fmt, subtype=sub)
data = open(f"{out}/tone.flac", "rb").read()
open(f"{out}/cut.flac", "wb").write(data[: len(data) // 2])
open(f"{out}/picture.wav", "wb").write(b"\x89PNG\r\n\x1a\n" + bytes(100))
"#;
    let output = Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .expect("python3 must be installed");
    assert!(
        output.status.success(),
        "soundfile must be installed (pip install soundfile; .ci/run installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_decodes_resamples_and_splits() {
    let dir = audio_folder();
    let root = dir.path().display();
    let session = session(2);
    session
        .sql(&format!(
            "CREATE VIEW sounds AS SELECT regexp_replace(file['uri'], '.*/', '') AS name, \
             try_audio_decode(file_read(file)) AS d FROM files('{root}/')"
        ))
        .await
        .unwrap();
    let table = rows(
        &session,
        "SELECT name, d['value']['sample_rate'] AS rate, d['value']['channels'] AS ch, \
         round(audio_duration(d['value']), 1) AS seconds, d['error'] IS NOT NULL AS failed \
         FROM sounds ORDER BY name",
    )
    .await;
    for line in [
        "| cut.flac    |       |    |         | true   |",
        "| picture.wav |       |    |         | true   |",
        "| tone.flac   | 44100 | 2  | 1.5     | false  |",
        "| tone.mp3    | 44100 | 2  | 1.5     | false  |",
        "| tone.ogg    | 44100 | 2  | 1.5     | false  |",
        "| tone.wav    | 44100 | 2  | 1.5     | false  |",
    ] {
        assert!(table.contains(line), "{line}\n{table}");
    }
    let reasons = rows(
        &session,
        "SELECT name, d['error'] AS error FROM sounds WHERE d['error'] IS NOT NULL ORDER BY name",
    )
    .await;
    assert!(reasons.contains("truncated"), "{reasons}");
    assert!(reasons.contains("starts with 0x89504e47"), "{reasons}");

    // Lossless formats give back the samples: left channel of frame 1000 is
    // 0.5 sin(2 pi 440 1000 / 44100).
    let expected = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * 1000.0 / 44100.0).sin();
    let table = rows(
        &session,
        "SELECT name, round(d['value']['samples'][2001], 3) AS s FROM sounds \
         WHERE name IN ('tone.wav', 'tone.flac') ORDER BY name",
    )
    .await;
    assert_eq!(
        table.matches(&format!("| {:.3} |", expected)).count(),
        2,
        "{table}"
    );

    // Resample to 16 kHz and cut into 0.5 s pieces: three per file, 8000 frames each.
    let table = rows(
        &session,
        "SELECT name, count(*) AS pieces, min(piece['sample_rate']) AS rate, \
         min(cardinality(piece['samples'])) AS samples FROM \
         (SELECT name, unnest(audio_split(audio_resample(d['value'], 16000), 0.5)) AS piece \
          FROM sounds WHERE d['error'] IS NULL) GROUP BY name ORDER BY name",
    )
    .await;
    for format in ["flac", "mp3", "ogg", "wav"] {
        assert!(
            table.contains(&format!("| tone.{format:<4} | 3      | 16000 | 16000   |")),
            "{format}\n{table}"
        );
    }

    // 'raise' names the function and the reason.
    let error = query_error(
        &session,
        &format!("SELECT audio_decode(file_read('{root}/picture.wav'))"),
    )
    .await;
    assert!(
        error.contains("audio_decode") && error.contains("not a WAV/FLAC/MP3/Ogg Vorbis file"),
        "{error}"
    );
}
