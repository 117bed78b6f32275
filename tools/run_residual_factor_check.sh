#!/usr/bin/env bash
# Does a larger residual scale let the plain GAN learn within a CPU run?
# (issues 14 and 18, docs/results.md, Experiment 3, session 10.)
#
# Trains the plain GAN (--variant=gan) on natural patches with
# --residual_factor=1 (NR-GAN: 0.1), width 32, the session-9 set-up of
# tools/run_discriminator_fid_check.sh (whose "default" rows are the 0.1
# baseline):
#   rf1    setting A, R1 10, 2000 iterations, seeds 0 and 1;
#   rf1r1  setting A, R1 1,  2000 iterations, seeds 0 and 1;
#   rf1r1N setting N, R1 1,  3000 iterations, seed 0 (issue 18's criterion);
# then scores each run's EMA G_x by FID on ImageNet AlexNet features (2048
# generated against the first 2048 clean patches; not comparable with
# published FIDs) into OUT/metrics and prints OUT/table.md.
#
# Usage: bash tools/run_residual_factor_check.sh [OUT]   (default
# results/gan_residual). Resumable: rerun the same command (training
# resumes from its last checkpoint; finished scores are kept). Two runs
# train at a time. Needs tools/install_weights.sh. ITERATIONS and SAMPLES
# (environment) shrink it for a smoke test; the recorded table used the
# defaults.
set -euo pipefail
OUT="${1:-results/gan_residual}"
ITERATIONS="${ITERATIONS:-2000}"
ITERATIONS_N="${ITERATIONS_N:-3000}"
SAMPLES="${SAMPLES:-2048}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
COMMON=(--data=builtin:skimage_patches:count=4096 --variant=gan
        --resolution=32 --width=32 --d_batch=32 --g_batch=64 --ema_decay=0.99
        --log_every=100 --grid_every=500 --checkpoint_every=500
        --noexport_at_end --outdir="$OUT/runs" --resume=auto
        --residual_factor=1)
train() {  # NAME SEED FLAGS...
  local name=$1 seed=$2
  shift 2
  python -m bncr_tf.train "${COMMON[@]}" --seed="$seed" \
    --run_name="$name-s$seed" "$@" > "$OUT/$name-s$seed.log" 2>&1
}
train rf1 0 --setting=A --iterations="$ITERATIONS" &
train rf1r1 0 --setting=A --iterations="$ITERATIONS" --r1_weight=1 &
wait
train rf1 1 --setting=A --iterations="$ITERATIONS" &
train rf1r1 1 --setting=A --iterations="$ITERATIONS" --r1_weight=1 &
wait
train rf1r1N 0 --setting=N --iterations="$ITERATIONS_N" --r1_weight=1
for run in "$OUT"/runs/*; do
  metrics="$OUT/metrics/$(basename "$run")"
  if [ ! -s "$metrics/metric-fid$SAMPLES.jsonl" ]; then
    python -m bncr_tf.evaluate --run_dir="$run" --metric=fid \
      --extractor=alexnet_imagenet --num_samples="$SAMPLES" \
      --reference_limit="$SAMPLES" --metrics_dir="$metrics"
  fi
done
python - "$OUT" "$SAMPLES" <<'PY'
import glob, json, os, re, sys
out, samples = sys.argv[1], sys.argv[2]
lines = ["| run | setting | iterations | FID |", "| --- | --- | --- | --- |"]
for path in sorted(glob.glob(os.path.join(out, "metrics", "*",
                                          f"metric-fid{samples}.jsonl"))):
    run = re.sub(r"^\d+-", "", os.path.basename(os.path.dirname(path)))
    with open(path) as f:
        last = [json.loads(line) for line in f][-1]
    setting = "N" if "N-s" in run else "A"
    lines.append(f"| {run} | {setting} | {last['step']} | "
                 f"{float(last['value']):.2f} |")
table = "\n".join(lines) + "\n"
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table)
print(table)
PY
# The floors on the same features and reference: the clean patches not used
# as reference, and those patches degraded by D, J and N (data/*.json).
python - "$OUT" "$SAMPLES" <<'PY'
import json, os, sys
from bncr_tf import data
from bncr_tf.degradations import settings
from bncr_tf.metrics import evaluation, features, reference
from bncr_tf.training import loop
out, n = sys.argv[1], int(sys.argv[2])
source = "builtin:skimage_patches:count=4096"
extractor = features.make_extractor("alexnet_imagenet")
ref = reference.reference_stats(source, 32, extractor, limit=n,
                                progress=False)
patches, _ = data.load_clean_uint8(source, 32)
def fid(images, label):
    chunks = (images[i:i + 512] for i in range(0, len(images), 512))
    return evaluation.evaluate_images(chunks, ref, extractor, len(images),
                                      progress=False, label=label)["fid"]
floors = {"clean, not the reference": fid(patches[n:2 * n], "clean")}
for name in ("D", "J", "N"):
    degraded = loop.degrade_in_memory(patches, settings.get_setting(name), 0)
    floors[f"{name}, not the reference"] = fid(degraded[n:2 * n], name)
with open(os.path.join(out, "data_fids.json"), "w") as f:
    json.dump(floors, f, indent=2)
    f.write("\n")
print(json.dumps(floors, indent=2))
PY
