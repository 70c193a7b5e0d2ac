"""The Python worker process: runs the user's code on batches the engine sends.

Started by the engine as ``python -m riffle._worker`` with three descriptors: a Unix socket
for control messages (``RIFFLE_CONTROL_FD``), and two shared-memory regions (memfds), one
the engine writes batches into (``RIFFLE_INPUT_FD``) and one for the results
(``RIFFLE_OUTPUT_FD``). Batches are Arrow IPC streams read from the mapping without a copy;
only small JSON messages go through the socket. See crates/riffle-inference/src/python/.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import sys
import traceback
from typing import Any

import cloudpickle
import pyarrow as pa

from riffle._batches import ResultError, from_user, to_user


class Region:
    """A shared-memory region: its descriptor and this process's mapping of it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.map: mmap.mmap | None = None
        self.size = 0

    def view(self, size: int) -> memoryview:
        """The region, mapped at ``size`` bytes (the engine grew it when larger)."""
        if size != self.size:
            # An old mapping may still back arrays the user kept; it is unmapped when they
            # are gone.
            self.map = mmap.mmap(self.fd, size)
            self.size = size
        assert self.map is not None
        return memoryview(self.map)

    def write(self, data: pa.Buffer) -> int:
        """Writes ``data`` at the start, growing the region when it does not fit; returns
        the region's size."""
        if data.size > self.size:
            size = max(data.size, 2 * self.size, 1 << 20)
            os.ftruncate(self.fd, size)
            self.view(size)
        assert self.map is not None
        self.map[: data.size] = memoryview(data)
        return self.size


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    header = _read(sock, 4)
    if header is None:
        return None
    (length,) = struct.unpack("<I", header)
    body = _read(sock, length)
    return None if body is None else json.loads(body)


def _read(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def error_message(error: BaseException) -> dict[str, Any]:
    return {
        "op": "error",
        "type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    }


def main() -> int:
    sock = socket.socket(fileno=int(os.environ["RIFFLE_CONTROL_FD"]))
    source = Region(int(os.environ["RIFFLE_INPUT_FD"]))
    sink = Region(int(os.environ["RIFFLE_OUTPUT_FD"]))
    init = receive(sock)
    if init is None or init.get("op") != "init":
        return 1
    region = source.view(init["size"])
    payload = bytes(region[: init["payload"]])
    schema_bytes = region[init["payload"] : init["payload"] + init["schema"]]
    try:
        declared = pa.ipc.open_stream(pa.py_buffer(schema_bytes)).schema
        spec = cloudpickle.loads(payload)
        # The engine's names for the columns are its own; the user's are the spec's.
        output_schema = pa.schema(
            [pa.field(name, f.type, f.nullable, f.metadata) for name, f in zip(spec.output_names, declared)]
        )
        runner = spec.build()
    except BaseException as error:  # noqa: BLE001  (reported to the engine, which fails the job)
        send(sock, error_message(error))
        return 1
    del schema_bytes, region
    send(sock, {"op": "ready"})
    while True:
        message = receive(sock)
        if message is None or message.get("op") == "shutdown":
            return 0
        try:
            view = source.view(message["size"])[: message["len"]]
            batch = pa.ipc.open_stream(pa.py_buffer(view)).read_next_batch()
            rows = None if spec.any_rows else batch.num_rows
            result = from_user(runner(to_user(batch, spec.batch_format)), output_schema, spec.name, rows)
            del batch, view
            out = pa.BufferOutputStream()
            with pa.ipc.new_stream(out, output_schema) as writer:
                writer.write_batch(result)
            data = out.getvalue()
            size = sink.write(data)
            send(sock, {"op": "result", "seq": message["seq"], "len": data.size, "size": size})
        except ResultError as error:
            reply = {"op": "error", "type": "ResultError", "message": str(error), "traceback": ""}
            reply["seq"] = message.get("seq")
            send(sock, reply)
        except Exception as error:  # noqa: BLE001  (user code: reported, the worker goes on)
            reply = error_message(error)
            reply["seq"] = message.get("seq")
            send(sock, reply)


if __name__ == "__main__":
    sys.exit(main())
