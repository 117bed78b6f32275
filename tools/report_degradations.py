"""What degradation is in my data: a report of a run's learned G_k, G_n, G_q.

Example:

    python tools/report_degradations.py --run_dir=runs/00003-bncrgan-N-32px

Samples the EMA degradation generators of a checkpoint (fixed seed, 2048
samples by default) through `synthesis.degrade` on flat grey images and
writes to `<run dir>/report-<step>/` (or --out_dir):

  summary.json, summary.md   the numbers below, learned beside true
  quality.png                histogram of the JPEG quality q
  quality_mask.png           histogram of the JPEG mask m_q
  entropy.png                histogram of the blur-kernel entropy (nats)
  kernels.png                learned kernels sorted by entropy (and true)
  noise_std.png              noise std versus image intensity

Estimated fractions: "unblurred" = kernel entropy below
--entropy_threshold (0 is the identity kernel); "uncompressed" = m_q below
--mask_threshold. The noise std at intensity u is the root mean square of
G_n's noise on a flat image of value u ([0, 1] units).

True distributions are drawn beside the learned ones when they are known:
from the per-image metadata when the run trained on a dataset written by
tools/make_degraded_dataset.py, or regenerated with
`settings.sample_params` (run's --setting, --data_seed and data size) when
--setting degraded the data at load time.

Plots are rendered with numpy (no matplotlib needed); axis labels use
Pillow when it is installed.
"""

import json
import math
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Allow running as `python tools/report_degradations.py` from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bncr_tf import data as data_lib  # noqa: E402
from bncr_tf import runs  # noqa: E402
from bncr_tf import synthesis  # noqa: E402
from bncr_tf.degradations import kernels as kernels_lib  # noqa: E402
from bncr_tf.degradations import settings as settings_lib  # noqa: E402
from bncr_tf.errors import UserError  # noqa: E402

DEFAULT_INTENSITIES = (0.05, 0.15, 0.25, 0.35, 0.5, 0.65, 0.75, 0.85, 0.95)
LEARNED_COLOR = (31, 119, 180)
TRUE_COLOR = (255, 127, 14)


# --- Learned degradations ----------------------------------------------------

def learned_degradations(gens, config, num_samples=2048, seed=0,
                         intensities=DEFAULT_INTENSITIES, noise_samples=64,
                         chunk=256):
    """Samples a model's degradation stages on flat grey images.

    Args:
      gens: `synthesis.Generators` (EMA).
      config: the run's `TrainConfig`.
      num_samples: samples of k, m_k, q, m_q.
      seed: seed of latents and noise.
      intensities: grey levels u in [0, 1] for the noise curve.
      noise_samples: samples per intensity for the noise curve.
      chunk: images per `synthesis.degrade` call.
    Returns:
      dict of numpy arrays, keys present for the stages the model has:
      "kernel" [N, K, K], "entropy" [N], "m_k" [N] (mean mask), "q" [N],
      "m_q" [N], "intensities" [I], "noise_std" [S, I].
    """
    r, z_dim = config.resolution, config.z_dim
    out = {}
    parts = {}
    for i, start in enumerate(range(0, num_samples, chunk)):
        n = min(chunk, num_samples - start)
        latents = synthesis.sample_latents(n, z_dim, [seed, i])
        grey = tf.zeros([n, r, r, 3])
        y = synthesis.degrade(gens, grey, latents, [seed, 1000 + i])
        for key in ("k", "m_k", "q", "m_q"):
            if getattr(y, key) is not None:
                parts.setdefault(key, []).append(getattr(y, key).numpy())
    if "k" in parts:
        out["kernel"] = np.concatenate(parts["k"])
        out["entropy"] = kernels_lib.kernel_entropy(
            out["kernel"].astype(np.float64)).numpy()
        m_k = np.concatenate(parts["m_k"])
        out["m_k"] = m_k.reshape(len(m_k), -1).mean(axis=1)
    if "q" in parts:
        out["q"] = np.concatenate(parts["q"]).astype(np.float64)
        out["m_q"] = np.concatenate(parts["m_q"]).astype(np.float64)
    latents = synthesis.sample_latents(noise_samples, z_dim, [seed, 9999])
    stds = []
    for j, u in enumerate(intensities):
        flat = tf.fill([noise_samples, r, r, 3], 2.0 * float(u) - 1.0)
        y = synthesis.degrade(gens, flat, latents, [seed, 20000 + j])
        if y.n is None:
            break
        n01 = y.n.numpy().astype(np.float64) / 2.0
        stds.append(np.sqrt(np.mean(n01 ** 2, axis=(1, 2, 3))))
    if stds:
        out["intensities"] = np.asarray(intensities, np.float64)
        out["noise_std"] = np.stack(stds, axis=1)
    return out


