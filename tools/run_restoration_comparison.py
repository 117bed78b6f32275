"""Issue 15 / paper Table 4: restoration from degraded data, one command.

    python tools/run_restoration_comparison.py \\
        --out=results/restoration_comparison

For each training setting (default N, O, P, Q) and seed (default 0, 1, 2)
the clean natural-image patches of --data are degraded by the setting and
these runs are trained with `python -m bncr_tf.train` (each command is
written to `<out>/commands.txt`):

  bncrgan-<S>-s<seed>    BNCR-GAN (its frozen EMA G_k, G_n, G_q are F of
                         BNCR-GAN+UNIR)
  unir-<S>-s<seed>       UNIR-dagger: UNIR with the true degradation of S
  bncrunir-<S>-s<seed>   BNCR-GAN+UNIR: --degradation_from=<bncrgan run>
  cyclegan-<S>-s<seed>   CycleGAN with set-level supervision (only where
                         S leaves some images clean: not N)

Then every restoration run restores the same held-out clean patches
(`metrics.restoration.held_out_source`) degraded by --test_setting (the
paper: N) and is scored against the clean patches by FID (--extractor)
and LPIPS (AlexNet, v0.1), with the degraded input itself as a row. Per
model and setting the run with the median FID over the seeds is reported,
as in the paper (with an even number of seeds, the lower of the two middle
runs).

Runs go to --runs_dir (checkpoints stay there); --out receives
`summary.json` (every score of every run), `table.md`, `commands.txt`, the
training grids of the reported runs (`grids/<run>.png`: y | x_hat |
F(x_hat)) and `test_grid_<S>.png`: the first --grid_rows test images as
rows clean | degraded | one column per model. Rerunning the command skips
finished runs and scores (unfinished runs resume from their checkpoints).
"""

import json
import os
import shlex
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bncr_tf.training import rundir  # noqa: E402

MODELS = ("unir", "bncrunir", "cyclegan")
TITLES = {"unir": "UNIR\u2020 (true degradation)",
          "bncrunir": "BNCR-GAN+UNIR",
          "cyclegan": "CycleGAN\u2021 (set-level supervision)",
          "degraded": "degraded input (no restoration)"}


def run_name(model, setting, seed):
    return f"{model}-{setting}-s{seed}"


def defined(model, setting):
    """CycleGAN needs clean and degraded training images."""
    if model != "cyclegan":
        return True
    from bncr_tf import variants
    from bncr_tf.degradations import settings
    return variants.no_clean_reason(settings.get_setting(setting)) is None


