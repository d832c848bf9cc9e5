"""The single-step training attacks: FGSM-RS (Wong et al. 2020) and N-FGSM (de Jorge et
al. 2022). Their promises, checked on a linear model whose gradient sign is known by
hand, on a small CNN, and through ``cli.py train --attack``."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_sns import attacks
from keras_sns.attacks import FastGradientSignMethodRandomStart, NoiseFastGradientSignMethod

EPS = 0.1


def linear_model(n: int = 64) -> keras.Model:
    """Two-class logits ``(w . x, 0)`` with w = +1, -1, +1, ... on flat images.

    For label 0 the cross-entropy gradient is ``(p0 - 1) w``: its sign is ``-sign(w)``
    everywhere, so every pixel's step direction is known by hand.
    """
    inputs = keras.Input((n,))
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(inputs))
    w = np.zeros((n, 2), np.float32)
    w[:, 0] = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    dense.set_weights([w])
    return model


def step_sign(n: int = 64) -> np.ndarray:
    return -np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


@pytest.fixture(scope="module")
def mid_gray():
    """500 images at 0.5: far enough from 0 and 1 that the box never clips (3 eps = 0.3)."""
    return np.full((500, 64), 0.5, np.float32), np.zeros(500, np.int64)


# ------------------------------------------------------------------------ FGSM-RS


def test_fgsm_rs_stays_in_the_ball_and_the_box_and_steps_uphill(mid_gray):
    x, y = mid_gray
    delta = np.asarray(attacks.get("fgsm_rs", eps=EPS, seed=0)(linear_model(), x, y)) - x
    assert np.abs(delta).max() <= EPS + 1e-6
    # Start u ~ U(-eps, eps), then +1.25 eps along the known sign, clipped to the ball:
    # delta * sign = min(u + 1.25 eps, eps), in [0.25 eps, eps], so the sign is right.
    along = delta * step_sign()
    assert along.min() >= 0.25 * EPS - 1e-6
    # P(u + 1.25 eps >= eps) = P(u >= -0.25 eps) = 0.625: that share ends on the surface.
    assert np.mean(along > EPS - 1e-6) == pytest.approx(0.625, abs=0.02)
    # The rest is uniform on [0.25 eps, eps): mean of the whole = 0.625 eps + 0.375 * 0.625 eps.
    assert along.mean() == pytest.approx(EPS * (0.625 + 0.375 * 0.625), abs=0.004)


def test_fgsm_rs_with_a_step_of_two_eps_is_fgsm(mid_gray):
    # From anywhere in the ball a step of 2 eps reaches past its far side, so projection
    # leaves exactly x + eps * sign(grad): FGSM's answer, whatever the random start.
    x, y = mid_gray
    model = linear_model()
    rs = attacks.get("fgsm_rs", eps=EPS, step_size=2 * EPS, seed=3)(model, x[:20], y[:20])
    fgsm = attacks.get("fgsm", eps=EPS)(model, x[:20], y[:20])
    np.testing.assert_allclose(np.asarray(rs), np.asarray(fgsm), atol=1e-6)


def test_fgsm_rs_near_the_box_walls_and_at_eps_zero(tiny_trained_model, fmnist_small):
    _, _, xt, yt = fmnist_small  # real images: most pixels are exactly 0
    x, y = xt[:64], yt[:64]
    x_adv = np.asarray(attacks.get("fgsm_rs", eps=EPS, seed=0)(tiny_trained_model, x, y))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    x0 = np.asarray(attacks.get("fgsm_rs", eps=0.0, seed=0)(tiny_trained_model, x, y))
    np.testing.assert_array_equal(x0, x)


def test_fgsm_rs_is_seeded_and_its_start_is_random(mid_gray):
    x, y = mid_gray
    model = linear_model()
    a = np.asarray(FastGradientSignMethodRandomStart(eps=EPS, seed=1)(model, x[:8], y[:8]))
    b = np.asarray(FastGradientSignMethodRandomStart(eps=EPS, seed=1)(model, x[:8], y[:8]))
    c = np.asarray(FastGradientSignMethodRandomStart(eps=EPS, seed=2)(model, x[:8], y[:8]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------------ N-FGSM


def test_n_fgsm_leaves_the_eps_ball_by_design_but_stays_within_three_eps(mid_gray):
    x, y = mid_gray
    attack = attacks.get("n_fgsm", eps=EPS, seed=0)
    delta = np.asarray(attack(linear_model(), x, y)) - x
    assert attack.radius == pytest.approx(3 * EPS)
    assert np.abs(delta).max() <= 3 * EPS + 1e-6
    # delta * sign = eta * sign + eps with eta ~ U(-2 eps, 2 eps): uniform on [-eps, 3 eps].
    along = delta * step_sign()
    assert along.min() >= -EPS - 1e-6 and along.max() > 2.9 * EPS
    assert along.mean() == pytest.approx(EPS, abs=0.004)
    # Half of the pixels end outside the eps-ball: no clipping to it, as the paper says.
    assert np.mean(np.abs(delta) > EPS + 1e-6) == pytest.approx(0.5, abs=0.02)


def test_n_fgsm_stays_in_the_box_on_real_images(tiny_trained_model, fmnist_small):
    _, _, xt, yt = fmnist_small
    x, y = xt[:64], yt[:64]
    x_adv = np.asarray(attacks.get("n_fgsm", eps=EPS, seed=0)(tiny_trained_model, x, y))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() <= 3 * EPS + 1e-6


def test_n_fgsm_without_noise_is_fgsm(tiny_trained_model, fmnist_small):
    _, _, xt, yt = fmnist_small
    x, y = xt[:32], yt[:32]
    plain = np.asarray(attacks.get("fgsm", eps=EPS)(tiny_trained_model, x, y))
    noiseless = np.asarray(attacks.get("n_fgsm", eps=EPS, noise=0.0, seed=0)(
        tiny_trained_model, x, y))
    np.testing.assert_allclose(noiseless, plain, atol=1e-6)


# ------------------------------------------------------------------------ registry, checks


def test_registered_with_their_defaults_and_rebuilt_from_config():
    rs = attacks.build({"name": "fgsm_rs", "eps": EPS, "seed": 0})
    nf = attacks.build("n_fgsm", eps=EPS, seed=0)
    assert isinstance(rs, FastGradientSignMethodRandomStart) and rs.alpha == pytest.approx(0.125)
    assert isinstance(nf, NoiseFastGradientSignMethod) and nf.alpha == EPS and nf.noise == 2.0
    assert rs.get_config() == {"eps": EPS, "step_size": None, "seed": 0}
    assert nf.get_config() == {"eps": EPS, "noise": 2.0, "step_size": None, "seed": 0}
    assert type(nf).from_config(nf.get_config()).get_config() == nf.get_config()
    assert attacks.filter_params("fgsm_rs", {"eps": EPS, "steps": 10, "seed": 0}) == {
        "eps": EPS, "seed": 0}


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("fgsm_rs", {"eps": -0.1}, r"Expected eps >= 0\. Received: eps=-0\.1"),
        ("fgsm_rs", {"eps": 0.1, "step_size": -1.0}, r"Expected step_size >= 0\. Received"),
        ("n_fgsm", {"eps": 1.5}, r"Expected eps <= 1 .* Received: eps=1\.5"),
        ("n_fgsm", {"noise": -2.0}, r"Expected noise >= 0\. Received: noise=-2\.0"),
        ("n_fgsm", {"steps": 10}, r"Received: steps=10"),
    ],
)
def test_bad_arguments_raise_keras_style(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        attacks.build(name, **kwargs)


def test_cli_train_with_a_single_step_attack(tmp_path, tiny_trained_model):
    # `train --attack fgsm_rs` (no --steps for it to choke on), from a tiny saved model.
    from click.testing import CliRunner

    from keras_sns.cli import main

    init = tmp_path / "init.keras"
    tiny_trained_model.save(init)
    out = tmp_path / "pat"
    result = CliRunner().invoke(main, [
        "train", "--method", "pat", "--attack", "fgsm_rs", "--init", str(init), "--epochs", "1",
        "--limit", "128", "--eval-limit", "32", "--batch-size", "64", "--eval-steps", "2",
        "--robust-eval-limit", "16", "--precision", "float32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    robust = json.loads((out / "config.json").read_text())
    assert robust["attack"] == "fgsm_rs" and robust["precision"] == "float32"
    model = keras.models.load_model(out / "robust_model.keras")
    assert model.attack_config == {"name": "fgsm_rs", "eps": EPS, "step_size": None, "seed": 0}
    # The costly PGD ran on the first 16 test images only, and the table says so; clean
    # and FGSM accuracy cover all 32.
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["num_examples"] == 32 and evaluation["pgd2_examples"] == 16
    assert evaluation["pgd2"] <= 1.0 and 16 * evaluation["pgd2"] == round(16 * evaluation["pgd2"])
    assert f"{100 * evaluation['pgd2']:.2f} % (first 16)" in result.output
