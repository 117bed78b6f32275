"""Issue 14: does BNCR-GAN learn the degradation of its own data in full
training (G_x learned, no clean images)?

One command reproduces the full-training identification table of
docs/results.md:

    python tools/run_full_identification.py --out=results/full_identification

For each setting (default A, B, C, H, I, J, noise, N, O) and seed, the clean
natural-image patches of --data are degraded by the setting and an ordinary
`python -m bncr_tf.train --variant=bncrgan` run learns G_x, G_k, G_n, G_q
and D from them (the command is written to `<out>/<run>/command.txt`).
Runs go --parallel at a time; an interrupted experiment continues where it
stopped when the same command is run again (finished runs are skipped,
unfinished ones resume from their last checkpoint). `--ablation=NAME:FLAGS`
adds runs of the same settings with extra training flags (e.g. the paper's
L_AC ablation `noac:--variant=bncrgan_noac`).

Then every stage of every run is compared with the truth (regenerated with
`settings.sample_params`), on the EMA generators and 2048 latents
(`tools/report_degradations.py`):

  present stage   blur: mean kernel entropy (nats) within +-25 %;
                  JPEG: mean q of the compressed fakes (m_q >= 0.5) within
                  +-7 of the mean true q, and the share of compressed fakes
                  within +-0.25 of the true share;
                  noise: std averaged over grey levels 0.05..0.95 within
                  +-25 %.
  absent stage    blur: the composed kernels (mask included) within
                  0.1 nat of a centred identity (entropy <= 0.1, centre
                  tap >= 0.9); m_k is a per-tap mask, so its mean alone
                  does not say the blur is off;
                  JPEG: mean m_q <= 0.1, or mean q >= 95;
                  noise: mean std <= 1/4 of setting N's true std.

Outputs in --out: `summary.json` (every number), `table.md`,
`trajectories.png` (logged means over training per stage), and per run its
directory (with decomposition grids x | k | n | y), log and `report/`.
"""

import json
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import numpy as np  # noqa: E402

from bncr_tf.training import rundir  # noqa: E402

DEFAULT_SETTINGS = "A,B,C,H,I,J,noise,N,O"
ENTROPY_TOLERANCE = 0.25     # relative
Q_TOLERANCE = 7.0            # quality units
SHARE_TOLERANCE = 0.25       # share of compressed fakes
NOISE_TOLERANCE = 0.25       # relative
OFF_MASK = 0.1               # m_q at or below: JPEG is off
OFF_ENTROPY = 0.1            # nats: a (near) identity kernel
OFF_CENTRE = 0.9             # weight of the centre tap of an identity
OFF_Q = 95.0                 # mean q at or above: effectively lossless
OFF_NOISE_FRACTION = 0.25    # of setting N's true noise std
COMPRESSED_MASK = 0.5        # a fake counts as compressed at m_q >= this
STAGES = ("blur", "noise", "jpeg")


def run_name(setting, seed, ablation):
    return f"{setting}-s{seed}" + (f"-{ablation}" if ablation else "")


def train_command(setting, seed, extra, args, run_root, name):
    """The `python -m bncr_tf.train` argv of one run."""
    flags = [
        f"--data={args.data}", f"--setting={setting}",
        f"--variant={args.variant}", f"--resolution={args.resolution}",
        f"--width={args.width}", f"--d_batch={args.d_batch}",
        f"--g_batch={args.g_batch}", f"--iterations={args.iterations}",
        f"--ema_decay={args.ema_decay}", f"--seed={seed}",
        f"--log_every={args.log_every}",
        f"--grid_every={args.grid_every}",
        f"--checkpoint_every={args.checkpoint_every}",
        "--noexport_at_end", f"--outdir={run_root}",
        f"--run_name={name}", "--resume=auto",
    ] + shlex.split(args.train_flags) + shlex.split(extra)
    return [sys.executable, "-m", "bncr_tf.train"] + flags


def jobs(args):
    """[(setting, seed, ablation name, extra flags)] in run order."""
    out = []
    for ablation, extra in [("", "")] + args.ablations:
        for seed in args.seeds:
            for setting in args.settings:
                out.append((setting, seed, ablation, extra))
    return out


