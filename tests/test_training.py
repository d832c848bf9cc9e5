"""Robust training (keras_sns.training, keras_sns.callbacks): section V, eq. 12-13.

The one-step tests follow Neural Structured Learning's adversarial-regularization
tests: a tiny linear model, one ``fit`` step with plain SGD and a deterministic attack
(one PGD step of size eps from the clean point: an FGSM step), and the weights after
the step must equal an update derived by hand in NumPy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from _retracing import retracing_warnings
from _robust_models import conv_model, data, exact_float32_matmuls, linear_model  # noqa: F401

from keras_sns import attacks
from keras_sns.training.callbacks import CollapseGuard
from keras_sns.neurons import measure_sensitivity
from keras_sns.training import RobustModel, TrainingCollapsedError, select_masks

EPS = 0.1
LR = 0.5
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fgsm_attack(eps: float = EPS):
    """PGD-L-inf with one step of size eps from the clean point: FGSM, deterministic."""
    return attacks.get("pgd_linf", eps=eps, steps=1, step_size=eps, random_start=False)


def compiled(model: RobustModel, optimizer=None) -> RobustModel:
    model.compile(optimizer=optimizer or keras.optimizers.SGD(LR), loss=CE)
    return model


def one_step(model: RobustModel, x, y) -> dict:
    history = model.fit(x, y, batch_size=len(x), epochs=1, steps_per_epoch=1, shuffle=False,
                        verbose=0)
    return {k: v[0] for k, v in history.history.items()}


# ---------------------------------------------------------------------------
# The hand-derived reference, in float64
# ---------------------------------------------------------------------------


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _one_hot(y, k):
    return np.eye(k)[y]


def reference_step(weights, x, y, *, method: str, lam: float = 0.0, mask=None):
    """One SGD step of ``method`` on the linear model, derived by hand.

    Returns the weights after the step and the losses of the step (computed, like the
    train step, with the weights before it).
    """
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    x = np.asarray(x, np.float64)
    b, k = len(x), w2.shape[1]
    if method == "vanilla":
        xx, yy = x, y
    else:
        # FGSM on the current weights: d CE / dx = (softmax(z) - onehot(y)) W2^T W1^T.
        z = (x @ w1 + b1) @ w2 + b2
        grad_x = (_softmax(z) - _one_hot(y, k)) @ w2.T @ w1.T
        x_adv = np.clip(np.clip(x + EPS * np.sign(grad_x), x - EPS, x + EPS), 0.0, 1.0)
        xx, yy = np.concatenate([x, x_adv]), np.concatenate([y, y])
    n = len(xx)
    h = xx @ w1 + b1
    z = h @ w2 + b2
    p = _softmax(z)
    ce = -np.mean(np.log(p[np.arange(n), yy]))
    dz = (p - _one_hot(yy, k)) / n  # gradient of the mean cross-entropy over 2B
    reg = 0.0
    if method == "alp":
        # reg = mean over B x K of (z_i - z'_i)^2
        diff = z[:b] - z[b:]
        reg = np.mean(diff ** 2)
        dz[:b] += lam * 2.0 * diff / (b * k)
        dz[b:] -= lam * 2.0 * diff / (b * k)
    dw2, db2 = h.T @ dz, dz.sum(axis=0)
    dh = dz @ w2.T
    if method == "sns":
        # reg = sum over masked channels c of mean_i |h_c(x_i) - h_c(x'_i)|;
        # d reg / d h_c(x_i) = m_c sign(h_c(x_i) - h_c(x'_i)) / B, and minus that for x'_i,
        # so it adds lam * (x - x')^T (m * sign(h - h')) / B to the kernel gradient.
        diff = h[:b] - h[b:]
        reg = np.sum(np.mean(np.abs(diff), axis=0) * mask)
        s = np.sign(diff) * mask / b
        dh[:b] += lam * s
        dh[b:] -= lam * s
    dw1, db1 = xx.T @ dh, dh.sum(axis=0)
    new = [w - LR * g for w, g in zip((w1, b1, w2, b2), (dw1, db1, dw2, db2))]
    return new, {"ce_loss": ce, "reg": reg, "loss": ce + lam * reg}


# ---------------------------------------------------------------------------
# 1. One step equals the hand-derived update
# ---------------------------------------------------------------------------

MASK = np.array([1.0, 0.0, 1.0], np.float32)


@pytest.mark.parametrize("method,lam,loss_scale", [
    ("vanilla", 0.0, None), ("pat", 0.0, None), ("alp", 0.5, None), ("sns", 0.7, None),
    # A loss-scaling optimizer (as under mixed precision) must give the same step.
    ("vanilla", 0.0, 128.0), ("sns", 0.7, 128.0),
])
def test_one_step_equals_the_hand_derived_update(method, lam, loss_scale):
    x, y = data(6)
    base = linear_model()
    initial = base.get_weights()
    model = RobustModel(base, method=method, layers=["hidden"] if method == "sns" else None,
                        lam=lam, attack=fgsm_attack())
    if method == "sns":
        model.set_masks({"hidden": MASK})
    logs = one_step(compiled(model, keras.optimizers.SGD(LR, loss_scale_factor=loss_scale)), x, y)

    want, losses = reference_step(initial, x, y, method=method, lam=lam, mask=MASK)
    for got, expected, name in zip(base.get_weights(), want, ("W1", "b1", "W2", "b2")):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert logs["ce_loss"] == pytest.approx(losses["ce_loss"], rel=1e-5)
    assert logs["loss"] == pytest.approx(losses["loss"], rel=1e-5)
    if method in ("alp", "sns"):
        assert logs[f"{method}_loss"] == pytest.approx(losses["reg"], rel=1e-5)
    if method in ("alp", "sns"):
        # The regulariser must move the weights by far more than the tolerance, or
        # this test could not tell the methods apart.
        pat, _ = reference_step(initial, x, y, method="pat")
        assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(want, pat))


def test_step_accuracies_are_those_of_x_and_the_hand_derived_fgsm_x_adv():
    # With steps=1 and step_size=eps the attack is FGSM: x' = x + eps * sign(grad).
    # The step's clean_acc and adv_acc come from the weights before its update, on x
    # and on that x'.
    x, y = data(6)
    base = linear_model()
    w1, b1, w2, b2 = (w.astype(np.float64) for w in base.get_weights())
    logits = (x @ w1 + b1) @ w2 + b2
    grad_x = (_softmax(logits) - _one_hot(y, 3)) @ w2.T @ w1.T
    x_adv = x + EPS * np.sign(grad_x)
    np.testing.assert_allclose(np.asarray(fgsm_attack()(base, x, y)), x_adv, atol=1e-6)
    adv_logits = (x_adv @ w1 + b1) @ w2 + b2
    logs = one_step(compiled(RobustModel(base, method="pat", attack=fgsm_attack())), x, y)
    assert np.mean(logits.argmax(1) == y) != np.mean(adv_logits.argmax(1) == y)
    assert logs["clean_acc"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert logs["adv_acc"] == pytest.approx(np.mean(adv_logits.argmax(1) == y))


# ---------------------------------------------------------------------------
# 2. SNS reduces to PAT
# ---------------------------------------------------------------------------


def _train(method: str, *, lam: float, masks=None, steps: int = 3):
    keras.utils.set_random_seed(5)
    x, y = data(8 * steps, shape=(6, 6, 1))
    base = conv_model()
    model = RobustModel(base, method=method, layers=["conv1", "fc1"] if method == "sns" else None,
                        lam=lam, attack=attacks.get("pgd_linf", eps=EPS, steps=2, seed=3))
    if masks is not None:
        model.set_masks(masks)
    compiled(model, keras.optimizers.SGD(0.1, momentum=0.9))
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return base.get_weights(), history


ZERO_MASKS = {"conv1": np.zeros(4, np.float32), "fc1": np.zeros(5, np.float32)}
SOME_MASKS = {"conv1": np.array([1, 0, 1, 0], np.float32), "fc1": np.array([0, 1, 0, 0, 1], np.float32)}


@pytest.fixture(scope="module")
def pat_run():
    return _train("pat", lam=0.0)


@pytest.mark.parametrize("lam,masks", [(0.0, SOME_MASKS), (5.0, ZERO_MASKS)],
                         ids=["lam=0", "zero-masks"])
def test_sns_equals_pat_exactly_without_its_term(pat_run, lam, masks):
    # Same seed, same initial weights, the attack with a random start seeded the same:
    # three steps of SGD with momentum give bit-identical weights and losses.
    pat_weights, pat_history = pat_run
    sns_weights, sns_history = _train("sns", lam=lam, masks=masks)
    for a, b in zip(sns_weights, pat_weights):
        np.testing.assert_array_equal(a, b)
    assert sns_history["ce_loss"] == pat_history["ce_loss"]


def test_sns_with_its_term_moves_away_from_pat(pat_run):
    # The counterpart of the test above, so that it cannot pass by ignoring lam and masks.
    on_weights, _ = _train("sns", lam=5.0, masks=SOME_MASKS)
    assert max(np.abs(a - b).max() for a, b in zip(on_weights, pat_run[0])) > 1e-3


# ---------------------------------------------------------------------------
# 3. L_sns in the step equals the analysis module's sigma over the masked channels;
#    ema averages that sigma and re-selects from it
# ---------------------------------------------------------------------------


LAYERS = ["conv1", "relu1", "conv2", "fc1"]


def _one_ema_step():
    """One SNS step (selection ema, decay 0.75) and sigma measured independently before it.

    The step logs sns_loss computed with the weights before its update, on the batch
    and the adversarial examples of that step. The attack is deterministic, so running
    it here first on the same weights gives the same x'; the analysis module's
    measure_sensitivity (float64, training=False, which is the same forward pass for a
    model without dropout or batch norm) then gives sigma (eq. 1) independently of
    the train step's own reductions. The masks start on the two least sensitive
    channels of each layer, so that a re-selection has to change them.
    """
    x, y = data(8, shape=(6, 6, 1))
    base = conv_model()
    attack = attacks.get("pgd_linf", eps=EPS, steps=3, step_size=0.04, random_start=False)
    x_adv = np.asarray(attack(base, x, y))
    sigma = measure_sensitivity(base, LAYERS, x, x_adv).sigma
    model = RobustModel(base, method="sns", layers=LAYERS, lam=1.0, k=2, selection="ema",
                        ema_decay=0.75, attack=attack)
    bottom = {n: np.isin(np.arange(s.size), np.argsort(s)[:2]).astype(np.float32)
              for n, s in sigma.items()}
    model.set_masks(bottom)
    logs = one_step(compiled(model), x, y)
    return model, logs, sigma, bottom


def test_sns_loss_equals_the_analysis_sigma_over_the_masked_channels():
    _, logs, sigma, masks = _one_ema_step()
    want = sum(float(sigma[n][masks[n] == 1].sum()) for n in LAYERS)
    assert logs["sns_loss"] == pytest.approx(want, rel=1e-5)


def test_ema_averages_sigma_and_reselects_its_top_k_at_the_epoch_end():
    model, _, sigma, bottom = _one_ema_step()
    for n in LAYERS:
        # From zeros, one step leaves (1 - decay) * sigma of that step's batch.
        ema = np.asarray(model.sigma_ema[n])
        np.testing.assert_allclose(ema, 0.25 * sigma[n], rtol=1e-5, atol=1e-7, err_msg=n)
        top = np.isin(np.arange(ema.size), np.argsort(-ema)[:2]).astype(np.float32)
        np.testing.assert_array_equal(model.get_masks()[n], top, err_msg=n)
        assert not np.array_equal(top, bottom[n])


# ---------------------------------------------------------------------------
# 4. .keras round trip
# ---------------------------------------------------------------------------


def test_keras_round_trip_keeps_masks_config_predictions_and_training_state(tmp_path):
    x, y = data(16, shape=(6, 6, 1))
    attack = attacks.get("pgd_linf", eps=0.05, steps=2, step_size=0.03, random_start=False, seed=11)
    model = RobustModel(conv_model(), method="sns", layers="conv1..conv2, fc1", lam=0.3, k=2,
                        selection="ema", attack=attack, freeze_below=True, ema_decay=0.8, seed=4)
    assert model.layer_names == ["conv1", "conv2", "fc1"]
    model.set_masks({"conv1": np.array([0, 1, 1, 0], np.float32),
                     "conv2": np.array([1, 0, 1], np.float32),
                     "fc1": np.array([0, 0, 1, 1, 0], np.float32)})
    compiled(model, keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # builds the optimizer
    path = tmp_path / "robust.keras"
    model.save(path)

    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, RobustModel)
    for name in ("method", "layer_names", "lam", "k", "selection", "attack_config",
                 "freeze_below", "ema_decay", "seed", "eval_attack", "k_per_layer"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert loaded.attack_config == {"name": "pgd_linf", "eps": 0.05, "steps": 2, "step_size": 0.03,
                                    "random_start": False, "seed": 11}
    assert loaded.attack.get_config() == attack.get_config()
    for n, m in model.get_masks().items():
        np.testing.assert_array_equal(loaded.get_masks()[n], m)
        np.testing.assert_array_equal(np.asarray(loaded.sigma_ema[n]), np.asarray(model.sigma_ema[n]))
    assert float(np.asarray(loaded.masks_selected)) == 1.0
    assert [w.trainable for w in loaded.base_model.layers] == [w.trainable for w in model.base_model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))

    # The optimizer state and the compile config come back too: one more epoch of both
    # gives the same weights (and the loaded model does not re-select its masks).
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# 5. Mask selections: dyn, rand, all
# ---------------------------------------------------------------------------


def wide_model(seed: int = 0) -> keras.Model:
    """Input(8) -> Dense "hidden" (16) -> relu -> logits (3)."""
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, name="hidden")(inputs)
    h = keras.layers.Activation("relu", name="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


class MaskRecorder(keras.callbacks.Callback):
    """The masks at the start of every epoch and at the end of training.

    fit() appends its own mask callbacks after the user's, so the masks an epoch
    starts with are the ones the previous epoch end selected.
    """

    def __init__(self):
        super().__init__()
        self.masks = []

    def on_epoch_begin(self, epoch, logs=None):
        self.masks.append(self.model.get_masks())

    def on_train_end(self, logs=None):
        self.masks.append(self.model.get_masks())


def _fit_selection(selection: str, epochs: int = 3):
    # 64 examples: the initial selection (2000) and each dyn refresh (200) sample all
    # of them, so every selection is the top-k of sigma over x on the current weights.
    x, y = data(64, shape=(8,))
    attack = fgsm_attack()
    model = RobustModel(wide_model(), method="sns", layers=["hidden"], lam=0.1, k=4,
                        selection=selection, attack=attack)
    compiled(model, keras.optimizers.SGD(0.5))
    recorder = MaskRecorder()
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[recorder])
    return model, recorder.masks, x, y, attack


def test_dyn_reselects_the_masks_at_every_epoch_end():
    model, masks, x, y, attack = _fit_selection("dyn")
    assert len(masks) == 4
    assert all(m["hidden"].sum() == 4 for m in masks)
    changes = sum(not np.array_equal(a["hidden"], b["hidden"]) for a, b in zip(masks, masks[1:]))
    assert changes >= 1
    # The last refresh measured the final weights.
    final = select_masks(model.base_model, x, ["hidden"], k=4, attack=attack, y=y)
    np.testing.assert_array_equal(masks[-1]["hidden"], final["hidden"])


def test_sen_selects_once_before_training_and_keeps_the_masks():
    model, masks, x, y, attack = _fit_selection("sen")
    initial = select_masks(wide_model(), x, ["hidden"], k=4, attack=attack, y=y)
    for m in masks:
        np.testing.assert_array_equal(m["hidden"], initial["hidden"])
    # ... while the same training with dyn does change them (the test above).
    final = select_masks(model.base_model, x, ["hidden"], k=4, attack=attack, y=y)
    assert not np.array_equal(final["hidden"], initial["hidden"])


def _rand_masks(seed: int) -> np.ndarray:
    model = RobustModel(wide_model(), method="sns", layers=["hidden"], k=0.25, selection="rand",
                        seed=seed, attack=fgsm_attack())
    return model.get_masks()["hidden"]


def test_rand_is_reproducible_by_seed():
    first, again, other = _rand_masks(1), _rand_masks(1), _rand_masks(2)
    assert first.sum() == other.sum() == 4  # ceil(0.25 * 16)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_all_marks_every_channel():
    model = RobustModel(conv_model(), method="sns", layers=["conv1", "fc1"], selection="all",
                        attack=fgsm_attack())
    assert {n: m.tolist() for n, m in model.get_masks().items()} == {"conv1": [1.0] * 4,
                                                                      "fc1": [1.0] * 5}
    assert float(np.asarray(model.masks_selected)) == 1.0


# ---------------------------------------------------------------------------
# 6. Kill and resume with BackupAndRestore
# ---------------------------------------------------------------------------


class Interrupt(keras.callbacks.Callback):
    """Kill the run at the end of an epoch (after BackupAndRestore has saved it)."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt(f"killed after epoch {epoch + 1}")