# --- True degradations -------------------------------------------------------

def training_set_size(config, run_dir):
    """Number N of training images (log.txt, else the config), or None."""
    path = os.path.join(run_dir, "log.txt")
    if os.path.isfile(path):
        with open(path, errors="replace") as f:
            found = re.findall(r"training images: (\d+) x", f.read())
        if found:
            return int(found[-1])
    if config.data_limit:
        return config.data_limit
    source = data_lib.parse_source(config.data)
    return source.count if source.kind == "builtin" else None


def _true_from_params(kernel, blur_none, shot, read, noise_applied, quality,
                      intensities):
    out = {"kernel": np.asarray(kernel, np.float32),
           "unblurred_flag": np.asarray(blur_none, bool),
           "q": np.asarray(quality, np.float64),
           "intensities": np.asarray(intensities, np.float64)}
    out["entropy"] = kernels_lib.kernel_entropy(
        out["kernel"].astype(np.float64)).numpy()
    u = out["intensities"][None, :]
    applied = np.asarray(noise_applied, bool)[:, None]
    var = (np.asarray(read, np.float64)[:, None]
           + np.asarray(shot, np.float64)[:, None] * u)
    out["noise_std"] = np.where(applied, np.sqrt(np.maximum(var, 0.0)), 0.0)
    return out


def true_degradations(config, run_dir, num_samples=2048,
                      intensities=DEFAULT_INTENSITIES):
    """The degradation actually in the training data, when it is known.

    Args:
      config: the run's `TrainConfig`.
      run_dir: the run directory (for the data size in log.txt).
      num_samples: at most this many images are described.
      intensities: grey levels for the noise curve.
    Returns:
      (dict like `learned_degradations` plus "unblurred_flag" [N] and "q"
      with 0 = not compressed, description string), or (None, reason).
    """
    try:
        source = data_lib.parse_source(config.data)
    except data_lib.DataError as e:
        return None, f"cannot read the data source: {e}"
    setting = settings_lib.get_setting(config.setting)
    if source.kind == "tfrecord":
        recs = data_lib.read_degraded_records(source.path,
                                              decode_images=False)
        take = slice(0, num_samples)
        out = _true_from_params(
            recs["kernel"][take], recs["blur_type"][take] == "none",
            recs["noise_shot"][take], recs["noise_read"][take],
            recs["noise_applied"][take] > 0, recs["jpeg_quality"][take],
            intensities)
        summary = data_lib.read_degraded_summary(source.path)
        text = (f"metadata of {source.path} (setting "
                f"{summary.get('setting', '?')}, seed {summary.get('seed')})")
        if not setting.is_clean:
            text += (f"; --setting {setting.name} is applied on top at load "
                     f"time and not shown")
        return out, text
    if setting.is_clean:
        return None, "the training data is clean (setting A)"
    total = training_set_size(config, run_dir)
    exact = total is not None
    total = total or num_samples
    n = min(num_samples, total)
    # image_shape (1, 1): the noise levels are drawn before the per-pixel
    # eps, so they do not depend on the image size.
    p = settings_lib.sample_params(setting, np.arange(n), total,
                                   config.data_seed, (1, 1))
    out = _true_from_params(
        p.kernel, p.blur_type == settings_lib.BLUR_NONE, p.noise_shot,
        p.noise_read, p.noise_applied, p.jpeg_quality, intensities)
    text = (f"setting {setting.name} regenerated with sample_params (seed "
            f"{config.data_seed}, N = {total}"
            f"{'' if exact else ', data size unknown: approximate'})")
    return out, text


