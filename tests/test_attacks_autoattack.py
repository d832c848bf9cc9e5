"""Tests of the AutoAttack family: APGD-T, FAB / FAB-T, Square and the AutoAttack ensemble.

Threat-model properties on the session's tiny trained CNN, a hand-computed case for FAB
on a linear model, the projection step against scipy, Square without gradients, and the
per-example worst case of the ensemble. Settings are cut down (steps, queries, targets)
so that the whole file runs in well under a minute on a CPU.
"""

from __future__ import annotations

import logging
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog

from keras_sns import attacks
from keras_sns.attacks import (
    AutoAttack,
    FastAdaptiveBoundary,
    FastAdaptiveBoundaryTargeted,
    FastGradientSignMethod,
    SquareAttack,
)
from keras_sns.attacks.projections import minimal_step_to_hyperplane
from keras_sns.attacks.survivors import attack_each_target, attack_survivors

EPS = 0.1
L2_EPS = 1.0
N = 64  # test images of the accuracy comparisons
# name -> (registered attack, cheap hyperparameters, distance measure). Square needs
# about 1000 queries to beat FGSM on the tiny CNN (as a numpy port of the reference
# code does); AutoAttack's stages use the same settings as the runs alone.
CASES = {
    "apgd_t": ("apgd_t", {"steps": 10, "n_target_classes": 3}, "linf"),
    "fab": ("fab", {"steps": 10}, "linf"),
    "fab_t": ("fab_t", {"steps": 10, "n_target_classes": 3}, "linf"),
    "fab_t_l2": ("fab_t", {"steps": 10, "n_target_classes": 3, "norm": "l2"}, "l2"),
    "square": ("square", {"n_queries": 1000}, "linf"),
    "square_l2": ("square", {"n_queries": 300, "norm": "l2"}, "l2"),
    "autoattack": ("autoattack", {"steps": 10, "n_target_classes": 3, "n_queries": 1000}, "linf"),
}


def build(case: str, eps: float | None = None, **more) -> attacks.Attack:
    name, params, norm = CASES[case]
    radius = (L2_EPS if norm == "l2" else EPS) if eps is None else eps
    return attacks.get(name, eps=radius, seed=0, **{**params, **more})


def distance(a, b, norm: str) -> np.ndarray:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)).reshape(len(a), -1)
    return np.abs(d).max(axis=1) if norm == "linf" else np.sqrt(np.square(d).sum(axis=1))


def predict(model, x) -> np.ndarray:
    return np.argmax(model(np.asarray(x), training=False), axis=-1)


def accuracy(model, x, y) -> float:
    return float(np.mean(predict(model, x) == y))


