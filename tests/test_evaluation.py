"""Robust evaluation: the worst-case cascade, reports, and the sanity-check warnings."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sns import attacks
from keras_sns.attacks import registry
from keras_sns.evaluation import EvaluationWarning, eps_sweep, evaluate, generate_adversarial

EPS = 0.1


def _deterministic_attacks():
    return [attacks.get("fgsm", eps=EPS),
            attacks.get("pgd_linf", eps=EPS, steps=5, random_start=False),
            attacks.get("pgd_l2", eps=1.0, steps=5, random_start=False)]


def _survives(model, x, y, attack):
    return np.argmax(np.asarray(model(attack(model, x, y))), axis=1) == y


def test_cascade_equals_the_per_example_worst_case(tiny_trained_model, fmnist_small):
    model, (_, _, x, y) = tiny_trained_model, fmnist_small
    result = evaluate(model, (x, y), _deterministic_attacks(), batch_size=64)
    clean = np.argmax(np.asarray(model(x)), axis=1) == y
    # Independently: every attack on every example, then AND of the survivals.
    alive = clean.copy()
    expected = []
    for attack in _deterministic_attacks():
        alive &= _survives(model, x, y, attack)
        expected.append(alive.mean())
    assert result.num_examples == len(y) == 200
    assert result.clean_accuracy == pytest.approx(clean.mean())
    # Batch composition changes float round-off, so allow one example of slack.
    for row, exp in zip(result.rows, expected):
        assert row.accuracy == pytest.approx(exp, abs=1 / len(y) + 1e-9)
    accs = [result.clean_accuracy] + [r.accuracy for r in result.rows]
    assert accs == sorted(accs, reverse=True)  # a cascade never gains accuracy
    # Each attack ran only on the examples still standing.
    assert result.rows[0].ran_on == clean.sum()
    for prev, row in zip(result.rows, result.rows[1:]):
        assert row.ran_on == prev.ran_on - prev.fooled
    assert result.robust_accuracy == result.rows[-1].accuracy


def test_independent_mode_gives_each_attack_its_own_accuracy(tiny_trained_model, fmnist_small):
    model, (_, _, x, y) = tiny_trained_model, fmnist_small
    fgsm, pgd = attacks.get("fgsm", eps=EPS), attacks.get("pgd_linf", eps=EPS, steps=10, seed=0)
    result = evaluate(model, (x, y), [fgsm, pgd], cascade=False, batch_size=200)
    clean = np.argmax(np.asarray(model(x)), axis=1) == y
    assert result.rows[0].accuracy == pytest.approx((clean & _survives(model, x, y, fgsm)).mean(),
                                                    abs=1 / len(y) + 1e-9)
    assert result.rows[0].ran_on == result.rows[1].ran_on == clean.sum()
    # PGD-10 is at least as strong as FGSM at the same radius.
    assert result.rows[1].accuracy <= result.rows[0].accuracy + 0.01 < result.clean_accuracy


def test_tf_data_input_and_limit(tiny_trained_model, fmnist_small):
    model, (_, _, x, y) = tiny_trained_model, fmnist_small
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    a = evaluate(model, ds, [attacks.get("fgsm", eps=EPS)], limit=70)
    b = evaluate(model, (x[:70], y[:70]), [attacks.get("fgsm", eps=EPS)], batch_size=70)
    assert a.num_examples == 70
    assert a.clean_accuracy == b.clean_accuracy
    assert a.rows[0].accuracy == pytest.approx(b.rows[0].accuracy, abs=1 / 70 + 1e-9)


def test_json_and_markdown_reports(tiny_trained_model, fmnist_small):
    model, (_, _, x, y) = tiny_trained_model, fmnist_small
    result = evaluate(model, (x[:50], y[:50]), [attacks.get("fgsm", eps=EPS)])
    record = json.loads(json.dumps(result.to_json()))
    assert record["num_examples"] == 50 and record["cascade"] is True
    assert record["attacks"][0]["name"] == "fgsm" and record["attacks"][0]["config"]["eps"] == EPS
    assert record["robust_accuracy"] == result.rows[0].accuracy
    md = result.to_markdown().splitlines()
    assert md[0].startswith("| attack |") and md[2].startswith("| clean |")
    assert f"{100 * result.clean_accuracy:.2f} %" in md[2]
    assert md[3].startswith("| fgsm | eps=0.1") and f"{100 * result.rows[0].accuracy:.2f} %" in md[3]


def test_warns_on_probability_outputs(tiny_trained_model, fmnist_small):
    _, _, x, y = fmnist_small
    probs = keras.Sequential([tiny_trained_model, keras.layers.Softmax()])
    with pytest.warns(EvaluationWarning, match="probabilities, not logits"):
        result = evaluate(probs, (x[:32], y[:32]), [attacks.get("fgsm", eps=EPS)])
    assert any("probabilities" in w for w in result.warnings)


def _masked(model):
    """The same predictions behind a rounding layer: zero input gradients everywhere."""
    inputs = keras.Input((28, 28, 1))
    # 0 * t keeps the graph connected, so the gradient is zero rather than None.
    rounded = keras.layers.Lambda(lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * 8.0) / 8.0))(inputs)
    return keras.Model(inputs, model(rounded))


def test_warns_on_vanishing_gradients(tiny_trained_model, fmnist_small):
    _, _, x, y = fmnist_small
    with pytest.warns(EvaluationWarning, match="gradient is zero or not finite for 100%"):
        evaluate(_masked(tiny_trained_model), (x[:32], y[:32]), [attacks.get("fgsm", eps=EPS)])


def test_no_warning_on_a_healthy_model(tiny_trained_model, fmnist_small, recwarn):
    _, _, x, y = fmnist_small
    result = evaluate(tiny_trained_model, (x[:64], y[:64]), [attacks.get("fgsm", eps=EPS)])
    assert result.warnings == []
    assert not [w for w in recwarn if issubclass(w.category, EvaluationWarning)]


def test_warns_when_black_box_beats_white_box(tiny_trained_model, fmnist_small):
    _, _, x, y = fmnist_small
    masked = _masked(tiny_trained_model)
    white = attacks.get("pgd_linf", eps=0.2, steps=5, seed=0)
    black = attacks.get("spsa", eps=0.2, num_samples=64, spsa_batch_size=64, iterations=10,
                        learning_rate=0.05, seed=0)
    with pytest.warns(EvaluationWarning) as caught:
        result = evaluate(masked, (x[:24], y[:24]), [white, black])
    assert any("gradient masking" in str(w.message) and "spsa" in str(w.message) for w in caught)
    assert result.rows[1].fooled > 0


class _ShrinkingNoise(attacks.Attack):
    """A broken 'attack' whose perturbation shrinks as eps grows (for the check)."""

    norm = "linf"

    def __init__(self, *, eps=0.1):
        self.eps = eps

    def get_config(self):
        return {"eps": self.eps}

    def _attack(self, model, x, y, target):
        sign = tf.where(tf.range(tf.size(x)) % 2 == 0, 1.0, -1.0)
        return tf.clip_by_value(x + (0.5 - self.eps) * tf.reshape(sign, tf.shape(x)), 0.0, 1.0)


def test_warns_when_accuracy_rises_with_eps(tiny_trained_model, fmnist_small):
    _, _, x, y = fmnist_small
    registry.register("shrinking_noise_for_test")(_ShrinkingNoise)
    try:
        with pytest.warns(EvaluationWarning, match="rises from"):
            accs = eps_sweep(tiny_trained_model, (x[:64], y[:64]), "shrinking_noise_for_test",
                             [0.05, 0.45])
    finally:
        registry._REGISTRY.pop("shrinking_noise_for_test")
    assert accs[0.45] > accs[0.05]


def test_eps_sweep_of_pgd_does_not_rise(tiny_trained_model, fmnist_small, recwarn):
    _, _, x, y = fmnist_small
    accs = eps_sweep(tiny_trained_model, (x[:100], y[:100]), "pgd_linf", [0.0, 0.02, 0.05, 0.1],
                     steps=10, seed=0)
    values = list(accs.values())
    assert all(b <= a + 0.01 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0] - 0.3
    assert not [w for w in recwarn if issubclass(w.category, EvaluationWarning)]


def test_generate_adversarial_arrays(tiny_trained_model, fmnist_small):
    model, (_, _, x, y) = tiny_trained_model, fmnist_small
    out = generate_adversarial(model, (x[:40], y[:40]), attacks.get("fgsm", eps=EPS), batch_size=16)
    assert set(out) == {"x", "x_adv", "y", "pred_clean", "pred_adv"}
    np.testing.assert_array_equal(out["x"], x[:40])
    assert np.abs(out["x_adv"] - out["x"]).max() <= EPS + 1e-6
    np.testing.assert_array_equal(out["pred_adv"], np.argmax(np.asarray(model(out["x_adv"])), axis=1))
    targeted = generate_adversarial(model, (x[:40], y[:40]),
                                    attacks.get("pgd_linf", eps=0.2, steps=20, seed=0), target=3)
    untargeted = generate_adversarial(model, (x[:40], y[:40]),
                                      attacks.get("pgd_linf", eps=0.2, steps=20, seed=0))
    # The target reaches the attack: most examples land on class 3, far more than untargeted.
    assert np.mean(targeted["pred_adv"] == 3) > 0.6
    assert np.mean(targeted["pred_adv"] == 3) > np.mean(untargeted["pred_adv"] == 3) + 0.4


@pytest.mark.parametrize(
    "data, match",
    [
        ((np.full((4, 28, 28, 1), 2.0, np.float32), np.zeros(4, np.int64)), r"Expected images in \[0, 1\]"),
        ((np.zeros((4, 28, 28, 1), np.float32), np.zeros(3, np.int64)), r"as many labels as images"),
        ((np.zeros((0, 28, 28, 1), np.float32), np.zeros(0, np.int64)), r"at least one example"),
        ("not data", r"Expected data to be a batched tf.data.Dataset"),
    ],
)
def test_bad_input(tiny_trained_model, data, match):
    with pytest.raises(ValueError, match=match):
        evaluate(tiny_trained_model, data, [attacks.get("fgsm", eps=EPS)])


def test_an_ensemble_runs_stage_by_stage_in_the_cascade(tiny_trained_model, fmnist_small):
    # AutoAttack (reduced budget) is expanded into one row per stage; its accuracy after
    # the last stage is what the ensemble itself leaves, and never above any stage's
    # own accuracy run alone.
    _, _, x, y = fmnist_small
    x, y = x[:48], y[:48]
    aa = attacks.get("autoattack", eps=0.05, steps=10, n_queries=50, n_target_classes=2, seed=0)
    stages = [name for name, _ in aa.stages()]
    result = evaluate(tiny_trained_model, (x, y), [aa], checks=False)
    assert [r.name for r in result.rows] == [f"autoattack/{s}" for s in stages]
    accs = [r.accuracy for r in result.rows]
    assert accs == sorted(accs, reverse=True)  # a cascade only ever loses examples
    assert all(r.seconds >= 0 for r in result.rows)
    whole = evaluate(tiny_trained_model, (x, y), [aa], cascade=False, checks=False)
    assert [r.name for r in whole.rows] == ["autoattack"]
    for _, stage in aa.stages():
        alone = evaluate(tiny_trained_model, (x, y), [stage], cascade=False, checks=False)
        assert result.robust_accuracy <= alone.robust_accuracy + 1e-9
