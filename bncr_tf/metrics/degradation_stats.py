"""Statistics that see a degradation directly (issue 18): noise level,
sharpness and JPEG blockiness of images, per image and per batch.

They are measured on a generator's clean output G_x and on the clean and
degraded training data for reference (`tools/measure_degradation_stats.py`):
the paper's claim in its most direct form is that a GAN's samples carry the
degradation of its data, and the robust models' samples do not.

All three work on the luma of uint8 (or float, in grey levels) RGB images
[N, H, W, 3]:

  luma        Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, the Y of
              JPEG/JFIF, whose 8x8 blocks it sees) [choice], in grey
              levels; a grey image (R = G = B = v) has Y = v.
  noise       Donoho's estimator sigma = median(|HH|) / 0.6745 of the
              finest orthonormal Haar diagonal subband of Y: for each 2x2
              block [[a, b], [c, d]] (rows and columns from 0, an odd last
              row / column dropped), HH = (a - b - c + d) / 2. White
              Gaussian noise of std s in Y gives HH of std s; 0.6745 is
              the median of |N(0, 1)|. In grey levels of Y: i.i.d. noise of
              std s in each RGB channel has luma std
              s * |(0.299, 0.587, 0.114)| = 0.669 s (`LUMA_NOISE_GAIN`).
              Image detail also enters HH, so a textured clean image has a
              non-zero "noise level" [inherent to the estimator].
  sharpness   the share of the spectral power of Y above
              `SHARPNESS_CUTOFF` = 0.25 cycles/px (radial frequency
              sqrt(fx^2 + fy^2), fx, fy from numpy.fft.fftfreq): Y minus
              its mean, times a separable periodic Hann window
              w(n) = 0.5 - 0.5 cos(2 pi n / L) [choice: removes the
              edge discontinuity of the periodic DFT, which would
              otherwise add high-frequency power], then |DFT|^2; the DC bin
              is left out of the total. Blur lowers it; noise raises it
              (white noise alone gives 1 - pi / 16 = 0.80). NaN for a
              constant image.
  blockiness  the mean absolute luma jump across 8x8 block boundaries
              (column 8i - 1 -> 8i, row 8i - 1 -> 8i, i >= 1) divided by
              the mean absolute jump between all other neighbouring
              columns / rows, horizontal and vertical jumps pooled
              [choice]. 1.0 = no blocking; JPEG raises it. Needs H, W >= 9
              (one boundary); NaN when no jump is off the grid.

`batch_stats` returns per-image values and their medians [choice: the
median, not the mean, so a few flat or saturated images do not dominate];
`separability` is the best accuracy of one threshold telling two sets of
per-image values apart (0.5 = indistinguishable), used to state how well a
statistic resolves a degradation per image.

numpy only (no TensorFlow); images are processed in chunks, so memory stays
bounded for large N.
"""

import numpy as np

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LUMA_NOISE_GAIN = float(np.sqrt(np.sum(np.square(LUMA_WEIGHTS))))
MAD_TO_SIGMA = 0.6745  # median |N(0, 1)| (0.67449 to five digits)
SHARPNESS_CUTOFF = 0.25  # cycles per pixel
JPEG_BLOCK = 8
STATS = ("noise", "sharpness", "blockiness")
CHUNK = 512


def _images(images):
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer)
            or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"images must be integer or float, got {x.dtype}")
    return x


def luma(images):
    """BT.601 luma of RGB images [N, H, W, 3] -> float64 [N, H, W] (same
    units as the input: grey levels for uint8)."""
    x = _images(images).astype(np.float64)
    w = np.asarray(LUMA_WEIGHTS)
    return x[..., 0] * w[0] + x[..., 1] * w[1] + x[..., 2] * w[2]


def haar_hh(y):
    """Finest orthonormal Haar diagonal subband of luma [N, H, W] ->
    [N, H // 2, W // 2]: (a - b - c + d) / 2 of each 2x2 block."""
    y = np.asarray(y, np.float64)
    h, w = y.shape[1] // 2 * 2, y.shape[2] // 2 * 2
    y = y[:, :h, :w]
    a, b = y[:, 0::2, 0::2], y[:, 0::2, 1::2]
    c, d = y[:, 1::2, 0::2], y[:, 1::2, 1::2]
    return (a - b - c + d) / 2.0