def _linear_model(seed: int = 0, classes: int = 3):
    """Dense on flattened 4x4 images: logits ``x W + b``, and W, b (cheap to compile)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(16, classes)).astype(np.float32)
    b = rng.normal(size=(classes,)).astype(np.float32)
    inputs = keras.Input(shape=(4, 4, 1))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    return model, w, b


@pytest.fixture(scope="module")
def data(fmnist_small):
    _, _, x, y = fmnist_small
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def runs(tiny_trained_model, data):
    """Each case run once on the N test images: {case: (attack, x_adv)}."""
    x, y = data
    out = {}
    for case in CASES:
        attack = build(case)
        out[case] = attack, attack(tiny_trained_model, x, y)
    return out


# ------------------------------------------------------------- threat model


@pytest.mark.parametrize("case", list(CASES))
def test_stays_in_the_ball_and_the_box_and_leaves_misclassified_inputs(case, runs, tiny_trained_model, data):
    (x, y), (attack, x_adv) = data, runs[case]
    assert isinstance(x_adv, tf.Tensor) and x_adv.dtype == tf.float32 and x_adv.shape == x.shape
    x_adv = x_adv.numpy()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert distance(x_adv, x, CASES[case][2]).max() <= attack.eps + 1e-6
    wrong = predict(tiny_trained_model, x) != y
    assert wrong.sum() >= 5
    np.testing.assert_array_equal(x_adv[wrong], x[wrong])  # only correct ones are attacked
    assert (predict(tiny_trained_model, x_adv)[~wrong] != y[~wrong]).sum() >= 5  # some fall


@pytest.fixture(scope="module")
def fgsm_accuracy(tiny_trained_model, data):
    x, y = data
    return accuracy(tiny_trained_model, FastGradientSignMethod(eps=EPS)(tiny_trained_model, x, y), y)


@pytest.mark.parametrize("case", ["apgd_t", "fab_t", "square", "autoattack"])
def test_stronger_than_fgsm(case, runs, fgsm_accuracy, tiny_trained_model, data):
    model, (x, y) = tiny_trained_model, data
    clean = accuracy(model, x, y)
    ours = accuracy(model, runs[case][1], y)
    assert ours <= fgsm_accuracy < clean, (ours, fgsm_accuracy, clean)


@pytest.mark.parametrize("case", ["apgd_t", "fab_t", "square", "square_l2", "autoattack"])
def test_eps_zero_is_the_identity(case, caplog):
    # On a 10-class linear model over 4x4 images: the property does not need a trained
    # model, and its graphs compile fast. Half of the inputs are classified correctly.
    model, _, _ = _linear_model(classes=10)
    x = np.random.default_rng(2).uniform(0, 1, (8, 4, 4, 1)).astype(np.float32)
    y = np.r_[predict(model, x[:4]), np.zeros(4, int)]
    correct = int(np.sum(predict(model, x) == y))
    with caplog.at_level(logging.INFO, logger="keras_sns.attacks.auto_attack"):
        np.testing.assert_array_equal(build(case, eps=0.0)(model, x, y).numpy(), x)
    if case == "autoattack":  # it logs its progress: the clean accuracy, then each stage
        share = f"{100 * correct / 8:.2f} %"
        assert [re.sub(r" \(\d+\.\d s\)$", "", r.getMessage()) for r in caplog.records] == [
            f"autoattack (standard, eps=0): clean accuracy {share} of 8"] + [
            f"autoattack: {name} fooled 0 of {correct}; robust accuracy {share}"
            for name in ("apgd_ce", "apgd_t", "fab_t", "square")]


# ------------------------------------------------------------- survivors


def test_attack_survivors_runs_on_the_robust_rows_and_keeps_only_successes():
    x = tf.reshape(tf.range(5, dtype=tf.float32), [5, 1])
    robust = tf.constant([True, False, True, True, False])
    seen = []

    def run(idx):  # "attacks" by adding 10; fools the rows with an even index
        seen.append(idx.numpy().tolist())
        return tf.gather(x, idx) + 10.0, tf.equal(idx % 2, 0)

    x_adv, still = attack_survivors(run, x, robust)
    assert seen == [[0, 2, 3]]
    np.testing.assert_array_equal(x_adv.numpy()[:, 0], [10, 1, 12, 3, 4])
    np.testing.assert_array_equal(still.numpy(), [False, False, False, True, False])
    x_all, _ = attack_survivors(run, x, robust, keep_all=True)  # row 3 failed, written anyway
    np.testing.assert_array_equal(x_all.numpy()[:, 0], [10, 1, 12, 13, 4])
    seen.clear()
    same, none = attack_survivors(run, x, tf.zeros([5], tf.bool))  # nobody left: no run
    assert seen == [] and np.array_equal(same.numpy(), x.numpy()) and not none.numpy().any()


def test_attack_each_target_tries_the_runner_up_first_on_the_survivors():
    logits = tf.constant([[5.0, 1.0, 3.0, 2.0], [0.0, 4.0, 1.0, 2.0]])
    calls = []

    def run(idx, targets, restart):
        calls.append((idx.numpy().tolist(), tf.gather(targets, idx).numpy().tolist(), restart))
        return tf.zeros([tf.size(idx), 1]), tf.gather(targets, idx) == 3  # fooled if aimed at 3

    x_adv, robust = attack_each_target(run, tf.ones([2, 1]), tf.constant([True, True]), logits,
                                       n_target_classes=9, restarts=2)
    # Row 0 ranks 2, 3, 1 after its class; row 1 ranks 3, 2, 0 (at most 3 other classes).
    assert calls == [([0, 1], [2, 3], 0), ([0], [2], 1), ([0], [3], 0)]
    np.testing.assert_array_equal(robust.numpy(), [False, False])
    np.testing.assert_array_equal(x_adv.numpy(), [[0.0], [0.0]])


# ------------------------------------------------------------------- FAB


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_hand_computed_minimal_distance_on_a_linear_model(norm):
    # For logits x W + b the class-y region is a polytope: the smallest perturbation that
    # changes the class is min_k (z_y - z_k) / ||w_y - w_k||_dual (L1 is L-inf's dual),
    # as long as the box [0, 1] is not in the way (images in [0.4, 0.6], small margins).
    model, w, b = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.4, 0.6, size=(400, 4, 4, 1)).astype(np.float32)
    z = x.reshape(len(x), -1) @ w + b
    y = z.argmax(axis=1)
    dual = 1 if norm == "linf" else 2
    others = [[k for k in range(3) if k != label] for label in y]
    minimal = np.array([min((z[i, y[i]] - z[i, k]) / np.linalg.norm(w[:, y[i]] - w[:, k], ord=dual)
                            for k in others[i]) for i in range(len(x))])
    close = minimal < 0.05  # the answer stays far from the box walls
    x, y, minimal = x[close][:20], y[close][:20], minimal[close][:20]
    assert len(x) >= 10
    x_adv = FastAdaptiveBoundary(eps=1.0, norm=norm, steps=50)(model, x, y).numpy()
    found = distance(x_adv, x, norm)
    assert np.all(predict(model, x_adv) != y)
    assert np.all(found >= minimal * (1 - 1e-4))  # nothing closer exists
    assert np.all(found <= minimal * 1.01)  # and FAB gets there
    if norm == "linf":  # With eps below the minimal distance x comes back unchanged.
        smaller = FastAdaptiveBoundaryTargeted(eps=0.5 * minimal.min(), norm=norm, steps=20)
        np.testing.assert_array_equal(smaller(model, x, y).numpy(), x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_step_to_hyperplane_matches_scipy(norm):
    rng = np.random.default_rng(0)
    n, d = 40, 12
    points = rng.uniform(0, 1, (n, d))
    w = rng.normal(size=(n, d)) * (rng.uniform(size=(n, d)) > 0.2)  # some zero weights
    b = (w * points).sum(1) + rng.normal(size=n) * np.where(np.arange(n) < 30, 1.0, 20.0)
    step = minimal_step_to_hyperplane(*(tf.constant(a, tf.float32) for a in (points, w, b)), norm).numpy()
    end = points + step
    assert np.all(end >= -1e-6) and np.all(end <= 1 + 1e-6)
    np.testing.assert_array_equal(step[w == 0], 0.0)
    feasible = 0
    for i in range(n):
        gap = b[i] - w[i] @ points[i]
        # The box's extreme point in the direction of the plane: the plane is reachable
        # exactly when it gets at least as far as gap.
        reach = np.abs(w[i]) @ np.where(w[i] * gap > 0, 1 - points[i], points[i])
        if reach < abs(gap):  # unreachable: every coordinate that moves is at its wall
            moved = w[i] != 0
            np.testing.assert_allclose(np.minimum(end[i], 1 - end[i])[moved], 0.0, atol=1e-6)
            continue
        feasible += 1
        assert abs(w[i] @ end[i] - b[i]) <= 1e-4 * max(1.0, abs(b[i]))
        if norm == "linf":  # min t subject to |d_j| <= t, <w, d> = gap, box
            res = linprog(np.r_[np.zeros(d), 1.0],
                          A_ub=np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]],
                          b_ub=np.zeros(2 * d), A_eq=np.r_[w[i], 0.0][None], b_eq=[gap],
                          bounds=list(zip(-points[i], 1 - points[i])) + [(0, None)])
            assert res.status == 0
            assert np.abs(step[i]).max() == pytest.approx(res.x[-1], rel=1e-4, abs=1e-6)
        else:  # KKT: d = clip(mu w, box) with <w, d(mu)> = gap; bisection on mu
            lo, hi = (0.0, 1e6) if gap > 0 else (-1e6, 0.0)
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if w[i] @ np.clip(mid * w[i], -points[i], 1 - points[i]) < gap else (lo, mid)
            np.testing.assert_allclose(step[i], np.clip(lo * w[i], -points[i], 1 - points[i]), atol=1e-5)
    assert 20 <= feasible < n  # both kinds of rows were checked


# ----------------------------------------------------------------- Square


class NaNGradient(keras.layers.Layer):
    """Identity forward; NaN backward: any gradient taken through it is useless."""

    def call(self, x):
        @tf.custom_gradient
        def identity(t):
            return tf.identity(t), lambda dy: dy * float("nan")

        return identity(x)


class QueryCounter(keras.layers.Layer):
    """Identity that counts the images it sees (a model query each)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64")

    def call(self, x):
        self.count.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return x


