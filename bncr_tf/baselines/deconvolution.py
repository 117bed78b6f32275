"""Non-blind deconvolution of Krishnan & Fergus (NIPS 2009), batched.

Reference [41] of the paper: D. Krishnan and R. Fergus, "Fast image
deconvolution using hyper-Laplacian priors", NIPS 2009. The paper's
Deblur+GAN† trains a plain GAN on images deblurred by it with each image's
ground-truth kernel k.

Objective (their eq. 1), per colour channel of image b, x and y in [0, 1]:

    min_x  lam/2 ||k * x - y||^2 + sum_i sum_{j=1,2} |(f_j * x)_i|^alpha

with f_1 = [1, -1] (horizontal) and f_2 = [1, -1]^T (vertical) and
alpha = 2/3. Half-quadratic splitting (their eq. 2) adds auxiliary w_j:

    min_{x, w}  lam/2 ||k * x - y||^2
                + beta/2 sum_j ||f_j * x - w_j||^2 + sum_j |w_j|^alpha

and alternates, for beta = beta_0, beta_0 * rate, ... <= beta_max (their
continuation: 1, x 2 sqrt 2, up to 256; one inner iteration each):

* w-step (their eq. 5), per pixel with v = (f_j * x)_i:
  w = argmin |w|^alpha + beta/2 (w - v)^2 (`w_step`).
* x-step (their eq. 4), an FFT solve under circular boundaries:

      x = F^-1[ (conj(F(f_1)) F(w_1) + conj(F(f_2)) F(w_2)
                 + (lam/beta) conj(F(k)) F(y))
                / (|F(f_1)|^2 + |F(f_2)|^2 + (lam/beta) |F(k)|^2) ].

The w-step for alpha = 2/3 (our derivation; K&F solve the same quartic
analytically): for v > 0 the minimiser lies in (0, v) and satisfies
(2/3) w^(-1/3) = beta (v - w). With u = w^(1/3) this is the depressed
quartic u^4 - v u + c = 0, c = 2 / (3 beta). Ferrari's method writes it as
(u^2 + m)^2 = 2 m u^2 + v u + m^2 - c, whose right side is a perfect square
when m solves the resolvent cubic m^3 - c m - v^2/8 = 0 (its largest root is
positive; Cardano when it has one real root, the trigonometric form when it
has three). With s = sqrt(2 m) the larger real root is
u = (s + sqrt(2 v / s - s^2)) / 2 (the local minimum; the smaller root is
the local maximum of the 1-D objective). No real root means w = 0; otherwise
w = u^3 is kept only if its objective is below that of w = 0. Negative v
follow by symmetry, w(-v) = -w(v). `tests/test_baselines.py` checks this
against a brute-force grid search. alpha = 2 has the closed form
w = beta v / (beta + 2), used by the test of the x-step.

Kernels follow docs/design.md ([B, K, K], unit sum, centre tap at
(K//2, K//2), applied as a true convolution as `degradations.kernels.blur`
does). The optical transfer function is the kernel zero-padded to the FFT
size and circularly shifted so that its centre tap is at (0, 0) (MATLAB's
psf2otf); an off-by-one in this shift displaces the result by a pixel
(measured on the tuning patches of setting B: 23.6 dB instead of 42.6 dB,
below the blurred input's 34.7 dB).
Borders: `deblur` reflect-pads y by `pad` pixels (the blur itself used
reflect padding) before the circular solve and crops afterwards. [choice]
The default pad is half the image size (FFT size 2H): on the tuning
patches of setting B (32 px, lambda = 1e4), pads of 0, 7, 8, 12, 16 and
24 px gave 24.3, 35.3, 36.3, 40.1, 42.6 and 41.8 dB (blurred: 34.7 dB;
`tools/measure_restoration.py --tune`, docs/results.md).
"""

import functools

import numpy as np
import scipy.fft

ALPHA = 2.0 / 3.0
BETA_0 = 1.0
BETA_RATE = 2.0 * np.sqrt(2.0)
BETA_MAX = 256.0
# [choice] lambda per blur type and kernel size K (7 at 32 px, 11 at 128 px),
# measured on tuning patches (docs/results.md, "Restoration baselines"):
# tools/measure_restoration.py --tune.
LAMBDA_BY_BLUR = {"disk": {7: 1e4, 11: 5e4}, "motion": {7: 2e4, 11: 2e4}}
DEFAULT_LAMBDA = LAMBDA_BY_BLUR["disk"][7]


def default_lambda(blur_type, kernel_size):
    """The [choice] lambda of a blur type ("disk" or "motion") for K x K
    kernels (the measured K nearest to `kernel_size`)."""
    table = LAMBDA_BY_BLUR[blur_type]
    return table[min(table, key=lambda k: (abs(k - kernel_size), k))]


