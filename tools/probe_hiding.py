"""Does a trained D reward degrading the fakes, whatever the data? (issue 14)

A diagnostic for Experiment 3 (docs/results.md). In full training the
degradation generators of BNCR-GAN drift the same way on clean data (A) and
on degraded data (N). The hypothesis: while G_x's images carry artefacts that
D detects, blurring, compressing or adding noise to the fakes hides them, so
D rewards *any* degradation of the fakes, and nothing in D's signal depends
on the data's own degradation.

This tool measures that directly, at a checkpoint of a finished run, with no
training. It takes the run's own D and raw (non-EMA) G_x, the networks that
were playing against each other at that step, and scores with D:

  fakes + S   x = G_x(z) stored as uint8, degraded by setting S exactly as
              the dataset builder degrades the reals, dequantised as the
              reals are;
  reals + S   the run's clean source patches, degraded by S the same way;

for every S in --conditions (A = no degradation), plus "learned": the fakes
as the run's own G_k, G_n, G_q degrade them (`synthesis.synthesize`), stored
and dequantised the same way. Each cell is D's mean logit (higher = "more
real"); the printed table also gives each row's logit relative to its A
column, so a positive "fakes + S - fakes + A" is the reward D gives for
degrading the fakes by S, and "reals + S - reals + A" shows whether D knows
what degradation the *real* data carry. On setting A's run an unbiased D
gives S = A the highest reals score; on N's run S = N.

    python tools/probe_hiding.py --run=results/fi_bncrgan/runs/00000-A-s0 \
        --steps=250,500,1000 --out=results/fi_bncrgan/hiding.json

Measured (docs/results.md, Experiment 3, "D is blind to the degradations
at this scale"): at width 32 the hypothesis does not hold; every
degradation moves D's mean logit by at most 0.03.

Everything is seeded (--seed): the same run, step and flags give the same
numbers.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf import data  # noqa: E402
from bncr_tf import models  # noqa: E402
from bncr_tf import runs  # noqa: E402
from bncr_tf import synthesis  # noqa: E402
from bncr_tf.degradations import builder  # noqa: E402
from bncr_tf.degradations import settings as settings_lib  # noqa: E402
from bncr_tf.errors import UserError  # noqa: E402

DEFAULT_CONDITIONS = "A,B,C,D,H,J,noise,N"


def to_uint8(y):
    """[-1, 1] network images to uint8 with the storage rule of the reals.

    The reals are u8 = floor((v + 1) / 2 * 256) of their dequantised value
    v (`data.dequantize`); the fakes are rounded to the nearest level of
    (v + 1) * 127.5, which maps [-1, 1] onto [0, 255].
    """
    u = np.clip((np.asarray(y, np.float32) + 1.0) * 127.5, 0.0, 255.0)
    return np.round(u).astype(np.uint8)


def degrade_u8(images_u8, setting, seed):
    """Setting `setting` applied to uint8 images, as the builder does."""
    if setting.is_clean:
        return images_u8
    out, _ = builder.degrade_chunk(setting, images_u8, 0, len(images_u8),
                                   seed)
    return out


def d_logits(D, images_u8, seed, batch=256):
    """D's logits on uint8 images dequantised as the reals are in training."""
    out = []
    for start in range(0, len(images_u8), batch):
        v = data.dequantize(images_u8[start:start + batch],
                            tf.constant([seed, start], tf.int64))
        out.append(np.asarray(D(v, training=False), np.float64).reshape(-1))
    return np.concatenate(out)


def load_discriminator(run_dir, config, checkpoint):
    """The run's D, restored from `checkpoint` (a step or a path)."""
    D = models.build_discriminator(config)
    path = runs.checkpoint_path(run_dir, checkpoint)
    ckpt = tf.train.Checkpoint(D=models.checkpoint_variables(D))
    ckpt.read(path).expect_partial()
    return D, path


