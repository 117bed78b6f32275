"""JPEG deblocking by projection onto the quantisation constraint set.

The paper's Deblock+GAN uses Pointwise SA-DCT [19] (Foi, Katkovnik and
Egiazarian, IEEE TIP 2007), whose only release is MATLAB with closed
binaries under a non-commercial licence. This module is the substitute
[choice]: the classic POCS deblocking of Yang, Galatsanos and Katsaggelos
("Projection-based spatially adaptive reconstruction of block-transform
compressed images", IEEE TIP 1995) in its simplest form, alternating

    x <- P_Q(S(x)),   S(x) = (1 - mu) x + mu G_sigma(x)

for `iters` rounds, starting from the decoded image, where

* S is a partial smoothing step (G_sigma an isotropic Gaussian of std
  `sigma` pixels, `scipy.ndimage.gaussian_filter`, 'nearest' borders,
  mixed in with weight `mu`), and
* P_Q is the projection onto the quantisation constraint set of the coded
  image: with C = DCT_8x8(x) the orthonormal 8x8 block DCT of a plane, T the
  libjpeg table of the image's quality (`degradations.jpeg.quality_tables`)
  and c = round(C_dec / T) the coefficients the encoder wrote (recovered
  from the decoded image, C_dec its block DCT), every coefficient is clipped
  into its quantisation interval

      (c - 1/2) T <= C <= (c + 1/2) T,

  which is the exact Euclidean projection because the DCT is orthonormal.
  The decoded image itself lies in this set, so each output stays
  consistent with the bitstream.

Images coded at quality >= `q_max` are returned unchanged [choice]: their
tables are 1-2, where the coefficients recovered from the 8-bit decoded
image are often off by one, and the projection then lowered PSNR on the
tuning patches (docs/results.md).

Only the luma plane is processed [choice]: Y - 128 (JFIF full-range YCbCr,
as `degradations.jpeg`) at full resolution with the luma table; Cb and Cr
are kept as decoded (processing the 2x2-pooled chroma planes with the
chroma table, adding the change back upsampled, gained nothing in an
exploratory run during development: +0.114 dB with it and +0.116 dB
without on 256 patches of setting H, mu = 0.3; not kept in the tools). Planes whose size is
not a multiple of 8 are edge-padded (as libjpeg does) and cropped.
"""

import numpy as np
import scipy.fft
import scipy.ndimage

from bncr_tf.degradations import jpeg

# [choice] measured on tuning patches (docs/results.md, "Restoration
# baselines"): tools/measure_restoration.py --tune.
DEFAULT_SIGMA = 0.5
DEFAULT_MU = 0.5
DEFAULT_ITERS = 1
DEFAULT_Q_MAX = 95

# JFIF full-range RGB -> YCbCr (ITU-R BT.601), float64, from
# `degradations.jpeg`, the one owner of the constants.
_RGB_TO_YCC = jpeg.RGB_TO_YCC
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def quantisation_tables(quality):
    """libjpeg (luma, chroma) tables, float64 `[B, 8, 8]`, of int qualities
    `[B]` in [1, 100] (from `degradations.jpeg.quality_tables`, the one
    owner of the tables)."""
    luma, chroma = jpeg.quality_tables(np.asarray(quality, np.float32))
    return np.asarray(luma, np.float64), np.asarray(chroma, np.float64)


def _blocks(plane):
    """[B, H, W] -> [B, H/8, W/8, 8, 8] (a view when possible)."""
    b, h, w = plane.shape
    return plane.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)