def _grouped_median_abs(values, step):
    """Median of |values| [n, m] on a grid of `step` [n] per row, read as
    grouped data (each grid value spread uniformly over its bin), so the
    result is not itself restricted to the grid.

    A grid value k * step (k >= 1) stands for [(k - 1/2) step,
    (k + 1/2) step]; 0 stands for [0, step / 2]. Rows with step 0 (all
    values 0) give 0.
    """
    v = np.abs(np.asarray(values, np.float64))
    n, m = v.shape
    step = np.asarray(step, np.float64)
    safe = np.where(step > 0, step, 1.0)[:, None]
    k = np.rint(v / safe)
    k_med = np.sort(k, axis=1)[:, m // 2][:, None]
    below = (k < k_med).sum(axis=1)
    at = (k == k_med).sum(axis=1)
    k_med = k_med[:, 0]
    lower = np.where(k_med > 0, (k_med - 0.5) * safe[:, 0], 0.0)
    width = np.where(k_med > 0, safe[:, 0], safe[:, 0] / 2.0)
    out = lower + (m / 2.0 - below) / at * width
    return np.where(step > 0, out, 0.0)


def noise_level(images):
    """Donoho's noise estimate of each image's luma, grey levels, float64
    [N]: median(|HH|) / 0.6745.

    Integer images: the luma is computed exactly (1000 Y = 299 R + 587 G +
    114 B in integers) and |HH| lies on a grid, 0.5 grey levels for grey
    images (R = G = B) and usually 0.0005 for colour ones; its median is
    taken as the median of grouped data (`_grouped_median_abs`) [choice],
    otherwise the estimate of a grey image could only take the values
    0.74 k. Float images: the plain median.
    """
    x = _images(images)
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"noise_level needs images of at least 2 x 2, got "
                         f"{x.shape[1]} x {x.shape[2]}")
    out = []
    for start in range(0, len(x), CHUNK):
        part = x[start:start + CHUNK]
        if np.issubdtype(part.dtype, np.integer):
            y1000 = (part.astype(np.int64)
                     * np.asarray([299, 587, 114], np.int64)).sum(axis=-1)
            h, w = y1000.shape[1] // 2 * 2, y1000.shape[2] // 2 * 2
            y = y1000[:, :h, :w]
            hh = (y[:, 0::2, 0::2] - y[:, 0::2, 1::2] - y[:, 1::2, 0::2]
                  + y[:, 1::2, 1::2]).reshape(len(y), -1)  # 2000 HH
            step = np.gcd.reduce(np.abs(hh), axis=1)
            mad = _grouped_median_abs(hh, step) / 2000.0
        else:
            hh = haar_hh(luma(part))
            mad = np.median(np.abs(hh.reshape(len(hh), -1)), axis=1)
        out.append(mad / MAD_TO_SIGMA)
    return np.concatenate(out) if out else np.zeros(0)


def hann(length):
    """Periodic Hann window 0.5 - 0.5 cos(2 pi n / length), float64."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def radial_frequency(h, w):
    """sqrt(fx^2 + fy^2) in cycles/px of the [h, w] DFT bins (fftfreq
    order)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy ** 2 + fx ** 2)


def sharpness(images, cutoff=SHARPNESS_CUTOFF):
    """Share of each image's luma spectral power above `cutoff`
    cycles/px (mean removed, periodic Hann window, DC bin excluded),
    float64 [N] in [0, 1]; NaN for a constant image."""
    x = _images(images)
    h, w = x.shape[1], x.shape[2]
    window = hann(h)[:, None] * hann(w)[None, :]
    radius = radial_frequency(h, w)
    high = radius > cutoff
    ac = radius > 0
    out = []
    for start in range(0, len(x), CHUNK):
        y = luma(x[start:start + CHUNK])
        y = (y - y.mean(axis=(1, 2), keepdims=True)) * window
        power = np.abs(np.fft.fft2(y)) ** 2
        total = (power * ac).sum(axis=(1, 2))
        part = (power * high).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 1e-12 * h * w, part / total, np.nan)
        out.append(share)
    return np.concatenate(out) if out else np.zeros(0)


def boundary_masks(h, w, block=JPEG_BLOCK):
    """Boolean masks of the horizontal jumps [w - 1] and vertical jumps
    [h - 1] that cross a block boundary (jump j is pixel j -> j + 1; it
    crosses when j % block == block - 1)."""
    return (np.arange(w - 1) % block == block - 1,
            np.arange(h - 1) % block == block - 1)