class Trace(keras.callbacks.Callback):
    """The epochs a run goes through and the state it starts with and reaches."""

    def __init__(self):
        super().__init__()
        self.epochs, self.start, self.after_epoch = [], None, {}

    def on_train_begin(self, logs=None):
        self.start = [np.array(w) for w in self.model.weights]

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch] = [np.array(w) for w in self.model.weights]


def _resumable_model(seed: int, masks) -> RobustModel:
    model = RobustModel(conv_model(seed), method="sns", layers=["conv1", "fc1"], lam=0.5,
                        attack=attacks.get("pgd_linf", eps=EPS, steps=2, step_size=0.05,
                                           random_start=False))
    model.set_masks(masks)
    return compiled(model, keras.optimizers.Adam(1e-2))


def test_a_killed_run_resumes_at_the_next_epoch(tmp_path):
    x, y = data(32, shape=(6, 6, 1))
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    backup = str(tmp_path / "backup")

    uninterrupted = _resumable_model(0, SOME_MASKS)
    uninterrupted.fit(x, y, **fit)

    first = Trace()
    with pytest.raises(KeyboardInterrupt, match="after epoch 1"):
        _resumable_model(0, SOME_MASKS).fit(
            x, y, callbacks=[keras.callbacks.BackupAndRestore(backup), first, Interrupt(0)], **fit)
    assert first.epochs == [0]

    # The same command again, on a fresh model with other weights and other masks.
    resumed_model = _resumable_model(1, ZERO_MASKS)
    second = Trace()
    resumed_model.fit(x, y, callbacks=[keras.callbacks.BackupAndRestore(backup), second], **fit)
    assert second.epochs == [1, 2]  # epochs 2 and 3 of 3
    for got, want in zip(second.start, first.after_epoch[0]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(resumed_model.get_masks()["conv1"], SOME_MASKS["conv1"])
    # Weights, masks and Adam's moments all came back: the resumed run ends where the
    # uninterrupted one does.
    for a, b in zip(resumed_model.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not (tmp_path / "backup").exists()  # deleted once training completed


# ---------------------------------------------------------------------------
# 7. CollapseGuard
# ---------------------------------------------------------------------------


def _constant_model() -> keras.Model:
    """Logits all zero whatever the input: it predicts class 0, and SGD(0) keeps it so."""
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="zeros", name="logits")(inputs))