def run_all(args, out):
    """Trains (or resumes) every job, --parallel at a time."""
    from bncr_tf import jobs as jobs_lib
    run_root = os.path.join(out, "runs")
    commands = {}
    for setting, seed, ablation, extra in jobs(args):
        name = run_name(setting, seed, ablation)
        cmd = train_command(setting, seed, extra, args, run_root, name)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "command.txt"), "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        run_dir = rundir.newest_run(run_root, name)
        if rundir.last_logged_step(run_dir) >= args.iterations:
            print(f"[{name}] already trained: {run_dir}", flush=True)
            continue
        commands[name] = cmd

    def launch(name):
        log = os.path.join(out, name, "train.log")
        return (commands[name], log, f"[{name}] training for "
                f"{args.iterations} iterations; log: {log}")

    return jobs_lib.run_jobs([(name, None) for name in commands],
                             args.parallel, launch, ROOT)


def _centre_weight(kernels):
    k = kernels.shape[-1] // 2
    return kernels[:, k, k]


def stage_rows(setting_name, learned, true, noise_n_true):
    """One dict per stage: learned vs true numbers and the verdict."""
    from bncr_tf.degradations import settings as settings_lib
    setting = settings_lib.get_setting(setting_name)
    rates = {"blur": setting.blur_rate, "noise": setting.noise_rate,
             "jpeg": setting.jpeg_rate}
    modelled = {"blur": "entropy" in learned, "jpeg": "q" in learned,
                "noise": "noise_std" in learned}
    rows = {}
    for stage in STAGES:
        present = rates[stage] > 0
        row = {"stage": stage, "present": present, "rate": rates[stage],
               "modelled": modelled[stage]}
        if not modelled[stage]:
            # The variant has no such stage (e.g. NR-GAN has no blur): an
            # absent stage is trivially off, a present one is not learned.
            row.update(learned=None, true=None, passes=not present,
                       tolerance="the variant has no such stage")
        elif stage == "blur":
            ent = float(np.mean(learned["entropy"]))
            m_k = float(np.mean(learned["m_k"]))
            centre = float(np.mean(_centre_weight(learned["kernel"])))
            row.update(learned=ent, m_k=m_k, centre_tap=centre,
                       quantity="mean kernel entropy (nats)")
            if present:
                t = float(np.mean(true["entropy"]))
                row.update(true=t, error=(ent - t) / t,
                           passes=abs(ent - t) <= ENTROPY_TOLERANCE * t,
                           tolerance=f"+-{ENTROPY_TOLERANCE:.0%}")
            else:
                # Only the composed kernels count: m_k is a per-tap mask,
                # and a small mean m_k can still move the centre tap and
                # leave a blurring kernel (m_k 0.08 with entropy 1.98 nats
                # in session 8); m_k -> 0 on every tap gives the identity,
                # which this check accepts.
                row.update(true=0.0, passes=bool(
                    ent <= OFF_ENTROPY and centre >= OFF_CENTRE),
                    tolerance="centred identity kernels")
        elif stage == "jpeg":
            q, m_q = learned["q"], learned["m_q"]
            compressed = m_q >= COMPRESSED_MASK
            share = float(np.mean(compressed))
            q_c = float(np.mean(q[compressed])) if compressed.any() else None
            row.update(learned=float(np.mean(q)), m_q=float(np.mean(m_q)),
                       share_compressed=share, q_compressed=q_c,
                       quantity="mean q (compressed fakes)")
            if present:
                tq = true["q"][true["q"] > 0]
                t, t_share = float(np.mean(tq)), float(np.mean(true["q"] > 0))
                row.update(true=t, true_share=t_share,
                           error=(q_c - t) if q_c is not None else None,
                           passes=bool(
                               q_c is not None
                               and abs(q_c - t) <= Q_TOLERANCE
                               and abs(share - t_share) <= SHARE_TOLERANCE),
                           tolerance=f"+-{Q_TOLERANCE:g} q, share "
                                     f"+-{SHARE_TOLERANCE:g}")
            else:
                row.update(true=None, passes=bool(
                    row["m_q"] <= OFF_MASK or row["learned"] >= OFF_Q),
                    tolerance=f"m_q <= {OFF_MASK} or q >= {OFF_Q:g}")
        else:
            std = float(np.mean(learned["noise_std"]))
            row.update(learned=std, quantity="mean noise std ([0, 1] units)")
            if present:
                t = float(np.mean(true["noise_std"]))
                row.update(true=t, error=(std - t) / t,
                           passes=abs(std - t) <= NOISE_TOLERANCE * t,
                           tolerance=f"+-{NOISE_TOLERANCE:.0%}")
            else:
                row.update(true=0.0,
                           passes=std <= OFF_NOISE_FRACTION * noise_n_true,
                           tolerance=f"<= {OFF_NOISE_FRACTION:g} x N's "
                                     f"({noise_n_true:.3g})")
        rows[stage] = row
    return rows


