"""Models saved by keras-sns 0.1.0 (before the package was re-housed) still load.

The fixtures in tests/fixtures were saved by the code of commit 80055b2 (a tiny
functional model and an SNS RobustModel around it, masks set by hand).
"""

from pathlib import Path

import keras
import numpy as np

import keras_sns.training  # noqa: F401  (registers RobustModel with Keras)
from keras_sns import models

FIXTURES = Path(__file__).parent / "fixtures"


def test_plain_model_saved_by_0_1_0_loads_and_predicts_the_same():
    model = models.load(FIXTURES / "model_v0.1.0.keras")
    saved = np.load(FIXTURES / "model_v0.1.0_outputs.npz")
    np.testing.assert_allclose(model.predict(saved["x"], verbose=0), saved["logits"], atol=1e-6)


def test_robust_model_saved_by_0_1_0_loads_with_its_masks_and_settings():
    robust = keras.models.load_model(FIXTURES / "robust_model_v0.1.0.keras")
    assert isinstance(robust, keras_sns.training.RobustModel)
    assert robust.sensitive_indices() == {"conv1": [0, 2], "conv2": [1, 4, 5]}
    assert (robust.method, robust.lam, robust.k, robust.layer_names) == (
        "sns", 0.5, 0.5, ["conv1", "conv2"])
    assert robust.attack_config["eps"] == 0.1 and robust.attack_config["steps"] == 2
    saved = np.load(FIXTURES / "model_v0.1.0_outputs.npz")
    np.testing.assert_allclose(robust.predict(saved["x"], verbose=0), saved["logits"], atol=1e-6)