class BatchCount(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _guarded_fit(y, count: BatchCount):
    x = np.full((len(y), 4), 0.5, np.float32)
    model = RobustModel(_constant_model(), method="pat", attack=fgsm_attack())
    compiled(model, keras.optimizers.SGD(0.0))
    return model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                     callbacks=[count, CollapseGuard(window=3)])


def test_collapse_guard_stops_a_run_at_chance_with_an_error_naming_lam():
    # Batches 1-3 are predicted right (label 0), the next ones wrong (label 1). After
    # batch 5 the epoch's running accuracy (what Keras logs) is still 3/5 = 60 %, above
    # the guard's threshold of 1.5 x chance = 50 %; the guard recovers each batch's own
    # accuracy, sees 1/3 over its window of 3 batches and stops there.
    y = np.array([0] * 12 + [1] * 12)
    count = BatchCount()
    with pytest.raises(TrainingCollapsedError, match=r"lam") as info:
        _guarded_fit(y, count)
    assert count.batches == 5
    assert "33.3%" in str(info.value) and "chance" in str(info.value)


def test_collapse_guard_lets_a_healthy_run_finish():
    count = BatchCount()
    history = _guarded_fit(np.zeros(24, np.int64), count)
    assert count.batches == 12 and history.history["clean_acc"] == [1.0, 1.0]


