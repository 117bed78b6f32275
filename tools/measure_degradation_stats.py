"""Noise level, sharpness and JPEG blockiness of clean data, degraded data
and the clean images G_x of trained runs, as one table (issue 18).

Example:

    python tools/measure_degradation_stats.py \\
        --runs=runs/00003-gan-N-32px,runs/00004-bncrgan-N-32px \\
        --data=builtin:skimage_patches:count=1024 --settings=B,H,noise,N \\
        --num_samples=1024 --out=results/degradation_stats

Rows: the clean data (--data at --resolution, first --limit images,
--data_seed), the same images degraded by each --setting (exactly as
training degrades them in memory: `training.loop.degrade_in_memory` with
seed --degrade_seed, default the data seed as in training), and, per
run, --num_samples images of its EMA G_x with all degradation stages off
(image i from seed --seed + i, as `bncr_tf.evaluate`). Columns: the
median and 10th-90th percentiles of each statistic of
`bncr_tf.metrics.degradation_stats`, and its per-image separability from
the clean data (best one-threshold balanced accuracy; 0.5 =
indistinguishable).

Writes <out>/degradation_stats.json and <out>/degradation_stats.md and
prints the table. Defaults: --data, --limit, --data_seed and --resolution
from the first run; --settings = the runs' settings other than A. A bad
run directory, checkpoint, data spec or setting stops the tool before any
work with one `error: ...` line (exit 2).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/measure_degradation_stats.py` from a
# checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bncr_tf.errors import UserError  # noqa: E402
from bncr_tf.metrics import degradation_stats as ds  # noqa: E402


def parse_list(text):
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def check_runs(run_dirs, checkpoint):
    """[(run_dir, config)] after checking each has a config and the
    checkpoint (cheap; nothing is restored)."""
    from bncr_tf import runs
    out = []
    for run_dir in run_dirs:
        config = runs.load_config(run_dir)
        if checkpoint in (None, "", "latest"):
            runs.checkpoint_path(run_dir, None)
        else:
            runs.checkpoint_path(run_dir, checkpoint)
        out.append((run_dir, config))
    return out


def check_settings(names):
    from bncr_tf.degradations import settings as settings_lib
    out = []
    for name in names:
        try:
            out.append(settings_lib.get_setting(name))
        except ValueError as e:
            raise UserError(str(e)) from None
    return out


def degrade(images, setting, seed):
    """`images` degraded by `setting` exactly as training does in memory
    (`training.loop.degrade_in_memory`: depends only on seed, setting and
    image index)."""
    from bncr_tf.training import loop
    return loop.degrade_in_memory(images, setting, seed)


def markdown(result):
    lines = [
        f"Data `{result['data']}` at {result['resolution']} px "
        f"({result['num_data_images']} images, data seed "
        f"{result['data_seed']}, degradation seed "
        f"{result['degrade_seed']}); generated: {result['num_samples']} "
        f"images from seed {result['seed']}. Median (10th–90th "
        f"percentile) per image; sep. = per-image separability from the "
        f"clean data (best one-threshold balanced accuracy, 0.5 = none).",
        ""] + ds.rows_markdown(result["rows"])
    return "\n".join(lines) + "\n"


def measure(run_dirs=(), data=None, settings=None, resolution=0, limit=0,
            data_seed=None, degrade_seed=None, num_samples=1024, seed=0,
            checkpoint="latest", batch=100, progress=print):
    """Computes every row; returns the JSON-ready result.

    Raises:
      UserError: bad run, checkpoint, setting or data (before the work
        when the problem can be seen cheaply).
    """
    from bncr_tf import data as data_lib
    checked = check_runs(run_dirs, checkpoint)
    first = checked[0][1] if checked else None
    if not data:
        if first is None:
            raise UserError("give --data or at least one run in --runs")
        data = first.data
        limit = limit or first.data_limit
    if data_seed is None:
        data_seed = first.data_seed if first is not None else 0
    if degrade_seed is None:
        degrade_seed = data_seed  # what training passes degrade_in_memory
    resolution = resolution or (first.resolution if first else 32)
    if settings is None:
        settings = []
        for _, config in checked:
            if config.setting != "A" and config.setting not in settings:
                settings.append(config.setting)
    setting_objs = check_settings(settings)
    started = time.time()
    clean, _ = data_lib.load_clean_uint8(data, resolution,
                                         limit=limit or None, seed=data_seed)
    rows = []
    row, clean_per_image = ds.stats_row("data, clean (A)", "data", clean)
    rows.append(row)
    progress(f"clean data: {len(clean)} images")
    for setting in setting_objs:
        images = degrade(clean, setting, degrade_seed)
        row, _ = ds.stats_row(f"data, setting {setting.name}",
                              "degraded", images, clean_per_image,
                              setting=setting.name)
        rows.append(row)
        progress(f"setting {setting.name}: degraded")
    for run_dir, _ in checked:
        from bncr_tf.metrics import evaluation
        config, path, images = evaluation.run_images(
            run_dir, checkpoint, num_samples, seed, batch)
        from bncr_tf import runs
        step = runs.checkpoint_step(path)
        label = (f"G_x of {os.path.basename(os.path.normpath(run_dir))} "
                 f"({config.variant}, {config.setting}, step {step})")
        row, _ = ds.stats_row(label, "generated", images, clean_per_image,
                              run_dir=os.path.abspath(run_dir),
                              variant=config.variant,
                              setting=config.setting, checkpoint=path,
                              step=step)
        if images.shape[1] != resolution:
            row["note"] = (f"generated at {images.shape[1]} px, data at "
                           f"{resolution} px")
        rows.append(row)
        progress(f"{label}: {len(images)} images")
    return {"data": data, "resolution": int(resolution),
            "limit": int(limit or 0), "data_seed": int(data_seed),
            "num_data_images": int(len(clean)),
            "degrade_seed": int(degrade_seed), "settings": list(settings),
            "num_samples": int(num_samples), "seed": int(seed),
            "checkpoint": checkpoint or "latest",
            "definitions": ds.DEFINITIONS,
            "rows": rows, "seconds": round(time.time() - started, 1)}


def write(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    paths = (os.path.join(out_dir, "degradation_stats.json"),
             os.path.join(out_dir, "degradation_stats.md"))
    with open(paths[0], "w") as f:
        json.dump(result, f, indent=2, allow_nan=False)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(result))
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", default="",
                   help="Comma-separated run directories (their EMA G_x).")
    p.add_argument("--checkpoint", default="latest",
                   help="latest, a step number or a checkpoint path "
                        "(applied to every run).")
    p.add_argument("--data", default="",
                   help="Clean data source spec ('' = the first run's).")
    p.add_argument("--settings", default=None,
                   help="Comma-separated settings to degrade the data by "
                        "(default: the runs' settings other than A).")
    p.add_argument("--resolution", type=int, default=0,
                   help="Image size (0 = the first run's, else 32).")
    p.add_argument("--limit", type=int, default=0,
                   help="First N data images (0 = the first run's "
                        "--data_limit with its data, else all).")
    p.add_argument("--data_seed", type=int, default=None,
                   help="Seed of builtin sources (default: the first "
                        "run's, else 0).")
    p.add_argument("--degrade_seed", type=int, default=None,
                   help="Seed of the degradations of the data (default: "
                        "the data seed, as training uses).")
    p.add_argument("--num_samples", type=int, default=1024,
                   help="Generated images per run.")
    p.add_argument("--seed", type=int, default=0,
                   help="Generated image i uses seed + i.")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--out", default="degradation_stats",
                   help="Output directory.")
    args = p.parse_args(argv)
    from bncr_tf import cli
    try:
        if args.num_samples < 1 or args.batch < 1 or args.limit < 0:
            raise UserError("--num_samples and --batch must be >= 1 and "
                            "--limit >= 0")
        settings = None if args.settings is None \
            else parse_list(args.settings)
        result = measure(
            parse_list(args.runs), args.data or None, settings,
            args.resolution, args.limit, args.data_seed, args.degrade_seed,
            args.num_samples, args.seed, args.checkpoint, args.batch,
            progress=lambda text: print(text, file=sys.stderr, flush=True))
    except UserError as e:
        return cli.error(e)
    result = ds.finite(result)
    paths = write(result, args.out)
    print(markdown(result), end="")
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