def generate(gens, count, z_dim, seed, batch=256):
    """(clean fakes x, degraded fakes y) as uint8, from raw G_x and stages."""
    xs, ys = [], []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        latents = synthesis.sample_latents(n, z_dim, [seed, start])
        out = synthesis.synthesize(gens, latents,
                                   tf.constant([seed, start], tf.int64))
        xs.append(to_uint8(out.x))
        ys.append(to_uint8(out.y))
    return np.concatenate(xs), np.concatenate(ys)


def probe(run_dir, step, conditions, count, seed):
    """One checkpoint: {"fakes": {S: logit}, "reals": {S: logit}, ...}."""
    config = runs.load_config(run_dir)
    config_, gens, path = runs.load_generators(run_dir, step, ema=False)
    D, _ = load_discriminator(run_dir, config, step)
    clean, _ = data.load_clean_uint8(config.data, config.resolution,
                                     limit=config.data_limit or None,
                                     seed=config.data_seed)
    rng = np.random.default_rng(seed)
    clean = clean[np.sort(rng.choice(len(clean), min(count, len(clean)),
                                     replace=False))]
    x_u8, y_u8 = generate(gens, len(clean), config.z_dim, seed)
    result = {"run": run_dir, "checkpoint": path,
              "step": runs.checkpoint_step(path), "setting": config.setting,
              "count": int(len(clean)), "fakes": {}, "reals": {},
              "fakes_sd": {}, "reals_sd": {}}
    for name in conditions:
        setting = settings_lib.get_setting(name)
        for kind, images in (("fakes", x_u8), ("reals", clean)):
            logits = d_logits(D, degrade_u8(images, setting, seed + 1), seed)
            result[kind][name] = float(logits.mean())
            result[kind + "_sd"][name] = float(logits.std())
    logits = d_logits(D, y_u8, seed)
    result["fakes"]["learned"] = float(logits.mean())
    result["fakes_sd"]["learned"] = float(logits.std())
    return result


def format_table(results, conditions):
    """Markdown: one row per (run, step, kind), one column per condition."""
    cols = list(conditions) + ["learned"]
    lines = ["| run setting | step | scored | " + " | ".join(cols) + " |",
             "|" + "---|" * (3 + len(cols))]
    for r in results:
        for kind in ("reals", "fakes"):
            base = r[kind]["A"] if "A" in r[kind] else 0.0
            cells = []
            for c in cols:
                if c not in r[kind]:
                    cells.append("")
                    continue
                cells.append(f"{r[kind][c]:+.2f} ({r[kind][c] - base:+.2f})")
            lines.append(f"| {r['setting']} | {r['step']} | {kind} + S | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", action="append", required=True,
                   help="A run directory written by bncr_tf.train "
                        "(repeatable).")
    p.add_argument("--steps", default="",
                   help="Comma-separated checkpoint steps; empty = the "
                        "latest checkpoint of each run.")
    p.add_argument("--conditions", default=DEFAULT_CONDITIONS,
                   help="Comma-separated settings applied to fakes and "
                        "reals (A = none).")
    p.add_argument("--count", type=int, default=1024,
                   help="Fakes and reals scored per condition.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="",
                   help="JSON file for every number (optional); a .md "
                        "table is written beside it.")
    args = p.parse_args(argv)
    conditions = [c for c in args.conditions.split(",") if c]
    try:
        for c in conditions:
            settings_lib.get_setting(c)
        steps = [int(s) for s in args.steps.split(",") if s] or [None]
    except (ValueError, KeyError) as e:
        p.error(str(e))
    if args.count < 1:
        p.error("--count must be at least 1")
    results = []
    try:
        for run_dir in args.run:
            for step in steps:
                r = probe(run_dir, step, conditions, args.count, args.seed)
                results.append(r)
                print(format_table([r], conditions), flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = format_table(results, conditions)
    print("\n" + table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)),
                    exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