def test_square_needs_no_gradient_and_stops_early(tiny_trained_model, data):
    x, y = data
    inputs = keras.Input((28, 28, 1))
    counter = QueryCounter()
    model = keras.Model(inputs, tiny_trained_model(NaNGradient()(counter(inputs))))
    # Positive control: a gradient through this model is NaN.
    with tf.GradientTape() as tape:
        xt = tf.constant(x[:4])
        tape.watch(xt)
        loss = tf.reduce_sum(model(xt))
    assert np.isnan(tape.gradient(loss, xt).numpy()).all()
    correct = predict(tiny_trained_model, x) == y
    counter.count.assign(0)
    eps, n_queries = 0.2, 300
    attack = SquareAttack(eps=eps, n_queries=n_queries, seed=0)
    assert attack.black_box
    x_adv = attack(model, x, y).numpy()
    queries = int(counter.count.numpy())
    assert np.isfinite(x_adv).all() and distance(x_adv, x, "linf").max() <= eps + 1e-6
    fooled = predict(tiny_trained_model, x_adv) != y
    assert fooled[correct].mean() > 0.5
    # Fooled examples stop querying: far fewer queries than one per iteration each.
    full = len(x) + correct.sum() * n_queries  # the clean check and the start, then the loop
    assert queries < 0.5 * full, (queries, full)


