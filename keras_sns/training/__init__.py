"""Robust training (paper section V): RobustModel, the SNS loss, masks, callbacks, runs.

=================================  ==============================================
RobustModel (vanilla ... MART)     :mod:`keras_sns.training.robust_model`
L_sns (eq. 12-13), ALP, TRADES...  :mod:`keras_sns.training.losses`
mask selection (sen/dyn/...)       :mod:`keras_sns.training.masks`
callbacks and their error          :mod:`keras_sns.training.callbacks`
tf.distribute                      :mod:`keras_sns.training.distribute`
end-to-end runs (``cli.py train``) :mod:`keras_sns.training.runs`
=================================  ==============================================

Importing this package registers :class:`RobustModel` with Keras, so saved
``robust_model.keras`` files load with ``keras.models.load_model``.
"""

from keras_sns.training.callbacks import (
    CatastrophicOverfittingGuard,
    CatastrophicOverfittingWarning,
    CollapseGuard,
    DynamicMasks,
    EmaMasks,
    SensitivityMonitor,
    TrainingCollapsedError,
    catastrophic_overfitting,
)
from keras_sns.training.losses import alp_loss, mart_boost_loss, mart_loss, sns_loss, trades_loss
from keras_sns.training.masks import (
    expand_layer_names,
    resolve_layers,
    select_masks,
    training_attack,
)
from keras_sns.training.robust_model import RobustModel
from keras_sns.training.runs import OutputExistsError, TrainResult, run_training, runtime_info

__all__ = [
    "CatastrophicOverfittingGuard",
    "CatastrophicOverfittingWarning",
    "CollapseGuard",
    "DynamicMasks",
    "EmaMasks",
    "OutputExistsError",
    "RobustModel",
    "SensitivityMonitor",
    "TrainResult",
    "TrainingCollapsedError",
    "alp_loss",
    "catastrophic_overfitting",
    "expand_layer_names",
    "mart_boost_loss",
    "mart_loss",
    "resolve_layers",
    "run_training",
    "runtime_info",
    "select_masks",
    "sns_loss",
    "trades_loss",
    "training_attack",
]
