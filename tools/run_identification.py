"""Experiment 1 of issue 7: can calibration mode identify a degradation?

One command reproduces every number of the identification table of
docs/results.md:

    python tools/run_identification.py --out=results/identification

For each setting (default H, I, J: JPEG; B, C: blur; noise: camera noise)
the clean natural-image patches of --data are degraded by the setting, and
a model is trained in calibration mode (`--clean_reference`, a disjoint set
of clean patches replaces G_x), so only the degradation generator of the
setting's stage and D learn. Each run is an ordinary
`python -m bncr_tf.train` subprocess (its command is written to
`<out>/<setting>/command.txt`); an interrupted experiment continues where it
stopped when the same command is run again (finished runs are not redone,
unfinished ones resume from their last checkpoint).

Then the learned distribution (EMA generators, 2048 latents) is compared
with the true one (regenerated with `settings.sample_params` from the run's
setting, data seed and data size) and with the generators at
initialisation (same seed, no training):

  JPEG (H, I, J)  mean quality q: |learned - true| <= 5 passes; H and I
                  count as separated when their learned means differ by at
                  least 10 (the true means differ by 20);
  blur (B, C)     mean kernel entropy (nats) within +-20 % of the truth;
  noise           noise std averaged over grey levels 0.05 .. 0.95 (the
                  camera noise std grows with intensity) within +-20 %.

Outputs in --out: `summary.json` (every number), `table.md` (the table of
docs/results.md), `trajectories.png` (learned mean q / entropy / noise
std over training, with the truth), and per setting the run directory, its
log, and `report/` from tools/report_degradations.py (histograms of learned
versus true q, m_q, entropy, kernel galleries, noise-versus-intensity).
"""

import json
import os
import shlex
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import numpy as np  # noqa: E402

from bncr_tf.training import rundir  # noqa: E402

# The variant trained in calibration mode for each setting, and its extra
# flags. Settings H, I, J compress every image, so CR-GAN's mask is not
# needed to explain the data; "crgan" keeps it (the paper's model).
DEFAULT_VARIANTS = {
    "H": ("crgan", []), "I": ("crgan", []), "J": ("crgan", []),
    "B": ("brgan", []), "C": ("brgan", []),
    "noise": ("nrgan_si1", ["--noise_prior=camera"]),
}
STAGE = {"H": "jpeg", "I": "jpeg", "J": "jpeg", "B": "blur", "C": "blur",
         "noise": "noise"}
Q_TOLERANCE = 5.0
RELATIVE_TOLERANCE = 0.20
SEPARATION = 10.0


def train_command(setting, variant, extra, args, run_root):
    """The `python -m bncr_tf.train` argv of one calibration run."""
    flags = [
        f"--data={args.data}", f"--setting={setting}",
        f"--clean_reference={args.reference}",
        f"--variant={variant}", f"--resolution={args.resolution}",
        f"--width={args.width}", f"--d_batch={args.d_batch}",
        f"--g_batch={args.g_batch}", f"--iterations={args.iterations}",
        f"--lr={args.lr}", f"--ema_decay={args.ema_decay}",
        f"--seed={args.seed}", f"--log_every={args.log_every}",
        f"--grid_every={args.iterations}",
        f"--checkpoint_every={args.checkpoint_every}",
        "--noexport_at_end", f"--outdir={run_root}",
        f"--run_name={setting}", "--resume=auto",
    ] + list(extra) + shlex.split(args.train_flags)
    return [sys.executable, "-m", "bncr_tf.train"] + flags