def _unblocks(blocks):
    b, nh, nw = blocks.shape[:3]
    return blocks.transpose(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def block_dct(plane):
    """Orthonormal 8x8 block DCT-II of `[B, H, W]` (H, W multiples of 8):
    `[B, H/8, W/8, 8, 8]`, row = vertical frequency."""
    return scipy.fft.dctn(_blocks(plane), type=2, norm="ortho", axes=(-2, -1))


def block_idct(coefficients):
    """Inverse of `block_dct`."""
    return _unblocks(scipy.fft.idctn(coefficients, type=2, norm="ortho",
                                     axes=(-2, -1)))


def constraint_set(decoded_plane, table):
    """Bounds of the quantisation constraint set of a decoded plane.

    Args:
        decoded_plane: float `[B, H, W]` (level-shifted, H, W multiples of 8).
        table: `[B, 8, 8]` quantisation table of each image.

    Returns:
        (lo, hi), each `[B, H/8, W/8, 8, 8]`: (c -/+ 1/2) T with
        c = round(DCT(decoded) / T).
    """
    t = np.asarray(table, np.float64)[:, None, None]
    c = np.round(block_dct(decoded_plane) / t)
    return (c - 0.5) * t, (c + 0.5) * t


def project(plane, lo, hi):
    """P_Q: clips the block DCT coefficients of `plane` into [lo, hi]."""
    return block_idct(np.clip(block_dct(plane), lo, hi))


def deblock_planes(planes, tables, sigma=DEFAULT_SIGMA, mu=DEFAULT_MU,
                   iters=DEFAULT_ITERS):
    """POCS on level-shifted planes: x <- P_Q(S(x)), `iters` times.

    Args:
        planes: float `[B, H, W]` decoded planes (H, W multiples of 8).
        tables: `[B, 8, 8]` quantisation tables.
        sigma: std of the Gaussian of S, in pixels.
        mu: weight of the Gaussian in S, in [0, 1].
        iters: number of rounds.

    Returns:
        float64 `[B, H, W]`, inside the constraint set of `planes` (up to
        floating-point error of the DCT).
    """
    x = np.asarray(planes, np.float64)
    lo, hi = constraint_set(x, tables)
    for _ in range(iters):
        smooth = scipy.ndimage.gaussian_filter(x, (0, sigma, sigma),
                                               mode="nearest")
        x = project((1.0 - mu) * x + mu * smooth, lo, hi)
    return x


def _pad_to(plane, multiple):
    _, h, w = plane.shape
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        plane = np.pad(plane, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return plane


def deblock(images, quality, sigma=DEFAULT_SIGMA, mu=DEFAULT_MU,
            iters=DEFAULT_ITERS, q_max=DEFAULT_Q_MAX):
    """Deblocks JPEG-decoded uint8 images coded at known qualities.

    Args:
        images: uint8 `[B, H, W, 3]`, decoded JPEGs (as the dataset builder
            stores them).
        quality: int `[B]`, each image's libjpeg quality in [1, 100] (the
            builder's `jpeg_quality`; callers skip images with 0).
        sigma, mu, iters: of `deblock_planes`.
        q_max: images with quality >= q_max are returned unchanged.

    Returns:
        uint8 `[B, H, W, 3]`.
    """
    images = np.asarray(images)
    quality = np.asarray(quality)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got "
                         f"{images.dtype} {images.shape}")
    if quality.shape != images.shape[:1]:
        raise ValueError(f"quality must be [B] = [{images.shape[0]}], got "
                         f"{quality.shape}")
    if np.any((quality < 1) | (quality > 100)):
        raise ValueError("quality must be in [1, 100] (0 = not compressed "
                         "cannot be deblocked)")
    out_u8 = images.copy()
    todo = np.flatnonzero(quality < q_max)
    if todo.size:
        out_u8[todo] = _deblock_rgb(images[todo], quality[todo], sigma, mu,
                                    iters)
    return out_u8


def _deblock_rgb(images, quality, sigma, mu, iters):
    h, w = images.shape[1:3]
    luma_t, _ = quantisation_tables(quality)
    ycc = images.astype(np.float64) @ _RGB_TO_YCC.T
    y = _pad_to(ycc[..., 0] - 128.0, 8)
    y = deblock_planes(y, luma_t, sigma, mu, iters)
    ycc[..., 0] = y[:, :h, :w] + 128.0
    rgb = ycc @ _YCC_TO_RGB.T
    return np.round(np.clip(rgb, 0.0, 255.0)).astype(np.uint8)