def test_square_is_seeded_and_targeted():
    model, _, _ = _linear_model(classes=10)
    x = np.random.default_rng(3).uniform(0, 1, (16, 4, 4, 1)).astype(np.float32)
    y = predict(model, x)
    first = SquareAttack(eps=0.3, n_queries=100, seed=3)(model, x, y).numpy()
    again = SquareAttack(eps=0.3, n_queries=100, seed=3)(model, x, y).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.mean(predict(model, first) != y) > 0.5
    target = np.argsort(np.asarray(model(x)), axis=1)[:, -2]  # the runner-up class
    x_t = SquareAttack(eps=0.3, n_queries=100, seed=0)(model, x, y, target=target).numpy()
    assert np.mean(predict(model, x_t) == target) > 0.5


def test_apgd_restarts_attack_the_survivors_and_eot_averages_gradients():
    model, _, _ = _linear_model(classes=10)
    x = np.random.default_rng(5).uniform(0, 1, (32, 4, 4, 1)).astype(np.float32)
    y = predict(model, x)

    def run(**params):
        return attacks.get("apgd_ce", eps=0.05, steps=5, seed=0, **params)(model, x, y).numpy()

    once = run()
    # A deterministic model gives EOT the same gradient each time: the same steps.
    np.testing.assert_array_equal(run(eot_iter=3), once)
    # Restarts keep what the first run fooled and only attack the rest again.
    fooled_once = predict(model, once) != y
    more = run(restarts=3)
    np.testing.assert_array_equal(more[fooled_once], once[fooled_once])
    assert np.all(predict(model, more)[fooled_once] != y[fooled_once])
    assert np.sum(predict(model, more) != y) >= fooled_once.sum()
    assert distance(more, x, "linf").max() <= 0.05 + 1e-6


# -------------------------------------------------------------- AutoAttack


def test_autoattack_stages_follow_the_original_versions():
    standard = AutoAttack(eps=0.1, seed=4)
    assert [name for name, _ in standard.stages()] == ["apgd_ce", "apgd_t", "fab_t", "square"]
    configs = dict((name, attack.get_config()) for name, attack in standard.stages())
    assert all(c["eps"] == 0.1 and c["seed"] == 4 for c in configs.values())
    assert (configs["apgd_ce"]["steps"], configs["apgd_ce"]["restarts"], configs["apgd_ce"]["rho"]) == (100, 1, 0.75)
    assert (configs["apgd_t"]["n_target_classes"], configs["apgd_t"]["restarts"]) == (9, 1)
    assert {k: configs["fab_t"][k] for k in ("norm", "steps", "restarts", "alpha_max", "eta", "beta",
                                             "n_target_classes")} == {
        "norm": "linf", "steps": 100, "restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9,
        "n_target_classes": 9}
    assert (configs["square"]["n_queries"], configs["square"]["p_init"]) == (5000, 0.8)
    plus = dict(AutoAttack(version="plus").stages())
    assert list(plus) == ["apgd_ce", "apgd_dlr", "fab", "square", "apgd_t", "fab_t"]
    assert [plus[n].restarts for n in ("apgd_ce", "apgd_dlr", "fab", "apgd_t", "fab_t")] == [5, 5, 5, 1, 1]
    rand = AutoAttack(version="rand").stages()
    assert [(name, attack.eot_iter, attack.restarts) for name, attack in rand] == [
        ("apgd_ce", 20, 1), ("apgd_dlr", 20, 1)]
    assert standard.stages()[0][1] is standard.stages()[0][1]  # the instances __call__ runs


