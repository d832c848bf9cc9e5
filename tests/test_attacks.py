"""Tests of keras_sns.attacks: registry, threat-model properties, analytic cases,
strength orderings on a small trained Fashion-MNIST CNN, and argument checks."""

from __future__ import annotations

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from _retracing import retracing_warnings

from keras_sns import attacks, data, models
from keras_sns.attacks import (
    GAUSSIAN_NOISE_STD,
    CarliniWagnerL2,
    FastGradientSignMethod,
    GaussianNoise,
    ProjectedGradientDescentL2,
    ProjectedGradientDescentLinf,
)

ALL_ATTACKS = [
    "apgd_ce", "apgd_dlr", "apgd_t", "autoattack", "cw_l2", "fab", "fab_t", "fgsm",
    "fgsm_rs", "gaussian_noise", "n_fgsm", "nattack", "pgd_l2", "pgd_linf", "spsa",
    "square", "trades_kl",
]
# Cheap settings for the property tests (the paper's defaults are far too slow here).
CHEAP = {
    "fgsm": {},
    "pgd_linf": {"steps": 5, "seed": 0},
    "pgd_l2": {"steps": 5, "seed": 0},
    "apgd_ce": {"steps": 10, "seed": 0},
    "apgd_dlr": {"steps": 10, "seed": 0},
    "spsa": {"num_samples": 16, "spsa_batch_size": 8, "iterations": 3, "seed": 0},
    "nattack": {"population": 20, "population_batch_size": 10, "iterations": 3, "seed": 0},
    "cw_l2": {"binary_search_steps": 2, "iterations": 20},
}
EPS_ATTACKS = ["fgsm", "pgd_linf", "pgd_l2", "apgd_ce", "apgd_dlr", "spsa", "nattack"]
N_EVAL = 200  # test images for accuracy comparisons
TOL = 2 / N_EVAL  # two examples of noise allowed in monotonicity checks


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained for 4 epochs on 5000 Fashion-MNIST images (a few seconds)."""
    keras.utils.set_random_seed(0)
    x_train, y_train, _ = data.load_arrays("fashion_mnist", "train", limit=5000)
    x_test, y_test, _ = data.load_arrays("fashion_mnist", "test", limit=N_EVAL)
    model = models.build("small_cnn", input_shape=(28, 28, 1), num_classes=10,
                         filters=(8, 8, 16, 16), fc_units=64)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=4, verbose=0)
    return model, x_test, y_test


def predict(model, x) -> np.ndarray:
    return np.argmax(model.predict(np.asarray(x), batch_size=500, verbose=0), axis=-1)


def accuracy(model, x, y) -> float:
    return float(np.mean(predict(model, x) == y))


def linf(a, b) -> np.ndarray:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.abs(d).reshape(len(d), -1).max(axis=1)


def l2(a, b) -> np.ndarray:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.sqrt(np.square(d).reshape(len(d), -1).sum(axis=1))


@pytest.fixture(scope="module")
def clean_acc(trained):
    model, x, y = trained
    acc = accuracy(model, x, y)
    assert acc > 0.8, f"the fixture model should learn Fashion-MNIST; clean accuracy {acc}"
    return acc


class GradientLog:
    """Names of the traps a gradient went through (a plain object: Keras would copy a
    list attribute of a layer into its own tracked list)."""

    def __init__(self):
        self.names: list[str] = []


class GradientTrap(keras.layers.Layer):
    """Identity layer that records every gradient requested through it.

    ``tf.custom_gradient`` calls ``grad`` whenever a backward pass goes through the
    layer: at trace time inside ``tf.function`` and at run time eagerly. Either way a
    gradient taken through the model leaves a mark in the log.
    """

    def __init__(self, log: GradientLog, **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def call(self, x):
        @tf.custom_gradient
        def identity(t):
            def grad(dy):
                self.log.names.append(self.name)
                return dy

            return tf.identity(t), grad

        return identity(x)


def trapped(model) -> tuple[keras.Model, GradientLog]:
    """``model`` between two gradient traps, one on the input and one on the logits."""
    log = GradientLog()
    inputs = keras.Input(shape=model.input_shape[1:])
    outputs = GradientTrap(log, name="trap_logits")(model(GradientTrap(log, name="trap_input")(inputs)))
    return keras.Model(inputs, outputs), log


# ------------------------------------------------------------------------ registry


def test_registry_lists_every_attack():
    assert attacks.available() == ALL_ATTACKS
    assert isinstance(attacks.get("pgd_linf"), ProjectedGradientDescentLinf)
    assert attacks.get_class("cw_l2") is CarliniWagnerL2


def test_unknown_name_lists_the_valid_ones():
    expected = rf"Unknown attack 'pgd'\. Expected one of: {re.escape(', '.join(ALL_ATTACKS))}\."
    with pytest.raises(ValueError, match=expected):
        attacks.get("pgd")


def test_register_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        attacks.register("fgsm")(type("Dup", (attacks.Attack,), {}))


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_config_round_trip(name):
    attack = attacks.get(name, **CHEAP.get(name, {}))
    config = attack.get_config()
    rebuilt = type(attack).from_config(config)
    assert rebuilt.get_config() == config
    assert type(attack).__name__ in repr(attack)


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_config_keys_are_the_keyword_arguments_of_init(name):
    cls = attacks.get_class(name)
    keywords = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    attack = attacks.get(name, **CHEAP.get(name, {}))
    config = attack.get_config()
    assert list(config) == keywords == list(cls.hyperparameters())
    assert attacks.accepted_params(name) == attacks.accepted_params(cls) == set(keywords)
    assert type(attack)(**config).get_config() == config
    assert "get_config" not in vars(cls)  # derived once, in the base class


def test_pgd_norms_share_one_loop():
    for cls in (ProjectedGradientDescentLinf, ProjectedGradientDescentL2):
        assert issubclass(cls, attacks.ProjectedGradientDescent)
        assert "_attack" not in vars(cls)
    assert issubclass(attacks.AutoProjectedGradientDescentTargeted, attacks.AutoProjectedGradientDescent)


def test_a_subclass_forwarding_params_shows_its_parents_in_its_signature():
    # pgd_l2 declares only eps (its own default) and forwards the rest with **params.
    l2 = inspect.signature(ProjectedGradientDescentL2).parameters
    assert list(l2) == ["eps", "steps", "step_size", "random_start", "seed"]
    assert (l2["eps"].default, l2["steps"].default) == (80 / 255, 10)
    assert inspect.signature(ProjectedGradientDescentLinf).parameters["eps"].default == 8 / 255
    apgd_t = inspect.signature(attacks.AutoProjectedGradientDescentTargeted).parameters
    assert list(apgd_t)[-2:] == ["seed", "n_target_classes"] and apgd_t["steps"].default == 100
    with pytest.raises(TypeError, match="epsilon"):
        ProjectedGradientDescentL2(epsilon=1.0)


def test_build_accepts_every_spec_form():
    pgd = attacks.get("pgd_linf", eps=0.1, steps=3, seed=0)
    assert attacks.build(pgd) is pgd
    rebuilt = attacks.build(pgd, steps=7)
    assert rebuilt is not pgd and isinstance(rebuilt, ProjectedGradientDescentLinf)
    assert rebuilt.get_config() == {**pgd.get_config(), "steps": 7}
    assert attacks.build("fgsm").get_config() == {"eps": pytest.approx(8 / 255)}
    assert attacks.build("fgsm", eps=0.2).get_config() == {"eps": 0.2}
    flat = attacks.build({"name": "pgd_l2", "eps": 1.5, "steps": 4})
    nested = attacks.build({"name": "pgd_l2", "params": {"eps": 1.5, "steps": 4}})
    assert isinstance(flat, ProjectedGradientDescentL2)
    assert flat.get_config() == nested.get_config()
    assert (flat.eps, flat.steps) == (1.5, 4)
    assert attacks.build({"name": "pgd_l2", "params": {"eps": 1.5}}, eps=2.0, seed=3).get_config() == {
        **attacks.get("pgd_l2").get_config(), "eps": 2.0, "seed": 3}


@pytest.mark.parametrize(
    "spec, overrides, message",
    [
        (42, {}, r"Expected spec to be an Attack, a registered attack name or a dict with a "
                 r"'name' key\. Received: spec=42"),
        ({"eps": 0.1}, {}, r"Received: spec=\{'eps': 0\.1\}"),
        ({"name": "fgsm", "params": {"eps": 0.1}, "eps": 0.2}, {},
         r"Expected a spec \{'name': \.\.\., 'params': \{\.\.\.\}\} .* Received: spec="),
        ({"name": "fgsm", "params": [0.1]}, {}, r"with a dict of params"),
        ("deepfool", {}, r"Unknown attack 'deepfool'\. Expected one of: apgd_ce"),
        ("fgsm", {"epsilon": 0.1},
         r"Expected hyperparameters of the 'fgsm' attack, one of: eps\. Received: epsilon=0\.1"),
        ({"name": "pgd_linf", "steps": 2, "step": 3}, {}, r"Received: step=3$"),
        (attacks.get("fgsm"), {"steps": 3}, r"Received: steps=3"),
        ("pgd_linf", {"eps": -1.0}, r"Expected eps >= 0\. Received: eps=-1\.0"),
    ],
)
def test_build_rejects_bad_specs(spec, overrides, message):
    with pytest.raises(ValueError, match=message):
        attacks.build(spec, **overrides)


def test_accepted_and_filtered_params():
    assert attacks.accepted_params("fgsm") == {"eps"}
    assert attacks.accepted_params("pgd_linf") == {"eps", "steps", "step_size", "random_start", "seed"}
    assert attacks.filter_params("fgsm", {"eps": 0.1, "steps": 20, "seed": 0}) == {"eps": 0.1}
    shared = {"eps": 0.1, "steps": 20, "seed": 0, "n_queries": 100}
    assert attacks.filter_params("square", shared) == {"eps": 0.1, "seed": 0, "n_queries": 100}
    assert attacks.filter_params(CarliniWagnerL2, shared) == {}
    with pytest.raises(ValueError, match=r"Expected a registered attack name or an Attack subclass\. "
                                         r"Received: name_or_class=3"):
        attacks.accepted_params(3)
    with pytest.raises(ValueError, match=r"Unknown attack 'nope'"):
        attacks.filter_params("nope", {})


def test_paper_defaults():
    assert FastGradientSignMethod().eps == pytest.approx(8 / 255)
    pgd = ProjectedGradientDescentLinf()
    assert (pgd.eps, pgd.steps) == (pytest.approx(8 / 255), 10)
    assert pgd.alpha == pytest.approx(8 / 255 / np.sqrt(10))
    assert ProjectedGradientDescentL2().eps == pytest.approx(80 / 255)
    assert CarliniWagnerL2().get_config() == {
        "initial_const": 0.01, "confidence": 0.0, "binary_search_steps": 3,
        "iterations": 300, "learning_rate": 0.01}
    spsa = attacks.get("spsa").get_config()
    assert (spsa["num_samples"], spsa["learning_rate"], spsa["iterations"]) == (512, 0.01, 100)
    nat = attacks.get("nattack").get_config()
    assert (nat["population"], nat["sigma"]) == (300, 0.1)
    assert (nat["learning_rate"], nat["iterations"]) == (0.008, 100)


# ------------------------------------------------------- threat-model properties


@pytest.mark.parametrize("name", EPS_ATTACKS)
def test_eps_zero_returns_the_input(name, trained):
    model, x, _ = trained
    x = x[:8]
    x_adv = attacks.get(name, eps=0.0, **CHEAP[name])(model, x)
    assert isinstance(x_adv, tf.Tensor) and x_adv.dtype == tf.float32
    np.testing.assert_array_equal(x_adv.numpy(), x)


@pytest.mark.parametrize("name", EPS_ATTACKS)
def test_perturbation_stays_in_the_eps_ball_and_the_box(name, trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    eps = 0.5 if name == "pgd_l2" else 0.05
    x_adv = attacks.get(name, eps=eps, **CHEAP[name])(model, tf.constant(x), y).numpy()
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    dist = l2(x_adv, x) if name == "pgd_l2" else linf(x_adv, x)
    assert dist.max() <= eps + 1e-6
    assert dist.max() > 0.5 * eps  # it did move


def test_cw_returns_the_input_where_it_fails(trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    # Far too few, far too small steps: no correctly classified example can flip.
    attack = CarliniWagnerL2(binary_search_steps=1, iterations=2, learning_rate=1e-6)
    x_adv = attack(model, x, y).numpy()
    correct = predict(model, x) == y
    assert correct.sum() >= 10
    np.testing.assert_array_equal(x_adv[correct], x[correct])
    # Misclassified inputs already "succeed" at (almost) zero distortion.
    assert l2(x_adv[~correct], x[~correct]).max(initial=0.0) < 1e-3


def test_attacks_accept_numpy_and_do_not_retrace(trained):
    model, x, y = trained
    attack = ProjectedGradientDescentLinf(eps=0.05, steps=2, seed=0)
    first = attack(model, x[:8], y[:8])
    attack(model, x[8:16], y[8:16])
    fn = attack._compiled(model)
    assert fn.experimental_get_tracing_count() == 1
    attack(model, x[:5], y[:5])  # a new batch size: at most one relaxed retrace
    attack(model, x[:7], y[:7])
    assert fn.experimental_get_tracing_count() <= 2
    # Same seed, fresh instance: the same random start, hence the same result.
    again = ProjectedGradientDescentLinf(eps=0.05, steps=2, seed=0)(model, x[:8], y[:8])
    np.testing.assert_array_equal(first.numpy(), again.numpy())


def test_a_second_call_continues_the_stream_and_a_rebuilt_attack_repeats(trained):
    model, x, y = trained
    attack = ProjectedGradientDescentLinf(eps=0.05, steps=1, seed=0)
    first, second = attack(model, x[:8], y[:8]), attack(model, x[:8], y[:8])
    assert not np.array_equal(first.numpy(), second.numpy())  # another random start
    rebuilt = type(attack).from_config(attack.get_config())
    np.testing.assert_array_equal(rebuilt(model, x[:8], y[:8]).numpy(), first.numpy())


# ----------------------------------------------------------------- analytic cases


def _linear_model(seed=0, pixels=4, classes=3):
    """Dense on flattened 4x4 images with fixed random weights, and the weights."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(pixels * pixels, classes)).astype(np.float32)
    b = rng.normal(size=(classes,)).astype(np.float32)
    inputs = keras.Input(shape=(pixels, pixels, 1))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    return model, w, b


