"""Experiment 2 of issue 7: GAN vs the robust variants on Fashion-MNIST.

One command reproduces every number of the comparison table of
docs/results.md:

    python tools/run_fmnist_comparison.py --out=results/fmnist

Fashion-MNIST (Debian package dataset-fashion-mnist; `tools/install_data.sh`
installs it) is read at 32 px (28 px zero-padded, grey replicated to RGB),
its first 20k training images degraded once at load by settings D (blur),
J (JPEG) and N (blur + camera noise + JPEG), and each model of --runs is
trained with narrow networks (`python -m bncr_tf.train` subprocesses,
--jobs at a time; the command of each is written to
`<out>/logs/<name>.command.txt`). An interrupted
experiment continues when the same command is run again: finished runs
are kept, unfinished ones resume from their last checkpoint.

Metric: FID between 5000 clean images of the EMA G_x and the clean
Fashion-MNIST test set (10k), on the 128-d penultimate features of a small
classifier trained on the clean training set by
tools/train_fmnist_classifier.py (trained first if --classifier does not
exist; its test accuracy is reported). These FIDs are comparable with each
other, not with any published Inception FID. Also reported: the FID of the
degraded training images themselves (what a GAN that reproduces its data
perfectly would score) and of the clean training images (the floor).

The restoration baselines are runs of the variants `deblur_gan` (D) and
`deblock_gan` (J): a plain GAN trained on the degraded images restored by
`bncr_tf.baselines` (Deblur+GAN†: Krishnan-Fergus with the true kernels;
Deblock+GAN: POCS deblocking, our substitute for Pointwise SA-DCT), e.g.
--runs=D:deblur_gan:0,J:deblock_gan:0. Their training sets are built once
under `<out>/data/`.

Outputs in --out: `summary.json`, `table.md`, `logs/` (command and log of
each run), and per run its directory with `fid.json` and the decomposition
grid (x | k | n | y) of its last step.
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

from bncr_tf.training import rundir  # noqa: E402

DEFAULT_RUNS = ("N:gan:0,N:gan:1,N:ambientgan:0,N:bncrgan:0,N:bncrgan:1,"
                "D:gan:0,D:brgan:0,D:bncrgan:0,"
                "J:gan:0,J:crgan:0,J:bncrgan:0")
TITLES = {"gan": "GAN", "ambientgan": "AmbientGAN", "brgan": "BR-GAN",
          "crgan": "CR-GAN", "bncrgan": "BNCR-GAN",
          "deblur_gan": "Deblur+GAN†", "deblock_gan": "Deblock+GAN"}
# The restoration baselines: a plain GAN trained on the degraded set
# restored image by image (bncr_tf.baselines.restore), built once under
# <out>/data/<setting>_<restorer>.
RESTORED = {"deblur_gan": "deblur_gt", "deblock_gan": "deblock"}


def parse_runs(text):
    """'SETTING:VARIANT:SEED,...' -> list of (setting, variant, seed)."""
    runs = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"bad --runs entry {item!r}; expected "
                             f"SETTING:VARIANT:SEED")
        runs.append((parts[0], parts[1], int(parts[2])))
    return runs


def run_name(setting, variant, seed):
    return f"{variant}-{setting}-s{seed}"


def restored_dir(out, setting, variant):
    return os.path.join(out, "data", f"{setting}_{RESTORED[variant]}")


def build_restored(runs, args, out):
    """Builds the restored training set of every restoration-baseline run
    that does not have one yet (same images, setting and seed 0 as the
    in-memory degradation of the other runs)."""
    from bncr_tf import data
    from bncr_tf.baselines import restore as restore_lib
    from bncr_tf.degradations import builder
    images = None
    for setting, variant in sorted({(r[0], r[1]) for r in runs
                                    if r[1] in RESTORED}):
        target = restored_dir(out, setting, variant)
        if os.path.isfile(os.path.join(target, data.SUMMARY_FILE)):
            continue
        restore = RESTORED[variant]
        restore_lib.check_restorable(setting, restore)
        if images is None:
            images, labels = data.load_clean_uint8(
                args.data, 32, limit=args.data_limit or None)

        def fn(degraded, params, restore=restore):
            return restore_lib.restore_images(restore, degraded, params)
        print(f"building {target} ({restore} on {setting})", flush=True)
        builder.build_degraded_dataset(
            images, labels, setting, target, seed=0, workers=2,
            source=f"{args.data} (limit {args.data_limit})", restore=fn,
            restore_info={"name": restore, **restore_lib.describe(restore)},
            overwrite=True)


def train_command(setting, variant, seed, args, run_root):
    data_flags = [f"--data={args.data}", f"--data_limit={args.data_limit}",
                  f"--setting={setting}", f"--variant={variant}"]
    if variant in RESTORED:
        out = os.path.dirname(run_root)
        data_flags = [f"--data={restored_dir(out, setting, variant)}",
                      "--data_limit=0", "--setting=A", "--variant=gan"]
    flags = data_flags + [
        "--resolution=32",
        f"--width={args.width}",
        f"--d_batch={args.d_batch}", f"--g_batch={args.g_batch}",
        f"--iterations={args.iterations}", f"--lr={args.lr}",
        f"--ema_decay={args.ema_decay}", f"--seed={seed}",
        f"--log_every={args.log_every}", f"--grid_every={args.iterations}",
        f"--checkpoint_every={args.checkpoint_every}",
        "--noexport_at_end", f"--outdir={run_root}",
        f"--run_name={run_name(setting, variant, seed)}", "--resume=auto",
    ] + shlex.split(args.train_flags)
    return [sys.executable, "-m", "bncr_tf.train"] + flags


def train_all(runs, args, out):
    """Trains the runs that are not finished, --jobs at a time.

    Returns:
      {name: wall seconds} of the runs trained now.
    """
    run_root = os.path.join(out, "runs")
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    todo = []
    for setting, variant, seed in runs:
        name = run_name(setting, variant, seed)
        cmd = train_command(setting, variant, seed, args, run_root)
        with open(os.path.join(logs, name + ".command.txt"), "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        done = rundir.last_logged_step(rundir.newest_run(run_root, name))
        if done >= args.iterations:
            print(f"[{name}] already trained", flush=True)
            continue
        todo.append((name, cmd))
    running, seconds, failed = {}, {}, []
    while todo or running:
        while todo and len(running) < args.jobs:
            name, cmd = todo.pop(0)
            log = open(os.path.join(logs, name + ".log"), "a")
            print(f"[{name}] training ({len(todo)} waiting)", flush=True)
            running[name] = (subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT),
                log, time.time())
        time.sleep(2)
        for name in list(running):
            proc, log, started = running[name]
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            seconds[name] = time.time() - started
            if proc.returncode:
                failed.append(name)
                print(f"[{name}] FAILED (exit {proc.returncode}); see "
                      f"{logs}/{name}.log", flush=True)
            else:
                print(f"[{name}] done in {seconds[name] / 60:.1f} min",
                      flush=True)
    if failed:
        raise RuntimeError(f"training failed: {', '.join(failed)}")
    return seconds


def ensure_classifier(args):
    """Path of the classifier, training it first when it does not exist."""
    path = args.classifier
    if os.path.isfile(path):
        return path
    out_dir = os.path.dirname(path) or "."
    cmd = [sys.executable, os.path.join(ROOT, "tools",
                                        "train_fmnist_classifier.py"),
           f"--out={out_dir}", f"--data={args.data}",
           f"--test_data={args.reference}"]
    print(f"training the feature classifier: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return path


def evaluate(runs, args, out, seconds):
    """FIDs of every run, of the degraded and of the clean training data."""
    import numpy as np
    from bncr_tf import data
    from bncr_tf import runs as runs_lib
    from bncr_tf.metrics import evaluation
    from bncr_tf.metrics import features
    from bncr_tf.metrics import reference
    from bncr_tf.training import loop
    from bncr_tf.degradations import settings as settings_lib

    classifier = ensure_classifier(args)
    with open(os.path.splitext(classifier)[0] + ".json") as f:
        classifier_info = json.load(f)
    extractor = features.make_extractor("classifier",
                                        classifier_path=classifier)
    cache = os.path.join(out, "cache")
    ref = reference.reference_stats(args.reference, 32, extractor,
                                    cache=cache, progress=False)
    n = args.fid_samples

    def fid_of_images(images, label):
        chunks = (images[i:i + 500] for i in range(0, n, 500))
        return evaluation.evaluate_images(chunks, ref, extractor, n,
                                          progress=False, label=label)["fid"]

    train, _ = data.load_clean_uint8(args.data, 32,
                                     limit=args.data_limit or None)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(train), n, replace=False))
    data_fids = {"clean": fid_of_images(train[pick], "clean train")}
    for setting in sorted({r[0] for r in runs}):
        degraded = loop.degrade_in_memory(
            train, settings_lib.get_setting(setting), 0)
        data_fids[setting] = fid_of_images(degraded[pick], setting)
        print(f"FID of the training images degraded by {setting}: "
              f"{data_fids[setting]:.2f}", flush=True)
    rows = []
    for setting, variant, seed in runs:
        name = run_name(setting, variant, seed)
        run_dir = rundir.newest_run(os.path.join(out, "runs"), name)
        fid_path = os.path.join(run_dir, "fid.json")
        _, gens, ckpt = runs_lib.load_generators(run_dir)
        result = evaluation.evaluate_generators(gens, ref, n, extractor,
                                                seed=0, progress=False)
        record = {"setting": setting, "variant": variant, "seed": seed,
                  "name": name, "fid": result["fid"], "checkpoint": ckpt,
                  "iterations": rundir.last_logged_step(run_dir),
                  "run_dir": os.path.relpath(run_dir, out)}
        if name in seconds:
            record["seconds"] = seconds[name]
        elif os.path.isfile(fid_path):
            with open(fid_path) as f:
                record["seconds"] = json.load(f).get("seconds")
        with open(fid_path, "w") as f:
            json.dump(record, f, indent=2)
        grids = sorted(g for g in os.listdir(os.path.join(run_dir, "grids"))
                       if g.startswith("fakes-"))
        record["grid"] = (os.path.relpath(os.path.join(run_dir, "grids",
                                                       grids[-1]), out)
                          if grids else None)
        rows.append(record)
        print(f"[{name}] FID {record['fid']:.2f}", flush=True)
    return rows, data_fids, classifier_info


def table(rows, data_fids, classifier_info):
    """Markdown: settings as columns, models as rows (mean over seeds)."""
    settings = sorted({r["setting"] for r in rows})
    variants = []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    lines = ["| model | " + " | ".join(f"({s})" for s in settings) + " |",
             "|---|" + "---|" * len(settings)]
    for v in variants:
        cells = []
        for s in settings:
            fids = [r["fid"] for r in rows
                    if r["variant"] == v and r["setting"] == s]
            if not fids:
                cells.append("–")
            elif len(fids) == 1:
                cells.append(f"{fids[0]:.2f}")
            else:
                cells.append(f"{sum(fids) / len(fids):.2f} "
                             f"({', '.join(f'{f:.2f}' for f in fids)})")
        lines.append(f"| {TITLES.get(v, v)} | " + " | ".join(cells) + " |")
    lines.append("| *degraded training images* | " + " | ".join(
        f"*{data_fids[s]:.2f}*" for s in settings) + " |")
    lines += ["", f"Clean training images: FID {data_fids['clean']:.2f} "
              f"(the floor). Feature classifier test accuracy: "
              f"{100 * classifier_info['test_accuracy']:.2f} %.", "",
              "| run | iterations | wall time | FID |", "|---|---|---|---|"]
    for r in rows:
        minutes = (f"{r['seconds'] / 60:.1f} min" if r.get("seconds")
                   else "–")
        lines.append(f"| {r['name']} | {r['iterations']} | {minutes} | "
                     f"{r['fid']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/fmnist")
    p.add_argument("--runs", default=DEFAULT_RUNS,
                   help="SETTING:VARIANT:SEED,... to train and score.")
    p.add_argument("--data", default="fashion_mnist:train")
    p.add_argument("--data_limit", type=int, default=20000,
                   help="Train on the first N images (0 = all 60k); "
                        "1500 iterations see 48k images.")
    p.add_argument("--reference", default="fashion_mnist:test",
                   help="Clean images the FIDs are measured against.")
    p.add_argument("--classifier",
                   default="results/fmnist_classifier/classifier.keras",
                   help="Feature classifier (trained if missing).")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--d_batch", type=int, default=32)
    p.add_argument("--g_batch", type=int, default=64)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema_decay", type=float, default=0.99)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--checkpoint_every", type=int, default=500)
    p.add_argument("--train_flags", default="",
                   help="Extra flags passed to every training run.")
    p.add_argument("--jobs", type=int, default=2,
                   help="Training runs at a time.")
    p.add_argument("--fid_samples", type=int, default=5000)
    p.add_argument("--evaluate_only", action="store_true",
                   help="Score the existing runs without training.")
    args = p.parse_args(argv)
    try:
        runs = parse_runs(args.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    seconds = {}
    if not args.evaluate_only:
        try:
            build_restored(runs, args, out)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            seconds = train_all(runs, args, out)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    rows, data_fids, info = evaluate(runs, args, out, seconds)
    summary = {"args": vars(args), "rows": rows,
               "data_fids": data_fids, "classifier": info}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    text = table(rows, data_fids, info)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
