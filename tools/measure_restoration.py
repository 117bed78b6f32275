"""Measures the restoration baselines' quality on held-out photo patches.

Example (the numbers in docs/results.md, "Restoration baselines"):

    python tools/measure_restoration.py --tune --out_dir=results/restoration

Patches are `builtin:skimage_patches` (32 px), whose label is the photo they
were cut from. [choice] Parameters are tuned on photos 0-2 (astronaut,
chelsea, coffee; --tune_seed) and measured on photos 3-5 (motorcycle_left,
motorcycle_right, rocket; --eval_seed), so no tuning photo is evaluated.

* Deblurring, settings B, C, D: PSNR / SSIM (`tf.image`, 8-bit peak, mean
  over images) of the blurred image, of Krishnan-Fergus with the true kernel
  (`bncr_tf.baselines.deconvolution`, default lambda per blur type), and of
  scikit-image's Wiener deconvolution with the true kernel (same reflect
  padding; its balance is the best of --wiener_balances on the evaluation
  set itself, an advantage to Wiener).
* Deblocking, settings H, I, J: the JPEG image against the deblocked one
  (`bncr_tf.baselines.deblocking`, defaults).
* The same at 128 px for the FFHQ cells' settings ffhq_D and ffhq_J
  (--count_128 patches, half of them held out).

Images the degradation left bit-identical to the clean patch (a near-
identity kernel), or that a method restored exactly, have infinite PSNR;
they are left out of every mean of that setting ("images" counts the rest).

--tune first writes tune.json: PSNR of Krishnan-Fergus over a lambda grid
(settings B and C, i.e. disk and motion kernels), a padding grid and with
the kernel off-centre by one pixel (the centring error), and of
the deblocking over (sigma, mu, iters, q_max), all on the tuning photos,
and the lambda grid per blur type at 128 px (ffhq_D).
Outputs: <out_dir>/quality.json (and tune.json); a markdown table on stdout.
"""

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/measure_restoration.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bncr_tf import data  # noqa: E402
from bncr_tf.baselines import deblocking  # noqa: E402
from bncr_tf.baselines import deconvolution  # noqa: E402
from bncr_tf.degradations import builder  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("out_dir", "results/restoration", "Output directory.")
flags.DEFINE_bool("tune", False, "Also run the tuning grids (tune.json).")
flags.DEFINE_integer("count", 768, "Patches cut per set (half of them come "
                     "from each group of three photos).")
flags.DEFINE_integer("tune_seed", 1, "Patch seed of the tuning set.")
flags.DEFINE_integer("eval_seed", 2, "Patch seed of the evaluation set.")
flags.DEFINE_integer("degrade_seed", 0, "Degradation seed.")
flags.DEFINE_integer("count_128", 192, "Patches cut per set at 128 px "
                     "(settings ffhq_D and ffhq_J; 0 = skip 128 px).")
flags.DEFINE_list("wiener_balances",
                 ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2"],
                  "Balance values tried for Wiener (best one reported).")

BLUR_SETTINGS = ("B", "C", "D")
JPEG_SETTINGS = ("H", "I", "J")
LAMBDAS = (3e3, 5e3, 1e4, 2e4, 3e4, 5e4)
LAMBDAS_128 = LAMBDAS + (1e5,)


def _patches(seed, photos, size=32):
    count = FLAGS.count if size == 32 else FLAGS.count_128
    images, labels = data.load_clean_uint8(
        f"builtin:skimage_patches:count={count}", size, seed=seed)
    keep = np.isin(labels, photos)
    return images[keep], labels[keep]


def _metrics(clean, images):
    a = tf.cast(clean, tf.float32)
    b = tf.cast(images, tf.float32)
    return {"psnr": float(tf.reduce_mean(tf.image.psnr(a, b, 255.0))),
            "ssim": float(tf.reduce_mean(tf.image.ssim(a, b, 255.0)))}


def _changed(clean, degraded):
    return np.any(clean != degraded, axis=(1, 2, 3))


def _kf(blurred, params, lam_by_blur=None, pad=None):
    ksize = params.kernel.shape[-1]
    lams = {name: deconvolution.default_lambda(name, ksize)
            for name in ("disk", "motion")}
    lams.update(lam_by_blur or {})
    out = blurred.copy()
    for code, name in ((1, "disk"), (2, "motion")):
        sel = np.flatnonzero(params.blur_type == code)
        if sel.size:
            out[sel] = deconvolution.deblur(blurred[sel], params.kernel[sel],
                                            lam=lams[name], pad=pad)
    return out


