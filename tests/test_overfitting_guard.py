"""The catastrophic-overfitting guard of single-step adversarial training: it stops on a
history that shows the collapse, and lets healthy or merely noisy histories run."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_sns.training import (
    CatastrophicOverfittingGuard,
    CatastrophicOverfittingWarning,
    RobustModel,
    catastrophic_overfitting,
)

# Accuracy on a held-out batch at successive checks: (multi-step PGD, training attack).
# Catastrophic overfitting (Wong et al. 2020, Fig. 1): PGD accuracy climbs, then falls to
# near zero within a few hundred steps while FGSM accuracy jumps up.
COLLAPSE = [(0.00, 0.10), (0.45, 0.60), (0.58, 0.68), (0.63, 0.71), (0.31, 0.80), (0.04, 0.89)]
HEALTHY = [(0.00, 0.10), (0.45, 0.60), (0.58, 0.68), (0.63, 0.71), (0.61, 0.73), (0.66, 0.74)]
# Both fall together (a learning rate blow-up, not overfitting to the attack): not this guard's.
BOTH_FALL = [(0.00, 0.10), (0.50, 0.65), (0.62, 0.72), (0.20, 0.30)]


def first_alarm(history, **kwargs):
    """Index of the first check at which the rule fires, or None."""
    multi, single = [m for m, _ in history], [s for _, s in history]
    for i in range(1, len(history) + 1):
        if catastrophic_overfitting(multi[:i], single[:i], **kwargs):
            return i - 1
    return None


def test_the_rule_fires_on_the_collapse_at_the_first_sharp_drop():
    assert first_alarm(COLLAPSE) == 4  # 63 % -> 31 %: a 32-point fall, FGSM up 9 points


def test_the_rule_stays_quiet_on_healthy_noisy_and_both_falling_histories():
    assert first_alarm(HEALTHY) is None
    # Noise on a 256-example batch is about 3 points: a 10-point dip is not a collapse.
    assert first_alarm([(0.0, 0.1), (0.60, 0.70), (0.50, 0.75)]) is None
    assert first_alarm(BOTH_FALL) is None
    # ... unless the thresholds say otherwise.
    assert first_alarm(BOTH_FALL, rise=-1.0) == 3


def test_the_rule_checks_its_arguments():
    with pytest.raises(ValueError, match="one single-step accuracy per multi-step accuracy"):
        catastrophic_overfitting([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match=r"Expected drop >= 0\. Received: drop=-0\.1"):
        catastrophic_overfitting([0.1, 0.2], [0.1, 0.2], drop=-0.1)
    assert catastrophic_overfitting([0.5], [0.5]) is False


def tiny_robust_model(attack):
    inputs = keras.Input((8,))
    base = keras.Model(inputs, keras.layers.Dense(3, name="logits")(inputs))
    model = RobustModel(base, method="pat", attack=attack)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def scripted_guard(history, model, every=10):
    """A guard on ``model`` whose attacks return the scripted accuracies in turn."""
    x = np.random.default_rng(0).uniform(size=(16, 8)).astype("float32")
    guard = CatastrophicOverfittingGuard(x, np.zeros(16), every=every)
    answers = iter(v for pair in history for v in pair)
    guard._accuracy = lambda base, attack: next(answers)  # noqa: SLF001 - the measurement
    guard.set_model(model)
    return guard


def drive(guard, model, history, every=10):
    """Run the callback hooks as fit would, changing the weights before every check."""
    weights_at_check = []
    kernel = model.base_model.get_layer("logits").kernel
    model.stop_training = False
    guard.on_train_begin()
    weights_at_check.append(kernel.numpy())
    for check in range(1, len(history)):
        kernel.assign(kernel + 1.0)  # training moves the weights
        for batch in range(every):
            guard.on_train_batch_end(batch)
        weights_at_check.append(kernel.numpy())
        if model.stop_training:
            break
    return weights_at_check


def test_the_callback_warns_stops_and_restores_the_best_weights():
    model = tiny_robust_model({"name": "fgsm_rs", "eps": 0.1, "seed": 0})
    guard = scripted_guard(COLLAPSE, model)
    with pytest.warns(CatastrophicOverfittingWarning) as record:
        weights = drive(guard, model, COLLAPSE)
    assert model.stop_training is True and guard.stopped_at == 40
    (message,) = [str(w.message) for w in record
                  if issubclass(w.category, CatastrophicOverfittingWarning)]
    for words in ("Catastrophic overfitting after 40 training batches",
                  "PGD-10 fell from 63.0% (batch 30) to 31.0%",
                  "'fgsm_rs' rose from 71.0% to 80.0%", "n_fgsm", "--lam", "pgd_linf"):
        assert words in message
    # The base model is back at the weights of the best check (batch 30, the 4th check).
    kernel = model.base_model.get_layer("logits").kernel.numpy()
    np.testing.assert_array_equal(kernel, weights[3])
    assert [c["batch"] for c in guard.checks] == [0, 10, 20, 30, 40]


def test_the_callback_lets_a_healthy_run_finish():
    model = tiny_robust_model({"name": "fgsm_rs", "eps": 0.1, "seed": 0})
    guard = scripted_guard(HEALTHY, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatastrophicOverfittingWarning)
        drive(guard, model, HEALTHY)
    assert model.stop_training is False and guard.stopped_at is None
    assert [c["multi_step"] for c in guard.checks] == [m for m, _ in HEALTHY]


def test_fit_adds_the_guard_for_single_step_attacks_only(monkeypatch):
    assert tiny_robust_model({"name": "fgsm_rs", "eps": 0.1}).single_step_attack
    assert tiny_robust_model({"name": "n_fgsm", "eps": 0.1}).single_step_attack
    assert tiny_robust_model({"name": "fgsm", "eps": 0.1}).single_step_attack
    assert not tiny_robust_model({"name": "pgd_linf", "eps": 0.1, "steps": 10}).single_step_attack
    checked = []
    monkeypatch.setattr(CatastrophicOverfittingGuard, "_check",
                        lambda self: checked.append(len(self.x)))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    xv, yv = rng.uniform(size=(40, 8)).astype("float32"), rng.integers(0, 3, 40)
    model = tiny_robust_model({"name": "fgsm_rs", "eps": 0.1, "seed": 0})
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(xv, yv))
    assert checked == [40, 40]  # at the start and at the epoch end, on the validation data
    checked.clear()
    model = tiny_robust_model({"name": "pgd_linf", "eps": 0.1, "steps": 2, "seed": 0})
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(xv, yv))
    assert checked == []


def test_the_guard_checks_its_arguments():
    x = np.zeros((4, 8), "float32")
    with pytest.raises(ValueError, match=r"Expected every >= 1\. Received: every=0"):
        CatastrophicOverfittingGuard(x, np.zeros(4), every=0)
    with pytest.raises(ValueError, match="one label per image. Received: 4 images and 3 labels"):
        CatastrophicOverfittingGuard(x, np.zeros(3))
