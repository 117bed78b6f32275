#!/usr/bin/env bash
# Does a discriminator that sees the degradations cost the plain GAN image
# quality? (issue 14, docs/results.md, Experiment 3, session 9.)
#
# Trains the plain GAN (--variant=gan) on clean natural patches (setting A)
# with three discriminators, two seeds each, 2000 iterations at width 32:
#   default  NR-GAN's D: image input, R1 10 (the paper's);
#   hp20r0   image + 20 x high-pass input, R1 0;
#   hp20img  image + 20 x high-pass input, R1 10 through the image only
#            (--r1_inputs=image);
# then scores each run's EMA G_x by FID on ImageNet AlexNet features (2048
# generated against 2048 clean patches; not comparable with published FIDs)
# and writes OUT/table.md.
#
# Usage: bash tools/run_discriminator_fid_check.sh [OUT]   (default
# results/gan_d). Resumable: rerun the same command after an interruption
# (training resumes from its last checkpoint; finished scores are kept).
# Two runs train at a time. Needs the pretrained weights
# (tools/install_weights.sh). ITERATIONS and SAMPLES (environment) shrink
# the check for a smoke test; the recorded table used the defaults.
set -euo pipefail
OUT="${1:-results/gan_d}"
ITERATIONS="${ITERATIONS:-2000}"
SAMPLES="${SAMPLES:-2048}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
COMMON=(--data=builtin:skimage_patches:count=4096 --setting=A --variant=gan
        --resolution=32 --width=32 --d_batch=32 --g_batch=64
        --iterations="$ITERATIONS" --ema_decay=0.99 --log_every=100 --grid_every=1000
        --checkpoint_every=500 --noexport_at_end --outdir="$OUT/runs"
        --resume=auto)
declare -A D_FLAGS=(
  [default]=""
  [hp20r0]="--d_highpass=20 --r1_weight=0"
  [hp20img]="--d_highpass=20 --r1_inputs=image"
)
for seed in 0 1; do
  pids=()
  for name in default hp20r0 hp20img; do
    # shellcheck disable=SC2086
    python -m bncr_tf.train "${COMMON[@]}" --seed="$seed" \
      --run_name="$name-s$seed" ${D_FLAGS[$name]} \
      > "$OUT/$name-s$seed.log" 2>&1 &
    pids+=($!)
    if [ "${#pids[@]}" -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
done
for run in "$OUT"/runs/*; do
  metrics="$OUT/metrics/$(basename "$run")"
  if [ ! -s "$metrics/metric-fid$SAMPLES.jsonl" ]; then
    python -m bncr_tf.evaluate --run_dir="$run" --metric=fid \
      --extractor=alexnet_imagenet --num_samples="$SAMPLES" --reference_limit="$SAMPLES" \
      --metrics_dir="$metrics"
  fi
done
python - "$OUT" "$SAMPLES" <<'EOF'
import glob, json, os, re, statistics, sys
out, samples = sys.argv[1], sys.argv[2]
scores = {}
for path in sorted(glob.glob(os.path.join(out, "metrics", "*", f"metric-fid{samples}.jsonl"))):
    run = os.path.basename(os.path.dirname(path))
    name, seed = re.sub(r"^\d+-", "", run).rsplit("-s", 1)
    with open(path) as f:
        last = [json.loads(line) for line in f][-1]
    value = last["value"]
    scores.setdefault(name, {})[int(seed)] = float(value)
lines = ["| D | FID s0 | FID s1 | mean |", "| --- | --- | --- | --- |"]
for name in ("default", "hp20r0", "hp20img"):
    s = scores.get(name, {})
    cells = [f"{s[k]:.2f}" if k in s else "–" for k in (0, 1)]
    mean = f"{statistics.mean(s.values()):.2f}" if s else "–"
    lines.append(f"| {name} | {cells[0]} | {cells[1]} | {mean} |")
table = "\n".join(lines) + "\n"
with open(os.path.join(out, "table.md"), "w") as f:
    f.write(table)
print(table)
EOF
