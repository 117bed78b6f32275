"""Can the discriminator see a setting's degradation at all?

A diagnostic for Experiment 3 (docs/results.md, issue 14). BNCR-GAN can
only learn the degradation of its data if D separates images that carry
it from images that do not. This tool trains the project's discriminator
alone (the training architecture, optimiser, R1 penalty and batch size)
on the cleanest form of that question, with no generator at all:

  "real"  the --data patches degraded by --real_setting (default A, clean),
  "fake"  the same patches degraded by each setting of --fake_settings,

both as the dataset builder degrades them and dequantised as in training.
The two sides hold the same images, so the degradation is the only
difference. It prints, every --log_every steps, D's loss (ln 4 = 1.386:
no separation) and accuracy on the last batches, and writes the curves
to --out as JSON.

    python tools/probe_setting_discriminator.py --fake_settings=B,H,noise,N

A D that separates a pair here within a few hundred steps has the
capacity to see that degradation; if a GAN-trained D of the same shape
does not react to it (tools/probe_hiding.py), the cause is the training
dynamics, not the architecture.

With --fake_run=RUN_DIR the fakes are instead the samples of a trained
run's G_x (raw weights; --fake_ema for the EMA copy), one image per
real: how fast does a fresh D tell real patches from what the GAN
learned? (docs/results.md, Experiment 3, session 10:
--residual_factor is the scale of D's residual branches.)

    python tools/probe_setting_discriminator.py --fake_run=runs/00001-...
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


def discriminator_step(D, opt, r1_weight, r1_inputs="all"):
    """One training step of D alone on reals vs fakes, as in training:
    the logistic loss plus R1 on the reals (`bncr_tf.losses`; r1_inputs as
    `--r1_inputs` of training). Returns a
    function (reals, fakes) -> (D/loss, accuracy), to be called inside a
    tf.function; tools/probe_jpeg_discriminator.py shares it."""
    from bncr_tf import losses

    def step(reals, fakes):
        with tf.GradientTape() as tape:
            with tf.GradientTape() as r1_tape:
                r1_tape.watch(reals)
                real_logits = D(reals,
                                maps_constant=(r1_inputs == "image"))
                real_sum = tf.reduce_sum(real_logits)
            grads = r1_tape.gradient(real_sum, reals)
            fake_logits = D(fakes)
            values = losses.d_logistic_loss(real_logits, fake_logits)
            values.update(losses.r1_from_input_gradients(grads, r1_weight))
            total = values["D/loss"] + values["D/r1"]
        opt.apply_gradients(zip(tape.gradient(total, D.trainable_variables),
                                D.trainable_variables))
        correct = (tf.reduce_sum(tf.cast(real_logits > 0, tf.float32))
                   + tf.reduce_sum(tf.cast(fake_logits < 0, tf.float32)))
        count = tf.shape(real_logits)[0] + tf.shape(fake_logits)[0]
        return values["D/loss"], correct / tf.cast(count, tf.float32)

    return step


def train_logged(step_at, steps, log_every, label):
    """Runs step_at(i) -> (D loss, accuracy) for i = 1..steps; every
    log_every steps appends the window's means to the returned curve and
    prints them. Shared with tools/probe_jpeg_discriminator.py."""
    curve, window_loss, window_acc = [], [], []
    started = time.time()
    for i in range(1, steps + 1):
        loss, acc = step_at(i)
        window_loss.append(float(loss))
        window_acc.append(float(acc))
        if i % log_every == 0:
            point = {"step": i, "d_loss": float(np.mean(window_loss)),
                     "accuracy": float(np.mean(window_acc))}
            curve.append(point)
            window_loss, window_acc = [], []
            print(f"{label} step {i}: D loss {point['d_loss']:.4f} "
                  f"(ln 4 = 1.3863), accuracy {point['accuracy']:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
    return curve


def probe(real_u8, fake_u8, args, label):
    """Trains a fresh D on reals vs fakes for args.steps; returns the
    logged curve (loss and accuracy over each --log_every window) and the
    accuracy on held-out images."""
    import keras
    from bncr_tf import data
    from bncr_tf.networks import Discriminator

    keras.utils.set_random_seed(args.seed)
    D = Discriminator(resolution=args.resolution, width=args.width,
                      residual_factor=args.residual_factor,
                      highpass=args.d_highpass, block_grid=args.d_block_grid)
    D(tf.zeros([2, args.resolution, args.resolution, 3]))
    opt = keras.optimizers.Adam(args.lr, beta_1=0.0, beta_2=0.99)
    n_train = len(real_u8) - args.held_out
    real = tf.constant(real_u8[:n_train])
    fake = tf.constant(fake_u8[:n_train])

    d_step = discriminator_step(D, opt, args.r1_weight, args.r1_inputs)

    @tf.function
    def step(real_idx, fake_idx, seed):
        reals = data.dequantize(tf.gather(real, real_idx), seed)
        fakes = data.dequantize(tf.gather(fake, fake_idx), seed + [0, 1])
        return d_step(reals, fakes)

    rng = np.random.default_rng(args.seed)

    def step_at(i):
        # Independent indices on the two sides: a pair of batches never
        # holds the same image twice.
        return step(rng.integers(0, n_train, args.batch),
                    rng.integers(0, n_train, args.batch),
                    tf.constant([args.seed, i], tf.int64))

    curve = train_logged(step_at, args.steps, args.log_every, label)
    held_real = data.dequantize(tf.constant(real_u8[n_train:]), [7, 0])
    held_fake = data.dequantize(tf.constant(fake_u8[n_train:]), [7, 1])
    real_logits = D(held_real).numpy().ravel()
    fake_logits = D(held_fake).numpy().ravel()
    held = float((np.sum(real_logits > 0) + np.sum(fake_logits < 0))
                 / (len(real_logits) + len(fake_logits)))
    print(f"{label}: held-out accuracy {held:.3f} on "
          f"{len(real_logits)} + {len(fake_logits)} images", flush=True)
    return curve, held


def run_samples_uint8(run_dir, count, ema):
    """count uint8 samples [count, R, R, 3] of a run's G_x, image i from
    seed i, as FID sees them (`evaluation.generated_images`), from the raw
    or the EMA weights."""
    from bncr_tf import runs
    from bncr_tf.metrics import evaluation
    _, gens, _ = runs.load_generators(run_dir, ema=ema)
    return np.concatenate(list(evaluation.generated_images(gens, count)))


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real_setting", default="A")
    p.add_argument("--fake_settings", default="B,C,H,I,noise,N",
                   help="Comma-separated settings; one fresh D each.")
    p.add_argument("--data", default="builtin:skimage_patches:count=4096")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r1_weight", type=float, default=10.0)
    p.add_argument("--r1_inputs", default="all", choices=("all", "image"),
                   help="as training's --r1_inputs")
    p.add_argument("--d_highpass", type=float, default=0.0,
                   help="High-pass input scale of D (0 = NR-GAN's D).")
    p.add_argument("--d_block_grid", type=float, default=0.0,
                   help="Block-grid input scale of D (0 = NR-GAN's D).")
    p.add_argument("--residual_factor", type=float, default=0.1,
                   help="Scale of D's residual branches (0.1 = NR-GAN).")
    p.add_argument("--fake_run", default="",
                   help="A run directory: the fakes are its G_x's samples "
                   "(one per real image) instead of --fake_settings.")
    p.add_argument("--fake_ema", action="store_true",
                   help="With --fake_run: sample the EMA G_x (default: the "
                   "raw training weights).")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--held_out", type=int, default=512,
                   help="Images kept out of training for the final "
                   "accuracy.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/identification/"
                   "setting_discriminator_probe.json")
    args = p.parse_args(argv)
    from bncr_tf import data
    from bncr_tf.degradations import settings
    from bncr_tf.training import loop
    try:
        clean, _ = data.load_clean_uint8(args.data, args.resolution)
        real_setting = settings.get_setting(args.real_setting)
        fake_settings = [settings.get_setting(s)
                         for s in args.fake_settings.split(",") if s]
        if not fake_settings:
            raise ValueError("--fake_settings is empty")
        if not 0 < args.held_out < len(clean):
            raise ValueError(f"--held_out must be in (0, {len(clean)})")
    except (ValueError, KeyError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    real_u8 = loop.degrade_in_memory(clean, real_setting, 0)
    result = {"args": vars(args), "curves": {}, "held_out_accuracy": {}}
    if args.fake_run:
        try:
            fake_u8 = run_samples_uint8(args.fake_run, len(real_u8),
                                        args.fake_ema)
        except Exception as e:  # noqa: BLE001 (any load failure: one line)
            print(f"error: --fake_run: {e}", file=sys.stderr)
            return 2
        label = f"{real_setting.name} vs G_x of {args.fake_run}"
        curve, held = probe(real_u8, fake_u8, args, label)
        result["curves"]["G_x"] = curve
        result["held_out_accuracy"]["G_x"] = held
        fake_settings = []
    for setting in fake_settings:
        fake_u8 = loop.degrade_in_memory(clean, setting, 0)
        label = f"{real_setting.name} vs {setting.name}"
        curve, held = probe(real_u8, fake_u8, args, label)
        result["curves"][setting.name] = curve
        result["held_out_accuracy"][setting.name] = held
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
