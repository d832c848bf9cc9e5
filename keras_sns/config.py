"""Every vocabulary and default of keras-sns, in one place and with no TensorFlow import.

The library, the CLI (whose ``--help`` must not start TensorFlow) and the saved
artefacts all take their choices from here: training methods, mask selections,
presets, precisions, strategies, studies, the default lambda per method, the training
attack, and the one rule for ``k``.
"""

from __future__ import annotations

import dataclasses
import enum
import numbers
from dataclasses import dataclass


class Method(str, enum.Enum):
    """Training methods: section V's vanilla, PGD adversarial training, ALP, SNS, and the
    baselines TRADES (Zhang et al. 2019) and MART (Wang et al. 2020)."""

    VANILLA = "vanilla"
    PAT = "pat"
    ALP = "alp"
    SNS = "sns"
    TRADES = "trades"
    MART = "mart"


#: The training methods' names, in the order the docs list them.
METHODS = tuple(m.value for m in Method)

#: Mask-selection strategies of section V (sen, dyn, all, rand) plus ``ema`` (ours).
SELECTIONS = ("sen", "dyn", "ema", "all", "rand")

#: The section IV studies that ``cli.py analyze`` runs.
STUDIES = ("profile", "ratio", "eps-sweep", "targeted", "suppression")

#: Strategies of ``tf.distribute`` that ``cli.py train --strategy`` can use.
STRATEGIES = ("default", "mirrored", "multiworker")

#: Compute precisions (Keras dtype policies).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

#: Choices of ``--precision``: ``auto`` (the default) picks one of :data:`PRECISIONS`
#: from the hardware (:func:`keras_sns.precision.choose_precision`).
PRECISION_CHOICES = ("auto", *PRECISIONS)
DEFAULT_PRECISION = "auto"

#: Default L-inf radius per dataset, in [0, 1] image units (the paper's eps=8 is 8/255).
DEFAULT_EPS = {"fashion_mnist": 0.1, "mnist": 0.3}
DEFAULT_EPS_OTHER = 8 / 255


def default_eps(dataset: str) -> float:
    """The training/evaluation radius for a dataset: 0.1 for Fashion-MNIST, else 8/255."""
    return DEFAULT_EPS.get(dataset, DEFAULT_EPS_OTHER)


@dataclass(frozen=True)
class Preset:
    """A named SNS recipe: which layers, how strong, what to freeze."""

    name: str
    layers: str
    lam: float
    k: float
    freeze_below: bool
    description: str


#: Named SNS recipes. ``fmnist`` is the default (chosen on a validation split, see
#: docs/hyperparameters.md); ``paper-vgg16`` and ``paper-resnet18`` are the paper's.
PRESETS = {
    "fmnist": Preset("fmnist", "conv3,conv4", 0.5, 0.1, False,
                     "small_cnn on Fashion-MNIST: conv3-conv4, lam 0.5, all layers trainable"),
    "paper-vgg16": Preset("paper-vgg16", "conv8..conv13", 5.0, 0.1, True,
                          "paper, VGG-16 on CIFAR-10: conv8..conv13, lam 5.0, lower layers frozen"),
    "paper-resnet18": Preset("paper-resnet18", "l3b2c1..l4b2c2", 6.0, 0.1, True,
                             "paper, ResNet-18 on ImageNet: l3b2c1..l4b2c2, lam 6.0, lower layers frozen"),
}
DEFAULT_PRESET = "fmnist"

#: The one default weight of the regulariser per method: ALP's 0.5 (Kannan et al.),
#: SNS's from the default preset (0.5, chosen on Fashion-MNIST's validation split; the
#: paper's 5.0 for VGG-16 is in the ``paper-vgg16`` preset). PAT and vanilla have none;
#: TRADES and MART weigh their KL term with ``beta`` (:data:`DEFAULT_BETA`) instead.
DEFAULT_LAM = {"vanilla": 0.0, "pat": 0.0, "alp": 0.5, "sns": PRESETS[DEFAULT_PRESET].lam,
               "trades": 0.0, "mart": 0.0}

#: The weight of the KL term of TRADES (Zhang et al. 2019: beta 6, their CIFAR-10
#: recipe) and of MART (Wang et al. 2020: beta 5, as this project's issue 13 asks).
DEFAULT_BETA = {"trades": 6.0, "mart": 5.0}

#: The paper's training attack: PGD-L-inf, 10 steps of eps/sqrt(10), random start
#: (eps 8/255; Fashion-MNIST runs use 0.1, see :func:`default_eps`).
DEFAULT_TRAIN_ATTACK = {"name": "pgd_linf", "eps": 8 / 255, "steps": 10}

