"""How DataFrames look: a text table for terminals and reprs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

_WIDTH = 30


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cell(value: Any, dtype: pa.DataType | None = None) -> str:
    """A short text for ``value`` (of type ``dtype`` when known): images and audio by their
    size, vectors and tensors by their first values and their shape."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict) and {"width", "height"} <= value.keys():
        return f"<image {value.get('width')}x{value.get('height')}>"
    if isinstance(value, dict) and {"sample_rate", "channels", "samples"} <= value.keys():
        rate, channels = int(value["sample_rate"] or 0), max(int(value["channels"] or 1), 1)
        seconds = len(value["samples"]) / channels / rate if rate else 0.0
        return f"<audio {seconds:.2f} s, {rate} Hz, {channels} ch>"
    if isinstance(dtype, pa.FixedShapeTensorType) and isinstance(value, list):
        shape = "x".join(str(d) for d in dtype.shape)
        return f"<tensor {shape}: " + ", ".join(_number(v) for v in value[:3]) + (", …>" if len(value) > 3 else ">")
    if isinstance(value, dict) and {"data", "shape"} <= value.keys() and isinstance(value["data"], list):
        shape = "x".join(str(d) for d in value["shape"] or [])
        data = value["data"]
        return f"<tensor {shape}: " + ", ".join(_number(v) for v in data[:3]) + (", …>" if len(data) > 3 else ">")
    if isinstance(value, list) and len(value) > 4:
        return "[" + ", ".join(_number(v) if isinstance(v, float) else _cell(v) for v in value[:4]) + f", … ({len(value)})]"
    if isinstance(value, list):
        return "[" + ", ".join(_number(v) if isinstance(v, float) else _cell(v) for v in value) + "]"
    text = str(value)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def _more(more: int | None) -> bool:
    """Whether there are rows not shown (``more`` is negative for a frame of fewer rows
    than shown)."""
    return more is not None and more > 0


def text_table(table: pa.Table, more: int | None) -> str:
    """``table`` as a text table; ``more``: the rows not shown, when positive."""
    names = table.schema.names
    types = [str(f.type) for f in table.schema]
    dtypes = [f.type for f in table.schema]
    rows = [[_cell(v, t) for v, t in zip(row.values(), dtypes)] for row in table.to_pylist()]
    header = [names, [t if len(t) <= _WIDTH else t[: _WIDTH - 1] + "…" for t in types]]
    widths = [max(len(r[i]) for r in header + rows) for i in range(len(names))]

    def line(cells: list[str]) -> str:
        return "│ " + " │ ".join(c.ljust(w) for c, w in zip(cells, widths)) + " │"

    rule = "─" * (sum(widths) + 3 * len(widths) + 1)
    out = [rule, line(header[0]), line(header[1]), rule] + [line(r) for r in rows] + [rule]
    if _more(more):
        out.append(f"({more} more rows)")
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML

_THUMBNAIL = 128
_IMAGE = b"riffle.image"


def _png(pixels: Any, mode: str) -> bytes:
    """A PNG of ``pixels`` (H x W x C uint8), written with zlib alone."""
    import struct
    import zlib

    import numpy as np

    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), pixels.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b"")


def thumbnail(image: dict[str, Any]) -> str:
    """An ``<img>`` of a Riffle IMAGE value, its longest side at most 128 pixels."""
    import base64

    import numpy as np

    height, width, mode = int(image["height"]), int(image["width"]), image["mode"]
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode)
    if channels is None or not height or not width:
        return f"&lt;image {width}x{height} {mode}&gt;"
    pixels = np.frombuffer(image["pixels"], dtype=np.uint8).reshape(height, width, channels)
    scale = max(height, width) / _THUMBNAIL
    if scale > 1:
        # Nearest pixels: a preview, not a resize (the engine's image.resize does those).
        ys = (np.arange(int(height / scale)) * scale).astype(int)
        xs = (np.arange(int(width / scale)) * scale).astype(int)
        pixels = pixels[ys][:, xs]
    data = base64.b64encode(_png(np.ascontiguousarray(pixels), mode)).decode()
    return f'<img src="data:image/png;base64,{data}" title="{width}x{height} {mode}"/>'


def _is_image(field: pa.Field) -> bool:
    """An IMAGE column: tagged so, or a struct of Riffle's image fields (a projection may
    drop the tag)."""
    if (field.metadata or {}).get(b"ARROW:extension:name") == _IMAGE:
        return True
    return pa.types.is_struct(field.type) and [f.name for f in field.type] == ["height", "width", "mode", "pixels"]


def audio_player(audio: dict[str, Any]) -> str:
    """An ``<audio>`` player of a Riffle AUDIO value (a 16-bit WAV), for clips up to 30 s;
    longer ones by their size alone."""
    import base64
    import io
    import wave

    import numpy as np

    rate, channels = int(audio["sample_rate"] or 0), max(int(audio["channels"] or 1), 1)
    samples = np.asarray(audio["samples"], dtype=np.float32)
    if not rate or len(samples) / channels / rate > 30:
        return _cell(audio).replace("<", "&lt;").replace(">", "&gt;")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    data = base64.b64encode(out.getvalue()).decode()
    title = _cell(audio).replace("<", "").replace(">", "")
    return f'<audio controls title="{title}" src="data:audio/wav;base64,{data}"></audio>'


def _is_audio(field: pa.Field) -> bool:
    return (field.metadata or {}).get(b"ARROW:extension:name") == b"riffle.audio" or (
        pa.types.is_struct(field.type) and [f.name for f in field.type] == ["sample_rate", "channels", "samples"]
    )


def _html_cell(field: Any, value: Any) -> str:
    import html

    if value is not None and _is_image(field):
        return thumbnail(value)
    if value is not None and _is_audio(field):
        return audio_player(value)
    return html.escape(_cell(value, field.type))


def html_table(table: pa.Table, more: int | None) -> str:
    """``table`` as an HTML table, images as thumbnails, long values shortened."""
    import html

    head = "".join(
        f"<th>{html.escape(f.name)}<br/><small>{html.escape(str(f.type))}</small></th>" for f in table.schema
    )
    body = []
    for row in table.to_pylist():
        cells = "".join(f"<td>{_html_cell(f, row[f.name])}</td>" for f in table.schema)
        body.append(f"<tr>{cells}</tr>")
    footer = f"<p>({more} more rows)</p>" if _more(more) else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{footer}"