def blockiness(images, block=JPEG_BLOCK):
    """Mean |luma jump| across block boundaries over the mean elsewhere,
    horizontal and vertical jumps pooled, float64 [N]; NaN when every jump
    off the grid is 0."""
    x = _images(images)
    h, w = x.shape[1], x.shape[2]
    if h <= block or w <= block:
        raise ValueError(f"blockiness needs images larger than {block} x "
                         f"{block}, got {h} x {w}")
    cols, rows = boundary_masks(h, w, block)
    n_on = h * cols.sum() + w * rows.sum()
    n_off = h * (~cols).sum() + w * (~rows).sum()
    out = []
    for start in range(0, len(x), CHUNK):
        y = luma(x[start:start + CHUNK])
        dx = np.abs(np.diff(y, axis=2))  # [n, h, w - 1]
        dy = np.abs(np.diff(y, axis=1))  # [n, h - 1, w]
        on = dx[:, :, cols].sum(axis=(1, 2)) + dy[:, rows].sum(axis=(1, 2))
        off = (dx[:, :, ~cols].sum(axis=(1, 2))
               + dy[:, ~rows].sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(off > 0, (on / n_on) / (off / n_off), np.nan)
        out.append(ratio)
    return np.concatenate(out) if out else np.zeros(0)


FUNCTIONS = {"noise": noise_level, "sharpness": sharpness,
             "blockiness": blockiness}


def per_image_stats(images):
    """{"noise", "sharpness", "blockiness"} -> float64 [N] each."""
    return {name: FUNCTIONS[name](images) for name in STATS}


def summarize(values):
    """Median (over finite values), 10th / 90th percentiles, the count of
    finite values and of all values, of per-image values [N]."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    if not len(finite):
        return {"median": None, "p10": None, "p90": None, "count": 0,
                "total": int(len(v))}
    p10, p50, p90 = np.percentile(finite, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90),
            "count": int(len(finite)), "total": int(len(v))}


def batch_stats(images):
    """Per-image values and summaries of all three statistics.

    Returns:
      {"per_image": {name: float64 [N]}, "summary": {name: summarize(...)}}
    """
    per_image = per_image_stats(images)
    return {"per_image": per_image,
            "summary": {k: summarize(v) for k, v in per_image.items()}}


def separability(a, b):
    """Best accuracy of one threshold separating per-image values a from b.

    Balanced accuracy (mean of the two per-class accuracies, so set sizes
    do not matter) of the rule "x > t is b" or "x > t is a", maximised
    over t; NaN values are dropped. 0.5 = the statistic cannot tell the
    sets apart per image, 1.0 = perfectly.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan")
    thresholds = np.unique(np.concatenate([a, b]))
    # Fraction of each set <= t, for every candidate t (and below all).
    fa = np.searchsorted(np.sort(a), thresholds, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), thresholds, side="right") / len(b)
    fa, fb = np.append(fa, 0.0), np.append(fb, 0.0)
    # "a <= t < b": (fa + 1 - fb) / 2; the reversed rule: (fb + 1 - fa) / 2.
    acc = np.maximum(fa + 1 - fb, fb + 1 - fa) / 2.0
    return float(acc.max())


# --- Tables of rows (tools/measure_degradation_stats.py,
# tools/run_comparison.py) --------------------------------------------------

NAMES = {"noise": "noise (grey levels)", "sharpness": "sharpness",
         "blockiness": "blockiness"}
DIGITS = {"noise": 2, "sharpness": 4, "blockiness": 3}
DEFINITIONS = {
    "luma": "0.299 R + 0.587 G + 0.114 B",
    "noise": "median(|HH|) / 0.6745, finest Haar diagonal subband of the "
             "luma, grey levels",
    "sharpness": f"share of windowed luma spectral power above "
                 f"{SHARPNESS_CUTOFF} cycles/px",
    "blockiness": "mean |luma jump| across 8x8 block boundaries / mean "
                  "elsewhere"}


def stats_row(label, kind, images, clean_per_image=None, **extra):
    """One table row of `images`: its summaries and, given the clean
    data's per-image values, its per-image separability from them.

    Returns:
      (row dict, per-image values {name: [N]}).
    """
    stats = batch_stats(images)
    row = {"label": label, "kind": kind, "num_images": int(len(images)),
           "resolution": int(np.shape(images)[1]), **extra,
           "stats": stats["summary"]}
    if clean_per_image is not None:
        row["separability_from_clean"] = {
            name: separability(clean_per_image[name],
                               stats["per_image"][name])
            for name in STATS}
    return row, stats["per_image"]


def _fmt(value, digits):
    return "–" if value is None or not np.isfinite(value) \
        else f"{value:.{digits}f}"


def rows_markdown(rows):
    """Markdown table lines of `stats_row` rows: median (10th–90th
    percentile) of each statistic, then the separabilities."""
    lines = [
        "| source | N | " + " | ".join(NAMES[n] for n in STATS)
        + " | " + " | ".join(f"sep. {n}" for n in STATS) + " |",
        "| --- | ---: |" + " --- |" * len(STATS) + " ---: |" * len(STATS)]
    for row in rows:
        cells = []
        for name in STATS:
            s = row["stats"][name]
            d = DIGITS[name]
            cells.append(f"{_fmt(s['median'], d)} ({_fmt(s['p10'], d)}–"
                         f"{_fmt(s['p90'], d)})")
        sep = row.get("separability_from_clean")
        seps = [_fmt(sep[name], 2) if sep else "–" for name in STATS]
        lines.append(f"| {row['label']} | {row['num_images']} | "
                     + " | ".join(cells) + " | " + " | ".join(seps) + " |")
    return lines


def finite(obj):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
