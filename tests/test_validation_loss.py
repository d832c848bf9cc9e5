"""RobustModel's validation loss is its training objective (issue 11, item 6).

``test_step`` used to pass a regulariser of 0, so ``val_sns_loss``/``val_alp_loss`` were
always 0 and ``val_loss`` ignored the term that ``EarlyStopping`` or ``ModelCheckpoint``
on ``val_loss`` should see. Here ``evaluate`` on one batch, with a deterministic attack,
is checked against the same quantities computed in NumPy from the probe's activations.
"""

import keras
import numpy as np
import pytest

from keras_sns import attacks
from keras_sns.neurons import probe
from keras_sns.training import RobustModel

from _robust_models import one_conv_model

MASKS = {"conv": np.array([1, 0, 0, 1], np.float32), "hidden": np.array([0, 1, 1, 0, 0], np.float32)}


def _tiny():
    base = one_conv_model(seed=0)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, (16, 6, 6, 1)).astype(np.float32)
    return base, x, (np.arange(16) % 3).astype(np.int64)


def _cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("method", ["sns", "alp"])
def test_validation_loss_is_the_training_objective(method):
    base, x, y = _tiny()
    # random_start=False: the attack is deterministic, so the NumPy side sees the same x'.
    attack = attacks.get("pgd_linf", eps=0.1, steps=2, step_size=0.05, random_start=False)
    kwargs = dict(layers=["conv", "hidden"], k=2, selection="ema") if method == "sns" else {}
    model = RobustModel(base, method=method, lam=0.5, attack=attack, **kwargs)
    if method == "sns":
        model.set_masks(MASKS)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)  # one batch

    x_adv = np.asarray(attack(base, x, y))
    acts = probe(base, ["conv", "hidden"])
    clean = {k: np.asarray(v) for k, v in acts(x).items()}
    adv = {k: np.asarray(v) for k, v in acts(x_adv).items()}
    # pat/alp/sns: cross-entropy over clean and adversarial examples, 1:1.
    ce = _cross_entropy(np.concatenate([clean["logits"], adv["logits"]]), np.concatenate([y, y]))
    if method == "sns":
        # eq. 1 per channel (mean |F(x) - F(x')| over examples and positions), masked, summed.
        sigma = {"conv": np.abs(clean["conv"] - adv["conv"]).mean(axis=(0, 1, 2)),
                 "hidden": np.abs(clean["hidden"] - adv["hidden"]).mean(axis=0)}
        reg = sum(float((sigma[n] * MASKS[n]).sum()) for n in MASKS)
    else:
        reg = float(np.mean((clean["logits"] - adv["logits"]) ** 2))
    assert reg > 1e-3  # the term is really there
    assert logs[f"{method}_loss"] == pytest.approx(reg, rel=1e-4)
    assert logs["ce_loss"] == pytest.approx(ce, rel=1e-4)
    assert logs["loss"] == pytest.approx(ce + 0.5 * reg, rel=1e-4)
    assert logs["clean_acc"] == pytest.approx(np.mean(clean["logits"].argmax(1) == y))
    assert logs["adv_acc"] == pytest.approx(np.mean(adv["logits"].argmax(1) == y))
    if method == "sns":  # held-out data never moves the ema selection's statistics
        assert all(not np.asarray(v).any() for v in model.sigma_ema.values())


def test_without_the_attack_validation_loss_is_the_clean_cross_entropy():
    base, x, y = _tiny()
    model = RobustModel(base, method="alp", lam=0.5, eval_attack=False,
                        attack={"name": "pgd_linf", "eps": 0.1, "steps": 2})
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    ce = _cross_entropy(np.asarray(base(x)), y)
    assert logs["loss"] == pytest.approx(ce, rel=1e-5) and logs["alp_loss"] == 0.0
