"""Writes docs/flags.md: every flag of `python -m bncr_tf.train`.

The flags are the fields of `bncr_tf.config.TrainConfig`; their
help, defaults and bounds live there. `--check` fails if the page is stale.

    python tools/make_flag_docs.py [--check]
"""

import argparse
import dataclasses
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bncr_tf import cli  # noqa: E402
from bncr_tf.config import TrainConfig  # noqa: E402

PAGE = os.path.join(ROOT, "docs", "flags.md")


def render():
    lines = [
        "# Flags of `python -m bncr_tf.train`", "",
        "Generated from `bncr_tf/config.py` by "
        "`tools/make_flag_docs.py`. `--helpfull` prints the same help.", "",
        "| flag | default | meaning |", "| --- | --- | --- |"]
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        extra = []
        if meta.get("choices"):
            extra.append("one of " + ", ".join(meta["choices"]))
        if meta.get("lower") is not None:
            extra.append(f">= {meta['lower']}")
        text = meta["help"] + (f" ({'; '.join(extra)})" if extra else "")
        lines.append(f"| `--{field.name}` | `{field.default!r}` | "
                     f"{text.replace('|', '/')} |")
    lines.append(f"| `--verbose` | `False` | {cli.VERBOSE_HELP} (a flag of "
                 f"the entry point, not stored in config.json; also taken "
                 f"by bncr_tf.evaluate and tools/export_savedmodel.py) |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    current = open(PAGE).read() if os.path.exists(PAGE) else None
    if args.check:
        if current != text:
            print("docs/flags.md is stale: run python tools/make_flag_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w") as f:
        f.write(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
