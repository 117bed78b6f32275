"""Trains DeblurGAN / DeblurGAN-v2 on held-in photos and scores them on
held-out photos motion-blurred by setting C (docs/results.md, "DeblurGAN
and DeblurGAN-v2 (issue 17)").

Example (the numbers in docs/results.md):

    python tools/run_deblurgan_evidence.py --out_dir=results/deblurgan \\
        --run_root=/tmp/deblurgan_runs

Data: `builtin:skimage_patches` R-px patches (random squares of side R
to half the photo, resized to R: denser detail than crops at the photos'
own scale, on which setting C's 5-px trajectories leave 47 dB). Patches of
astronaut, chelsea and coffee (patch seed 1) are written as PNGs to the
sharp training folder <run_root>/sharp_train (the trainer reads it as a
folder); those of motorcycle_left, motorcycle_right and rocket (patch seed
2, about --eval_count) are held out, blurred by setting C with the dataset
builder's
recipe (`builder.degrade_chunk`, seed 0: a motion trajectory kernel per
image, rounded to 8 bits). Each row of `--rows` is
`name:variant[:pairs_from]`: a run of `variant` trained with the true
setting-C blur, or, with a third field, on pairs made by that `degrade`
export. PSNR / SSIM are `tf.image.psnr` / `tf.image.ssim` against the sharp
crop (8-bit peak, mean over images; images the blur left unchanged are
left out). Krishnan-Fergus uses each image's true kernel
(`bncr_tf.baselines.deconvolution`, its measured lambda), an upper
reference that knows the blur.

Outputs in --out_dir: quality.json, a grid per run (blurred | restored |
sharp of training crops), the runs' last stats line, eval.png (held-out
crops: blurred | each restorer | K&F | sharp) and a markdown table on
stdout. Runs go to --run_root (not committed: checkpoints).
"""

import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bncr_tf import data  # noqa: E402
from bncr_tf import variants  # noqa: E402
from bncr_tf.baselines import deconvolution  # noqa: E402
from bncr_tf.config import TrainConfig  # noqa: E402
from bncr_tf.degradations import builder  # noqa: E402
from bncr_tf.training import grids  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "results/deblurgan", "Output directory.")
flags.DEFINE_string("run_root", "/tmp/deblurgan_runs", "Where the runs, "
                    "and the photo folders, are written.")
flags.DEFINE_list("rows", ["deblurgan:deblurgan", "deblurganv2:deblurganv2"],
                  "name:variant[:pairs_from] per trained row.")
flags.DEFINE_integer("resolution", 64, "Crop size R.")
flags.DEFINE_integer("width", 16, "--width of both restorers (papers: 64).")
flags.DEFINE_integer("batch", 8, "--d_batch.")
flags.DEFINE_integer("iterations", 400, "Training iterations per run.")
flags.DEFINE_integer("crops", 1024, "Training crops (--data_limit).")
flags.DEFINE_integer("eval_count", 192, "Held-out crops.")
flags.DEFINE_string("setting", "C", "Blur of the pairs and of the test.")
flags.DEFINE_bool("train", True, "Train (False: score existing runs "
                  "<run_root>/<name>).")

TRAIN_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")
EVAL_PHOTOS = ("motorcycle_left.png", "motorcycle_right.png", "rocket.jpg")


def _patches(photos, seed, count):
    """builtin:skimage_patches R-px patches cut from `photos` (indices)."""
    images, labels = data.load_clean_uint8(
        f"builtin:skimage_patches:count={count}", FLAGS.resolution,
        seed=seed)
    return images[np.isin(labels, photos)]


