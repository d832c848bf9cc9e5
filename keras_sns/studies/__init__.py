"""The studies of section IV of the paper, each returning a JSON-ready dict.

* :func:`sensitivity_profile`: channels sorted by neuron sensitivity, per layer and
  model, with the top-k cut (Fig. 10-12).
* :func:`ratio_profile`: layer-wise mean sensitivity ratio (Fig. 13), and
  :func:`eps_sweep`: the same against the attack strength (Table II, Fig. 14).
* :func:`targeted_study`: per target class, sensitive versus voted important
  neurons of the penultimate layer, and the agreement of the sensitive neurons of
  each layer across classes (sections IV-B and IV-C, Fig. 2, 3 and 8).
* :func:`suppression_study`: accuracy when the top sensitive channels of a layer,
  or as many random other channels, are scaled by beta (section IV-D, Fig. 9),
  built on :func:`suppress_channels` and the :class:`ChannelScale` layer.

:func:`run_analysis` runs the requested studies and writes their JSON and figures;
``cli.py analyze`` is a thin shell around it. The studies' figures are drawn by
:mod:`keras_sns.studies.figures`, the reproduction report's by
:mod:`keras_sns.studies.result_figures`.

Modules: ``common`` (attack specifications, layer checks, adversarial files),
``profiles`` (measuring, profile, ratio, eps-sweep), ``targeted``, ``suppression``
and ``runner`` (:class:`AnalysisConfig`, :func:`run_analysis`); import these from
``keras_sns.studies`` itself. The figure modules are imported as modules:
``figures`` (each study's figure, :func:`~keras_sns.studies.figures.save_figure`,
:func:`~keras_sns.studies.figures.compress_png`) and ``result_figures`` (the lambda
sweep, layer study, interval bars, per-layer sensitivity and ReLU-vs-conv ratio
figures of ``experiments/report.py``).
"""

from keras_sns.studies.common import (
    AttackSpec,
    attack_spec,
    check_layers,
    conv_relu_layers,
    load_adversarial_npz,
    load_adversarial_sets,
)
from keras_sns.studies.profiles import (
    eps_sweep,
    measure_models,
    ratio_profile,
    sensitivity_profile,
    sensitivity_report,
)
from keras_sns.studies.runner import STUDIES, AnalysisConfig, run_analysis
from keras_sns.studies.suppression import (
    DEFAULT_BETAS,
    ChannelScale,
    default_suppression_attacks,
    suppress_channels,
    suppression_study,
)
from keras_sns.studies.targeted import targeted_study

__all__ = [
    "DEFAULT_BETAS", "STUDIES", "AnalysisConfig", "AttackSpec", "ChannelScale",
    "attack_spec", "check_layers", "conv_relu_layers", "default_suppression_attacks", "eps_sweep",
    "load_adversarial_npz", "load_adversarial_sets", "measure_models",
    "ratio_profile",
    "run_analysis", "sensitivity_profile", "sensitivity_report", "suppress_channels",
    "suppression_study", "targeted_study",
]