def true_noise_of_n(config, run_dir, samples):
    """Setting N's mean true noise std on this data (the 'off' scale)."""
    import dataclasses
    import report_degradations as report
    true, _ = report.true_degradations(
        dataclasses.replace(config, setting="N"), run_dir, samples)
    return float(np.mean(true["noise_std"]))


def analyse(name, run_dir, args, out):
    """Every stage of one run against the truth (and its report)."""
    import report_degradations as report
    from bncr_tf import runs
    summary = report.make_report(
        run_dir, os.path.join(out, name, "report"),
        num_samples=args.samples, seed=0)
    config, gens, _ = runs.load_generators(run_dir)
    learned = report.learned_degradations(gens, config, args.samples, 0)
    true, _ = report.true_degradations(config, run_dir, args.samples)
    stages = stage_rows(config.setting, learned, true,
                        true_noise_of_n(config, run_dir, args.samples))
    return {"run": name, "setting": config.setting, "seed": config.seed,
            "variant": config.variant,
            "run_dir": os.path.relpath(run_dir, out),
            "iterations": rundir.last_logged_step(run_dir),
            "stages": stages,
            "passes": all(s["passes"] for s in stages.values()),
            "report": os.path.relpath(summary["out_dir"], out)}


def _cell(row):
    """'learned (true) ok' text of one stage."""
    def f(v):
        return "–" if v is None else f"{v:.3g}"
    mark = "ok" if row["passes"] else "**no**"
    if not row.get("modelled", True):
        return f"not modelled {mark}"
    if row["stage"] == "jpeg":
        if row["present"]:
            return (f"q {f(row['q_compressed'])} ({f(row['true'])}), "
                    f"share {row['share_compressed']:.2f} "
                    f"({row['true_share']:.2f}) {mark}")
        return f"off? m_q {row['m_q']:.2f}, q {row['learned']:.0f} {mark}"
    if row["stage"] == "blur":
        if row["present"]:
            return f"H {f(row['learned'])} ({f(row['true'])}) {mark}"
        return (f"off? m_k {row['m_k']:.2f}, H {row['learned']:.2f} "
                f"{mark}")
    if row["present"]:
        return (f"std {row['learned'] * 255:.1f} "
                f"({row['true'] * 255:.1f}) {mark}")
    return f"off? std {row['learned'] * 255:.1f} {mark}"


