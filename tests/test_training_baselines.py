"""TRADES and MART in RobustModel, and the SNS term added to any adversarial method.

As tests/test_training.py does for PAT/ALP/SNS: a tiny linear model, one ``fit`` step
with plain SGD and a deterministic attack, and the weights after the step must equal
an update derived by hand in NumPy (float64). The attacks take two steps of size eps,
so that no single-step guard joins the fit (RobustModel adds one for one-step attacks).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from _robust_models import conv_model, data, exact_float32_matmuls, linear_model  # noqa: F401

from keras_sns import attacks
from keras_sns.attacks import TradesKLDivergence
from keras_sns.attacks.losses import kl_divergence
from keras_sns.config import DEFAULT_BETA, TrainConfig
from keras_sns.neurons import neuron_sensitivity, probe
from keras_sns.training import RobustModel, mart_boost_loss, mart_loss, trades_loss

EPS = 0.1
LR = 0.5
STEPS = 2
SEED = 7
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(model: RobustModel, optimizer=None) -> RobustModel:
    model.compile(optimizer=optimizer or keras.optimizers.SGD(LR), loss=CE)
    return model


def one_step(model: RobustModel, x, y, sample_weight=None) -> dict:
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=len(x), epochs=1,
                        steps_per_epoch=1, shuffle=False, verbose=0)
    return {k: v[0] for k, v in history.history.items()}


def trades_attack(steps: int = STEPS) -> TradesKLDivergence:
    return TradesKLDivergence(eps=EPS, steps=steps, step_size=EPS, seed=SEED)


def pgd_attack(steps: int = STEPS):
    """PGD-L-inf from the clean point, steps of size eps: deterministic."""
    return attacks.get("pgd_linf", eps=EPS, steps=steps, step_size=EPS, random_start=False)


# ---------------------------------------------------------------------------
# The hand-derived reference, in float64
# ---------------------------------------------------------------------------


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def one_hot(y, k):
    return np.eye(k)[y]


def forward(weights, x):
    w1, b1, w2, b2 = weights
    h = x @ w1 + b1
    return h, h @ w2 + b2


def reference_attack(weights, x, y, *, kind: str, steps: int = STEPS):
    """The attack's x' on the linear model: ``kind`` "ce" (PGD) or "kl" (TRADES' ascent).

    d CE / dx' = (q - onehot(y)) W2^T W1^T and d KL(p || q) / dx' = (q - p) W2^T W1^T,
    with p the clean and q the adversarial prediction. Each step is eps * sign(grad),
    clipped into the eps-ball (the data keeps it inside [0, 1]). Checks that no gradient
    component is so small that float32 could take the other sign.
    """
    w1, _, w2, _ = weights
    x = np.asarray(x, np.float64)
    p = softmax(forward(weights, x)[1])
    if kind == "kl":
        # The attack's own stream: a fresh generator with its seed gives the same start.
        noise = tf.random.Generator.from_seed(SEED).normal(x.shape).numpy().astype(np.float64)
        x_adv = np.clip(x + 0.001 * noise, x - EPS, x + EPS)
        target = p
    else:
        x_adv = x.copy()
        target = one_hot(y, w2.shape[1])
    for _ in range(steps):
        grad = (softmax(forward(weights, x_adv)[1]) - target) @ w2.T @ w1.T
        assert np.abs(grad).min() > 1e-5, "ill-conditioned test data: a gradient is ~0"
        x_adv = np.clip(x_adv + EPS * np.sign(grad), x - EPS, x + EPS)
    return x_adv


def reference_step(weights, x, y, *, method: str, beta: float, sns_lam: float = 0.0, mask=None,
                   sample_weight=None):
    """One SGD step of TRADES or MART (+ lam * L_sns on "hidden") on the linear model.

    Returns the weights after the step and the step's logged terms (with the weights
    before it). Derivatives, with p = softmax(z), q = softmax(z'), a = log p - log q,
    KL = sum(p * a), per example and divided by the batch size B:
      d KL / d z' = q - p,   d KL / d z = p * (a - KL);
      TRADES: CE(z) + beta * KL;
      MART:   CE(z') - log(c - q_t) + beta * KL * (1 - p_y), with t the strongest wrong
              class of q and c = 1.0001: d(-log(c - q_t)) / d z' = q_t (onehot(t) - q) / (c - q_t),
              d(1 - p_y) / d z = -p_y (onehot(y) - p).
    """
    weights = [np.asarray(w, np.float64) for w in weights]
    w1, b1, w2, b2 = weights
    x = np.asarray(x, np.float64)
    b, k = len(x), w2.shape[1]
    w = np.ones(b) if sample_weight is None else np.asarray(sample_weight, np.float64)
    x_adv = reference_attack(weights, x, y, kind="kl" if method == "trades" else "ce")
    xx = np.concatenate([x, x_adv])
    h, z = forward(weights, xx)
    p, q = softmax(z[:b]), softmax(z[b:])
    yh = one_hot(y, k)
    a = np.log(p) - np.log(q)
    kl = np.sum(p * a, axis=1)
    dz = np.zeros_like(z)
    if method == "trades":
        ce = np.sum(w * -np.log(p[np.arange(b), y])) / b
        reg = np.sum(w * kl) / b
        dz[:b] = w[:, None] * ((p - yh) + beta * p * (a - kl[:, None])) / b
        dz[b:] = w[:, None] * beta * (q - p) / b
    else:
        t = np.argmax(q - 2.0 * yh, axis=1)
        qt = q[np.arange(b), t]
        py = p[np.arange(b), y]
        ce = np.sum(w * (-np.log(q[np.arange(b), y]) - np.log(1.0001 - qt))) / b
        reg = np.sum(w * kl * (1.0 - py)) / b
        dz[b:] = w[:, None] * ((q - yh) + (qt / (1.0001 - qt))[:, None] * (one_hot(t, k) - q)
                               + beta * (1.0 - py)[:, None] * (q - p)) / b
        dz[:b] = w[:, None] * beta * ((1.0 - py)[:, None] * p * (a - kl[:, None])
                                      - (kl * py)[:, None] * (yh - p)) / b
    dw2, db2 = h.T @ dz, dz.sum(axis=0)
    dh = dz @ w2.T
    sns = 0.0
    if mask is not None:
        # L_sns = sum over masked channels of mean_i |h(x_i) - h(x'_i)| (a dense layer:
        # each channel has one position); d/dh = lam * mask * sign(diff) / B, minus for x'.
        diff = h[:b] - h[b:]
        sns = np.sum(np.mean(np.abs(diff), axis=0) * mask)
        s = sns_lam * np.sign(diff) * mask / b
        dh[:b] += s
        dh[b:] -= s
    dw1, db1 = xx.T @ dh, dh.sum(axis=0)
    new = [v - LR * g for v, g in zip(weights, (dw1, db1, dw2, db2))]
    return new, {"ce_loss": ce, "reg": reg, "sns_loss": sns,
                 "loss": ce + beta * reg + sns_lam * sns}


# ---------------------------------------------------------------------------
# 1. The losses against NumPy, and TRADES' attack
# ---------------------------------------------------------------------------


def test_losses_equal_a_numpy_computation_on_random_logits():
    rng = np.random.default_rng(1)
    z, za = rng.normal(0, 3, (2, 16, 5))
    y = rng.integers(0, 5, 16)
    w = rng.uniform(0, 2, 16)
    p, q = softmax(z), softmax(za)
    kl = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    wrong = np.max(np.where(one_hot(y, 5) == 1, -1.0, q), axis=1)
    boost = -np.log(1.0001 - wrong)
    weighted = kl * (1 - p[np.arange(16), y])
    tz, tza = tf.constant(z, tf.float32), tf.constant(za, tf.float32)
    np.testing.assert_allclose(kl_divergence(tz, tza), kl, rtol=1e-4, atol=1e-6)
    for sw, mean in ((None, np.mean), (w, lambda v: np.sum(w * v) / 16)):
        np.testing.assert_allclose(trades_loss(tz, tza, sw), mean(kl), rtol=1e-5)
        np.testing.assert_allclose(mart_boost_loss(tza, y, sw), mean(boost), rtol=1e-5)
        np.testing.assert_allclose(mart_loss(tz, tza, y, sw), mean(weighted), rtol=1e-5)
    assert float(trades_loss(tz, tz)) == pytest.approx(0.0, abs=1e-7)
    # bfloat16 logits (mixed precision) are computed in float32.
    assert trades_loss(tf.cast(tz, tf.bfloat16), tza).dtype == tf.float32


def test_trades_attack_equals_the_hand_derived_kl_ascent_and_stays_in_the_ball():
    x, y = data(6)
    base = linear_model()
    x_adv = np.asarray(trades_attack()(base, x))  # no labels needed
    want = reference_attack(base.get_weights(), x, y, kind="kl")
    np.testing.assert_allclose(x_adv, want, atol=1e-6)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    # It ascends KL(f(x) || f(x')): from its tiny start to a hundred times more.
    logits = base(x)
    kl_adv = float(tf.reduce_mean(kl_divergence(logits, base(x_adv))))
    start = x + 0.001 * tf.random.Generator.from_seed(SEED).normal(x.shape).numpy()
    assert kl_adv > 100 * float(tf.reduce_mean(kl_divergence(logits, base(start))))
    np.testing.assert_array_equal(TradesKLDivergence(eps=0.0, seed=0)(base, x), x)
    with pytest.raises(ValueError, match="does not support target"):
        trades_attack()(base, x, y, target=y)
    with pytest.raises(ValueError, match=r"Expected start_std > 0\. Received: start_std=0"):
        TradesKLDivergence(start_std=0.0)


# ---------------------------------------------------------------------------
# 2. One step equals the hand-derived update
# ---------------------------------------------------------------------------

MASK = np.array([1.0, 0.0, 1.0], np.float32)


@pytest.mark.parametrize("method,beta,sns_lam,weighted,loss_scale", [
    ("trades", 2.0, None, False, None),
    ("trades", None, None, True, None),         # default beta 6, with sample weights
    ("trades", 2.0, 0.7, False, None),          # TRADES + SNS
    ("mart", 3.0, None, False, None),
    ("mart", None, 0.7, True, 128.0),           # default beta 5, SNS, weights, loss scaling
], ids=["trades", "trades-default-weighted", "trades+sns", "mart", "mart+sns-weighted-scaled"])
def test_one_step_equals_the_hand_derived_update(method, beta, sns_lam, weighted, loss_scale):
    x, y = data(6)
    sw = np.array([0.5, 1.0, 2.0, 1.0, 0.0, 1.5], np.float32) if weighted else None
    base = linear_model()
    initial = base.get_weights()
    attack = trades_attack() if method == "trades" else pgd_attack()
    sns = None if sns_lam is None else dict(layers="hidden", lam=sns_lam)
    model = RobustModel(base, method=method, beta=beta, sns=sns, attack=attack)
    if sns is not None:
        model.set_masks({"hidden": MASK})
    optimizer = keras.optimizers.SGD(LR, loss_scale_factor=loss_scale)
    logs = one_step(compiled(model, optimizer), x, y, sw)

    beta_used = DEFAULT_BETA[method] if beta is None else beta
    assert model.beta == beta_used
    want, terms = reference_step(initial, x, y, method=method, beta=beta_used,
                                 sns_lam=sns_lam or 0.0, mask=MASK if sns else None,
                                 sample_weight=sw)
    for got, expected, name in zip(base.get_weights(), want, ("W1", "b1", "W2", "b2")):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert logs["ce_loss"] == pytest.approx(terms["ce_loss"], rel=1e-5)
    assert logs[f"{method}_loss"] == pytest.approx(terms["reg"], rel=1e-5)
    assert logs["loss"] == pytest.approx(terms["loss"], rel=1e-5)
    assert ("sns_loss" in logs) == (sns is not None)
    if sns is not None:
        assert logs["sns_loss"] == pytest.approx(terms["sns_loss"], rel=1e-5)
    # The method's own term moves the weights by far more than the tolerance, so the
    # comparison tells TRADES/MART from their plain cross-entropy parts.
    without, _ = reference_step(initial, x, y, method=method, beta=0.0, sample_weight=sw)
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(want, without))


# ---------------------------------------------------------------------------
# 3. The SNS term composes: lambda 0 is the plain method exactly; L_sns is eq. 1's sigma
# ---------------------------------------------------------------------------

SNS_LAYERS = ["conv1", "fc1"]
ZERO_MASKS = {"conv1": np.zeros(4, np.float32), "fc1": np.zeros(5, np.float32)}
SOME_MASKS = {"conv1": np.array([1, 0, 1, 0], np.float32), "fc1": np.array([0, 1, 0, 0, 1], np.float32)}


def _composed_attack(method: str, single_step: bool):
    if single_step:
        return attacks.get("fgsm_rs", eps=EPS, seed=3)
    if method == "trades":
        return TradesKLDivergence(eps=EPS, steps=2, seed=3)
    return attacks.get("pgd_linf", eps=EPS, steps=2, seed=3)


def _train(method: str, *, sns=None, masks=None, single_step=False, steps: int = 3):
    keras.utils.set_random_seed(5)
    x, y = data(8 * steps, shape=(6, 6, 1))
    base = conv_model()
    model = RobustModel(base, method=method, sns=sns, attack=_composed_attack(method, single_step))
    if masks is not None:
        model.set_masks(masks)
    compiled(model, keras.optimizers.SGD(0.1, momentum=0.9))
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return base.get_weights(), history


# PAT with a single-step attack (fgsm_rs) is "fast" adversarial training; PAT with PGD
# and the SNS term is method="sns", whose lam=0 case tests/test_training.py covers, and
# ALP shares PAT's code path.
COMPOSED = [("pat", True), ("trades", False), ("mart", False)]
COMPOSED_IDS = ["single-step", "trades", "mart"]


@pytest.fixture(scope="module")
def plain_runs():
    return {case: _train(case[0], single_step=case[1]) for case in COMPOSED}


@pytest.mark.parametrize("case", COMPOSED, ids=COMPOSED_IDS)
def test_with_lambda_zero_each_composed_method_equals_the_plain_one_exactly(plain_runs, case):
    # Same seed, same initial weights, the attack's random start seeded the same: three
    # steps of SGD with momentum give bit-identical weights and losses.
    method, single_step = case
    plain_weights, plain_history = plain_runs[case]
    weights, history = _train(method, sns=dict(layers=SNS_LAYERS, lam=0.0), masks=SOME_MASKS,
                              single_step=single_step)
    for a, b in zip(weights, plain_weights):
        np.testing.assert_array_equal(a, b)
    assert history["ce_loss"] == plain_history["ce_loss"]
    # The logged total may differ in its last bit (the graph that sums it differs).
    assert history["loss"] == pytest.approx(plain_history["loss"], rel=1e-6)
    assert min(history["sns_loss"]) > 0  # the term was computed, and weighed zero


def test_zero_masks_equal_the_plain_method_and_lambda_moves_away_from_it(plain_runs):
    plain_weights, _ = plain_runs[("trades", False)]
    zero, _ = _train("trades", sns=dict(layers=SNS_LAYERS, lam=5.0), masks=ZERO_MASKS)
    for a, b in zip(zero, plain_weights):
        np.testing.assert_array_equal(a, b)
    # The counterpart, so that the equalities above cannot pass by ignoring lam.
    on, _ = _train("trades", sns=dict(layers=SNS_LAYERS, lam=5.0), masks=SOME_MASKS)
    assert max(np.abs(a - b).max() for a, b in zip(on, plain_weights)) > 1e-3


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_sns_loss_of_a_composed_step_is_eq1_sigma_summed_over_the_masked_channels(method):
    # The step logs L_sns with the weights before its update, on its x and x'. The
    # attack is deterministic given its seed, so a twin run here gives the same x';
    # the neurons module's NumPy sigma (eq. 1) of the probed activations, summed over
    # the masked channels, must equal it.
    layers = ["conv1", "relu1", "conv2", "fc1"]
    masks = {"conv1": np.array([1, 0, 0, 1], np.float32), "relu1": np.array([0, 1, 1, 0], np.float32),
             "conv2": np.array([0, 0, 1], np.float32), "fc1": np.array([1, 1, 0, 0, 1], np.float32)}
    x, y = data(8, shape=(6, 6, 1))
    base = conv_model()
    twin = (TradesKLDivergence(eps=EPS, steps=3, seed=11) if method == "trades"
            else attacks.get("pgd_linf", eps=EPS, steps=3, seed=11))
    x_adv = np.asarray(twin(base, x, y))
    outs, outs_adv = probe(base, layers)(x), probe(base, layers)(x_adv)
    want = sum(float(np.sum(neuron_sensitivity(np.asarray(outs[n]), np.asarray(outs_adv[n]))
                            * masks[n])) for n in layers)
    attack = type(twin).from_config(twin.get_config())
    model = RobustModel(base, method=method, attack=attack,
                        sns=dict(layers=layers, lam=1.0, k=2, selection="sen"))
    model.set_masks(masks)
    logs = one_step(compiled(model), x, y)
    assert want > 0.01 and logs["sns_loss"] == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------------
# 4. Settings: save/load, config round trip, validation
# ---------------------------------------------------------------------------


def test_keras_round_trip_keeps_the_new_settings_and_training_state(tmp_path):
    # (That the optimizer state and the masks come back, so that the next epoch of the
    # loaded model equals the original's, tests/test_training.py shows for method="sns";
    # the state is the same here, only the settings are new.)
    x, y = data(16, shape=(6, 6, 1))
    attack = attacks.get("pgd_linf", eps=0.05, steps=2, step_size=0.03, random_start=False, seed=11)
    model = RobustModel(conv_model(), method="mart", beta=3.5, attack=attack, freeze_below=True,
                        sns=dict(layers="conv1..conv2, fc1", lam=0.3, k=2, selection="ema"),
                        ema_decay=0.8, seed=4)
    assert model.layer_names == ["conv1", "conv2", "fc1"] and model.k == 2
    assert model.sns == {"layers": ["conv1", "conv2", "fc1"], "lam": 0.3, "k": 2, "selection": "ema"}
    model.set_masks({"conv1": np.array([0, 1, 1, 0], np.float32),
                     "conv2": np.array([1, 0, 1], np.float32),
                     "fc1": np.array([0, 0, 1, 1, 0], np.float32)})
    config = model.get_config()
    assert (config["layers"], config["k"], config["selection"]) == ([], None, None)
    assert RobustModel.from_config(config).get_config() == config
    compiled(model, keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # builds the optimizer
    path = tmp_path / "mart.keras"
    model.save(path)

    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, RobustModel)
    for name in ("method", "beta", "sns", "sns_lam", "layer_names", "lam", "k", "selection",
                 "attack_config", "freeze_below", "ema_decay", "seed", "k_per_layer"):
        assert getattr(loaded, name) == getattr(model, name), name
    for n, m in model.get_masks().items():
        np.testing.assert_array_equal(loaded.get_masks()[n], m)
        np.testing.assert_array_equal(np.asarray(loaded.sigma_ema[n]), np.asarray(model.sigma_ema[n]))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # TRADES and its attack's settings come back too.
    trades = RobustModel(conv_model(), method="trades", beta=2.5, sns=dict(layers="fc1", k=1),
                         attack=TradesKLDivergence(eps=0.05, steps=3, start_std=0.01, seed=2))
    trades.save(tmp_path / "trades.keras")
    again = keras.saving.load_model(tmp_path / "trades.keras")
    settings = {k: v for k, v in trades.get_config().items() if k != "base_model"}
    assert {k: v for k, v in again.get_config().items() if k != "base_model"} == settings
    assert (again.method, again.beta, again.sns["layers"], again.k_per_layer) == (
        "trades", 2.5, ["fc1"], {"fc1": 1})
    assert again.attack.get_config() == {"eps": 0.05, "steps": 3, "step_size": None,
                                         "start_std": 0.01, "seed": 2}


def test_defaults_and_the_paper_form_of_sns():
    base = linear_model()
    trades, mart = RobustModel(base, method="trades"), RobustModel(base, method="mart")
    assert (trades.beta, mart.beta) == (6.0, 5.0)
    assert trades.attack_config["name"] == "trades_kl" and mart.attack_config["name"] == "pgd_linf"
    assert trades.sns is None and not trades.has_sns and trades.sns_lam == 0.0
    # method="sns" is still the paper's PAT + SNS, configured as before.
    sns = RobustModel(base, method="sns", layers="hidden", lam=0.7)
    assert sns.has_sns and sns.sns is None and sns.sns_lam == 0.7 and sns.reg_weight == 0.7
    assert sns.get_config()["layers"] == ["hidden"] and sns.get_config()["sns"] is None
    composed = RobustModel(base, method="mart", sns=dict(layers=["hidden"]))
    assert composed.sns == {"layers": ["hidden"], "lam": 0.5, "k": 0.1, "selection": "sen"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="trades", lam=0.5), r"Expected lam only with method 'alp' or 'sns'"),
    (dict(method="pat", beta=6.0), r"Expected beta only with method in \['mart', 'trades'\]"),
    (dict(method="mart", beta=-1.0), r"Expected beta >= 0\. Received: beta=-1\.0"),
    (dict(method="trades", layers="hidden"), r"pass sns=dict\(layers=\.\.\.\)"),
    (dict(method="sns", layers="hidden", sns=dict(layers="hidden")), r"method='sns' takes layers"),
    (dict(method="vanilla", sns=dict(layers="hidden")), r"Expected sns= with method"),
    (dict(method="trades", layers="hidden", sns=dict(layers="hidden")),
     r"Expected the SNS settings in sns= only"),
    (dict(method="trades", k=2, sns=dict(layers="hidden")), r"Expected the SNS settings in sns="),
    (dict(method="trades", sns=dict(lam=0.5)), r"Expected sns\['layers'\]"),
    (dict(method="trades", sns=dict(layers="hidden", lamda=0.5)), r"Received: lamda=0\.5"),
    (dict(method="trades", sns=dict(layers="hidden", lam=-1)), r"Expected sns\['lam'\] >= 0"),
    (dict(method="trades", sns=dict(layers="hidden", selection="best")), r"Expected selection in"),
    (dict(method="trades", sns=dict(layers="nope")), r"Unknown layer 'nope'"),
    (dict(method="trades", sns="hidden"), r"Expected sns to be a dict"),
])
def test_bad_settings_raise_keras_style_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RobustModel(linear_model(), **kwargs)


def test_trades_with_a_cross_entropy_attack_warns_that_it_is_not_the_papers():
    with pytest.warns(UserWarning, match="'trades_kl' attack"):
        RobustModel(linear_model(), method="trades", attack=pgd_attack())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RobustModel(linear_model(), method="trades", attack=trades_attack())
        RobustModel(linear_model(), method="mart", attack=pgd_attack())


def test_train_config_composes_sns_and_picks_trades_attack():
    config = TrainConfig(method="trades", sns_layers="conv3,conv4", sns_lam=0.2, k=0.25)
    assert config.attack == "trades_kl" and config.has_sns
    assert config.resolved_sns() == {"layers": "conv3,conv4", "lam": 0.2, "k": 0.25,
                                     "freeze_below": False}
    assert TrainConfig(method="mart").attack == "pgd_linf" and not TrainConfig(method="mart").has_sns
    assert TrainConfig(method="trades", attack="fgsm_rs").attack == "fgsm_rs"
    assert TrainConfig(method="sns", lam=0.7).resolved_sns()["lam"] == 0.7
    for bad, message in ((dict(method="sns", sns_layers="conv3"), "--sns-layers"),
                         (dict(method="pat", sns_lam=0.5), "together with sns_layers"),
                         (dict(method="pat", beta=1.0), "Expected beta >= 0 with method in")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)


# ---------------------------------------------------------------------------
# 5. The command line
# ---------------------------------------------------------------------------


def test_cli_trains_trades_with_the_sns_term_and_saves_its_settings(tmp_path):
    import csv
    import json

    from click.testing import CliRunner

    from keras_sns import models
    from keras_sns.cli import main

    init = tmp_path / "init.keras"
    models.build("small_cnn").save(init)
    out = tmp_path / "trades"
    result = CliRunner().invoke(main, [
        "train", "--method", "trades", "--sns-layers", "conv3,conv4", "--sns-lam", "0.3",
        "--k", "0.25", "--init", str(init), "--epochs", "1", "--limit", "64", "--eval-limit", "32",
        "--batch-size", "32", "--steps", "2", "--eval-steps", "2", "--precision", "float32",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["attack"], config["beta"]) == ("trades", "trades_kl", None)
    assert config["sns"] == {"layers": "conv3,conv4", "lam": 0.3, "k": 0.25, "freeze_below": False}
    robust = keras.models.load_model(out / "robust_model.keras")
    assert (robust.method, robust.beta, robust.sns_lam, robust.layer_names) == (
        "trades", 6.0, 0.3, ["conv3", "conv4"])
    assert robust.attack_config["name"] == "trades_kl" and robust.attack_config["eps"] == 0.1
    masks = json.loads((out / "masks.json").read_text())
    assert masks == robust.sensitive_indices() and {n: len(v) for n, v in masks.items()} == {
        "conv3": 16, "conv4": 16}  # 0.25 of 64 channels
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert {"trades_loss", "sns_loss", "ce_loss", "adv_acc"} <= set(rows[0])
    assert float(rows[0]["sns_loss"]) > 0

    # MART's options reach its configuration, and what means nothing there is refused
    # before anything trains.
    for args, message in ((["--method", "mart", "--lam", "0.5"], "--beta"),
                          (["--method", "sns", "--sns-layers", "conv3"], "--sns-layers"),
                          (["--method", "pat", "--beta", "2"], "beta")):
        bad = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 1 and message in bad.output, bad.output
        assert not (tmp_path / "bad").exists()
