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

`--q_fake=true` compresses each fake at a quality drawn from the setting
itself (the answer calibration should find): a D that separates those
fakes from the reals sees a mismatch between psi^g and libjpeg, not q.
`--d_highpass`, `--jpeg_storage` and `--r1_weight` select the training
[choice]s of the same names (docs/flags.md). After training, the tool
compares the derivative of D's mean logit on the fakes with respect to q,
as psi^g's "analytic" and "fd" quality gradients give it, with a central
finite difference of the logit itself at --grad_qualities (the sign is
what G_q follows).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _setting_probe():
    """tools/probe_setting_discriminator.py, which owns the D-alone step
    and its logged training loop."""
    import importlib.util
    path = os.path.join(ROOT, "tools", "probe_setting_discriminator.py")
    spec = importlib.util.spec_from_file_location(
        "probe_setting_discriminator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_images(x, q, jpeg_storage, seed, quality_gradient="analytic"):
    """The compressed fakes of the G step: `synthesis.degrade` of clean
    images x in [-1, 1] at fixed qualities q (CR-GAN, mask on), with the
    --jpeg_storage and --quality_gradient [choice]s of training."""
    from bncr_tf import synthesis
    from bncr_tf import variants
    gens = synthesis.Generators(
        G_x=None, G_q=lambda z: {"q": q, "m_q": tf.ones_like(q)},
        variant=variants.get_variant("crgan_nomask"),
        jpeg_storage=jpeg_storage, quality_gradient=quality_gradient)
    latents = {"z_q": tf.zeros([tf.shape(x)[0], 1])}
    return synthesis.degrade(gens, x, latents, seed).y


def gradient_check(D, x, args):
    """d mean-logit / dq of D on fakes of x: analytic, fd and a finite
    difference of the logit, at each of args.grad_qualities."""
    rows = []
    seed = tf.constant([args.seed, 99], tf.int64)
    for q0 in args.grad_qualities:
        row = {"q": q0}
        for mode in ("analytic", "fd"):
            q = tf.fill([tf.shape(x)[0]], float(q0))
            with tf.GradientTape() as tape:
                tape.watch(q)
                logit = tf.reduce_mean(D(fake_images(
                    x, q, args.jpeg_storage, seed, mode)))
            # Sum over images of d mean / d q_i: the slope when every q
            # moves together.
            row[mode] = float(tf.reduce_sum(tape.gradient(logit, q)))
        hi, lo = min(q0 + 5.0, 100.0), max(q0 - 5.0, 1.0)
        ends = [float(tf.reduce_mean(D(fake_images(
            x, tf.fill([tf.shape(x)[0]], e), args.jpeg_storage, seed))))
            for e in (hi, lo)]
        row["finite_difference"] = (ends[0] - ends[1]) / (hi - lo)
        rows.append(row)
        print(f"  q {q0:g}: d logit/dq analytic {row['analytic']:+.4f}, "
              f"fd {row['fd']:+.4f}, finite difference "
              f"{row['finite_difference']:+.4f}", flush=True)
    return rows


def probe(q_fake, args, real_u8, ref_u8, true_q):
    """Trains a fresh D for args.steps; returns the logged curve and the
    gradient check."""
    import keras
    from bncr_tf import data
    from bncr_tf.networks import Discriminator
    from bncr_tf.networks.reference_images import ReferenceImages

    keras.utils.set_random_seed(args.seed)
    D = Discriminator(resolution=args.resolution, width=args.width,
                      highpass=args.d_highpass)
    D(tf.zeros([2, args.resolution, args.resolution, 3]))
    opt = keras.optimizers.Adam(args.lr, beta_1=0.0, beta_2=0.99)
    g_x = ReferenceImages(ref_u8)  # calibration mode's G_x
    shared = _setting_probe()
    d_step = shared.discriminator_step(D, opt, args.r1_weight)
    real = tf.constant(real_u8)
    qualities = tf.constant(true_q, tf.float32)

    @tf.function
    def step(real_idx, seed):
        reals = data.dequantize(tf.gather(real, real_idx), seed)
        n = tf.shape(real_idx)[0]
        x = g_x(tf.random.stateless_normal([n, 1], seed + [1, 0]))
        if q_fake == "true":
            q = tf.gather(qualities, tf.random.stateless_uniform(
                [n], seed + [2, 0], 0, len(true_q), tf.int32))
        else:
            q = tf.fill([n], float(q_fake))
        fakes = fake_images(x, q, args.jpeg_storage, seed + [3, 0])
        return d_step(reals, fakes)

    rng = np.random.default_rng(args.seed)
    curve = shared.train_logged(
        lambda i: step(rng.integers(0, len(real_u8), args.batch),
                       tf.constant([args.seed, i], tf.int64)),
        args.steps, args.log_every, f"q_fake {q_fake}")
    x = g_x(tf.random.stateless_normal([512, 1], [args.seed, 7]))
    return curve, gradient_check(D, x, args)


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--setting", default="H")
    p.add_argument("--q_fake", default="50,100",
                   help="Comma-separated qualities of the fakes: numbers "
                   "(fixed q) or 'true' (q drawn from the setting).")
    p.add_argument("--data", default="builtin:skimage_patches:count=4096")
    p.add_argument("--reference",
                   default="builtin:skimage_patches:count=4096")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--r1_weight", type=float, default=10.0)
    p.add_argument("--d_highpass", type=float, default=0.0,
                   help="High-pass input scale of D (0 = NR-GAN's D).")
    p.add_argument("--jpeg_storage", action="store_true",
                   help="Fakes model libjpeg's 8-bit storage.")
    p.add_argument("--grad_qualities", default="30,50,70,90",
                   help="Qualities of the gradient check ('' = none).")
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
        qualities = [q if q == "true" else f"{float(q):g}"
                     for q in args.q_fake.split(",") if q]
        args.grad_qualities = [float(q) for q in
                               args.grad_qualities.split(",") if q]
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
    ref_params = settings.sample_params(setting, np.arange(len(ref_u8)),
                                        len(ref_u8), 1, (1, 1))
    true_q = np.asarray(ref_params.jpeg_quality, np.float32)
    if "true" in qualities and not np.all(true_q > 0):
        print("error: --q_fake=true needs a setting that compresses every "
              "image (H, I or J)", file=sys.stderr)
        return 2
    result = {"args": vars(args),
              "true_mean_q": float(np.mean(params.jpeg_quality)),
              "curves": {}, "gradient_check": {}}
    for q in qualities:
        curve, grads = probe(q, args, real_u8, ref_u8, true_q)
        result["curves"][q] = curve
        result["gradient_check"][q] = grads
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
