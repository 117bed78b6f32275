"""Re-exports `bncr_tf.config` and `bncr_tf.errors.UserError`.

`TrainConfig` lives on the package's ground floor (`bncr_tf/config.py`),
so that metrics, runs, models and export need not import from training;
this module keeps `from bncr_tf.training.config import ...` working.
"""

from bncr_tf.config import LEGACY_VALUES  # noqa: F401
from bncr_tf.config import TrainConfig  # noqa: F401
from bncr_tf.config import _f  # noqa: F401
from bncr_tf.errors import UserError  # noqa: F401