# --- Summary -----------------------------------------------------------------

def _percentiles(values):
    if len(values) == 0:
        return None
    p = np.percentile(values, [5, 50, 95])
    return {"p5": float(p[0]), "p50": float(p[1]), "p95": float(p[2])}


def summarize(d, entropy_threshold=0.1, mask_threshold=0.5, learned=True):
    """Numbers of one side (learned or true) of the report."""
    if d is None:
        return None
    out = {"blur": None, "noise": None, "jpeg": None}
    if "entropy" in d:
        blur = {"fraction_unblurred": float(np.mean(
                    d["entropy"] < entropy_threshold)),
                "entropy_mean": float(np.mean(d["entropy"])),
                "entropy": _percentiles(d["entropy"])}
        if "m_k" in d:
            blur["fraction_mask_off"] = float(np.mean(
                d["m_k"] < mask_threshold))
            blur["m_k_mean"] = float(np.mean(d["m_k"]))
        if "unblurred_flag" in d:
            blur["fraction_not_blurred"] = float(np.mean(d["unblurred_flag"]))
        out["blur"] = blur
    if "noise_std" in d:
        std = d["noise_std"].mean(axis=0)
        out["noise"] = {"intensities": [float(u) for u in d["intensities"]],
                        "std": [float(s) for s in std],
                        "std_mean": float(std.mean())}
    if "q" in d:
        if learned:
            compressed = d["m_q"] >= mask_threshold
            jpeg = {"fraction_uncompressed": float(np.mean(~compressed)),
                    "m_q_mean": float(np.mean(d["m_q"])),
                    "q_all": _percentiles(d["q"])}
        else:
            compressed = d["q"] > 0
            jpeg = {"fraction_uncompressed": float(np.mean(~compressed))}
        jpeg["q_mean_compressed"] = (float(np.mean(d["q"][compressed]))
                                     if compressed.any() else None)
        jpeg["q"] = _percentiles(d["q"][compressed])
        out["jpeg"] = jpeg
    return out


def _fmt(value, digits=3):
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


def _row(name, learned, true, path):
    def get(side):
        node = side
        for key in path:
            if node is None:
                return None
            node = node.get(key) if isinstance(node, dict) else node[key]
        return node
    return f"| {name} | {_fmt(get(learned))} | {_fmt(get(true))} |"


def markdown(summary):
    """The Markdown report (summary.md)."""
    learned, true = summary["learned"], summary["true"]
    lines = [f"# Degradation report: {os.path.basename(summary['run_dir'])}",
             "",
             f"Checkpoint `{summary['checkpoint']}` (step {summary['step']}), "
             f"variant `{summary['variant']}`, data `{summary['data']}`, "
             f"setting `{summary['setting']}`; {summary['num_samples']} "
             f"samples, seed {summary['seed']}.",
             "",
             f"True distribution: {summary['true_source']}.", "",
             "| quantity | learned | true |", "| --- | --- | --- |"]
    t = summary["entropy_threshold"]
    lines += [
        _row(f"images left unblurred (entropy < {t} nats)", learned, true,
             ("blur", "fraction_unblurred")),
        _row("kernel entropy, median (nats)", learned, true,
             ("blur", "entropy", "p50")),
        _row(f"images uncompressed (m_q < {summary['mask_threshold']}; "
             f"true: q = 0)", learned, true,
             ("jpeg", "fraction_uncompressed")),
        _row("JPEG quality of compressed images, median", learned, true,
             ("jpeg", "q", "p50")),
        _row("JPEG quality of all samples of G_q, median", learned, None,
             ("jpeg", "q_all", "p50")),
    ]
    noise = (learned or {}).get("noise") or (true or {}).get("noise")
    if noise:
        for i, u in enumerate(noise["intensities"]):
            if i % 2 == 0:
                lines.append(_row(f"noise std at intensity {u:g}", learned,
                                  true, ("noise", "std", i)))
    lines += ["", "Stages absent from the model (or the data) show –.", ""]
    lines += [f"![{name[:-4]}]({name})" for name in summary["plots"]]
    return "\n".join(lines) + "\n"