# ---------------------------------------------------------------------------
# Keras habits: compiled metrics, no retracing warnings
# ---------------------------------------------------------------------------


def test_metrics_given_to_compile_are_updated_with_the_clean_logits():
    x, y = data(48, shape=(8,))
    model = RobustModel(wide_model(), method="pat", attack=fgsm_attack())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc"),
                           keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    history = model.fit(x, y, batch_size=48, epochs=1, shuffle=False, verbose=0,
                        validation_data=(x, y))
    h = {k: v[0] for k, v in history.history.items()}
    # One step over one batch: the compiled accuracy is the clean accuracy of that step.
    assert h["acc"] == pytest.approx(h["clean_acc"])
    assert 0.0 <= h["acc"] <= h["top2"] <= 1.0
    logits = model.base_model.predict(x, verbose=0)
    assert h["val_acc"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert h["val_top2"] == pytest.approx(np.mean((np.argsort(-logits, 1)[:, :2] == y[:, None]).any(1)))


_DYN_RUN = """
import keras, numpy as np
from keras_sns import attacks
from keras_sns.training import RobustModel
rng = np.random.default_rng(0)
x = rng.uniform(0.2, 0.8, (64, 8)).astype("float32"); y = rng.integers(0, 3, 64)
inputs = keras.Input((8,))
h = keras.layers.Activation("relu", name="relu")(keras.layers.Dense(16, name="hidden")(inputs))
base = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
model = RobustModel(base, method="sns", layers=["hidden"], lam=0.1, k=4, selection="dyn",
                    attack=attacks.get("pgd_linf", eps=0.1, steps=1, step_size=0.1,
                                       random_start=False))
model.compile(optimizer=keras.optimizers.SGD(0.5),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
assert len(history.history["loss"]) == 5
"""


def test_a_five_epoch_dyn_run_logs_no_retracing_warning():
    assert retracing_warnings(_DYN_RUN) == 0
