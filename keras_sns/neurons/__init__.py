"""Neurons: probing layers, neuron sensitivity, choosing neurons and comparing choices.

The map of paper section III-IV onto this package:

=================================  ==============================================
eq. 1, 11 (NumPy, streamed)        :mod:`keras_sns.neurons.sensitivity`
eq. 1 (TensorFlow), measuring      :mod:`keras_sns.neurons.measure`
multi-output probe of layers       :mod:`keras_sns.neurons.probe`
eq. 2 (sensitive), 3-5 (important) :mod:`keras_sns.neurons.selection`
eq. 6-10 (similarity)              :mod:`keras_sns.neurons.similarity`
=================================  ==============================================
"""

from keras_sns.neurons.measure import channel_deviation, channel_sensitivity, measure_sensitivity
from keras_sns.neurons.probe import LOGITS_KEY, num_channels, probe, probe_layer_names
from keras_sns.neurons.selection import (
    importance,
    important_neurons,
    resolve_k,
    sensitive_neurons,
    top_k_mask,
    vote,
)
from keras_sns.neurons.sensitivity import (
    SensitivityAccumulator,
    SensitivityResult,
    layer_mean,
    neuron_sensitivity,
    ratio_defined,
    sensitivity_ratio,
)
from keras_sns.neurons.similarity import (
    avg_pair_levenshtein,
    levenshtein_distance,
    levenshtein_similarity,
    spearman,
    total_jaccard,
)

__all__ = [
    "LOGITS_KEY",
    "SensitivityAccumulator",
    "SensitivityResult",
    "avg_pair_levenshtein",
    "channel_deviation",
    "channel_sensitivity",
    "importance",
    "important_neurons",
    "layer_mean",
    "levenshtein_distance",
    "levenshtein_similarity",
    "measure_sensitivity",
    "neuron_sensitivity",
    "num_channels",
    "probe",
    "probe_layer_names",
    "ratio_defined",
    "resolve_k",
    "sensitive_neurons",
    "sensitivity_ratio",
    "spearman",
    "top_k_mask",
    "total_jaccard",
    "vote",
]
