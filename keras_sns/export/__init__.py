"""Export for deployment: SavedModel signatures and TF Serving's configuration files.

==========================================  ====================================
SavedModel, its two signatures, metadata    :mod:`keras_sns.export.saved_model`
``models.config`` / ``monitoring.config``   :mod:`keras_sns.export.tf_serving`
==========================================  ====================================

Example:
    >>> from keras_sns import export, models
    >>> result = export.export(models.load("runs/x"), "exports", "fmnist")  # doctest: +SKIP
"""

from keras_sns.export.saved_model import (
    METADATA_PATH,
    SENSITIVITY_SIGNATURE,
    SERVING_SIGNATURE,
    ExportResult,
    default_layers,
    export,
    remove_stale_temporaries,
    validate_name,
)
from keras_sns.export.tf_serving import (
    CONFIG_FILENAME,
    MONITORING_FILENAME,
    PROMETHEUS_PATH,
    complete_pending_merges,
    list_versions,
    merge_model_server_config,
    read_model_server_config,
    read_monitoring_config,
    write_monitoring_config,
)

__all__ = [
    "CONFIG_FILENAME",
    "METADATA_PATH",
    "MONITORING_FILENAME",
    "PROMETHEUS_PATH",
    "SENSITIVITY_SIGNATURE",
    "SERVING_SIGNATURE",
    "ExportResult",
    "complete_pending_merges",
    "default_layers",
    "export",
    "list_versions",
    "merge_model_server_config",
    "read_model_server_config",
    "read_monitoring_config",
    "remove_stale_temporaries",
    "validate_name",
    "write_monitoring_config",
]
