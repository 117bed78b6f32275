"""Can the discriminator tell JPEG quality levels apart at all?

A diagnostic for Experiment 1 (docs/results.md): CR-GAN can only identify
the quality distribution of its data if D separates real images compressed
at the true qualities from generated ones compressed at a wrong quality.
This tool trains the project's discriminator alone (same architecture,
optimiser, R1 and batch as training) on exactly that two-class problem,
with the generator side frozen at a fixed quality:

  real  the --data patches degraded by --setting (libjpeg, per-image q),
        dequantised as in training;
  fake  psi(x_ref, q_fake): the differentiable JPEG of the clean reference
        patches (--reference, cut with seed 1) at the fixed q_fake, as the
        calibration-mode generator produces them.

    python tools/probe_jpeg_discriminator.py --q_fake=50,100 --steps=1500

It prints, every --log_every steps, the D loss (ln 4 = 1.386 means no
separation) and the accuracy on the last batches, and writes the curves to
--out as JSON. If D cannot separate even a q_fake far from the truth, the
generator receives no information about q, whatever its learning rate.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def probe(q_fake, args, real_u8, ref_u8):
    """Trains a fresh D for args.steps; returns the logged curve."""
    import keras
    from bncr_tf import data
    from bncr_tf import losses
    from bncr_tf.degradations import jpeg
    from bncr_tf.networks import Discriminator
    from bncr_tf.networks.reference_images import ReferenceImages

    keras.utils.set_random_seed(args.seed)
    D = Discriminator(resolution=args.resolution, width=args.width)
    D(tf.zeros([2, args.resolution, args.resolution, 3]))
    opt = keras.optimizers.Adam(args.lr, beta_1=0.0, beta_2=0.99)
    g_x = ReferenceImages(ref_u8)  # calibration mode's G_x
    real = tf.constant(real_u8)

    @tf.function
    def step(real_idx, seed):
        reals = data.dequantize(tf.gather(real, real_idx), seed)
        x = g_x(tf.random.stateless_normal(
            [tf.shape(real_idx)[0], 1], seed + [1, 0]))
        fakes = 2.0 * jpeg.diff_jpeg(
            (x + 1.0) / 2.0, tf.fill([tf.shape(x)[0]], float(q_fake))) - 1.0
        with tf.GradientTape() as tape:
            with tf.GradientTape() as r1_tape:
                r1_tape.watch(reals)
                real_logits = D(reals)
                real_sum = tf.reduce_sum(real_logits)
            grads = r1_tape.gradient(real_sum, reals)
            fake_logits = D(fakes)
            values = losses.d_logistic_loss(real_logits, fake_logits)
            values.update(losses.r1_from_input_gradients(grads,
                                                         args.r1_weight))
            total = values["D/loss"] + values["D/r1"]
        opt.apply_gradients(zip(tape.gradient(total, D.trainable_variables),
                                D.trainable_variables))
        correct = (tf.reduce_sum(tf.cast(real_logits > 0, tf.float32))
                   + tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32)))
        return values["D/loss"], correct / tf.cast(
            2 * tf.shape(real_idx)[0], tf.float32)

    rng = np.random.default_rng(args.seed)
    curve, window_loss, window_acc = [], [], []
    started = time.time()
    for i in range(1, args.steps + 1):
        loss, acc = step(rng.integers(0, len(real_u8), args.batch),
                         tf.constant([args.seed, i], tf.int64))
        window_loss.append(float(loss))
        window_acc.append(float(acc))
        if i % args.log_every == 0:
            point = {"step": i, "d_loss": float(np.mean(window_loss)),
                     "accuracy": float(np.mean(window_acc))}
            curve.append(point)
            window_loss, window_acc = [], []
            print(f"q_fake {q_fake:g} step {i}: D loss {point['d_loss']:.4f}"
                  f" (ln 4 = 1.3863), accuracy {point['accuracy']:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
    return curve


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--setting", default="H")
    p.add_argument("--q_fake", default="50,100",
                   help="Comma-separated fixed qualities of the fakes.")
    p.add_argument("--data", default="builtin:skimage_patches:count=4096")
    p.add_argument("--reference",
                   default="builtin:skimage_patches:count=4096")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r1_weight", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--log_every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/identification/"
                   "jpeg_discriminator_probe.json")
    args = p.parse_args(argv)
    from bncr_tf import data
    from bncr_tf.degradations import settings
    from bncr_tf.training import loop
    try:
        qualities = [float(q) for q in args.q_fake.split(",") if q]
        clean, _ = data.load_clean_uint8(args.data, args.resolution)
        ref_u8, _ = data.load_clean_uint8(args.reference, args.resolution,
                                          seed=1)
        setting = settings.get_setting(args.setting)
    except (ValueError, KeyError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    real_u8 = loop.degrade_in_memory(clean, setting, 0)
    params = settings.sample_params(setting, np.arange(len(clean)),
                                    len(clean), 0, (1, 1))
    result = {"args": vars(args),
              "true_mean_q": float(np.mean(params.jpeg_quality)),
              "curves": {}}
    for q in qualities:
        result["curves"][f"{q:g}"] = probe(q, args, real_u8, ref_u8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
