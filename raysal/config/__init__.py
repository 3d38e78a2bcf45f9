"""Run configuration: frozen dataclasses loaded from TOML plus overrides, validated up front.

Every field's default is visible in its class with the reason beside it (``schema``). Validation
happens in ``__post_init__`` and while loading (``loading``), before any Ray or TensorFlow work,
and every message names the field (``select.budget``) and the bad value. Pure stdlib: no
``ray``, no ``tensorflow``. Everything is importable from ``raysal.config``.
"""

from raysal.config.loading import (
    absolute_paths,
    config_from_dict,
    load_config,
    parse_override,
    preset_names,
)
from raysal.config.schema import (
    CRITERION_NAMES,
    LABEL_MODES,
    MODEL_KINDS,
    MODEL_OUTPUTS,
    MODEL_USES,
    MULTIPLE_LABELS,
    PREPROCESS_MODES,
    SEED_STRATEGIES,
    SOURCE_KINDS,
    STRATEGY_NAMES,
    TRAIN_DATA_MODES,
    Config,
    DataConfig,
    LabelConfig,
    ModelConfig,
    ScoreConfig,
    SelectConfig,
    SourceConfig,
    TrackConfig,
    TrainConfig,
    row_slice,
)
from raysal.errors import ConfigError

__all__ = ["CRITERION_NAMES", "LABEL_MODES", "MODEL_KINDS", "MODEL_OUTPUTS", "MODEL_USES", "MULTIPLE_LABELS",
           "PREPROCESS_MODES", "SEED_STRATEGIES", "SOURCE_KINDS", "STRATEGY_NAMES", "TRAIN_DATA_MODES", "Config",
           "ConfigError", "DataConfig", "LabelConfig", "ModelConfig", "ScoreConfig", "SelectConfig", "SourceConfig",
           "TrackConfig", "TrainConfig", "absolute_paths", "config_from_dict", "load_config", "parse_override",
           "preset_names", "row_slice"]