def _ce_input_gradient(x, labels, w, b):
    """d CE(softmax(x W + b), label) / dx, by hand: W (softmax - onehot)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    z = flat @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(x)), labels] -= 1.0
    return (p @ w.T).reshape(x.shape)


def test_fgsm_is_eps_times_the_sign_of_the_hand_computed_gradient():
    model, w, b = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, size=(6, 4, 4, 1)).astype(np.float32)  # far from 0 and 1
    y = np.array([0, 1, 2, 0, 1, 2])
    target = (y + 1) % 3
    eps = 0.1
    grad = _ce_input_gradient(x, y, w, b)
    assert np.abs(grad).min() > 1e-4  # every sign is unambiguous
    delta = FastGradientSignMethod(eps=eps)(model, x, y).numpy() - x
    np.testing.assert_allclose(delta, eps * np.sign(grad), rtol=0, atol=1e-6)
    # Targeted: step *down* the cross-entropy of the target class.
    grad_t = _ce_input_gradient(x, target, w, b)
    delta_t = FastGradientSignMethod(eps=eps)(model, x, y, target=target).numpy() - x
    np.testing.assert_allclose(delta_t, -eps * np.sign(grad_t), rtol=0, atol=1e-6)


def test_pgd_l2_step_follows_the_normalised_gradient_and_is_clipped_not_stretched():
    model, w, b = _linear_model(seed=2)
    x = np.random.default_rng(3).uniform(0.3, 0.7, size=(4, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    grad = _ce_input_gradient(x, y, w, b)
    unit = grad / np.sqrt(np.square(grad).reshape(4, -1).sum(1)).reshape(4, 1, 1, 1)
    # One step of length 0.2 inside a ball of radius 0.5: the step is kept as it is
    # (not pushed out to the sphere).
    short = ProjectedGradientDescentL2(eps=0.5, steps=1, step_size=0.2, random_start=False)
    np.testing.assert_allclose(short(model, x, y).numpy() - x, 0.2 * unit, atol=1e-6)
    # A step of length 1.0 leaves the ball of radius 0.3: it is shrunk onto it.
    long = ProjectedGradientDescentL2(eps=0.3, steps=1, step_size=1.0, random_start=False)
    np.testing.assert_allclose(long(model, x, y).numpy() - x, 0.3 * unit, atol=1e-6)


# ----------------------------------------------- strength on a small trained CNN


def test_pgd_is_stronger_than_fgsm_which_is_stronger_than_nothing(trained, clean_acc):
    model, x, y = trained
    fgsm = accuracy(model, FastGradientSignMethod(eps=0.1)(model, x, y), y)
    pgd = accuracy(model, ProjectedGradientDescentLinf(eps=0.1, seed=0)(model, x, y), y)
    assert pgd <= fgsm <= clean_acc
    assert pgd < clean_acc - 0.4, (clean_acc, fgsm, pgd)


def test_pgd_accuracy_does_not_increase_with_eps(trained, clean_acc):
    model, x, y = trained
    accs = [accuracy(model, ProjectedGradientDescentLinf(eps=e, seed=0)(model, x, y), y)
            for e in (0.0, 0.02, 0.05, 0.1, 0.15)]
    assert accs[0] == clean_acc
    assert all(b <= a + TOL for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < 0.1, accs


def test_pgd_accuracy_does_not_increase_with_steps(trained):
    model, x, y = trained
    accs = [accuracy(model, ProjectedGradientDescentLinf(eps=0.05, steps=k, seed=0)(model, x, y), y)
            for k in (1, 2, 5, 10, 20)]
    assert all(b <= a + TOL for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0], accs


def test_targeted_pgd_reaches_the_target(trained):
    model, x, y = trained
    target = (y + 1) % 10
    x_adv = ProjectedGradientDescentLinf(eps=0.25, steps=20, seed=0)(model, x, y, target=target)
    assert np.mean(predict(model, x_adv) == target) > 0.8
    assert linf(x_adv.numpy(), x).max() <= 0.25 + 1e-6


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_dlr"])
def test_apgd_is_at_least_as_strong_as_pgd(name, trained, clean_acc):
    model, x, y = trained
    pgd = accuracy(model, ProjectedGradientDescentLinf(eps=0.05, seed=0)(model, x, y), y)
    apgd = accuracy(model, attacks.get(name, eps=0.05, steps=20, seed=0)(model, x, y), y)
    assert apgd <= pgd + TOL, (pgd, apgd)
    assert apgd < clean_acc - 0.2


def test_cw_finds_smaller_perturbations_than_l2_pgd_at_equal_success(trained):
    model, x, y = trained
    correct = predict(model, x) == y
    x, y = x[correct][:64], y[correct][:64]
    x_cw = CarliniWagnerL2(iterations=100)(model, x, y).numpy()
    success = predict(model, x_cw) != y
    rate = success.mean()
    assert rate > 0.3, rate
    cw_median = np.median(l2(x_cw, x)[success])
    # The smallest swept L2-PGD radius whose success rate matches C&W's.
    radius = None
    for eps in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        x_pgd = ProjectedGradientDescentL2(eps=eps, steps=20, seed=0)(model, x, y)
        if np.mean(predict(model, x_pgd) != y) >= rate:
            radius = eps
            break
    assert radius is not None
    assert cw_median < radius, (cw_median, radius, rate)


@pytest.mark.parametrize(
    "name, params",
    [
        ("spsa", {"num_samples": 32, "spsa_batch_size": 32, "iterations": 20,
                  "learning_rate": 0.02, "seed": 0}),
        ("nattack", {"population": 50, "population_batch_size": 50, "iterations": 40,
                     "learning_rate": 0.1, "seed": 0}),
    ],
)
def test_black_box_attacks_halve_the_accuracy(name, params, trained):
    model, x, y = trained
    x, y = x[:40], y[:40]
    clean = accuracy(model, x, y)
    x_adv = attacks.get(name, eps=0.15, **params)(model, x, y)
    assert linf(x_adv.numpy(), x).max() <= 0.15 + 1e-6
    assert accuracy(model, x_adv, y) < clean / 2, (clean, accuracy(model, x_adv, y))


@pytest.mark.parametrize("name", ["spsa", "nattack"])
def test_black_box_attacks_never_take_a_gradient_of_the_model(name, trained):
    model, x, y = trained
    wrapped, log = trapped(model)
    # Positive control: the trap does record a white-box attack's gradients.
    FastGradientSignMethod(eps=0.1)(wrapped, x[:4], y[:4])
    assert set(log.names) == {"trap_input", "trap_logits"}
    log.names.clear()
    attack = attacks.get(name, eps=0.1, **CHEAP[name])
    assert attack.black_box
    x_adv = attack(wrapped, x[:8], y[:8])
    assert linf(x_adv.numpy(), x[:8]).max() > 0  # the model was really queried
    attack(wrapped, x[:8], y[:8], target=(y[:8] + 1) % 10)
    assert log.names == []
    assert "GradientTape" not in inspect.getsource(inspect.getmodule(type(attack)))


# --------------------------------------------------------------- gaussian noise


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_noise_std_matches_the_cifar10c_table(severity):
    grey = np.full((32, 32, 32, 3), 0.5, np.float32)  # 5 sigma away from clipping
    noisy = GaussianNoise(severity=severity, seed=severity)(None, grey).numpy()
    c = GAUSSIAN_NOISE_STD[severity - 1]
    assert c == [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    assert np.std(noisy - grey) == pytest.approx(c, rel=0.02)
    assert np.mean(noisy) == pytest.approx(0.5, abs=0.002)


def test_gaussian_noise_is_seeded_and_clipped(trained):
    model, x, _ = trained
    a = GaussianNoise(severity=5, seed=7)(model, x[:16]).numpy()
    b = GaussianNoise(severity=5, seed=7)(model, x[:16]).numpy()
    c = GaussianNoise(severity=5, seed=8)(model, x[:16]).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.min() == 0.0  # black Fashion-MNIST backgrounds are clipped, not negative


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("fgsm", {"eps": -0.1}, r"Expected eps >= 0\. Received: eps=-0\.1"),
        ("pgd_linf", {"eps": 8}, r"Expected eps <= 1 for an L-inf attack .* Received: eps=8$"),
        ("spsa", {"eps": 1.5}, r"Expected eps <= 1"),
        ("pgd_l2", {"eps": -1.0}, r"Expected eps >= 0\. Received: eps=-1\.0"),
        ("pgd_linf", {"eps": float("nan")}, r"Expected eps to be a finite number"),
        ("pgd_linf", {"steps": 0}, r"Expected steps >= 1\. Received: steps=0"),
        ("apgd_ce", {"steps": 2.5}, r"Expected steps to be an integer\. Received: steps=2\.5"),
        ("cw_l2", {"iterations": 0}, r"Expected iterations >= 1\. Received: iterations=0"),
        ("cw_l2", {"initial_const": 0}, r"Expected initial_const > 0\. Received: initial_const=0"),
        ("spsa", {"num_samples": 100},
         r"Expected num_samples to be a multiple of spsa_batch_size=64\. Received: num_samples=100"),
        ("nattack", {"sigma": -0.1}, r"Expected sigma > 0\. Received: sigma=-0\.1"),
        ("pgd_linf", {"seed": -1}, r"Expected seed >= 0\. Received: seed=-1"),
        ("gaussian_noise", {"severity": 0}, r"Expected severity to be an integer in 1\.\.5\. Received: severity=0"),
        ("gaussian_noise", {"severity": 6}, r"Received: severity=6"),
        ("gaussian_noise", {"severity": 2.0}, r"Received: severity=2\.0"),
    ],
)
def test_bad_hyperparameters_raise(name, params, message):
    with pytest.raises(ValueError, match=message):
        attacks.get(name, **params)


def test_unknown_hyperparameter_raises():
    with pytest.raises(TypeError, match="epsilon"):
        attacks.get("fgsm", epsilon=0.1)


def test_bad_call_arguments_raise(trained):
    model, x, y = trained
    x, y = x[:4], y[:4]
    fgsm = FastGradientSignMethod(eps=0.1)
    with pytest.raises(ValueError, match=r"Expected x in \[0, 1\] .* Received: x with min=0, max=255"):
        fgsm(model, np.round(x * 255), y)
    with pytest.raises(ValueError, match=r"Expected x in \[0, 1\]"):
        fgsm(model, x - 0.5, y)
    with pytest.raises(ValueError, match=r"Expected x to be finite"):
        fgsm(model, np.where(x > 0.5, np.nan, x), y)
    wrong_shape = (r"Expected x of shape \('batch', 28, 28, 1\) to match the model's input "
                   r"shape \(None, 28, 28, 1\)\. Received: x\.shape=\(4, 32, 32, 3\)")
    with pytest.raises(ValueError, match=wrong_shape):
        fgsm(model, np.zeros((4, 32, 32, 3), np.float32), y)
    with pytest.raises(ValueError, match=r"Received: x\.shape=\(4, 784\)"):
        fgsm(model, x.reshape(4, -1), y)
    with pytest.raises(ValueError, match=r"Expected y to be integer class labels of shape \(4,\).*one-hot"):
        fgsm(model, x, np.eye(10)[y])
    with pytest.raises(ValueError, match=r"Expected y in \[0, 9\] .* Received: y with min=\d, max=10"):
        fgsm(model, x, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"Expected target to be integer class labels of shape \(4,\)"):
        fgsm(model, x, y, target=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"The 'gaussian_noise' corruption does not support target="):
        GaussianNoise()(model, x, y, target=y)
    with pytest.raises(ValueError, match=r"Expected x of shape \('batch', 28, 28, 1\)"):
        GaussianNoise()(model, np.zeros((2, 8, 8, 1), np.float32))


def test_dlr_needs_three_classes():
    model, _, _ = _linear_model(classes=2)
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    expected = r"Expected a model with at least 3 classes for the DLR loss\. Received: 2 classes"
    with pytest.raises(ValueError, match=expected):
        attacks.get("apgd_dlr", eps=0.1, steps=2)(model, x, np.array([0, 1]))


def test_empty_batch_is_returned_as_is(trained):
    model, x, y = trained
    out = ProjectedGradientDescentLinf(eps=0.1, seed=0)(model, x[:0], y[:0])
    assert out.shape == (0, 28, 28, 1)


_MANY_MODELS = """
import keras, numpy as np
from keras_sns import attacks
rng = np.random.default_rng(0)
x = rng.uniform(0.2, 0.8, (20, 4, 4, 1)).astype("float32"); y = rng.integers(0, 3, 20)
for i in range(6):  # what a training run and its evaluation do: new models, new settings
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    for steps in (1, 2):
        attack = attacks.get("pgd_linf", eps=0.1, steps=steps, seed=0)
        attack(model, x[:16], y[:16]); attack(model, x[16:], y[16:])
"""


def test_fresh_attack_functions_for_new_models_are_not_reported_as_retracing():
    # TensorFlow counts traces per Python code object: each model's first trace must
    # not count as a retrace of another model's function.
    assert retracing_warnings(_MANY_MODELS) == 0