def table(rows):
    """Markdown table: one row per run, one column per stage."""
    lines = ["Learned (true) per stage; noise std in grey levels; "
             "'off?' rows are stages absent from the data.", "",
             "| run | iterations | blur | noise | JPEG | all pass |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        s = r["stages"]
        lines.append(f"| {r['run']} | {r['iterations']} | "
                     f"{_cell(s['blur'])} | {_cell(s['noise'])} | "
                     f"{_cell(s['jpeg'])} | "
                     f"{'yes' if r['passes'] else 'no'} |")
    checks = [s for r in rows for s in r["stages"].values()]
    lines += ["", f"{sum(c['passes'] for c in checks)} of {len(checks)} "
              f"stage checks pass; {sum(r['passes'] for r in rows)} of "
              f"{len(rows)} runs pass every stage."]
    return "\n".join(lines) + "\n"


def trajectories(rows, out):
    """trajectories.png: logged entropy, noise std, q and m_q per run."""
    import report_degradations as report
    keys = [("Degradation/kernel_entropy", "mean kernel entropy (nats)"),
            ("Degradation/noise_std", "mean noise std (grey levels)"),
            ("Degradation/q_mean", "mean q"),
            ("Degradation/m_q_mean", "mean m_q")]
    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189),
              (255, 127, 14), (140, 86, 75), (227, 119, 194),
              (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    images = []
    for key, title in keys:
        series = []
        for row in rows:
            steps, values = rundir.logged_series(
                os.path.join(out, row["run_dir"]), key)
            if steps:
                series.append((row["run"], steps, values))
        if not series:
            continue
        top = max(max(v) for _, _, v in series) * 1.1 or 1.0
        last = max(s[-1] for _, s, _ in series)
        fig = report.Figure((0.0, float(last)), (0.0, top), title,
                            "iteration", size=(640, 320))
        for i, (name, xs, ys) in enumerate(series):
            fig.line(xs, ys, colors[i % len(colors)], name)
        images.append(fig.render())
    if not images:
        return None
    path = os.path.join(out, "trajectories.png")
    report.write_png(path, report.stack_images(images))
    return os.path.basename(path)


def parse_ablations(items):
    out = []
    for item in items:
        name, sep, flags = item.partition(":")
        if not sep or not name or not name.isidentifier():
            raise SystemExit(f"error: bad --ablation {item!r} (expected "
                             f"NAME:FLAGS, e.g. noac:--variant=bncrgan_noac)")
        out.append((name, flags))
    return out


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/full_identification",
                   help="Output directory (runs, reports, summary).")
    p.add_argument("--settings", default=DEFAULT_SETTINGS,
                   help="Comma-separated settings (bncr_tf settings names).")
    p.add_argument("--seeds", default="0,1",
                   help="Comma-separated training seeds.")
    p.add_argument("--variant", default="bncrgan")
    p.add_argument("--ablation", action="append", default=[],
                   help="NAME:FLAGS: also train every setting and seed "
                        "with these extra flags (repeatable).")
    p.add_argument("--data", default="builtin:skimage_patches:count=4096",
                   help="Clean images that get degraded.")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--d_batch", type=int, default=32)
    p.add_argument("--g_batch", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--ema_decay", type=float, default=0.99)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--grid_every", type=int, default=1000)
    p.add_argument("--checkpoint_every", type=int, default=250)
    p.add_argument("--train_flags", default="",
                   help="Extra flags passed to every training run.")
    p.add_argument("--parallel", type=int, default=2,
                   help="Training runs at a time.")
    p.add_argument("--samples", type=int, default=2048,
                   help="Latents sampled for the learned distributions.")
    p.add_argument("--analyse_only", action="store_true",
                   help="Do not train; analyse the finished runs.")
    args = p.parse_args(argv)
    from bncr_tf.degradations import settings as settings_lib
    args.settings = [s for s in args.settings.split(",") if s]
    for s in args.settings:
        try:
            settings_lib.get_setting(s)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        print(f"error: --seeds must be integers, got {args.seeds!r}",
              file=sys.stderr)
        return 2
    args.ablations = parse_ablations(args.ablation)
    if args.parallel < 1:
        print("error: --parallel must be at least 1", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    seconds, failed = ({}, []) if args.analyse_only else run_all(args, out)
    rows = []
    for setting, seed, ablation, _ in jobs(args):
        name = run_name(setting, seed, ablation)
        run_dir = rundir.newest_run(os.path.join(out, "runs"), name)
        if name in failed or rundir.last_logged_step(run_dir) < 1:
            print(f"[{name}] no trained run; skipped", file=sys.stderr)
            continue
        row = analyse(name, run_dir, args, out)
        path = os.path.join(out, name, "row.json")
        if name in seconds:
            row["seconds"] = seconds[name]
        elif os.path.isfile(path):
            with open(path) as f:
                row["seconds"] = json.load(f).get("seconds")
        with open(path, "w") as f:
            json.dump(row, f, indent=2)
        rows.append(row)
        print(f"[{name}] " + "; ".join(
            f"{s}: {_cell(row['stages'][s])}" for s in STAGES), flush=True)
    plot = trajectories(rows, out) if rows else None
    summary = {"args": {k: v for k, v in vars(args).items()},
               "rows": rows, "trajectories": plot}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
        f.write("\n")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table(rows))
    print(table(rows))
    print(f"wrote {out}/summary.json, table.md"
          + (f", {plot}" if plot else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
