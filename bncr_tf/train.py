"""Train a BNCR-GAN family model: `python -m bncr_tf.train --flagfile=...`.

Every flag is a field of `bncr_tf.training.config.TrainConfig`; its help text
and bounds live there. This module only defines the flags, resolves them into
one frozen config and calls `bncr_tf.training.loop.train`.

Examples:
  python -m bncr_tf.train --flagfile=configs/demo.flags
  python -m bncr_tf.train --flagfile=configs/ffhq.flags --dry_run
  python -m bncr_tf.train --helpfull
"""

import dataclasses
import os
import sys

# Quiet TensorFlow's C++ start-up messages unless the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from bncr_tf.training.config import TrainConfig  # noqa: E402
from bncr_tf.training.config import UserError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines one absl flag per `TrainConfig` field, with its validators."""
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        name, default, help_text = field.name, field.default, meta["help"]
        if meta.get("choices"):
            flags.DEFINE_enum(name, default, meta["choices"], help_text,
                              flag_values=flag_values)
        elif field.type in (bool, "bool"):
            flags.DEFINE_bool(name, default, help_text,
                              flag_values=flag_values)
        elif field.type in (int, "int"):
            flags.DEFINE_integer(name, default, help_text,
                                 lower_bound=meta.get("lower"),
                                 flag_values=flag_values)
        elif field.type in (float, "float"):
            flags.DEFINE_float(name, default, help_text,
                               lower_bound=meta.get("lower"),
                               flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text,
                                flag_values=flag_values)


def config_from_flags(flag_values=FLAGS):
    """Resolves parsed flags into a validated `TrainConfig`."""
    values = {f.name: flag_values[f.name].value
              for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values).validate_all()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow logs SavedModel and checkpoint details through absl at INFO;
    # the run's own log (stdout and log.txt) is separate.
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        config = config_from_flags()
        if config.dry_run:
            print(config.to_json())
            return 0
        # Imported here so --helpfull and --dry_run stay fast.
        from bncr_tf.training import loop
        loop.train(config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


define_flags()

if __name__ == "__main__":
    app.run(main)
