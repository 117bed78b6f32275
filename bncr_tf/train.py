"""Train a BNCR-GAN family model: `python -m bncr_tf.train --flagfile=...`.

Every flag is a field of `bncr_tf.config.TrainConfig`; its help text
and bounds live there. This module only defines the flags, resolves them into
one frozen config and calls `bncr_tf.training.loop.train`.

Examples:
  python -m bncr_tf.train --flagfile=configs/demo.flags
  python -m bncr_tf.train --flagfile=configs/ffhq.flags --dry_run
  python -m bncr_tf.train --helpfull
"""

import dataclasses
import sys

from bncr_tf import cli

# Quiet TensorFlow's C++ messages unless asked for (--verbose or
# TF_CPP_MIN_LOG_LEVEL); before anything imports TensorFlow.
cli.quiet_tensorflow()

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from bncr_tf.config import TrainConfig  # noqa: E402

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
    # A restoration model's own defaults replace the GAN defaults of the
    # flags the user did not give (bncr_tf.variants.RESTORATION_DEFAULTS).
    from bncr_tf import variants
    for name, value in variants.RESTORATION_DEFAULTS.get(
            values["variant"], {}).items():
        if not flag_values[name].present:
            values[name] = value
    return TrainConfig(**values).validate_all()


def main(argv):
    """Trains; returns 0, 2 (user error, raised as UserError and reported
    by `cli.run`) or 130 / 143 (Ctrl-C / SIGTERM, with one line naming the
    step and the last checkpoint)."""
    del argv
    # TensorFlow logs SavedModel and checkpoint details through absl at INFO;
    # the run's own log (stdout and log.txt) is separate.
    absl_logging.set_verbosity(absl_logging.WARNING)
    config = config_from_flags()
    if config.dry_run:
        print(config.to_json())
        return 0
    # Imported here so --helpfull and --dry_run stay fast.
    cli.import_tensorflow()
    from bncr_tf.training import loop
    # --export_at_end given again (command line or flagfile) re-exports a
    # run that has nothing left to train; the default does not.
    force_export = bool(FLAGS["export_at_end"].present
                        and FLAGS.export_at_end)
    try:
        loop.train(config, force_export=force_export)
    except loop.TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return e.exit_code
    return 0


define_flags()
flags.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)

if __name__ == "__main__":
    cli.run(main)