def _patch_folder(images, directory):
    os.makedirs(directory, exist_ok=True)
    for i, image in enumerate(images):
        with open(os.path.join(directory, f"{i:05d}.png"), "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
    return directory


def _config(name, variant, pairs_from, folder):
    values = dict(
        variant=variant, setting=FLAGS.setting, data=folder,
        resolution=FLAGS.resolution, width=FLAGS.width,
        d_batch=FLAGS.batch, iterations=FLAGS.iterations,
        data_limit=FLAGS.crops, outdir=FLAGS.run_root, run_name=name,
        resume="none", log_every=50, grid_every=FLAGS.iterations,
        checkpoint_every=FLAGS.iterations, grid_size=6,
        pairs_from=pairs_from)
    values.update({k: v for k, v in variants.RESTORATION_DEFAULTS[
        variant].items() if k != "width"})
    return TrainConfig(**values).validate_all()


def _metrics(clean, images):
    a = tf.cast(clean, tf.float32)
    b = tf.cast(images, tf.float32)
    return {"psnr": float(tf.reduce_mean(tf.image.psnr(a, b, 255.0))),
            "ssim": float(tf.reduce_mean(tf.image.ssim(a, b, 255.0)))}


def _restore(export_dir, blurred):
    fn = tf.saved_model.load(export_dir).signatures["serving_default"]
    out = [fn(image=tf.constant(blurred[i:i + 32]))["image"].numpy()
           for i in range(0, len(blurred), 32)]
    return np.concatenate(out)


def main(argv):
    del argv
    from bncr_tf.training import loop
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    train_dir = _patch_folder(
        _patches([0, 1, 2], 1, 2 * FLAGS.crops),
        os.path.join(FLAGS.run_root, "sharp_train"))
    clean = _patches([3, 4, 5], 2, 2 * FLAGS.eval_count)
    blurred, params = builder.degrade_chunk(FLAGS.setting, clean, 0,
                                            len(clean), 0)
    keep = np.any(clean != blurred, axis=(1, 2, 3))
    ksize = params.kernel.shape[-1]
    kf = deconvolution.deblur(blurred, params.kernel,
                              lam=deconvolution.default_lambda("motion",
                                                               ksize))
    result = {"resolution": FLAGS.resolution, "setting": FLAGS.setting,
              "width": FLAGS.width, "batch": FLAGS.batch,
              "iterations": FLAGS.iterations, "crops": FLAGS.crops,
              "eval_images": int(keep.sum()), "eval_count": len(clean),
              "train_photos": TRAIN_PHOTOS, "eval_photos": EVAL_PHOTOS,
              "data": "builtin:skimage_patches (train seed 1, eval seed 2)",
              "rows": {}}
    result["rows"]["blurred input"] = _metrics(clean[keep], blurred[keep])
    result["rows"]["Krishnan-Fergus, true kernel"] = _metrics(clean[keep],
                                                              kf[keep])
    columns = [blurred]
    for row in FLAGS.rows:
        name, variant, *rest = row.split(":", 2)
        pairs_from = rest[0] if rest else ""
        started = time.time()
        if FLAGS.train:
            run_dir = loop.train(_config(name, variant, pairs_from,
                                         train_dir))
        else:
            run_dir = os.path.join(FLAGS.run_root, sorted(
                d for d in os.listdir(FLAGS.run_root)
                if d.endswith("-" + name))[-1])
        seconds = time.time() - started
        export = os.path.join(run_dir, "export", "restore")
        version = max(int(v) for v in os.listdir(export) if v.isdigit())
        restored = _restore(os.path.join(export, str(version)), blurred)
        columns.append(restored)
        m = _metrics(clean[keep], restored[keep])
        m.update(variant=variant, pairs_from=pairs_from,
                 train_seconds=round(seconds, 1), run_dir=run_dir)
        with open(os.path.join(run_dir, "stats.jsonl")) as f:
            m["last_stats"] = json.loads(f.readlines()[-1])
        result["rows"][name] = m
        grid_dir = os.path.join(run_dir, "grids")
        last = sorted(p for p in os.listdir(grid_dir)
                      if p.startswith("fakes-"))[-1]
        shutil.copyfile(os.path.join(grid_dir, last),
                        os.path.join(FLAGS.out_dir, f"grid-{name}.png"))
    columns += [kf, clean]
    rows = 6
    stacked = np.stack([c[:rows] for c in columns], axis=1).reshape(
        (-1,) + clean.shape[1:])
    grids.write_png(os.path.join(FLAGS.out_dir, "eval.png"),
                    grids.tile(stacked, len(columns)))
    with open(os.path.join(FLAGS.out_dir, "quality.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"| method | PSNR | SSIM | ({result['eval_images']} of "
          f"{len(clean)} held-out {FLAGS.resolution}-px crops, setting "
          f"{FLAGS.setting}) |")
    print("| --- | --- | --- | --- |")
    for name, m in result["rows"].items():
        print(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | "
              f"{m.get('train_seconds', '')} |")


if __name__ == "__main__":
    app.run(main)
