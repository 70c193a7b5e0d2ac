"""Trains a scikit-learn classifier on the digits data set (shipped in the wheel) and lays
out an MLServer model repository serving it, with the test inputs and what scikit-learn
itself predicts for them, for the Rust test to compare with.

Run with the Python of the virtual environment MLServer is installed in, so that the model
is pickled by the scikit-learn that will load it.

Usage: python mlserver_digits.py OUT_DIR HTTP_PORT GRPC_PORT METRICS_PORT
Writes OUT_DIR/settings.json, OUT_DIR/digits/{model.joblib,model-settings.json} and
OUT_DIR/reference.json: {"inputs": [[64 floats], ...], "labels": [...],
"probabilities": [[10 floats], ...], "raw_inputs": [[64 ints], ...], "raw_labels": [...]}
"""

import json
import os
import sys

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression


def main(out: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    train, test = slice(0, 1500), slice(1500, None)
    classifier = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    model_dir = os.path.join(out, "digits")
    os.makedirs(model_dir, exist_ok=True)
    joblib.dump(classifier, os.path.join(model_dir, "model.joblib"))
    with open(os.path.join(model_dir, "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "digits",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            },
            f,
        )
    with open(os.path.join(out, "settings.json"), "w") as f:
        json.dump(
            {
                "host": "127.0.0.1",
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                "parallel_workers": 0,
            },
            f,
        )
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(
            {
                "inputs": x[test].tolist(),
                "labels": classifier.predict(x[test]).tolist(),
                "probabilities": classifier.predict_proba(x[test]).tolist(),
                # The same rows as their raw 0..16 pixel counts, sent as UINT8.
                "raw_inputs": digits.data[test].astype(np.uint8).tolist(),
                "raw_labels": classifier.predict(
                    digits.data[test].astype(np.uint8)
                ).tolist(),
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