def test_autoattack_is_the_per_example_worst_case_of_its_stages(runs, tiny_trained_model, data):
    model, (x, y) = tiny_trained_model, data
    params = CASES["autoattack"][1]
    robust_aa = predict(model, runs["autoattack"][1]) == y  # AutoAttack(eps, seed=0, **params)
    # The same stages (same seeds), run by hand: each on the survivors of the ones before.
    robust = predict(model, x) == y
    survived = {}
    stages = AutoAttack(eps=EPS, seed=0, **params).stages()
    for name, stage in stages:
        idx = np.flatnonzero(robust)
        fooled = predict(model, stage(model, x[idx], y[idx])) != y[idx]
        robust[idx[fooled]] = False
        survived[name] = robust.copy()
    np.testing.assert_array_equal(robust_aa, robust)
    assert np.array_equal(robust, np.logical_and.reduce(list(survived.values())))
    # No better than any of its stages run alone on every example (the runs of the
    # module fixture use the stages' own settings).
    alone = {"apgd_ce": accuracy(model, attacks.get("apgd_ce", eps=EPS, seed=0, steps=10)(model, x, y), y)}
    for name, stage in stages[1:]:
        attack, x_alone = runs[name]
        assert attack.get_config() == stage.get_config()
        alone[name] = accuracy(model, x_alone, y)
    assert all(robust_aa.mean() <= acc for acc in alone.values()), (robust_aa.mean(), alone)


def test_autoattack_runs_inside_a_compiled_function():
    # perturb() is the graph path (training steps, exports): same cascade, same rule.
    model, _, _ = _linear_model(classes=10)
    x = np.random.default_rng(4).uniform(0, 1, (16, 4, 4, 1)).astype(np.float32)
    y = np.r_[predict(model, x[:12]), np.zeros(4, int)]
    aa = AutoAttack(eps=0.2, seed=0, steps=5, n_target_classes=2, n_queries=50)
    x_adv = aa.perturb(model, tf.constant(x), tf.constant(y, tf.int32)).numpy()
    assert distance(x_adv, x, "linf").max() <= 0.2 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    correct = predict(model, x) == y
    np.testing.assert_array_equal(x_adv[~correct], x[~correct])
    assert accuracy(model, x_adv, y) < 0.5 * correct.mean()


# ------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("square", {"norm": "l1"}, r"Expected norm to be one of 'linf', 'l2'\. Received: norm='l1'"),
        ("fab_t", {"norm": "Linf"}, r"Received: norm='Linf'"),
        ("square", {"n_queries": 0}, r"Expected n_queries >= 1\. Received: n_queries=0"),
        ("square", {"p_init": 0.0}, r"Expected p_init > 0\. Received: p_init=0\.0"),
        ("square", {"p_init": 1.5}, r"Expected p_init <= 1\. Received: p_init=1\.5"),
        ("square", {"eps": 2.0}, r"Expected eps <= 1 for an L-inf attack"),
        ("fab", {"alpha_max": 1.5}, r"Expected alpha_max <= 1\. Received: alpha_max=1\.5"),
        ("fab", {"eta": 0}, r"Expected eta > 0\. Received: eta=0"),
        ("fab", {"beta": -0.1}, r"Expected beta >= 0\. Received: beta=-0\.1"),
        ("fab_t", {"n_target_classes": 0}, r"Expected n_target_classes >= 1\. Received: n_target_classes=0"),
        ("apgd_t", {"restarts": 0}, r"Expected restarts >= 1\. Received: restarts=0"),
        ("apgd_t", {"eot_iter": 1.5}, r"Expected eot_iter to be an integer\. Received: eot_iter=1\.5"),
        ("autoattack", {"version": "fast"},
         r"Expected version to be one of 'standard', 'plus', 'rand'\. Received: version='fast'"),
        ("autoattack", {"eps": -0.1}, r"Expected eps >= 0\. Received: eps=-0\.1"),
        ("autoattack", {"steps": 0}, r"Expected steps >= 1\. Received: steps=0"),
    ],
)
def test_bad_hyperparameters_raise(name, params, message):
    with pytest.raises(ValueError, match=message):
        attacks.get(name, **params)


def test_bad_calls_raise(tiny_trained_model, data):
    x, y = data[0][:4], data[1][:4]
    for name in ("apgd_t", "fab", "fab_t", "autoattack"):
        with pytest.raises(ValueError, match=rf"The '{name}' attack does not support target="):
            attacks.get(name)(tiny_trained_model, x, y, target=y)
    three_classes, _, _ = _linear_model(classes=3)
    with pytest.raises(ValueError, match=r"Expected a model with at least 4 classes for the targeted "
                                         r"DLR loss\. Received: 3 classes"):
        attacks.get("apgd_t", steps=2)(three_classes, np.full((2, 4, 4, 1), 0.5, np.float32), [0, 1])
    flat = keras.Sequential([keras.Input((16,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, height, width, channels\) "
                                         r"for the Square Attack\. Received: x\.shape=\(2, 16\)"):
        SquareAttack(n_queries=2)(flat, np.full((2, 16), 0.5, np.float32), [0, 1])
