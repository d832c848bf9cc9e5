"""Tests for the studies of section IV (keras_sns.studies), their figures
(keras_sns.studies.figures) and the reproduction's figures (keras_sns.studies.result_figures)."""

from __future__ import annotations

import math

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from keras_sns import models
from keras_sns.studies import figures as plots
from keras_sns.studies import result_figures
from keras_sns.neurons import (
    avg_pair_levenshtein,
    importance,
    important_neurons,
    levenshtein_similarity,
    spearman,
    total_jaccard,
    vote,
)
from keras_sns.data import load_arrays
from keras_sns.neurons import measure_sensitivity, probe, sensitive_neurons
from keras_sns.studies import (
    AttackSpec,
    ChannelScale,
    attack_spec,
    check_layers,
    default_suppression_attacks,
    eps_sweep,
    load_adversarial_npz,
    ratio_profile,
    sensitivity_profile,
    suppress_channels,
    suppression_study,
    targeted_study,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_drawn(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)[..., :3]
    # Something besides the white background was drawn: curves, bars, text.
    assert (pixels < 0.9).any(axis=-1).mean() > 0.01


@pytest.fixture(scope="module")
def trained():
    """small_cnn after one epoch on 1000 Fashion-MNIST images, and 60 test images."""
    keras.utils.set_random_seed(0)
    x, y, _ = load_arrays("fashion_mnist", "train", limit=1000)
    model = models.build("small_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    xt, yt, _ = load_arrays("fashion_mnist", "test", limit=60)
    return model, xt, yt


# ------------------------------------------------------------------ the wrapper


def test_channel_scale_by_hand():
    out = ChannelScale([0, 2], 0.5)(np.ones((2, 3), "float32"))
    np.testing.assert_array_equal(out, [[0.5, 1.0, 0.5]] * 2)


def test_beta_one_reproduces_the_logits_exactly(trained):
    model, x, _ = trained
    wrapper = suppress_channels(model, "relu2", [3, 5, 30], beta=1.0)
    np.testing.assert_array_equal(wrapper(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(wrapper.predict(x, verbose=0), model.predict(x, verbose=0))
    # The wrapper is a copy: same weights in new layers, plus the scaler.
    assert wrapper.get_layer("conv1") is not model.get_layer("conv1")
    assert {layer.name for layer in wrapper.layers} - {layer.name for layer in model.layers} \
        == {"relu2_suppress"}


def test_beta_zero_on_every_channel_zeroes_the_layer(trained):
    model, x, _ = trained
    wrapper = suppress_channels(model, "relu1", range(32), beta=0.0)
    outs = probe(wrapper, ["relu1", "relu1_suppress"])(x[:8])
    assert np.abs(outs["relu1"]).sum() > 0
    np.testing.assert_array_equal(outs["relu1_suppress"], np.zeros((8, 28, 28, 32)))
    # Nothing of the input gets past relu1, so every image gets the same logits.
    logits = np.asarray(outs["logits"])
    np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), atol=1e-6)


def test_set_suppression_scales_only_the_chosen_channels(trained):
    model, x, _ = trained
    wrapper = suppress_channels(model, "relu4", [1], beta=1.0)
    scaler = wrapper.get_layer("relu4_suppress")
    scaler.set_suppression([2, 9], 0.25)
    outs = probe(wrapper, ["relu4", "relu4_suppress"])(x[:4])
    expected = np.asarray(outs["relu4"]).copy()
    expected[..., [2, 9]] *= 0.25
    np.testing.assert_allclose(outs["relu4_suppress"], expected, rtol=1e-6)
    assert scaler.get_config()["channels"] == [2, 9] and scaler.get_config()["beta"] == 0.25
    with pytest.raises(ValueError, match=r"channel indices in \[0, 64\)"):
        scaler.set_suppression([64], 0.5)
    with pytest.raises(ValueError, match="distinct non-negative"):
        scaler.set_suppression([-1], 0.5)
    with pytest.raises(ValueError, match="beta=nan"):
        scaler.set_suppression([1], float("nan"))
    with pytest.raises(ValueError, match="Unknown layer 'relu9'. Valid names: conv1, relu1"):
        suppress_channels(model, "relu9", [0])


def test_wrapper_save_load_round_trip(trained, tmp_path):
    model, x, _ = trained
    wrapper = suppress_channels(model, "conv3", [0, 7, 11], beta=0.6)
    wrapper.save(tmp_path / "wrapper.keras")
    loaded = keras.models.load_model(tmp_path / "wrapper.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapper.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("conv3_suppress").get_config()["channels"] == [0, 7, 11]
    assert not np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ------------------------------------------------------------- suppression study


@pytest.fixture(scope="module")
def suppression(trained):
    model, x, y = trained
    x_adv = AttackSpec("fgsm", {"eps": 0.1}).build()(model, x, y).numpy()
    sigma = measure_sensitivity(model, ["relu4"], x, x_adv).sigma["relu4"]
    attacks = {"fgsm": AttackSpec("fgsm", {"eps": 0.05}),
               "pgd_linf": AttackSpec("pgd_linf", {"eps": 0.05, "steps": 2, "seed": 1}),
               "gaussian_noise": AttackSpec("gaussian_noise", {"severity": 5, "seed": 3})}
    result = suppression_study(model, "relu4", sigma, x, y, attacks=attacks, betas=(1.0, 0.5),
                               repeats=3, seed=0)
    return sigma, result


def test_suppression_draws_random_channels_outside_the_sensitive_ones(suppression):
    sigma, result = suppression
    sensitive = result["sensitive"]
    assert sensitive == sensitive_neurons(sigma, 0.1).tolist() and len(sensitive) == 7
    assert len(result["random"]) == 3
    for channels in result["random"]:
        assert len(channels) == 7 == len(set(channels))
        assert not set(channels) & set(sensitive)
    assert len({tuple(c) for c in result["random"]}) == 3


def test_suppression_accuracies(trained, suppression):
    model, x, y = trained
    _, result = suppression
    res = result["results"]
    assert result["metrics"] == ["clean", "fgsm", "pgd_linf", "gaussian_noise"]
    original = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    # beta = 1 is the original model for A and B alike, under the same seeded attacks.
    for metric in result["metrics"]:
        assert res["sensitive"][metric][0] == pytest.approx(res["random"][metric][0], abs=1e-12)
        for run in res["random_repeats"]:
            assert run[metric][0] == res["sensitive"][metric][0]
        assert all(0.0 <= v <= 1.0 for v in res["sensitive"][metric] + res["random"][metric])
    assert res["sensitive"]["clean"][0] == pytest.approx(original)
    # beta = 0.5 on the sensitive channels, recomputed with a fresh wrapper.
    suppressed = suppress_channels(model, "relu4", result["sensitive"], beta=0.5)
    acc = float(np.mean(np.argmax(suppressed.predict(x, verbose=0), -1) == y))
    assert res["sensitive"]["clean"][1] == pytest.approx(acc)
    b = np.mean([run["fgsm"][1] for run in res["random_repeats"]])
    assert res["random"]["fgsm"][1] == pytest.approx(b)


def test_suppression_figure(suppression, tmp_path):
    _, result = suppression
    assert_png_drawn(plots.plot_suppression({"models": {"vanilla": result}}, tmp_path / "s.png"))


def test_default_suppression_attacks_follow_the_paper():
    specs = default_suppression_attacks()
    assert list(specs) == ["pgd_linf", "pgd_l2", "fgsm", "gaussian_noise"]
    assert specs["pgd_linf"].params["eps"] == pytest.approx(2 / 255)
    assert specs["pgd_l2"].params["eps"] == pytest.approx(80 / 255)
    assert specs["pgd_linf"].params["steps"] == 10
    assert attack_spec("fgsm", eps=0.1, steps=None, seed=0) == AttackSpec("fgsm", {"eps": 0.1})
    with pytest.raises(ValueError, match="Bad hyperparameters .* 'fgsm'"):
        AttackSpec("fgsm", {"steps": 3}).build()


# --------------------------------------------------------------- profile and ratio


def test_profile_and_ratio_of_two_models(trained, tmp_path):
    model, x, y = trained
    keras.utils.set_random_seed(5)
    fresh = models.build("small_cnn")
    layers = ["conv1", "relu3", "fc1_relu"]
    results = {}
    for label, m in {"trained": model, "fresh": fresh}.items():
        x_adv = AttackSpec("fgsm", {"eps": 0.1}).build()(m, x, y).numpy()
        results[label] = measure_sensitivity(m, layers, x, x_adv)
    profile = sensitivity_profile(results, k=0.1)
    for layer in layers:
        for label, entry in profile["layers"][layer].items():
            sigma = results[label].sigma[layer]
            assert entry["num_sensitive"] == math.ceil(0.1 * sigma.size)
            np.testing.assert_array_equal(entry["sigma_sorted"], sigma[entry["order"]])
            assert np.all(np.diff(entry["sigma_sorted"]) <= 0)
            n = entry["num_sensitive"]
            assert entry["mean_sigma_sensitive"] >= entry["mean_sigma_others"]
            assert entry["order"][:n] == sensitive_neurons(sigma, 0.1).tolist()
    ratio = ratio_profile(results, k=0.1)
    assert ratio["layers"] == layers
    for label, res in results.items():
        assert ratio["models"][label]["mean_ratio"] == [res.mean_ratio()[n] for n in layers]
        sens = res.sensitive_neurons(0.1)
        assert ratio["models"][label]["mean_ratio_sensitive"] == pytest.approx(
            [res.ratio[n][sens[n]][res.ratio_defined[n][sens[n]]].mean() for n in layers])
    assert_png_drawn(plots.plot_profile(profile, tmp_path / "profile.png"))
    assert_png_drawn(plots.plot_ratio(ratio, tmp_path / "ratio.png"))


def test_eps_sweep_of_a_linear_model_is_proportional_to_eps(tmp_path):
    """FGSM moves x by eps * s with s = sign(grad) fixed, so a linear layer's deviation,
    and its ratio, grow exactly like eps (no clipping: x in [0.3, 0.7], eps <= 0.2)."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (40, 6)).astype("float32")
    y = rng.integers(0, 3, 40)
    values = [0.05, 0.1, 0.2]
    sweep = eps_sweep({"linear": model}, ["hidden"], x, y, AttackSpec("fgsm"), values)
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = keras.losses.sparse_categorical_crossentropy(y, model(xt), from_logits=True)
    s = np.sign(tape.gradient(loss, xt).numpy()).astype(np.float64)
    w, b = (v.numpy().astype(np.float64) for v in model.get_layer("hidden").weights)
    per_unit = np.abs(s @ w) / np.abs(x.astype(np.float64) @ w + b)  # ratio at eps = 1
    rows = sweep["models"]["linear"]
    expected = [eps * per_unit.mean(axis=0).mean() for eps in values]
    np.testing.assert_allclose(rows["mean_ratio"]["hidden"], expected, rtol=1e-4)
    np.testing.assert_allclose(rows["mean_sigma"]["hidden"],
                               [eps * np.abs(s @ w).mean() for eps in values], rtol=1e-4)
    assert np.all(np.diff(rows["mean_ratio"]["hidden"]) > 0)
    assert_png_drawn(plots.plot_eps_sweep(sweep, tmp_path / "sweep.png"))


# ----------------------------------------------------------------- targeted study


@pytest.fixture(scope="module")
def targeted(trained):
    model, x, y = trained
    attack = AttackSpec("pgd_linf", {"eps": 0.2, "steps": 5, "seed": 0})
    return attack, targeted_study(model, x, y, ["conv1", "relu4"], attack, classes=[1, 3, 8])


def test_targeted_study_matches_a_recomputation(trained, targeted):
    model, x, y = trained
    attack, result = targeted
    assert result["top"] == 20 and result["penultimate"] == "fc1_relu"
    kernel = model.get_layer("logits").kernel.numpy()
    omegas = {"conv1": [], "relu4": [], "fc1_relu": []}
    for t in (1, 3, 8):
        entry = result["classes"][str(t)]
        src = np.flatnonzero(y != t)
        x_adv = attack.build()(model, x[src], y[src], np.full(src.size, t)).numpy()
        hit = np.argmax(model(x_adv, training=False), -1) == t
        assert entry["num_source"] == src.size and entry["num_success"] == hit.sum() > 0
        res = measure_sensitivity(model, list(omegas), x[src][hit], x_adv[hit])
        feats = probe(model, ["fc1_relu"])(x_adv[hit])["fc1_relu"].numpy()
        phi = importance(feats, kernel, t)
        gamma = vote(important_neurons(phi, 20), 20)
        omega = sensitive_neurons(res.sigma["fc1_relu"], 20)
        assert entry["gamma"] == gamma.tolist() and entry["omega_penultimate"] == omega.tolist()
        assert entry["spearman"] == pytest.approx(spearman(res.sigma["fc1_relu"], phi.mean(0)))
        clean_feats = probe(model, ["fc1_relu"])(x[src][hit])["fc1_relu"].numpy()
        active = feats.any(axis=0) | clean_feats.any(axis=0)  # a unit on for some example
        assert entry["num_inactive"] == (~active).sum()
        assert entry["spearman_active"] == pytest.approx(
            spearman(res.sigma["fc1_relu"][active], phi.mean(0)[active]))
        assert entry["levenshtein_similarity"] == pytest.approx(levenshtein_similarity(omega, gamma))
        assert -1.0 <= entry["spearman"] <= 1.0 and 0.0 <= entry["levenshtein_similarity"] <= 1.0
        for layer in omegas:
            omegas[layer].append(sensitive_neurons(res.sigma[layer], 0.1).tolist())
            assert entry["sensitive"][layer] == omegas[layer][-1]
    for layer, seqs in omegas.items():
        stats = result["layers"][layer]
        assert stats["avg_pair_levenshtein"] == pytest.approx(avg_pair_levenshtein(seqs))
        assert stats["total_jaccard"] == pytest.approx(total_jaccard(seqs))
        assert 0.0 <= stats["total_jaccard"] <= 1.0 and 0.0 <= stats["avg_pair_levenshtein"] <= 1.0
    assert result["mean_spearman"] == pytest.approx(
        np.mean([result["classes"][c]["spearman"] for c in ("1", "3", "8")]))


def test_targeted_figure_and_bad_classes(trained, targeted, tmp_path):
    model, x, y = trained
    _, result = targeted
    assert_png_drawn(plots.plot_targeted({"models": {"vanilla": result}}, tmp_path / "t.png"))
    with pytest.raises(ValueError, match=r"classes in \[0, 10\)"):
        targeted_study(model, x, y, ["conv1"], AttackSpec("pgd_linf"), classes=[10])


# ------------------------------------------------------------------- bad input


def test_check_layers_errors(trained):
    model, _, _ = trained
    keras.utils.set_random_seed(1)
    narrow = models.build("small_cnn", filters=(8, 8, 16, 16))
    short = models.build("small_cnn", filters=(32, 32))
    with pytest.raises(ValueError, match="Unknown layer 'conv9'. Valid names for model 'a': "
                                         "conv1, relu1, conv2"):
        check_layers({"a": model}, ["conv9"])
    with pytest.raises(ValueError, match=r"'conv3' is in model\(s\) \['a'\] but not in \['b'\]"):
        check_layers({"a": model, "b": short}, ["conv1", "conv3"])
    with pytest.raises(ValueError, match=r"'conv1' has different channel counts \{'a': 32, 'b': 8\}"):
        check_layers({"a": model, "b": narrow}, ["conv1"])
    with pytest.raises(ValueError, match=r"Layer 'conv1': Expected 1 <= k <= 32 .* k=40"):
        check_layers({"a": model}, ["conv1", "fc1_relu"], k=40)
    check_layers({"a": model, "b": short}, ["conv1", "fc1_relu"], k=32)


def test_load_adversarial_npz_errors(trained, tmp_path):
    model, x, y = trained
    np.savez(tmp_path / "no_y.npz", x=x, x_adv=x)
    with pytest.raises(ValueError, match=r"Expected arrays x, x_adv, y in .* \(missing \['y'\]\)"):
        load_adversarial_npz(tmp_path / "no_y.npz", model)
    np.savez(tmp_path / "wrong.npz", x=x[:, :14, :14], x_adv=x[:, :14, :14], y=y)
    with pytest.raises(ValueError, match=r"Expected images of shape \(28, 28, 1\)"):
        load_adversarial_npz(tmp_path / "wrong.npz", model)
    np.savez(tmp_path / "short.npz", x=x, x_adv=x[:5], y=y)
    with pytest.raises(ValueError, match="Expected x and x_adv of one shape"):
        load_adversarial_npz(tmp_path / "short.npz", model)
    np.savez(tmp_path / "ok.npz", x=x, x_adv=x, y=y, pred_adv=y)
    xs, xa, ys = load_adversarial_npz(tmp_path / "ok.npz", model, limit=10)
    assert xs.shape == xa.shape == (10, 28, 28, 1) and ys.tolist() == y[:10].tolist()


# ------------------------------------------------------------------- every figure

UNIT = r"^.+ \(.+\)$"  # "quantity (unit)"


def _series(ax) -> list[str]:
    """The labelled curves and bar groups of a panel (the cut line and 0-line have none)."""
    return [label for label in ax.get_legend_handles_labels()[1] if not label.startswith("_")]


def test_every_figure_has_titles_units_and_legends(trained, suppression, targeted):
    """Issue 11: targeted.png had no y-label on panel (a) and no axis labels on (b)."""
    import re

    model, x, y = trained
    keras.utils.set_random_seed(5)
    results = {}
    for label, m in {"trained": model, "fresh": models.build("small_cnn")}.items():
        x_adv = AttackSpec("fgsm", {"eps": 0.1}).build()(m, x[:20], y[:20]).numpy()
        results[label] = measure_sensitivity(m, ["conv1", "relu4"], x[:20], x_adv)
    sweep = eps_sweep({"trained": model}, ["relu4"], x[:20], y[:20], AttackSpec("fgsm"),
                      [0.05, 0.1])
    data = {
        "profile": sensitivity_profile(results, k=0.1),
        "ratio": ratio_profile(results, k=0.1),
        "eps-sweep": sweep,
        "targeted": {"models": {"vanilla": targeted[1], "pat": targeted[1]}},
        "suppression": {"models": {"vanilla": suppression[1]}},
    }
    assert set(plots.FIGURES) == set(plots.PLOTTERS) == set(data)
    for study, draw in plots.FIGURES.items():
        fig = draw(data[study])
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert panels, study
        assert fig.get_suptitle() or len(panels) == 1 and panels[0].get_title(), study
        for ax in panels:
            where = f"{study}: panel {ax.get_title()!r}"
            assert ax.get_title(), where
            assert re.match(UNIT, ax.get_xlabel()), f"{where}: x label {ax.get_xlabel()!r}"
            assert re.match(UNIT, ax.get_ylabel()), f"{where}: y label {ax.get_ylabel()!r}"
            if len(_series(ax)) > 1:
                assert ax.get_legend() is not None or fig.legends, f"{where}: no legend"
                shown = [t.get_text() for t in (ax.get_legend() or fig.legends[0]).get_texts()]
                assert set(_series(ax)) <= set(shown), where


# ------------------------------------------------- the reproduction's figures (issue 15)

_SWEEP = {
    "runs": [{"lam": lam, "layers": "conv3,conv4", "freeze_below": False, "clean": c, "pgd20": p}
             for lam, c, p in ((0.5, 0.86, 0.71), (0.05, 0.88, 0.69), (5.0, 0.60, 0.50))]
    + [{"lam": 0.5, "layers": "conv4", "freeze_below": False, "clean": 0.87, "pgd20": 0.70},
       {"lam": 0.5, "layers": "conv3,conv4", "freeze_below": True, "clean": 0.85, "pgd20": 0.72}],
    "pat_reference": {"clean": 0.875, "pgd20": 0.695},
    "chosen": {"lam": 0.5, "layers": "conv3,conv4", "freeze_below": True}, "n": 1000,
}


def _check_labels(fig):
    import re

    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert fig.get_suptitle() or len(panels) == 1 and panels[0].get_title()
    for ax in panels:
        assert ax.get_title()
        assert re.match(UNIT, ax.get_xlabel()), ax.get_xlabel()
        assert re.match(UNIT, ax.get_ylabel()), ax.get_ylabel()
        shown = [t.get_text() for t in ax.get_legend().get_texts()]
        assert set(_series(ax)) <= set(shown)
    return panels


def _line(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_lambda_sweep_and_layer_study_figures_draw_the_sweep():
    (ax,) = _check_labels(result_figures.lambda_sweep_figure(_SWEEP))
    assert ax.get_xscale() == "log" and "n = 1000" in ax.get_title()
    # The lambda line: the runs on the first run's layers and freezing, sorted by lambda.
    pgd = _line(ax, "SNS, PGD-20")
    np.testing.assert_allclose(pgd.get_xdata(), [0.05, 0.5, 5.0])
    np.testing.assert_allclose(pgd.get_ydata(), [69.0, 71.0, 50.0])
    np.testing.assert_allclose(_line(ax, "SNS, clean").get_ydata(), [88.0, 86.0, 60.0])
    np.testing.assert_allclose(_line(ax, "PAT, PGD-20").get_ydata(), [69.5, 69.5])
    np.testing.assert_allclose(_line(ax, "chosen λ = 0.5").get_xdata(), [0.5, 0.5])

    (ax,) = _check_labels(result_figures.layer_study_figure(_SWEEP))
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    # Every run at the chosen lambda, in the sweep's order.
    assert bars["SNS, PGD-20"] == pytest.approx([71.0, 70.0, 72.0])
    assert bars["SNS, clean"] == pytest.approx([86.0, 87.0, 85.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "conv3,conv4\nall trainable", "conv4\nall trainable", "conv3,conv4\nfrozen below"]
    with pytest.raises(ValueError, match="Expected at least one sweep run"):
        result_figures.lambda_sweep_figure({**_SWEEP, "runs": []})


def test_trades_beta_figure_draws_the_sweep_sorted_with_pat_and_the_choice():
    sweep = {"runs": [{"beta": 6.0, "clean": 0.70, "pgd20": 0.49},
                      {"beta": 1.0, "clean": 0.86, "pgd20": 0.62},
                      {"beta": 3.0, "clean": 0.78, "pgd20": 0.58}],
             "chosen": {"beta": 1.0}, "n": 2000}
    (ax,) = _check_labels(result_figures.trades_beta_figure(sweep, {"clean": 0.86,
                                                                    "pgd20": 0.63}))
    assert ax.get_xscale() == "log" and "n = 2000" in ax.get_title()
    pgd = _line(ax, "TRADES, PGD-20")
    np.testing.assert_allclose(pgd.get_xdata(), [1.0, 3.0, 6.0])
    np.testing.assert_allclose(pgd.get_ydata(), [62.0, 58.0, 49.0])
    np.testing.assert_allclose(_line(ax, "TRADES, clean").get_ydata(), [86.0, 78.0, 70.0])
    np.testing.assert_allclose(_line(ax, "PAT, PGD-20").get_ydata(), [63.0, 63.0])
    np.testing.assert_allclose(_line(ax, "chosen β = 1").get_xdata(), [1.0, 1.0])
    with pytest.raises(ValueError, match="Expected at least one sweep run"):
        result_figures.trades_beta_figure({"runs": []})


def test_interval_bars_figure_draws_values_intervals_and_pending_groups():
    data = {"title": "Robust accuracy", "xlabel": "method (name)", "ylabel": "accuracy (%)",
            "groups": ["pat", "sns", "alp"],
            "series": {"PGD-20": {"pat": {"value": 70.0, "low": 66.0, "high": 73.0},
                                  "sns": {"value": 72.0, "low": 71.0, "high": 75.0}},
                       "AutoAttack": {"pat": {"value": 60.0, "low": 55.0, "high": 64.0}}}}
    (ax,) = _check_labels(result_figures.interval_bars_figure(data))
    containers = {c.get_label(): c for c in ax.containers if hasattr(c, "patches")}
    assert [p.get_height() for p in containers["PGD-20"].patches] == [70.0, 72.0]
    assert [p.get_height() for p in containers["AutoAttack"].patches] == [60.0]
    # Each error bar spans low..high of its bar.
    segments = containers["PGD-20"].errorbar.lines[2][0].get_segments()
    assert [(s[0][1], s[1][1]) for s in segments] == [(66.0, 73.0), (71.0, 75.0)]
    texts = [t for t in ax.texts if t.get_text() == "pending"]
    assert len(texts) == 1 and texts[0].get_position()[0] == 2  # the group "alp"
    with pytest.raises(ValueError, match="Expected groups and series"):
        result_figures.interval_bars_figure({**data, "groups": []})


def test_paired_differences_figure_draws_seeds_means_and_zero():
    data = {"title": "A minus B", "xlabel": "accuracy of A minus accuracy of B (points)",
            "rows": [{"label": "sns-sen minus pat", "mean": {"value": 1.5, "low": 0.8, "high": 2.3},
                      "seeds": [{"value": 1.2, "low": -1.2, "high": 3.6},
                                {"value": 1.8, "low": 0.1, "high": 3.6}]},
                     {"label": "sns-sen minus alp", "mean": None,
                      "seeds": [{"value": 3.8, "low": 1.7, "high": 5.9}]}]}
    (ax,) = _check_labels(result_figures.paired_differences_figure(data))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sns-sen minus alp",
                                                            "sns-sen minus pat"]
    bars = [c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr]
    points = sorted((float(c.lines[0].get_xdata()[0]), *(
        sorted(float(v) for seg in c.lines[2][0].get_segments() for v in (seg[0][0], seg[1][0]))))
        for c in bars)
    # Three seed points and one mean, each spanning its interval.
    assert points == [pytest.approx(p) for p in [(1.2, -1.2, 3.6), (1.5, 0.8, 2.3),
                                                 (1.8, 0.1, 3.6), (3.8, 1.7, 5.9)]]
    assert any(line.get_xdata()[0] == 0.0 for line in ax.get_lines())  # the zero line
    with pytest.raises(ValueError, match="Expected at least one row"):
        result_figures.paired_differences_figure({**data, "rows": []})


def test_cost_accuracy_figure_draws_points_intervals_and_the_highlighted_group():
    data = {"title": "Robust accuracy against training cost", "xlabel": "training cost (CPU s)",
            "ylabel": "accuracy (%)", "highlight_label": "single-step training",
            "points": [{"label": "pat", "x": 270.0, "value": 60.0, "low": 55.0, "high": 64.0,
                        "highlight": False},
                       {"label": "sns", "x": 300.0, "value": 62.0, "low": 58.0, "high": 66.0,
                        "highlight": False},
                       {"label": "fast", "x": 90.0, "value": 50.0, "low": 46.0, "high": 54.0,
                        "highlight": True}]}
    (ax,) = _check_labels(result_figures.cost_accuracy_figure(data))
    groups = {c.get_label(): c for c in ax.containers}
    assert list(groups) == ["pat", "sns", "fast (single-step training)"]
    for name, x, y, low, high in (("pat", 270.0, 60.0, 55.0, 64.0),
                                  ("sns", 300.0, 62.0, 58.0, 66.0)):
        line, _, (bars,) = groups[name].lines
        assert (line.get_xdata()[0], line.get_ydata()[0]) == (x, y)
        assert tuple(bars.get_segments()[0][:, 1]) == (low, high)
        assert line.get_marker() == "o"
    assert groups["fast (single-step training)"].lines[0].get_marker() == "s"
    colors = {c.lines[0].get_color() for c in groups.values()}
    assert len(colors) == 3
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 300.0
    with pytest.raises(ValueError, match="Expected at least one point"):
        result_figures.cost_accuracy_figure({**data, "points": []})


def test_layer_sigma_and_ratio_kinds_figures():
    sigma = {"layers": ["conv1", "relu1", "conv2"],
             "models": {"vanilla": {"conv1": 0.3, "relu1": 0.1, "conv2": 0.2},
                        "pat": {"conv1": 0.2, "relu1": 0.05}}}
    (ax,) = _check_labels(result_figures.layer_sigma_figure(sigma))
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(_line(ax, "vanilla").get_ydata(), [0.3, 0.1, 0.2])
    np.testing.assert_allclose(_line(ax, "pat").get_xdata(), [0, 1])  # conv2 not measured

    layers = ["conv1", "relu1", "conv2", "relu2"]
    sweep = {"attack": {"name": "pgd_linf"}, "param": "eps", "values": [0.05, 0.1],
             "layers": layers, "models": {"vanilla": {"mean_ratio": {
                 name: [0.1 * (i + 1), 0.2 * (i + 1)] for i, name in enumerate(layers)}}}}
    (ax,) = _check_labels(result_figures.ratio_kinds_figure(sweep))
    lines = {name: _line(ax, name) for name in layers}
    assert [lines[n].get_linestyle() for n in layers] == ["-", "--", "-", "--"]
    # A ReLU takes the colour of the conv layer before it; the next conv a new one.
    assert lines["relu1"].get_color() == lines["conv1"].get_color() != lines["conv2"].get_color()
    np.testing.assert_allclose(lines["relu2"].get_ydata(), [0.4, 0.8])


def test_save_figure_with_a_palette_is_a_smaller_png(tmp_path):
    from PIL import Image

    fig = result_figures.lambda_sweep_figure(_SWEEP)
    full = plots.save_figure(fig, tmp_path / "full.png", dpi=100)
    small = plots.save_figure(fig, tmp_path / "sub" / "small.png", dpi=100, colors=256)
    assert small.read_bytes()[:8] == PNG_MAGIC and small.stat().st_size < full.stat().st_size
    with Image.open(small) as image, Image.open(full) as reference:
        assert image.mode == "P" and image.size == reference.size
    # max_bytes halves the palette until the file fits (here: down to 16 colours).
    tiny = plots.compress_png(full, tmp_path / "tiny.png", max_bytes=1)
    with Image.open(tiny) as image:
        assert len(image.getcolors()) <= 16
    with pytest.raises(ValueError, match="Expected 2 <= colors <= 256. Received: colors=1"):
        plots.save_figure(fig, tmp_path / "bad.png", colors=1)


def test_panel_grid_and_caption_shared_by_both_figure_modules():
    fig, axes = plots.panel_grid(5, ncols=4, size=(2.0, 1.5))
    # 5 panels on 4 columns: 2 rows, the last 3 cells hidden; the size scales per panel.
    assert len(axes) == 5 and len(fig.axes) == 8
    assert [ax.get_visible() for ax in fig.axes] == [True] * 5 + [False] * 3
    np.testing.assert_allclose(fig.get_size_inches(), [8.0, 3.0])
    fig, axes = plots.panel_grid(2, ncols=4)  # fewer panels than columns: one row of 2
    assert len(fig.axes) == 2 and list(fig.get_size_inches()) == pytest.approx([7.2, 2.8])
    assert plots.panel_caption(0, "conv1") == "(a) conv1"
    assert plots.panel_caption(25, "x") == "(z) x" and plots.panel_caption(26, "x") == "(27) x"
