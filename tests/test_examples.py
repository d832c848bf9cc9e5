"""The example file runs as documented (on a few examples) and leaves what it promises."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from keras_sns import models
import keras_sns.training  # noqa: F401  (registers RobustModel with Keras)

ROOT = Path(__file__).resolve().parents[1]


def test_fit_with_keras_example(tmp_path):
    out = tmp_path / "example"
    proc = subprocess.run(
        [sys.executable, "examples/fit_with_keras.py", "--limit", "256", "--epochs", "1",
         "--test-limit", "64", "--val-limit", "64", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    robust = models.load(out / "robust_model.keras")
    # 10 % of 64 channels, rounded up: 7 sensitive channels in each of conv3 and conv4.
    assert {n: len(v) for n, v in robust.sensitive_indices().items()} == {"conv3": 7, "conv4": 7}
    base = models.load(out / "model.keras")
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(robust.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-6)
    assert (out / "best.keras").is_file() and any((out / "logs").rglob("*tfevents*"))
    assert "| pgd_linf |" in proc.stdout and "| clean |" in proc.stdout
