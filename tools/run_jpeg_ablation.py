"""Ablation of the three JPEG-identification [choice]s (docs/results.md).

Experiment 1's fast set-up (the slow test
tests/test_calibration.py::test_fast_identification_h_vs_i): CR-GAN in
calibration mode on settings H and I, 1024 patches, 400 iterations, once
per configuration:

  paper        the pipeline as specified (R1 10, analytic q-gradient)
  all          --jpeg_storage --d_highpass=20 --r1_weight=0
               --quality_gradient=fd
  no_storage   `all` without --jpeg_storage
  no_highpass  `all` without --d_highpass
  r1_10        `all` with R1 weight 10
  analytic     `all` with the analytic q-gradient

    python tools/run_jpeg_ablation.py --out=results/jpeg_ablation --jobs=2

Each configuration is one `tools/run_identification.py` call (its own
folder under --out, which resumes and skips finished runs). The tool then
writes --out/table.md and --out/summary.json: per configuration, the
learned mean q of H and I, how far H moved toward its truth, and whether
the fast test's two assertions would hold (H moved > 5 toward the truth,
and I - H > 5).
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ALL = ["--jpeg_storage", "--d_highpass=20", "--r1_weight=0",
       "--quality_gradient=fd"]
CONFIGS = {
    "paper": [],
    "all": ALL,
    "no_storage": [f for f in ALL if f != "--jpeg_storage"],
    "no_highpass": [f for f in ALL if f != "--d_highpass=20"],
    "r1_10": [f for f in ALL if f != "--r1_weight=0"] + ["--r1_weight=10"],
    "analytic": [f for f in ALL if f != "--quality_gradient=fd"],
}
FAST = ["--settings=H,I", "--iterations=400", "--log_every=50",
        "--data=builtin:skimage_patches:count=1024",
        "--reference=builtin:skimage_patches:count=1024"]


def run_config(name, args):
    """Runs tools/run_identification.py for one configuration."""
    out = os.path.join(args.out, name)
    cmd = [sys.executable, os.path.join(ROOT, "tools",
                                        "run_identification.py"),
           f"--out={out}", f"--seed={args.seed}"] + FAST + [
        "--train_flags=" + " ".join(CONFIGS[name])]
    os.makedirs(out, exist_ok=True)
    print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
    with open(os.path.join(out, "ablation.log"), "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               cwd=ROOT)
    print(f"[{name}] exit {code}", flush=True)
    return code


def row_of(name, out):
    """The table row of one finished configuration."""
    with open(os.path.join(out, name, "summary.json")) as f:
        summary = json.load(f)
    by = {r["setting"]: r for r in summary["rows"]}
    h, i = by["H"], by["I"]
    moved = abs(h["initial"] - h["true"]) - abs(h["learned"] - h["true"])
    return {"config": name, "flags": " ".join(CONFIGS[name]),
            "H_true": h["true"], "H_initial": h["initial"],
            "H_learned": h["learned"], "I_true": i["true"],
            "I_learned": i["learned"], "H_moved_toward_truth": moved,
            "I_minus_H": i["learned"] - h["learned"],
            "fast_test_holds": bool(moved > 5.0
                                    and i["learned"] - h["learned"] > 5.0)}


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/jpeg_ablation")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="Comma-separated configurations to run.")
    p.add_argument("--jobs", type=int, default=2,
                   help="Configurations trained at the same time.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or args.jobs < 1:
        print(f"error: unknown configurations {unknown} (choose among "
              f"{', '.join(CONFIGS)}) or --jobs < 1", file=sys.stderr)
        return 2
    args.out = os.path.abspath(args.out)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        codes = dict(zip(names, pool.map(lambda n: run_config(n, args),
                                         names)))
    failed = [n for n, c in codes.items() if c != 0]
    rows = [row_of(n, args.out) for n in names if n not in failed]
    lines = ["| configuration | flags | H: initial → learned (true) "
             "| I learned (true) | H moved toward truth | I − H "
             "| fast test holds |", "|---" * 7 + "|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['flags'] or '(none)'} "
            f"| {r['H_initial']:.1f} → {r['H_learned']:.1f} "
            f"({r['H_true']:.1f}) | {r['I_learned']:.1f} "
            f"({r['I_true']:.1f}) | {r['H_moved_toward_truth']:+.1f} "
            f"| {r['I_minus_H']:+.1f} "
            f"| {'yes' if r['fast_test_holds'] else 'no'} |")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"seed": args.seed, "rows": rows, "failed": failed}, f,
                  indent=2)
        f.write("\n")
    print("\n".join(lines))
    if failed:
        print(f"error: configurations failed: {failed} (see their "
              "ablation.log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