def _wiener(blurred, kernels, balance):
    # pylint: disable-next=import-outside-toplevel
    from skimage.restoration import wiener
    pad = blurred.shape[1] // 2
    out = np.empty(blurred.shape, np.float64)
    for i, (img, k) in enumerate(zip(blurred, kernels)):
        padded = np.pad(img / 255.0, ((pad, pad), (pad, pad), (0, 0)),
                        mode="reflect")
        for c in range(3):
            out[i, ..., c] = wiener(padded[..., c], k, balance,
                                    clip=False)[pad:-pad, pad:-pad]
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _degrade(setting, clean):
    return builder.degrade_chunk(setting, clean, 0, len(clean),
                                 FLAGS.degrade_seed)


def tune(clean):
    """Grids on the tuning photos; returns a JSON-able dict."""
    out = {"photos": [0, 1, 2], "seed": FLAGS.tune_seed, "deblur": {},
           "pad": {}, "deblock": {}}
    for setting, kind in (("B", "disk"), ("C", "motion")):
        blurred, params = _degrade(setting, clean)
        keep = _changed(clean, blurred)
        row = {"blurred": _metrics(clean[keep], blurred[keep])["psnr"],
               "n": int(keep.sum())}
        for lam in LAMBDAS:
            restored = _kf(blurred, params, {kind: lam})
            row[f"{lam:g}"] = _metrics(clean[keep], restored[keep])["psnr"]
            print(f"[tune] {setting} lambda={lam:g}: {row[f'{lam:g}']:.2f} dB",
                  file=sys.stderr, flush=True)
        out["deblur"][setting] = row
        if setting == "B":
            pads = {}
            for pad in (0, 7, 8, 12, 16, 24):
                restored = _kf(blurred, params, pad=pad)
                pads[str(pad)] = _metrics(clean[keep], restored[keep])["psnr"]
            out["pad"][setting] = pads
            # Kernel centring: the kernel shifted by one pixel inside its
            # K x K window, i.e. an off-by-one in the psf2otf shift.
            shifted = np.roll(params.kernel, (1, 1), axis=(1, 2))
            restored = _kf(blurred,
                           dataclasses.replace(params, kernel=shifted))
            out["centring"] = {
                "setting": setting, "correct": pads[str(clean.shape[1] // 2)],
                "off_by_one": _metrics(clean[keep], restored[keep])["psnr"]}
    grid = [(s, m, i, q) for s in (0.35, 0.5, 0.7, 1.0)
            for m in (0.3, 0.5, 0.7, 1.0) for i in (1, 2) for q in (95, 101)]
    for setting in JPEG_SETTINGS:
        jpeg, params = _degrade(setting, clean)
        keep = _changed(clean, jpeg)
        base = _metrics(clean[keep], jpeg[keep])["psnr"]
        row = {"jpeg": base, "n": int(keep.sum())}
        for sigma, mu, iters, q_max in grid:
            restored = deblocking.deblock(jpeg, params.jpeg_quality, sigma,
                                          mu, iters, q_max)
            row[f"sigma={sigma:g},mu={mu:g},iters={iters},q_max={q_max}"] = (
                _metrics(clean[keep], restored[keep])["psnr"] - base)
        out["deblock"][setting] = row
        print(f"[tune] {setting} done", file=sys.stderr, flush=True)
    return out


def tune_128(clean):
    """lambda per blur type at 128 px (ffhq_D: disk r in [0.5, 4], motion
    L = 10, K = 11), each type's images only."""
    blurred, params = _degrade("ffhq_D", clean)
    out = {"photos": [0, 1, 2], "seed": FLAGS.tune_seed, "setting": "ffhq_D"}
    for code, kind in ((1, "disk"), (2, "motion")):
        sel = (params.blur_type == code) & _changed(clean, blurred)
        row = {"blurred": _metrics(clean[sel], blurred[sel])["psnr"],
               "n": int(sel.sum())}
        for lam in LAMBDAS_128:
            restored = deconvolution.deblur(blurred[sel], params.kernel[sel],
                                            lam=lam)
            row[f"{lam:g}"] = _metrics(clean[sel], restored)["psnr"]
            print(f"[tune] ffhq_D {kind} lambda={lam:g}: "
                  f"{row[f'{lam:g}']:.2f} dB", file=sys.stderr, flush=True)
        out[kind] = row
    return out


def evaluate(clean, blur_settings=BLUR_SETTINGS, jpeg_settings=JPEG_SETTINGS):
    """Quality on the evaluation photos; returns a JSON-able dict."""
    balances = [float(b) for b in FLAGS.wiener_balances]
    out = {"photos": [3, 4, 5], "seed": FLAGS.eval_seed,
           "lambda_by_blur_and_kernel_size": {
               name: {str(k): v for k, v in table.items()}
               for name, table in deconvolution.LAMBDA_BY_BLUR.items()},
           "deblock": {"sigma": deblocking.DEFAULT_SIGMA,
                       "mu": deblocking.DEFAULT_MU,
                       "iters": deblocking.DEFAULT_ITERS,
                       "q_max": deblocking.DEFAULT_Q_MAX},
           "settings": {}}
    for setting in blur_settings:
        blurred, params = _degrade(setting, clean)
        t0 = time.time()
        restored = _kf(blurred, params)
        kf_s = time.time() - t0
        outputs = {f"{b:g}": _wiener(blurred, params.kernel, b)
                   for b in balances}
        # Left out: images the blur did not change, and images some method
        # restored exactly (both have infinite PSNR).
        exact = ~_changed(clean, restored)
        for w in outputs.values():
            exact |= ~_changed(clean, w)
        keep = _changed(clean, blurred) & ~exact
        wiener = {b: _metrics(clean[keep], w[keep])
                  for b, w in outputs.items()}
        best = max(wiener, key=lambda b: wiener[b]["psnr"])
        out["settings"][setting] = {
            "n": len(clean), "n_changed": int(keep.sum()),
            "n_exactly_restored": int((exact & _changed(clean, blurred))
                                      .sum()),
            "degraded": _metrics(clean[keep], blurred[keep]),
            "restored": _metrics(clean[keep], restored[keep]),
            "wiener": dict(wiener[best], balance=float(best)),
            "wiener_all": wiener, "restore_s": kf_s}
        print(f"[eval] {setting} done", file=sys.stderr, flush=True)
    for setting in jpeg_settings:
        jpeg, params = _degrade(setting, clean)
        restored = deblocking.deblock(jpeg, params.jpeg_quality)
        keep = _changed(clean, jpeg) & _changed(clean, restored)
        out["settings"][setting] = {
            "n": len(clean), "n_changed": int(keep.sum()),
            "degraded": _metrics(clean[keep], jpeg[keep]),
            "restored": _metrics(clean[keep], restored[keep])}
        print(f"[eval] {setting} done", file=sys.stderr, flush=True)
    return out


def table(result):
    lines = [("| setting | images | degraded PSNR / SSIM | restored PSNR / "
              "SSIM | Wiener PSNR / SSIM (balance) |"),
             "| --- | --- | --- | --- | --- |"]
    for name, row in result["settings"].items():
        d, r = row["degraded"], row["restored"]
        w = row.get("wiener")
        wtxt = (f"{w['psnr']:.2f} / {w['ssim']:.4f} ({w['balance']:g})"
                if w else "–")
        lines.append(f"| {name} | {row['n_changed']} of {row['n']} | "
                     f"{d['psnr']:.2f} / {d['ssim']:.4f} | "
                     f"{r['psnr']:.2f} / {r['ssim']:.4f} | {wtxt} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    if FLAGS.tune:
        clean, _ = _patches(FLAGS.tune_seed, [0, 1, 2])
        result = tune(clean)
        if FLAGS.count_128:
            clean, _ = _patches(FLAGS.tune_seed, [0, 1, 2], 128)
            result["deblur_128"] = tune_128(clean)
        with open(os.path.join(FLAGS.out_dir, "tune.json"), "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    clean, _ = _patches(FLAGS.eval_seed, [3, 4, 5])
    result = evaluate(clean)
    if FLAGS.count_128:
        clean, _ = _patches(FLAGS.eval_seed, [3, 4, 5], 128)
        result_128 = evaluate(clean, ("ffhq_D",), ("ffhq_J",))
        for name, row in result_128["settings"].items():
            result["settings"][f"{name} (128 px)"] = row
    with open(os.path.join(FLAGS.out_dir, "quality.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(table(result))


if __name__ == "__main__":
    app.run(main)
