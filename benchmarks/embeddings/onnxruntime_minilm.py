"""The Python baseline of benchmark 6b: all-MiniLM-L6-v2 (the int8 ONNX file) through
onnxruntime, tokenized by Hugging Face `tokenizers`, mean-pooled and L2-normalised in numpy:
what sentence-transformers does, with the same model file, threads and batch size as Riffle.

Usage: python onnxruntime_minilm.py SENTENCES_FILE MODEL_ONNX TOKENIZER_JSON BATCH THREADS
Prints one line: rows=<n> seconds=<s> (the embedding loop, tokenization included).
"""

import sys
import time

import numpy as np
import onnxruntime
from tokenizers import Tokenizer


def main() -> None:
    path, model, tokenizer_json, batch, threads = sys.argv[1:6]
    batch, threads = int(batch), int(threads)
    sentences = open(path, encoding="utf-8").read().splitlines()
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.enable_padding()
    tokenizer.enable_truncation(max_length=256)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    start = time.perf_counter()
    rows = 0
    for first in range(0, len(sentences), batch):
        encodings = tokenizer.encode_batch(sentences[first : first + batch])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = session.run(None, {name: feed[name] for name in names})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        rows += len(pooled)
    print(f"rows={rows} seconds={time.perf_counter() - start:.4f}")


if __name__ == "__main__":
    main()