def train_command(model, setting, seed, args, source_run=None):
    """The `python -m bncr_tf.train` argv of one run."""
    name = run_name(model, setting, seed)
    common = [f"--data={args.data}", f"--setting={setting}",
              f"--resolution={args.resolution}", f"--seed={seed}",
              f"--log_every={args.log_every}",
              f"--outdir={args.runs_dir}", f"--run_name={name}",
              "--resume=auto", "--noexport_at_end"]
    if model == "bncrgan":
        iterations = args.bncrgan_iterations
        flags = ["--variant=bncrgan", f"--width={args.bncrgan_width}",
                 f"--d_batch={args.bncrgan_batch}",
                 f"--g_batch={2 * args.bncrgan_batch}", "--ema_decay=0.99"]
        extra = args.bncrgan_flags
    elif model in ("unir", "bncrunir"):
        iterations = args.unir_iterations
        flags = ["--variant=unir", f"--width={args.unir_width}",
                 f"--d_batch={args.batch}"]
        if model == "bncrunir":
            flags.append(f"--degradation_from={source_run}")
        extra = args.unir_flags
    else:
        iterations = args.cyclegan_iterations
        flags = ["--variant=cyclegan", f"--width={args.cyclegan_width}",
                 f"--d_batch={args.batch}"]
        extra = args.cyclegan_flags
    flags.append(f"--iterations={iterations}")
    every = max(1, iterations // 2)
    flags += [f"--grid_every={every}", f"--checkpoint_every={every}"]
    return ([sys.executable, "-m", "bncr_tf.train"] + common + flags
            + shlex.split(extra)), iterations


def jobs(args):
    """[(model, setting, seed, needs)] in run order; `needs` is the name
    of the run that must finish first (or None)."""
    out = []
    for seed in args.seeds:
        for setting in args.settings:
            out.append(("bncrgan", setting, seed, None))
            out.append(("unir", setting, seed, None))
            if defined("cyclegan", setting):
                out.append(("cyclegan", setting, seed, None))
            out.append(("bncrunir", setting, seed,
                        run_name("bncrgan", setting, seed)))
    return out


def _finished(name, iterations, runs_dir):
    run_dir = rundir.newest_run(runs_dir, name)
    return run_dir if (run_dir and rundir.last_logged_step(run_dir)
                       >= iterations) else None


def train_all(args, out):
    """Trains (or resumes) every run, --parallel at a time, in job order
    once a run's dependency has finished. Returns ({name: seconds},
    [failed names])."""
    from bncr_tf import jobs as jobs_lib
    specs = {run_name(*job[:3]): job for job in jobs(args)}
    commands = []
    log_dir = os.path.join(out, "logs")
    os.makedirs(log_dir, exist_ok=True)

    def launch(name):
        model, setting, seed, needs = specs[name]
        source = rundir.newest_run(args.runs_dir, needs) if needs else None
        cmd, iterations = train_command(model, setting, seed, args, source)
        commands.append(" ".join(
            shlex.quote(c) for c in ["python"] + cmd[1:]).replace(
                ROOT + os.sep, ""))
        if _finished(name, iterations, args.runs_dir):
            print(f"[{name}] already trained", flush=True)
            return None
        log = os.path.join(log_dir, name + ".log")
        return (["nice", "-n", str(args.nice)] + cmd, log,
                f"[{name}] training {iterations} iterations; log {log}")

    result = jobs_lib.run_jobs([(name, job[3]) for name, job in specs.items()],
                               args.parallel, launch, ROOT)
    with open(os.path.join(out, "commands.txt"), "w") as f:
        f.write("\n".join(commands) + "\n")
    return result


# --- Scores -------------------------------------------------------------------

def _matching(records, args):
    return [r for r in records
            if r.get("test_setting") == args.test_setting
            and r.get("num_images") == args.test_samples
            and r.get("degradation_seed") == args.test_seed
            and r.get("extractor", {}).get("name", args.extractor)
            == args.extractor]


def _read_records(run_dir, metric):
    """Every stored record of `metric-restore_<metric><n>.jsonl`."""
    out = []
    for name in sorted(os.listdir(run_dir)):
        if (name.startswith(f"metric-restore_{metric}")
                and name.endswith(".jsonl")):
            with open(os.path.join(run_dir, name)) as f:
                out += [json.loads(line) for line in f if line.strip()]
    return out


def score_run(run_dir, args, make_extractor):
    """{"fid", "lpips", ...} of a restoration run's final checkpoint on the
    test set; reuses stored records of the same checkpoint and protocol."""
    from bncr_tf import runs
    from bncr_tf.metrics import restoration
    step = runs.checkpoint_step(runs.checkpoint_path(run_dir))
    found = {}
    for metric in ("fid", "lpips"):
        recs = [r for r in _matching(_read_records(run_dir, metric), args)
                if r.get("step") == step]
        if recs:
            found[metric] = recs[-1]
    missing = [m for m in ("fid", "lpips") if m not in found]
    if missing:
        records = restoration.evaluate_restoration(
            run_dir, make_extractor=make_extractor,
            test_limit=args.test_samples, test_setting=args.test_setting,
            metrics=tuple(missing), seed=args.test_seed, progress=False)
        found.update(zip(missing, records))
    fid, lpips = found["fid"], found["lpips"]
    return {"step": step, "fid": fid["value"],
            "fid_degraded": fid["degraded_value"], "lpips": lpips["value"],
            "lpips_degraded": lpips["degraded_value"],
            "psnr_db": fid["psnr_db"],
            "psnr_db_degraded": fid["degraded_psnr_db"],
            "extractor": fid.get("extractor", {}).get("name"),
            "comparable": fid.get("extractor", {}).get("comparable")}


def median_run(rows):
    """The row with the median FID (the lower middle for an even count)."""
    ordered = sorted(rows, key=lambda r: r["fid"])
    return ordered[(len(ordered) - 1) // 2]


def test_grid(args, chosen, setting, path):
    """clean | degraded | each model's restoration of the first rows of
    the test set (uint8 PNG)."""
    from bncr_tf import data as data_lib
    from bncr_tf import runs
    from bncr_tf.degradations import settings
    from bncr_tf.metrics import restoration
    from bncr_tf.training import grids
    from bncr_tf.training import loop
    any_run = next(iter(chosen.values()))["run_dir"]
    config = runs.load_config(any_run)
    spec, seed = restoration.held_out_source(config)
    clean, _ = data_lib.load_clean_uint8(spec, config.resolution,
                                         limit=args.test_samples, seed=seed)
    degraded = loop.degrade_in_memory(
        clean, settings.get_setting(args.test_setting), args.test_seed)
    rows = slice(0, args.grid_rows)
    columns = [clean[rows], degraded[rows]]
    for model in MODELS:
        if model in chosen:
            _, restorer, _ = runs.load_restorer(chosen[model]["run_dir"])
            columns.append(restoration.restore_uint8(restorer,
                                                     degraded[rows]))
    stacked = np.stack(columns, axis=1).reshape((-1,) + clean.shape[1:])
    grids.write_png(path, grids.tile(stacked, len(columns)))
    return len(columns)


def _fmt(row):
    return f"{row['fid']:.4g} / {row['lpips']:.4f}"


def write_table(summary, args, out):
    settings = summary["settings"]
    lines = [
        f"FID / LPIPS (lower is better) of the restored held-out test "
        f"patches ({args.test_samples}, degraded by setting "
        f"{args.test_setting}, degradation seed {args.test_seed}) against "
        f"their clean originals. FID features: `{args.extractor}` (not "
        f"Inception: not comparable with published FIDs). LPIPS: AlexNet "
        f"v0.1. Per cell the run with the median FID over seeds "
        f"{', '.join(map(str, args.seeds))}.",
        "",
        "| model | " + " | ".join(f"({s})" for s in settings) + " |",
        "| --- |" + " --- |" * len(settings),
    ]
    for model in MODELS + ("degraded",):
        cells = []
        for s in settings:
            cell = summary["reported"].get(s, {}).get(model)
            if model == "degraded":
                any_cell = next(iter(summary["reported"].get(s, {}).values()),
                                None)
                cells.append(
                    f"{any_cell['fid_degraded']:.4g} / "
                    f"{any_cell['lpips_degraded']:.4f}" if any_cell else "–")
            elif cell is None:
                cells.append("N/A" if not defined(model, s) else "–")
            else:
                seeds = summary["all"][s][model]
                spread = ""
                if len(seeds) > 1:
                    fids = sorted(r["fid"] for r in seeds)
                    spread = f" (FID {fids[0]:.4g}–{fids[-1]:.4g})"
                cells.append(_fmt(cell) + spread)
        lines.append(f"| {TITLES[model]} | " + " | ".join(cells) + " |")
    lines += ["", "PSNR (dB) of the same reported runs, for reference:", "",
              "| model | " + " | ".join(f"({s})" for s in settings) + " |",
              "| --- |" + " --- |" * len(settings)]
    for model in MODELS + ("degraded",):
        cells = []
        for s in settings:
            rep = summary["reported"].get(s, {})
            cell = rep.get(model)
            if model == "degraded" and rep:
                first = next(iter(rep.values()))
                cells.append(f"{first['psnr_db_degraded']:.2f}")
            elif cell:
                cells.append(f"{cell['psnr_db']:.2f}")
            else:
                cells.append("–")
        lines.append(f"| {TITLES[model]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    return text


def score_all(args, out, seconds, failed):
    from bncr_tf import cli
    cli.import_tensorflow()
    from bncr_tf.metrics import features
    extractor = {}

    def make_extractor():
        if "e" not in extractor:
            extractor["e"] = features.make_extractor(args.extractor)
        return extractor["e"]

    timing_path = os.path.join(out, "seconds.json")
    timing = {}
    if os.path.isfile(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
    timing.update(seconds)
    with open(timing_path, "w") as f:
        json.dump(timing, f, indent=2, sort_keys=True)
    summary = {"settings": args.settings, "seeds": args.seeds,
               "test_setting": args.test_setting,
               "test_samples": args.test_samples, "extractor":
               args.extractor, "all": {}, "reported": {},
               "train_seconds": timing, "failed": failed}
    grid_dir = os.path.join(out, "grids")
    os.makedirs(grid_dir, exist_ok=True)
    for setting in args.settings:
        summary["all"][setting] = {}
        chosen = {}
        for model in MODELS:
            rows = []
            for seed in args.seeds:
                name = run_name(model, setting, seed)
                run_dir = rundir.newest_run(args.runs_dir, name)
                if (name in failed or not run_dir
                        or rundir.last_logged_step(run_dir) < 1
                        or not defined(model, setting)):
                    continue
                row = score_run(run_dir, args, make_extractor)
                row.update(run=name, seed=seed, run_dir=run_dir)
                rows.append(row)
                print(f"[{name}] FID {row['fid']:.4g} (degraded "
                      f"{row['fid_degraded']:.4g})  LPIPS "
                      f"{row['lpips']:.4f} (degraded "
                      f"{row['lpips_degraded']:.4f})", flush=True)
            if rows:
                summary["all"][setting][model] = rows
                chosen[model] = median_run(rows)
                grids_src = os.path.join(chosen[model]["run_dir"], "grids")
                fakes = sorted(f for f in os.listdir(grids_src)
                               if f.startswith("fakes-"))
                if fakes:
                    shutil.copyfile(os.path.join(grids_src, fakes[-1]),
                                    os.path.join(grid_dir,
                                                 chosen[model]["run"]
                                                 + ".png"))
        summary["reported"][setting] = chosen
        if chosen:
            test_grid(args, chosen, setting,
                      os.path.join(out, f"test_grid_{setting}.png"))
    for setting in summary["all"].values():
        for rows in setting.values():
            for r in rows:
                r["run_dir"] = os.path.relpath(r["run_dir"], ROOT)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    print(write_table(summary, args, out))


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/restoration_comparison")
    p.add_argument("--runs_dir", default="runs/restoration_comparison",
                   help="Run directories (checkpoints; not committed).")
    p.add_argument("--settings", default="N,O,P,Q")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default="builtin:skimage_patches:count=1024")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=8,
                   help="Batch of UNIR and CycleGAN (each set).")
    p.add_argument("--bncrgan_width", type=int, default=8)
    p.add_argument("--bncrgan_batch", type=int, default=16,
                   help="BNCR-GAN's D batch (its G batch is twice that).")
    p.add_argument("--bncrgan_iterations", type=int, default=1500)
    p.add_argument("--unir_width", type=int, default=4)
    p.add_argument("--unir_iterations", type=int, default=600)
    p.add_argument("--cyclegan_width", type=int, default=8)
    p.add_argument("--cyclegan_iterations", type=int, default=1000)
    p.add_argument("--bncrgan_flags", default="")
    p.add_argument("--unir_flags", default="")
    p.add_argument("--cyclegan_flags", default="")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--test_setting", default="N")
    p.add_argument("--test_samples", type=int, default=512)
    p.add_argument("--test_seed", type=int, default=0)
    p.add_argument("--extractor", default="efficientnet_lite0_imagenet",
                   help="FID features (bncr_tf.evaluate --extractor).")
    p.add_argument("--grid_rows", type=int, default=8)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--score_only", action="store_true",
                   help="Do not train; score the runs there are.")
    args = p.parse_args(argv)
    from bncr_tf.degradations import settings as settings_lib
    args.settings = [s for s in args.settings.split(",") if s]
    try:
        for s in args.settings + [args.test_setting]:
            settings_lib.get_setting(s)
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.parallel < 1 or not args.seeds or not args.settings:
        print("error: need --parallel >= 1, a seed and a setting",
              file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    args.runs_dir = os.path.abspath(args.runs_dir)
    os.makedirs(out, exist_ok=True)
    started = time.time()
    seconds, failed = ({}, []) if args.score_only else train_all(args, out)
    score_all(args, out, seconds, failed)
    print(f"total {(time.time() - started) / 60:.1f} min", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