#: Methods whose own adversarial examples come from another attack than PGD on the
#: cross-entropy: TRADES ascends KL(f(x) || f(x')) from a tiny Gaussian start.
METHOD_TRAIN_ATTACK = {"trades": "trades_kl"}


def default_train_attack(method: str) -> str:
    """The training attack's name for ``method``: ``trades_kl`` for TRADES, else ``pgd_linf``.

    Example:
        >>> default_train_attack("trades"), default_train_attack("sns")
        ('trades_kl', 'pgd_linf')
    """
    return METHOD_TRAIN_ATTACK.get(method, DEFAULT_TRAIN_ATTACK["name"])

#: Default number of sensitive channels per layer: the paper's top 10 %.
DEFAULT_K = 0.1


def parse_k(value: str | int | float) -> int | float:
    """The one rule for ``k``, the number of channels per layer, from text or a number.

    An integer (``7``, ``"7"``, ``"1"``) is a **count** of channels; a number written with
    a decimal point or exponent (``0.1``, ``"0.1"``, ``"1.0"``) is a **fraction** of the
    layer's channels in ``(0, 1]``, rounded up. So ``1`` is one channel and ``1.0``
    all of them, in ``train``, ``analyze`` and ``export`` alike (see
    :func:`keras_sns.neurons.selection.resolve_k`, which applies it to a layer).

    Raises:
        ValueError: for anything else, naming the value.

    Example:
        >>> parse_k("0.1"), parse_k("7"), parse_k(3)
        (0.1, 7, 3)
    """
    error = ValueError("Invalid k: expected a fraction in (0, 1] or a whole count >= 1. "
                       f"Received: k={value!r}")
    if isinstance(value, bool):
        raise error
    if isinstance(value, numbers.Integral):
        k: int | float = int(value)
    elif isinstance(value, numbers.Real):
        k = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            k = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise error from None
    else:
        raise error
    if (isinstance(k, int) and k < 1) or (isinstance(k, float) and not 0.0 < k <= 1.0):
        raise error
    return k


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; written to ``config.json`` beside the model.

    Args:
        method: One of :class:`Method` (``"vanilla"``, ``"pat"``, ``"alp"``, ``"sns"``,
            ``"trades"``, ``"mart"``).
        dataset: Dataset name for :func:`keras_sns.data.load_dataset`.
        model: Registered model name for :func:`keras_sns.models.build`.
        epochs: Training epochs (for pat/alp/sns: fine-tuning epochs).
        batch_size: Global batch size.
        learning_rate: Adam learning rate.
        seed: Seed of initialisation, shuffling, attacks and random masks.
        limit: Train on the first ``limit`` examples of the fit split (None: all).
        eval_limit: Validate and test on the first ``eval_limit`` examples.
        out: Output directory.
        data_dir: Folder of local data files (None: the default location).
        init: A trained model to fine-tune (pat/alp/sns); None trains a vanilla model first.
        vanilla_epochs: Epochs of that vanilla model.
        selection: SNS mask selection: sen, dyn, ema, all or rand.
        layers: SNS layers, names or ranges ("conv8..conv13"); None: the preset's.
        lam: Weight of the ALP/SNS term; None: the preset's (SNS) or 0.5 (ALP).
        beta: Weight of the KL term of TRADES/MART; None: 6 (TRADES) or 5 (MART).
        k: Sensitive channels per layer (count or fraction); None: the preset's.
        freeze_below: Freeze the layers below the first SNS layer; None: the preset's.
        preset: Named SNS recipe (see :data:`PRESETS`).
        sns_layers: Add the SNS term to pat, alp, trades or mart on these layers (names
            or ranges); None: no SNS term (``method="sns"`` takes ``layers``).
        sns_lam: Weight of that SNS term; None: the preset's.
        attack: Training attack name (white-box); None: ``trades_kl`` for TRADES,
            ``pgd_linf`` otherwise (:func:`default_train_attack`).
        eps: Attack radius; None: 0.1 for Fashion-MNIST, 8/255 otherwise.
        steps: Attack steps for training (the paper's 10).
        eval_steps: PGD steps for the final evaluation (20).
        robust_eval_limit: Run the final evaluation's PGD on the first N test examples
            only (clean and FGSM accuracy still use every test example); None: on all.
        strategy: ``default``, ``mirrored`` or ``multiworker`` (tf.distribute).
        precision: ``auto`` (default: ``mixed_bfloat16`` where the hardware computes
            bfloat16 natively, ``mixed_float16`` on GPUs of compute capability 7.x,
            else ``float32``; see :mod:`keras_sns.precision`) or a Keras dtype policy:
            ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
    """

    method: str = Method.VANILLA.value
    dataset: str = "fashion_mnist"
    model: str = "small_cnn"
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    limit: int | None = None
    eval_limit: int | None = None
    out: str = "runs/vanilla"
    data_dir: str | None = None
    init: str | None = None
    vanilla_epochs: int = 5
    selection: str = "sen"
    layers: str | None = None
    lam: float | None = None
    beta: float | None = None
    k: float | None = None
    freeze_below: bool | None = None
    preset: str = DEFAULT_PRESET
    sns_layers: str | None = None
    sns_lam: float | None = None
    attack: str | None = None
    eps: float | None = None
    steps: int = 10
    eval_steps: int = 20
    robust_eval_limit: int | None = None
    strategy: str = "default"
    precision: str = DEFAULT_PRECISION

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Expected method in {list(METHODS)}. Received: method={self.method!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"Expected selection in {list(SELECTIONS)}. "
                             f"Received: selection={self.selection!r}")
        if self.k is not None:
            object.__setattr__(self, "k", parse_k(self.k))
        for name in ("epochs", "batch_size", "vanilla_epochs", "steps", "eval_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={value!r}")
        for name in ("limit", "eval_limit", "robust_eval_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"Expected {name} >= 1 or None. Received: {name}={value!r}")
        if not self.learning_rate > 0:
            raise ValueError(
                f"Expected learning_rate > 0. Received: learning_rate={self.learning_rate!r}"
            )
        if self.preset not in PRESETS:
            raise ValueError(f"Expected preset in {sorted(PRESETS)}. Received: preset={self.preset!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Expected strategy in {list(STRATEGIES)}. Received: strategy={self.strategy!r}")
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"Expected precision in {list(PRECISION_CHOICES)}. Received: "
                             f"precision={self.precision!r}")
        if self.eps is not None and not 0 <= self.eps <= 1:
            raise ValueError(f"Expected 0 <= eps <= 1. Received: eps={self.eps}")
        if self.lam is not None and self.lam < 0:
            raise ValueError(f"Expected lam >= 0. Received: lam={self.lam}")
        if self.lam and self.method in ("pat", "trades", "mart"):
            raise ValueError(
                f"Expected lam (--lam) only with method alp or sns: {self.method} has no lam "
                "term (TRADES and MART weigh their KL term with --beta; the SNS term added "
                f"by --sns-layers takes --sns-lam). Received: lam={self.lam}, "
                f"method={self.method!r}")
        if self.beta is not None and (self.method not in DEFAULT_BETA or not self.beta >= 0):
            raise ValueError(f"Expected beta >= 0 with method in {sorted(DEFAULT_BETA)}. "
                             f"Received: beta={self.beta}, method={self.method!r}")
        if self.sns_layers is not None and self.method in ("vanilla", "sns"):
            raise ValueError(
                "Expected sns_layers (--sns-layers) with method pat, alp, trades or mart; "
                "method='sns' takes layers (--layers), vanilla has no adversarial examples. "
                f"Received: sns_layers={self.sns_layers!r}, method={self.method!r}")
        if self.sns_lam is not None and (self.sns_layers is None or not self.sns_lam >= 0):
            raise ValueError(f"Expected sns_lam >= 0 together with sns_layers. Received: "
                             f"sns_lam={self.sns_lam}, sns_layers={self.sns_layers!r}")
        if self.attack is None:
            object.__setattr__(self, "attack", default_train_attack(self.method))

    @property
    def has_sns(self) -> bool:
        """Whether the run adds the SNS term: ``method="sns"`` or ``sns_layers`` given."""
        return self.method == Method.SNS.value or self.sns_layers is not None

    @property
    def resolved_eps(self) -> float:
        """The attack radius actually used."""
        return default_eps(self.dataset) if self.eps is None else float(self.eps)

    def resolved_sns(self) -> dict:
        """layers, lam, k and freeze_below after filling unset ones from the preset.

        For ``method="sns"`` from ``layers`` and ``lam``; for a method with the SNS
        term added (``sns_layers``) from ``sns_layers`` and ``sns_lam``.
        """
        p = PRESETS[self.preset]
        layers, lam = ((self.layers, self.lam) if self.method == Method.SNS.value
                       else (self.sns_layers, self.sns_lam))
        return {
            "layers": layers or p.layers,
            "lam": p.lam if lam is None else float(lam),
            "k": p.k if self.k is None else self.k,
            "freeze_below": p.freeze_below if self.freeze_below is None else bool(self.freeze_below),
        }

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)