def beta_schedule(beta_0=BETA_0, rate=BETA_RATE, beta_max=BETA_MAX):
    """K&F's continuation: beta_0, beta_0 * rate, ... while <= beta_max."""
    if beta_0 <= 0 or rate <= 1 or beta_max < beta_0:
        raise ValueError("need beta_0 > 0, rate > 1 and beta_max >= beta_0")
    betas = []
    beta = float(beta_0)
    while beta <= beta_max * (1 + 1e-9):
        betas.append(beta)
        beta *= rate
    return betas


def _w_step_two_thirds(v, beta):
    """argmin_w |w|^(2/3) + beta/2 (w - v)^2, elementwise (module docs)."""
    a = np.abs(v).astype(np.float64)
    c = 2.0 / (3.0 * beta)
    # Resolvent cubic m^3 + p m + q = 0 with p = -c, q = -a^2 / 8.
    p = -c
    q = -a * a / 8.0
    disc = q * q / 4.0 + p ** 3 / 27.0
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.sqrt(np.maximum(disc, 0.0))
        m_one = np.cbrt(-q / 2.0 + sq) + np.cbrt(-q / 2.0 - sq)
        # Three real roots: the largest is k = 0 of the trigonometric form.
        r = 2.0 * np.sqrt(-p / 3.0)
        arg = np.clip((3.0 * q / (2.0 * p)) * np.sqrt(-3.0 / p), -1.0, 1.0)
        m_three = r * np.cos(np.arccos(arg) / 3.0)
        m = np.where(disc > 0, m_one, m_three)
        s = np.sqrt(np.maximum(2.0 * m, 1e-300))
        inner = 2.0 * a / s - s * s
        u = 0.5 * (s + np.sqrt(np.maximum(inner, 0.0)))
    w = u ** 3
    ok = (inner >= 0) & (w <= a)
    # Keep w only if it beats w = 0: |w|^a + beta/2 (w - v)^2 < beta/2 v^2.
    better = (np.cbrt(w * w) + 0.5 * beta * (w - a) ** 2
              < 0.5 * beta * a * a)
    w = np.where(ok & better, w, 0.0)
    return (np.sign(v) * w).astype(v.dtype, copy=False)


@functools.lru_cache(maxsize=64)
def _zero_threshold(beta):
    """Largest |v| (a little below it) whose 2/3-w-step is 0, by bisection
    of `_w_step_two_thirds` (which is 0 exactly up to a threshold)."""
    lo, hi = 0.0, 1.0
    while _w_step_two_thirds(np.array([hi]), beta)[0] == 0.0:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _w_step_two_thirds(np.array([mid]), beta)[0] == 0.0:
            lo = mid
        else:
            hi = mid
    return lo * (1.0 - 1e-6)


def w_step(v, beta, alpha=ALPHA):
    """The w-step of HQS: argmin_w |w|^alpha + beta/2 (w - v)^2, elementwise.

    Args:
        v: float array, the current gradients f_j * x.
        beta: the HQS weight (> 0).
        alpha: 2/3 (analytic quartic root, module docs) or 2 (closed form
            w = beta v / (beta + 2)). Other values are not supported.

    Returns:
        Array like v.
    """
    if alpha == 2.0:
        return v * (beta / (beta + 2.0))
    if abs(alpha - ALPHA) < 1e-12:
        # Below the threshold the minimiser is 0; solve the quartic only
        # where |v| exceeds it (most gradients of natural images do not).
        v = np.asarray(v)
        big = np.abs(v) > _zero_threshold(float(beta))
        out = np.zeros_like(v)
        out[big] = _w_step_two_thirds(v[big], beta)
        return out
    raise ValueError(f"alpha must be 2/3 or 2, got {alpha}")