def run_training(setting, args, out):
    """Trains (or resumes) the calibration run of one setting."""
    variant, extra = args.variants[setting]
    run_root = os.path.join(out, "runs")
    cmd = train_command(setting, variant, extra, args, run_root)
    os.makedirs(os.path.join(out, setting), exist_ok=True)
    with open(os.path.join(out, setting, "command.txt"), "w") as f:
        f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
    run_dir = rundir.newest_run(run_root, setting)
    if rundir.last_logged_step(run_dir) >= args.iterations:
        print(f"[{setting}] already trained: {run_dir}", flush=True)
        return run_dir, None
    log_path = os.path.join(out, setting, "train.log")
    print(f"[{setting}] training {variant} for {args.iterations} "
          f"iterations; log: {log_path}", flush=True)
    started = time.time()
    with open(log_path, "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    seconds = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"training {setting} failed (exit "
                           f"{proc.returncode}); see {log_path}")
    print(f"[{setting}] done in {seconds / 60:.1f} min", flush=True)
    return rundir.newest_run(run_root, setting), seconds


def initial_degradations(config, samples, seed):
    """`learned_degradations` of the generators at initialisation."""
    import keras
    from bncr_tf import models
    import report_degradations as report
    keras.utils.set_random_seed(config.seed)  # as steps.Trainer does
    gens = models.build_generators(config)
    return report.learned_degradations(gens, config, samples, seed)


def stage_numbers(stage, learned, true):
    """The compared scalar of a stage: (learned, true) means."""
    if stage == "jpeg":
        return float(np.mean(learned["q"])), float(
            np.mean(true["q"][true["q"] > 0]))
    if stage == "blur":
        return float(np.mean(learned["entropy"])), float(
            np.mean(true["entropy"]))
    return (float(np.mean(learned["noise_std"])),
            float(np.mean(true["noise_std"])))


def analyse(setting, run_dir, args, out):
    """Learned vs true vs initial numbers of one run (and its report)."""
    import report_degradations as report
    from bncr_tf import runs
    stage = STAGE[setting]
    summary = report.make_report(
        run_dir, os.path.join(out, setting, "report"),
        num_samples=args.samples, seed=0)
    config, gens, _ = runs.load_generators(run_dir)
    learned = report.learned_degradations(gens, config, args.samples, 0)
    true, _ = report.true_degradations(config, run_dir, args.samples)
    init = initial_degradations(config, args.samples, 0)
    value, truth = stage_numbers(stage, learned, true)
    start, _ = stage_numbers(stage, init, true)
    row = {"setting": setting, "stage": stage, "variant": config.variant,
           "run_dir": os.path.relpath(run_dir, out),
           "iterations": rundir.last_logged_step(run_dir), "true": truth,
           "learned": value, "initial": start,
           "moved_toward_truth": abs(value - truth) < abs(start - truth)}
    if stage == "jpeg":
        row["quantity"] = "mean q"
        row["m_q_mean"] = float(np.mean(learned["m_q"]))
        row["m_q_initial"] = float(np.mean(init["m_q"]))
        low, high = learned["q"] < 5.0, learned["q"] > 95.0
        row["fraction_q_below_5"] = float(np.mean(low))
        row["fraction_q_above_95"] = float(np.mean(high))
        row["m_q_mean_q_below_5"] = (float(np.mean(learned["m_q"][low]))
                                     if low.any() else None)
        row["m_q_mean_q_above_95"] = (float(np.mean(learned["m_q"][high]))
                                      if high.any() else None)
        row["learned_p5_p50_p95"] = [float(v) for v in np.percentile(
            learned["q"], [5, 50, 95])]
        row["true_p5_p50_p95"] = [float(v) for v in np.percentile(
            true["q"][true["q"] > 0], [5, 50, 95])]
        row["error"] = value - truth
        row["passes"] = abs(value - truth) <= Q_TOLERANCE
        row["tolerance"] = f"+-{Q_TOLERANCE:g} q"
    else:
        row["quantity"] = ("mean kernel entropy (nats)" if stage == "blur"
                           else "mean noise std ([0, 1] units)")
        row["relative_error"] = (value - truth) / truth
        row["passes"] = abs(value - truth) <= RELATIVE_TOLERANCE * truth
        row["tolerance"] = f"+-{RELATIVE_TOLERANCE:.0%}"
        if stage == "blur":
            row["m_k_mean"] = float(np.mean(learned["m_k"]))
            row["learned_p5_p50_p95"] = [float(v) for v in np.percentile(
                learned["entropy"], [5, 50, 95])]
            row["true_p5_p50_p95"] = [float(v) for v in np.percentile(
                true["entropy"], [5, 50, 95])]
    row["report"] = os.path.relpath(summary["out_dir"], out)
    return row


def trajectories(rows, out):
    """Writes trajectories.png: logged means over training vs the truth."""
    import report_degradations as report
    keys = {"jpeg": ("Degradation/q_mean", "mean q"),
            "blur": ("Degradation/kernel_entropy", "mean entropy (nats)")}
    panels = []
    for stage, (key, title) in keys.items():
        series = []
        for row in rows:
            if row["stage"] != stage:
                continue
            steps, values = rundir.logged_series(
                os.path.join(out, row["run_dir"]), key)
            series.append((row["setting"], [0] + steps,
                           [row["initial"]] + values, row["true"]))
        if series:
            panels.append((title, series))
    if not panels:
        return None
    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    images = []
    for title, series in panels:
        top = max(max(max(v), t) for _, _, v, t in series) * 1.15
        last = max(s[-1] for _, s, _, _ in series)
        fig = report.Figure((0.0, float(last)), (0.0, top),
                            f"{title}: learned (solid) vs true (flat)",
                            "iteration", size=(560, 320))
        for i, (name, xs, ys, truth) in enumerate(series):
            color = colors[i % len(colors)]
            fig.line(xs, ys, color, f"{name}")
            fig.line([0, last], [truth, truth], color, f"{name} true",
                     thickness=1)
        images.append(fig.render())
    path = os.path.join(out, "trajectories.png")
    report.write_png(path, report.stack_images(images))
    return os.path.basename(path)


def table(rows, separation):
    """Markdown table of the rows."""
    lines = ["| setting | variant | quantity | true | initial | learned | "
             "error | tolerance | passes | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = (f"{r['error']:+.1f}" if "error" in r
               else f"{r['relative_error']:+.0%}")
        minutes = (f"{r['seconds'] / 60:.1f} min" if r.get("seconds")
                   else "–")
        lines.append(
            f"| {r['setting']} | {r['variant']} | {r['quantity']} | "
            f"{r['true']:.3g} | {r['initial']:.3g} | {r['learned']:.3g} | "
            f"{err} | {r['tolerance']} | {'yes' if r['passes'] else 'no'} "
            f"| {minutes} |")
    if separation is not None:
        lines += ["", f"H vs I: learned mean q differ by "
                  f"{separation['difference']:.1f} (true: "
                  f"{separation['true_difference']:.1f}); separated "
                  f"(>= {SEPARATION:g}): "
                  f"{'yes' if separation['separated'] else 'no'}."]
    return "\n".join(lines) + "\n"


def parse_variants(text):
    variants = {k: (v, list(e)) for k, (v, e) in DEFAULT_VARIANTS.items()}
    for item in filter(None, text.split(",")):
        setting, _, variant = item.partition(":")
        if setting not in STAGE or not variant:
            raise SystemExit(f"error: bad --variants entry {item!r} "
                             f"(expected SETTING:VARIANT, SETTING in "
                             f"{', '.join(STAGE)})")
        variants[setting] = (variant, [])
    return variants


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/identification",
                   help="Output directory (runs, reports, summary).")
    p.add_argument("--settings", default="H,I,J,B,C,noise",
                   help="Comma-separated settings among "
                        + ", ".join(STAGE) + ".")
    p.add_argument("--variants", default="",
                   help="Overrides SETTING:VARIANT,... (default: crgan for "
                        "H/I/J, brgan for B/C, nrgan_si1 with the camera "
                        "prior for noise).")
    p.add_argument("--data", default="builtin:skimage_patches:count=4096",
                   help="Clean images that get degraded (the 'camera').")
    p.add_argument("--reference",
                   default="builtin:skimage_patches:count=4096",
                   help="Clean reference images (cut with "
                        "--clean_reference_seed=1, so disjoint patches).")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--d_batch", type=int, default=32)
    p.add_argument("--g_batch", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema_decay", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--checkpoint_every", type=int, default=500)
    p.add_argument("--train_flags", default="",
                   help="Extra flags passed to every training run.")
    p.add_argument("--samples", type=int, default=2048,
                   help="Latents sampled for the learned distributions.")
    p.add_argument("--analyse_only", action="store_true",
                   help="Do not train; analyse the existing runs.")
    args = p.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in STAGE]
    if unknown:
        print(f"error: unknown settings {unknown}; choose among "
              f"{', '.join(STAGE)}", file=sys.stderr)
        return 2
    args.variants = parse_variants(args.variants)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    rows = []
    for setting in settings:
        if args.analyse_only:
            run_dir = rundir.newest_run(os.path.join(out, "runs"), setting)
            seconds = None
            if run_dir is None:
                print(f"error: no run for {setting} in {out}/runs",
                      file=sys.stderr)
                return 2
        else:
            try:
                run_dir, seconds = run_training(setting, args, out)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
        row = analyse(setting, run_dir, args, out)
        previous = os.path.join(out, setting, "row.json")
        if seconds is None and os.path.isfile(previous):
            with open(previous) as f:
                seconds = json.load(f).get("seconds")
        row["seconds"] = seconds
        with open(previous, "w") as f:
            json.dump(row, f, indent=2)
        rows.append(row)
        print(f"[{setting}] {row['quantity']}: true {row['true']:.3g}, "
              f"initial {row['initial']:.3g}, learned {row['learned']:.3g} "
              f"-> {'pass' if row['passes'] else 'FAIL'}", flush=True)
    by = {r["setting"]: r for r in rows}
    separation = None
    if "H" in by and "I" in by:
        diff = by["I"]["learned"] - by["H"]["learned"]
        separation = {"difference": diff,
                      "true_difference": by["I"]["true"] - by["H"]["true"],
                      "separated": diff >= SEPARATION}
    plot = trajectories(rows, out)
    summary = {"args": {k: v for k, v in vars(args).items()
                        if k != "variants"},
               "variants": {s: args.variants[s][0] for s in settings},
               "rows": rows, "separation_H_I": separation,
               "trajectories": plot}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table(rows, separation))
    print(table(rows, separation))
    print(f"wrote {out}/summary.json, table.md"
          + (f", {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
