"""Trains a small scikit-learn classifier on the digits data set (shipped in the wheel),
converts it to ONNX (skl2onnx), and writes the model, the test inputs and what
onnxruntime computes for them from Python, for the Rust test to compare with.

Usage: python3 onnx_digits.py OUT_DIR
Writes OUT_DIR/digits.onnx and OUT_DIR/reference.json:
{"inputs": [[64 floats], ...], "labels": [...], "probabilities": [[10 floats], ...]}
"""

import json
import os
import sys

import numpy as np
import onnxruntime
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier


def main(out: str) -> None:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    train, test = slice(0, 1500), slice(1500, None)
    classifier = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    classifier.fit(x[train], y[train])
    model = to_onnx(
        classifier, x[:1], target_opset=17, options={id(classifier): {"zipmap": False}}
    )
    path = os.path.join(out, "digits.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: x[test]})
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(
            {
                "inputs": x[test].tolist(),
                "labels": labels.tolist(),
                "probabilities": probabilities.tolist(),
                "output_names": [o.name for o in session.get_outputs()],
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1])