def psf2otf(kernels, shape):
    """Transfer functions of centred kernels for a circular FFT of `shape`.

    Args:
        kernels: float `[B, K, K]`, centre tap at (K//2, K//2).
        shape: (H, W) of the FFT, each >= K.

    Returns:
        complex `[B, H, W//2 + 1]` (rfft2 layout): the kernel zero-padded to
        `shape` and rolled by -(K//2) on both axes, so that its centre tap
        sits at (0, 0), then transformed.
    """
    kernels = np.asarray(kernels)
    ksize = kernels.shape[-1]
    height, width = shape
    padded = np.zeros(kernels.shape[:-2] + (height, width), kernels.dtype)
    padded[..., :ksize, :ksize] = kernels
    padded = np.roll(padded, (-(ksize // 2), -(ksize // 2)), axis=(-2, -1))
    return scipy.fft.rfft2(padded)


def _difference_otfs(shape, dtype):
    """rfft2 of f_1 = [1, -1] (horizontal) and f_2 = [1, -1]^T, as filters
    (f * x)_i = x_i - x_{i-1} (circular)."""
    height, width = shape
    f1 = np.zeros((height, width), dtype)
    f1[0, 0], f1[0, 1] = 1.0, -1.0
    f2 = np.zeros((height, width), dtype)
    f2[0, 0], f2[1, 0] = 1.0, -1.0
    return scipy.fft.rfft2(f1), scipy.fft.rfft2(f2)


def _diff(x, axis):
    """(f * x)_i = x_i - x_{i-1} with circular boundary along `axis`."""
    return x - np.roll(x, 1, axis=axis)


def deconvolve_circular(y, kernels, lam=DEFAULT_LAMBDA, alpha=ALPHA,
                        betas=None, inner_iters=1, workers=1):
    """Krishnan-Fergus HQS with circular boundaries (module docs).

    Args:
        y: float `[B, H, W]` or `[B, H, W, C]` blurred planes (any range;
            lam assumes [0, 1]).
        kernels: float `[B, K, K]`, one kernel per image (shared by its
            channels), K <= min(H, W).
        lam: data weight lambda of eq. 1.
        alpha: exponent of the gradient prior (2/3 or 2).
        betas: HQS weights in order (default `beta_schedule()`).
        inner_iters: (w, x) iterations per beta (K&F use 1).
        workers: threads of scipy.fft.

    Returns:
        float `[B, H, W(, C)]` like y, the estimate of x (not clipped).
    """
    y = np.asarray(y)
    dtype = np.float64 if y.dtype == np.float64 else np.float32
    channels_last = y.ndim == 4
    planes = np.moveaxis(y, -1, 1) if channels_last else y[:, None]
    planes = planes.astype(dtype, copy=False)  # [B, C, H, W]
    shape = planes.shape[-2:]
    betas = beta_schedule() if betas is None else list(betas)
    otf_k = psf2otf(np.asarray(kernels, dtype), shape)[:, None]
    otf_1, otf_2 = _difference_otfs(shape, dtype)
    fy = scipy.fft.rfft2(planes, workers=workers)
    ky = np.conj(otf_k) * fy
    kk = (otf_k * np.conj(otf_k)).real
    dd = (otf_1 * np.conj(otf_1)).real + (otf_2 * np.conj(otf_2)).real
    x = planes
    for beta in betas:
        ratio = lam / beta
        denom = dd + ratio * kk
        numer_y = ratio * ky
        for _ in range(inner_iters):
            w1 = w_step(_diff(x, -1), beta, alpha)
            w2 = w_step(_diff(x, -2), beta, alpha)
            fw = (np.conj(otf_1) * scipy.fft.rfft2(w1, workers=workers)
                  + np.conj(otf_2) * scipy.fft.rfft2(w2, workers=workers))
            x = scipy.fft.irfft2((fw + numer_y) / denom, s=shape,
                                 workers=workers).astype(dtype, copy=False)
    return np.moveaxis(x, 1, -1) if channels_last else x[:, 0]


def deblur(images, kernels, lam=DEFAULT_LAMBDA, pad=None, alpha=ALPHA,
           workers=1):
    """Deblurs uint8 images with their true kernels (Deblur+GAN†).

    Args:
        images: uint8 `[B, H, W, 3]` blurred images (as the dataset builder
            writes them).
        kernels: float `[B, K, K]`, each image's ground-truth kernel (identity
            kernels give back the image up to the prior's smoothing; callers
            skip unblurred images).
        lam: data weight (`DEFAULT_LAMBDA` is the [choice] measured in
            docs/results.md).
        pad: border in pixels reflected on each side before the circular
            solve (default H // 2, [choice] in the module docs); 0 =
            circular boundaries.
        alpha: prior exponent (2/3 as K&F).
        workers: threads of scipy.fft.

    Returns:
        uint8 `[B, H, W, 3]`: the estimate, clipped to [0, 1] and rounded.
    """
    images = np.asarray(images)
    kernels = np.asarray(kernels, np.float32)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [B, H, W, C], got "
                         f"{images.dtype} {images.shape}")
    if kernels.ndim != 3 or kernels.shape[0] != images.shape[0]:
        raise ValueError(f"kernels must be [B, K, K] with B = "
                         f"{images.shape[0]}, got {kernels.shape}")
    height, width = images.shape[1:3]
    pad = min(height, width) // 2 if pad is None else int(pad)
    if pad >= min(height, width):
        raise ValueError(f"pad {pad} must be < image size {height}x{width}")
    y = images.astype(np.float32) / 255.0
    if pad:
        y = np.pad(y, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                   mode="reflect")
    x = deconvolve_circular(y, kernels, lam=lam, alpha=alpha,
                            workers=workers)
    x = x[:, pad:pad + height, pad:pad + width]
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
