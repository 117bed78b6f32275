"""Restores a degraded data set's images from their stored metadata.

Deblur+GAN† (paper Table 1 no. 8, Table 3) is a plain GAN trained on the
blurred training set deconvolved with each image's ground-truth kernel
("deblur_gt"); Deblock+GAN (Table 1 no. 16, Table 3) one trained on the
JPEG training set deblocked with each image's quality ("deblock"). Only the
images the setting degraded are restored (blur_type != none for deblur_gt,
jpeg_quality > 0 for deblock); the others are passed through.
"""

import numpy as np

from bncr_tf.baselines import deblocking, deconvolution
from bncr_tf.degradations import settings as settings_lib

RESTORERS = ("deblur_gt", "deblock")


def check_restorable(setting, restore):
    """Raises ValueError when `restore` cannot apply to `setting`.

    Args:
        setting: `Setting` or name.
        restore: one of `RESTORERS`.

    Returns:
        True for the paper's use (deblur_gt on blur-only settings, deblock
        on settings without noise); False when the setting has other
        degradations too (allowed; callers may warn).
    """
    setting = settings_lib.get_setting(setting)
    if restore not in RESTORERS:
        raise ValueError(f"restore must be one of {', '.join(RESTORERS)}, "
                         f"got {restore!r}")
    if restore == "deblur_gt" and setting.blur_rate == 0:
        raise ValueError(
            f"deblur_gt needs a setting with blur, but setting "
            f"{setting.name} ({setting.description}) has none; blur "
            f"settings: {', '.join(_with(lambda s: s.blur_rate > 0))}")
    if restore == "deblock" and setting.jpeg_rate == 0:
        raise ValueError(
            f"deblock needs a setting with JPEG compression, but setting "
            f"{setting.name} ({setting.description}) has none; JPEG "
            f"settings: {', '.join(_with(lambda s: s.jpeg_rate > 0))}")
    # Other degradations are allowed (the kernel and quality are still the
    # true ones) but outside the paper's use; the caller may warn.
    return not (setting.noise_rate > 0
                or (restore == "deblur_gt" and setting.jpeg_rate > 0))


def _with(pred):
    return [n for n, s in settings_lib.SETTINGS.items() if pred(s)]


def restore_images(restore, images, params, lam_by_blur=None, workers=1):
    """Restores the degraded images of one chunk.

    Args:
        restore: "deblur_gt" or "deblock".
        images: uint8 `[n, H, W, 3]` degraded images.
        params: their `settings.DegradationParams` (or any object with
            `blur_type` int `[n]` (0 none, 1 disk, 2 motion), `kernel`
            `[n, K, K]` and `jpeg_quality` int `[n]`).
        lam_by_blur: {"disk": lambda, "motion": lambda} for deblur_gt
            (default `deconvolution.default_lambda` of the kernel size).
        workers: scipy.fft threads.

    Returns:
        uint8 `[n, H, W, 3]`.
    """
    out = np.array(images, np.uint8, copy=True)
    if restore == "deblur_gt":
        ksize = np.asarray(params.kernel).shape[-1]
        lams = {name: deconvolution.default_lambda(name, ksize)
                for name in ("disk", "motion")}
        lams.update(lam_by_blur or {})
        blur_type = np.asarray(params.blur_type)
        for code, name in enumerate(settings_lib.BLUR_TYPES):
            if code == 0:
                continue
            sel = np.flatnonzero(blur_type == code)
            if sel.size:
                out[sel] = deconvolution.deblur(
                    out[sel], np.asarray(params.kernel)[sel], lam=lams[name],
                    workers=workers)
    elif restore == "deblock":
        quality = np.asarray(params.jpeg_quality)
        sel = np.flatnonzero(quality > 0)
        if sel.size:
            out[sel] = deblocking.deblock(out[sel], quality[sel])
    else:
        raise ValueError(f"unknown restore {restore!r}")
    return out


def describe(restore, lam_by_blur=None):
    """The restorer and its parameters, for summary.json."""
    if restore == "deblur_gt":
        return {"method": "Krishnan-Fergus non-blind deconvolution "
                          "(hyper-Laplacian prior, alpha = 2/3) with each "
                          "image's true kernel",
                "lambda_by_blur_and_kernel_size": {
                    name: ({"any": lam_by_blur[name]}
                           if name in (lam_by_blur or {}) else
                           {str(k): v for k, v in table.items()})
                    for name, table in deconvolution.LAMBDA_BY_BLUR.items()},
                "beta_schedule": deconvolution.beta_schedule(),
                "pad": "H // 2, reflect"}
    return {"method": "POCS deblocking with the JPEG quantisation "
                      "constraint set (substitute for Pointwise SA-DCT)",
            "sigma": deblocking.DEFAULT_SIGMA, "mu": deblocking.DEFAULT_MU,
            "iters": deblocking.DEFAULT_ITERS,
            "q_max": deblocking.DEFAULT_Q_MAX, "planes": "luma"}