# --- Plots (numpy raster; Pillow only for text) ------------------------------

def _text(img, xy, text, color=(0, 0, 0)):
    """Draws text with Pillow's default font when Pillow is installed."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return img
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text(xy, text, fill=tuple(color))
    img[...] = np.asarray(pil)
    return img


class Figure:
    """A minimal raster plot: axes box, bars, lines, ticks, legend.

    Args:
      xlim, ylim: data ranges (lo, hi).
      title, xlabel: texts (drawn when Pillow is available).
      size: (width, height) in pixels.
    """

    def __init__(self, xlim, ylim, title="", xlabel="", size=(480, 320)):
        self.w, self.h = size
        self.img = np.full((self.h, self.w, 3), 255, np.uint8)
        self.x0, self.x1 = 56, self.w - 12
        self.y0, self.y1 = 26, self.h - 40
        self.xlim, self.ylim = xlim, ylim
        self.title, self.xlabel = title, xlabel
        self.legend_items = []

    def px(self, x, y):
        (a, b), (c, d) = self.xlim, self.ylim
        px = self.x0 + (np.asarray(x, float) - a) / max(b - a, 1e-12) * (
            self.x1 - self.x0)
        py = self.y1 - (np.asarray(y, float) - c) / max(d - c, 1e-12) * (
            self.y1 - self.y0)
        return px, py

    def rect(self, xa, ya, xb, yb, color):
        xa, xb = sorted((int(round(xa)), int(round(xb))))
        ya, yb = sorted((int(round(ya)), int(round(yb))))
        xa, ya = max(xa, 0), max(ya, 0)
        self.img[ya:yb + 1, xa:xb + 1] = color

    def bars(self, edges, heights, color, label, slot=0, slots=1):
        for lo, hi, v in zip(edges[:-1], edges[1:], heights):
            width = (hi - lo) / slots
            xa, ya = self.px(lo + slot * width, 0.0)
            xb, yb = self.px(lo + (slot + 1) * width, v)
            self.rect(xa + 1, yb, xb - 1, ya, color)
        self.legend_items.append((label, color))

    def line(self, xs, ys, color, label, thickness=2):
        px, py = self.px(xs, ys)
        for i in range(len(px) - 1):
            steps = int(max(abs(px[i + 1] - px[i]), abs(py[i + 1] - py[i]),
                            1)) * 2
            for t in np.linspace(0.0, 1.0, steps + 1):
                x = px[i] + t * (px[i + 1] - px[i])
                y = py[i] + t * (py[i + 1] - py[i])
                self.rect(x - thickness / 2, y - thickness / 2,
                          x + thickness / 2, y + thickness / 2, color)
        for x, y in zip(px, py):
            self.rect(x - 3, y - 3, x + 3, y + 3, color)
        self.legend_items.append((label, color))

    def render(self):
        """Draws axes, ticks and legend; returns uint8 [H, W, 3]."""
        black = (0, 0, 0)
        self.rect(self.x0, self.y0, self.x0, self.y1, black)
        self.rect(self.x0, self.y1, self.x1, self.y1, black)
        for v in np.linspace(*self.xlim, 5):
            x, _ = self.px(v, self.ylim[0])
            self.rect(x, self.y1, x, self.y1 + 4, black)
            _text(self.img, (int(x) - 12, self.y1 + 6), f"{v:.3g}")
        for v in np.linspace(*self.ylim, 5):
            _, y = self.px(self.xlim[0], v)
            self.rect(self.x0 - 4, y, self.x0, y, black)
            _text(self.img, (2, int(y) - 5), f"{v:.3g}")
        _text(self.img, (self.x0, 6), self.title)
        _text(self.img, ((self.x0 + self.x1) // 2 - 40, self.h - 16),
              self.xlabel)
        for i, (label, color) in enumerate(self.legend_items):
            y = self.y0 + 4 + 14 * i
            self.rect(self.x1 - 150, y, self.x1 - 140, y + 9, color)
            _text(self.img, (self.x1 - 135, y - 1), label)
        return self.img


def histogram_figure(series, lo, hi, bins, title, xlabel):
    """Side-by-side histograms (fractions per bin) of [(label, values,
    color)]."""
    edges = np.linspace(lo, hi, bins + 1)
    hists = []
    for label, values, color in series:
        values = np.clip(np.asarray(values, float), lo, hi)
        counts, _ = np.histogram(values, edges)
        hists.append((label, counts / max(len(values), 1), color))
    top = max([h.max() for _, h, _ in hists] + [1e-6]) * 1.1
    fig = Figure((lo, hi), (0.0, top), title, xlabel)
    for i, (label, h, color) in enumerate(hists):
        fig.bars(edges, h, color, label, slot=i, slots=len(hists))
    return fig.render()


def kernel_gallery(groups, scale=8, cols=16):
    """Rows of kernels (sqrt of each tap over the maximum, black = max),
    one block per group
    [(label, kernels [n, K, K], entropies [n])], uint8 [H, W, 3]."""
    blocks = []
    for label, kernels, entropies in groups:
        k = kernels.shape[-1]
        cell = k * scale + 4
        rows = math.ceil(len(kernels) / cols)
        block = np.full((18 + rows * (cell + 12), cols * cell, 3), 255,
                        np.uint8)
        _text(block, (2, 2), label)
        for i, (kern, ent) in enumerate(zip(kernels, entropies)):
            r, c = divmod(i, cols)
            # Square root of the tap / max: small taps stay visible.
            v = np.sqrt(np.clip(kern, 0, None) / max(float(kern.max()),
                                                     1e-12))
            tile = np.kron(v, np.ones((scale, scale)))
            y, x = 18 + r * (cell + 12), c * cell
            block[y:y + k * scale, x:x + k * scale] = (
                255 * (1.0 - tile[..., None])).astype(np.uint8)
            _text(block, (x, y + k * scale), f"{ent:.2f}")
        blocks.append(block)
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)),
                     constant_values=255) for b in blocks]
    return np.concatenate(blocks, axis=0)


def stack_images(images):
    """Stacks RGB uint8 images top to bottom on a white canvas."""
    width = max(im.shape[1] for im in images)
    canvas = np.full((sum(im.shape[0] for im in images), width, 3), 255,
                     np.uint8)
    y = 0
    for im in images:
        canvas[y:y + im.shape[0], :im.shape[1]] = im
        y += im.shape[0]
    return canvas


def write_png(path, image):
    tf.io.write_file(path, tf.io.encode_png(np.ascontiguousarray(image)))


def _gallery_subset(d, count):
    """`count` kernels spread evenly over the entropy order."""
    order = np.argsort(d["entropy"], kind="stable")
    pick = order[np.linspace(0, len(order) - 1, min(count, len(order))
                             ).astype(int)]
    return d["kernel"][pick], d["entropy"][pick]


def write_plots(out_dir, learned, true):
    """Writes the PNGs for the stages that exist; returns their names."""
    written = []

    def pair(key):
        series = []
        if key in learned:
            series.append(("learned", learned[key], LEARNED_COLOR))
        if true is not None and key in true:
            series.append(("true", true[key], TRUE_COLOR))
        return series

    if "q" in learned or (true is not None and "q" in true):
        series = []
        if "q" in learned:
            series.append(("learned (all)", learned["q"], LEARNED_COLOR))
        if true is not None and "q" in true:
            series.append(("true (compressed)", true["q"][true["q"] > 0],
                           TRUE_COLOR))
        write_png(os.path.join(out_dir, "quality.png"), histogram_figure(
            series, 0, 100, 20, "JPEG quality q", "q"))
        written.append("quality.png")
    if "m_q" in learned:
        write_png(os.path.join(out_dir, "quality_mask.png"), histogram_figure(
            [("learned", learned["m_q"], LEARNED_COLOR)], 0, 1, 20,
            "JPEG mask m_q (0 = uncompressed)", "m_q"))
        written.append("quality_mask.png")
    if "entropy" in learned or (true is not None and "entropy" in true):
        series = pair("entropy")
        hi = max(float(np.max(v)) for _, v, _ in series) + 0.1
        write_png(os.path.join(out_dir, "entropy.png"), histogram_figure(
            series, 0, max(hi, 1.0), 24, "blur kernel entropy (nats)",
            "entropy"))
        groups = []
        if "kernel" in learned:
            groups.append(("learned kernels (entropy in nats)",
                           *_gallery_subset(learned, 64)))
        if true is not None and "kernel" in true:
            groups.append(("true kernels", *_gallery_subset(true, 32)))
        write_png(os.path.join(out_dir, "kernels.png"), kernel_gallery(groups))
        written += ["entropy.png", "kernels.png"]
    if "noise_std" in learned or (true is not None and "noise_std" in true):
        curves = [(label, d["intensities"], d["noise_std"].mean(axis=0), c)
                  for label, d, c in (("learned", learned, LEARNED_COLOR),
                                      ("true", true, TRUE_COLOR))
                  if d is not None and "noise_std" in d]
        top = max(float(y.max()) for _, _, y, _ in curves) * 1.15 + 1e-6
        fig = Figure((0.0, 1.0), (0.0, top),
                     "noise std versus intensity ([0, 1] units)",
                     "intensity")
        for label, x, y, color in curves:
            fig.line(x, y, color, label)
        write_png(os.path.join(out_dir, "noise_std.png"), fig.render())
        written.append("noise_std.png")
    return written


# --- Entry -------------------------------------------------------------------

def make_report(run_dir, out_dir=None, checkpoint=None, num_samples=2048,
                seed=0, entropy_threshold=0.1, mask_threshold=0.5,
                intensities=DEFAULT_INTENSITIES, noise_samples=64):
    """Writes the report of one checkpoint; returns the summary dict.

    Raises:
      UserError: not a run directory, or no such checkpoint.
    """
    config, gens, path = runs.load_generators(run_dir, checkpoint)
    step = int(path.rsplit("-", 1)[-1]) if re.search(r"-\d+$", path) \
        else None
    out_dir = out_dir or os.path.join(run_dir, f"report-{step}")
    os.makedirs(out_dir, exist_ok=True)
    learned = learned_degradations(gens, config, num_samples, seed,
                                   intensities, noise_samples)
    true, true_source = true_degradations(config, run_dir, num_samples,
                                          intensities)
    summary = {
        "run_dir": os.path.abspath(run_dir), "checkpoint": path,
        "step": step, "variant": config.variant, "setting": config.setting,
        "data": config.data, "num_samples": num_samples, "seed": seed,
        "entropy_threshold": entropy_threshold,
        "mask_threshold": mask_threshold,
        "learned": summarize(learned, entropy_threshold, mask_threshold),
        "true": summarize(true, entropy_threshold, mask_threshold,
                          learned=False),
        "true_source": true_source,
    }
    summary["plots"] = write_plots(out_dir, learned, true)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown(summary))
    summary["out_dir"] = out_dir
    return summary


def define_flags():
    """Defines the flags (only when run as a program, so importing this
    module never clashes with other flag definitions)."""
    from absl import flags
    flags.DEFINE_string("run_dir", None, "Run directory.", required=True)
    flags.DEFINE_string("checkpoint", "", "Step or checkpoint path ('' = "
                        "latest).")
    flags.DEFINE_integer("num_samples", 2048, "Samples of k, m_k, q, m_q.",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the samples.")
    flags.DEFINE_string("out_dir", "", "Output directory ('' = "
                        "<run_dir>/report-<step>).")
    flags.DEFINE_float("entropy_threshold", 0.1, "Kernels with less entropy "
                       "(nats) count as unblurred.", lower_bound=0.0)
    flags.DEFINE_float("mask_threshold", 0.5, "m_q below this counts as "
                       "uncompressed.", lower_bound=0.0)
    flags.DEFINE_integer("noise_samples", 64, "Samples per intensity of the "
                         "noise curve.", lower_bound=1)


def main(argv):
    from absl import flags
    flags_ = flags.FLAGS
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    try:
        summary = make_report(
            flags_.run_dir, flags_.out_dir or None,
            flags_.checkpoint or None, flags_.num_samples, flags_.seed,
            flags_.entropy_threshold, flags_.mask_threshold,
            noise_samples=flags_.noise_samples)
    except (UserError, data_lib.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out_dir']}/summary.md")
    return 0


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
