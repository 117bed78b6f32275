"""Blur kernels and blurring for the BNCR-GAN degradation model.

Everything here follows ``/work/shared/spec/degradations.md`` sections 0, 1,
2, 6 and 7:

* Out-of-focus blur: the anti-aliased disk (pillbox) kernel, equal to MATLAB
  ``fspecial('disk', r)``, computed with an exact closed form for the area of
  each pixel square inside the disk.
* Motion blur: random camera-shake trajectories in the style of Boracchi & Foi
  (2012) and DeblurGAN, restricted to the first ``T`` of the exposure,
  splatted bilinearly onto integer pixels, normalised to unit sum and shifted
  so that the exposure-weighted centroid sits exactly on the centre tap.
* ``kernel_entropy``: entropy in nats of unit-sum kernels (spec section 6).
* ``blur``: true 2-D convolution of every colour channel with one kernel per
  image (or a shared kernel), reflect padding, output of the input size.

Kernels are ``[B, K, K]`` (or ``[K, K]``) float32 with unit sum and their
centre tap at ``(K // 2, K // 2)``; ``K`` is odd. Row index first, column
index second. Images are ``[B, H, W, C]``, normally float32 in [0, 1].

The kernel samplers are numpy code with float64 arithmetic inside; they are
meant for dataset building and tests, not for use inside ``tf.function``.
``identity_kernel``, ``kernel_entropy`` and ``blur`` are TensorFlow ops and
work inside ``tf.function``.
"""

import math

import numpy as np
import tensorflow as tf

# Values of the "anxiety" parameter used by the DeblurGAN driver script; one
# of them is drawn uniformly when the caller does not fix it (spec 2.1).
MOTION_EXPL_CHOICES = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003)

# Number of trajectory samples (DeblurGAN default).
MOTION_ITERS = 2000


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _check_odd_size(size):
    """Returns ``size`` as a python int after checking it is odd and >= 1."""
    if isinstance(size, bool) or int(size) != size:
        raise ValueError(f"Kernel size must be an integer, got {size!r}.")
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(
            f"Kernel size must be a positive odd integer, got {size}.")
    return size


def _as_generator(seed):
    """Returns a numpy Generator for an int seed or passes a Generator on."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ValueError(
        "Expected an int seed or a numpy.random.Generator, got "
        f"{type(seed).__name__}.")


# ---------------------------------------------------------------------------
# Identity and disk kernels
# ---------------------------------------------------------------------------


def identity_kernel(size, batch=None):
    """Returns the identity (delta) kernel.

    Args:
        size: Odd python int K, the kernel width and height.
        batch: None for a single kernel, or the batch size B (python int or a
            scalar int tensor, which may be dynamic inside ``tf.function``).

    Returns:
        tf.float32 tensor ``[K, K]`` (or ``[B, K, K]``) that is 1 at the centre
        tap ``(K // 2, K // 2)`` and 0 elsewhere.

    Raises:
        ValueError: If ``size`` is not a positive odd integer.
    """
    size = _check_odd_size(size)
    flat = tf.one_hot((size * size) // 2, size * size, dtype=tf.float32)
    kernel = tf.reshape(flat, [size, size])
    if batch is None:
        return kernel
    return tf.tile(kernel[tf.newaxis], tf.stack([batch, 1, 1]))


def disk_support(radius):
    """Returns the side of the smallest odd square holding a disk kernel.

    n(r) = 2 * ceil(r - 1/2) + 1 (spec section 1): every pixel square the disk
    of radius r (centred on the centre tap) overlaps with positive area lies
    in the central n(r) x n(r) taps. r = 0.5 gives 1 (identity); r in
    (0.5, 1.5] gives 3, and so on.

    Args:
        radius: Python float or 0-d value, the disk radius in pixels (> 0).

    Returns:
        Python int, odd and >= 1.

    Raises:
        ValueError: If ``radius`` is not positive.
    """
    r = float(np.asarray(radius, dtype=np.float64))
    if not r > 0.0:
        raise ValueError(f"Disk radius must be positive, got {r}.")
    return 2 * int(math.ceil(r - 0.5)) + 1


def _quadrant_area(a, b, r):
    """Area of {0 <= u <= a, 0 <= v <= b, u^2 + v^2 <= r^2} for a, b >= 0.

    All arguments are float64 arrays broadcast against each other.
    """
    a_c = np.minimum(a, r)
    b_c = np.minimum(b, r)
    # Column where the arc crosses the line v = b_c.
    u_cross = np.sqrt(np.maximum(r * r - b_c * b_c, 0.0))
    c = np.minimum(u_cross, a_c)

    def antiderivative(u):
        # F(u) = integral_0^u sqrt(r^2 - t^2) dt.
        root = np.sqrt(np.maximum(r * r - u * u, 0.0))
        return 0.5 * (u * root + r * r * np.arcsin(np.clip(u / r, -1.0, 1.0)))

    return b_c * c + antiderivative(a_c) - antiderivative(c)


def _signed_area(x, y, r):
    """Signed extension S(x, y) = sign(x) sign(y) Q(|x|, |y|)."""
    return np.sign(x) * np.sign(y) * _quadrant_area(np.abs(x), np.abs(y), r)


def disk_kernel(radius, size):
    """Returns anti-aliased disk (pillbox) kernels, MATLAB fspecial('disk').

    Tap (i, j) is the area of the unit pixel square centred at offset
    (i - K//2, j - K//2) that lies inside the disk of the given radius centred
    on the centre tap, computed exactly in closed form (spec section 1), then
    divided by the kernel sum (pi r^2). Taps outside the support n(r) are 0,
    which is the same as zero-padding the n(r) x n(r) kernel symmetrically.

    Args:
        radius: Disk radius in pixels, > 0. A python float, numpy scalar or
            0-d tensor gives one kernel; a 1-D array, list or tensor of length
            B gives B kernels.
        size: Odd python int K, the output window size; must be at least
            ``disk_support(radius)`` for every radius.

    Returns:
        tf.float32 tensor ``[K, K]`` for a scalar radius or ``[B, K, K]`` for a
        1-D radius; each kernel is non-negative with unit sum.

    Raises:
        ValueError: If a radius is not positive or not finite, if ``radius``
            has more than one dimension, if ``size`` is not a positive odd
            integer, or if the disk support exceeds ``size``.
    """
    size = _check_odd_size(size)
    r = np.asarray(radius, dtype=np.float64)
    if r.ndim > 1:
        raise ValueError(
            f"radius must be a scalar or a 1-D array, got shape {r.shape}.")
    scalar = r.ndim == 0
    r = np.atleast_1d(r)
    if not np.all(np.isfinite(r)) or np.any(r <= 0.0):
        raise ValueError(
            f"Every disk radius must be positive and finite, got {r.tolist()}.")
    support = 2 * np.ceil(r - 0.5).astype(np.int64) + 1
    if np.any(support > size):
        worst = float(r[np.argmax(support)])
        raise ValueError(
            f"A disk of radius {worst} needs a {int(support.max())}x"
            f"{int(support.max())} support, larger than the kernel size "
            f"{size}.")
    half = size // 2
    edges = np.arange(-half - 0.5, half + 1.0, 1.0)  # [K + 1]
    rr = r[:, None, None]
    # corners[b, i, j] = S(x = edges[j], y = edges[i]).
    corners = _signed_area(edges[None, None, :], edges[None, :, None], rr)
    areas = (corners[:, 1:, 1:] - corners[:, :-1, 1:]
             - corners[:, 1:, :-1] + corners[:, :-1, :-1])
    areas = np.maximum(areas, 0.0)
    kernels = areas / areas.sum(axis=(1, 2), keepdims=True)
    kernels = tf.constant(kernels, dtype=tf.float32)
    return kernels[0] if scalar else kernels


# ---------------------------------------------------------------------------
# Motion kernels
# ---------------------------------------------------------------------------


def _draw_motion_randomness(rng, iters, expl):
    """Draws everything one trajectory needs from its own generator.

    The draw order is fixed and is part of the public contract (see
    ``sample_motion_kernels``).

    Returns:
        Dict of numpy values for one trajectory.
    """
    if expl is None:
        expl = MOTION_EXPL_CHOICES[int(rng.integers(len(MOTION_EXPL_CHOICES)))]
    expl = float(expl)
    if not (np.isfinite(expl) and expl >= 0.0):
        raise ValueError(f"expl must be finite and >= 0, got {expl}.")
    scalars = rng.random(4)
    n = iters - 1
    return {
        "expl": expl,
        "centripetal": 0.7 * scalars[0],
        "p_big": 0.2 * scalars[1],
        "g_shake": 10.0 * scalars[2],
        "theta0": 2.0 * np.pi * scalars[3],
        "u_big": rng.random(n),
        "u_angle": rng.random(n),
        "normals": rng.standard_normal((n, 2)),
    }


def _integrate_trajectories(lengths, draws, iters):
    """Integrates B camera-shake trajectories at once.

    Args:
        lengths: float64 numpy ``[B]``, total path lengths L in pixels.
        draws: List of B dicts from ``_draw_motion_randomness``.
        iters: Number of samples per trajectory.

    Returns:
        complex128 numpy ``[B, iters]``; real part = column, imaginary part =
        row, relative to the start point x_0 = 0.
    """
    batch = len(draws)
    step = lengths / (iters - 1)  # [B]

    def stack(key):
        return np.array([d[key] for d in draws], dtype=np.float64)

    expl = stack("expl")
    centripetal = stack("centripetal")
    p_big = stack("p_big")
    g_shake = stack("g_shake")
    theta0 = stack("theta0")
    u_big = np.stack([d["u_big"] for d in draws], axis=1)  # [iters-1, B]
    u_angle = np.stack([d["u_angle"] for d in draws], axis=1)
    normals = np.stack([d["normals"] for d in draws], axis=1)  # [n, B, 2]

    # Big shake at step t: jump = 2 v e^{i(pi + U - 1/2)}, so the velocity
    # update is v <- mult_t * v + ... with mult_t = 1 + 2 e^{i(...)}.
    is_big = u_big < (p_big * expl)[None, :]
    rotation = np.exp(1j * (np.pi + u_angle - 0.5))
    mult = np.where(is_big, 1.0 + 2.0 * rotation, 1.0 + 0.0j)
    gauss = normals[..., 0] + 1j * normals[..., 1]
    additive = (expl * g_shake * step)[None, :] * gauss  # [n, B]
    pull = expl * centripetal * step  # [B]

    v = np.exp(1j * theta0)
    v = np.where(expl > 0.0, expl * v, step * v)
    x = np.zeros(batch, dtype=np.complex128)
    path = np.empty((iters, batch), dtype=np.complex128)
    path[0] = x
    tiny = np.finfo(np.float64).tiny
    for t in range(iters - 1):
        v = mult[t] * v + additive[t] - pull * x
        v = v * (step / np.maximum(np.abs(v), tiny))
        x = x + v
        path[t + 1] = x
    return path.T.copy()


def motion_trajectory(length, rng, iters=MOTION_ITERS, expl=None):
    """Samples one camera-shake trajectory (spec section 2.1).

    Draws from ``rng`` in the order documented in ``sample_motion_kernels``,
    so ``sample_motion_kernels`` with the same generator state rasterises
    exactly this path.

    Args:
        length: Total path length L in pixels (> 0); every step is L/(iters-1)
            long.
        rng: numpy.random.Generator (or an int seed) used for all draws.
        iters: Number of samples, >= 2.
        expl: The "anxiety" parameter; None draws it uniformly from
            ``MOTION_EXPL_CHOICES``.

    Returns:
        Tuple ``(path, expl)``: ``path`` is complex128 numpy ``[iters]`` with
        ``path[0] = 0``, real part = column offset and imaginary part = row
        offset in pixels; ``expl`` is the python float used.

    Raises:
        ValueError: On a non-positive length, iters < 2 or a negative expl.
    """
    rng = _as_generator(rng)
    iters = int(iters)
    if iters < 2:
        raise ValueError(f"iters must be at least 2, got {iters}.")
    length = float(length)
    if not (np.isfinite(length) and length > 0.0):
        raise ValueError(f"Trajectory length must be positive, got {length}.")
    draw = _draw_motion_randomness(rng, iters, expl)
    path = _integrate_trajectories(np.array([length]), [draw], iters)
    return path[0], draw["expl"]


def _broadcast_param(value, batch, name):
    """Broadcasts a scalar or length-B sequence to float64 numpy ``[B]``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(batch, float(arr))
    if arr.shape != (batch,):
        raise ValueError(
            f"{name} must be a scalar or have length {batch} (one per "
            f"generator), got shape {arr.shape}.")
    return arr


def sample_motion_kernels(lengths, exposures, size, rngs, expls=None,
                          iters=MOTION_ITERS):
    """Samples B motion-blur kernels, one numpy generator per kernel.

    Per kernel i (spec sections 2.1 and 2.2):

    1. Draw from ``rngs[i]`` only, in this fixed order:
       a. if expl_i is None: one ``integers(6)`` index into
          ``MOTION_EXPL_CHOICES``;
       b. ``random(4)``: centripetal = 0.7 u0, p_big = 0.2 u1,
          g_shake = 10 u2, theta0 = 2 pi u3;
       c. ``random(iters - 1)``: big-shake test for each step (a big shake
          happens where u < p_big * expl);
       d. ``random(iters - 1)``: jump-angle uniform U for each step (used
          only where a big shake happens; jump = 2 v e^{i(pi + U - 1/2)});
       e. ``standard_normal((iters - 1, 2))``: Gaussian term per step, real
          part in column 0.
    2. Integrate the trajectory with v_0 = expl e^{i theta0} (step e^{i theta0}
       if expl = 0), v <- v + jump + expl (g_shake g - centripetal x_t) step,
       v <- step v / |v|, x_{t+1} = x_t + v, step = L / (iters - 1).
    3. Give samples t = 1 .. floor(T iters) weight 1 (at most iters - 1;
       sample 0 always has weight 0), all others weight 0.
    4. Shift so that the weighted centroid is at the centre tap (K//2, K//2),
       splat each weighted sample bilinearly onto its 4 neighbouring pixels
       and divide by the sum. The first moment of each kernel therefore equals
       the centre tap up to rounding.

    The trajectory loop is vectorised across the batch; kernel i depends only
    on ``rngs[i]``, ``lengths[i]``, ``exposures[i]`` and ``expls[i]``.

    Args:
        lengths: Path length L in pixels (> 0); scalar or sequence ``[B]``.
        exposures: Exposure fraction T in (0, 1] (paper: 0.1, 0.5, 1);
            scalar or sequence ``[B]``. floor(T iters) must be >= 1.
        size: Odd python int K, the kernel window size.
        rngs: Sequence of B numpy.random.Generator (int seeds are accepted
            and turned into ``np.random.default_rng(seed)``).
        expls: None (draw every expl), a scalar, or a sequence ``[B]`` whose
            entries are floats or None (None draws that kernel's expl).
        iters: Number of trajectory samples, >= 2.

    Returns:
        Tuple ``(kernels, expls)``: ``kernels`` is float32 numpy
        ``[B, K, K]``, non-negative, unit sum, centroid on the centre tap;
        ``expls`` is float64 numpy ``[B]``, the expl used per kernel.

    Raises:
        ValueError: On bad parameters, or if some kernel's mass would fall
            outside the K x K window (the message names the length, exposure
            and size).
    """
    size = _check_odd_size(size)
    iters = int(iters)
    if iters < 2:
        raise ValueError(f"iters must be at least 2, got {iters}.")
    rngs = [_as_generator(g) for g in rngs]
    batch = len(rngs)
    if batch == 0:
        raise ValueError("rngs must hold at least one generator.")
    lengths = _broadcast_param(lengths, batch, "lengths")
    exposures = _broadcast_param(exposures, batch, "exposures")
    if not np.all(np.isfinite(lengths) & (lengths > 0.0)):
        raise ValueError(
            f"Motion lengths must be positive, got {lengths.tolist()}.")
    if not np.all((exposures > 0.0) & (exposures <= 1.0)):
        raise ValueError(
            f"Exposures must lie in (0, 1], got {exposures.tolist()}.")
    if expls is None:
        expl_list = [None] * batch
    elif np.ndim(expls) == 0:
        expl_list = [expls] * batch
    else:
        expl_list = list(expls)
        if len(expl_list) != batch:
            raise ValueError(
                f"expls must have length {batch}, got {len(expl_list)}.")

    draws = [_draw_motion_randomness(g, iters, e)
             for g, e in zip(rngs, expl_list)]
    paths = _integrate_trajectories(lengths, draws, iters)  # [B, iters]

    # Exposure weights: samples 1 .. n_exp get weight 1.
    n_exp = np.minimum(np.floor(exposures * iters + 1e-9).astype(np.int64),
                       iters - 1)
    if np.any(n_exp < 1):
        raise ValueError(
            f"Exposure fraction too small for iters={iters}: "
            f"{exposures[n_exp < 1].tolist()}.")
    t_idx = np.arange(iters)[None, :]
    weights = ((t_idx >= 1) & (t_idx <= n_exp[:, None])).astype(np.float64)

    centroid = (weights * paths).sum(axis=1) / weights.sum(axis=1)  # [B]
    half = size // 2
    pos = paths - centroid[:, None]
    cols = pos.real + half
    rows = pos.imag + half
    c0 = np.floor(cols)
    r0 = np.floor(rows)
    fc = cols - c0
    fr = rows - r0
    c0 = c0.astype(np.int64)
    r0 = r0.astype(np.int64)

    flat_parts = []
    weight_parts = []
    lost = np.zeros(batch, dtype=np.float64)
    b_idx = np.broadcast_to(np.arange(batch)[:, None], paths.shape)
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            rr = r0 + dr
            cc = c0 + dc
            w = weights * wr * wc
            inside = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
            lost += np.where(inside, 0.0, w).sum(axis=1)
            keep = inside & (w > 0.0)
            flat_parts.append(
                (b_idx[keep] * size + rr[keep]) * size + cc[keep])
            weight_parts.append(w[keep])
    if np.any(lost > 0.0):
        i = int(np.argmax(lost))
        raise ValueError(
            f"Motion kernel {i} (length {lengths[i]}, exposure "
            f"{exposures[i]}) does not fit in a {size}x{size} window: "
            f"{lost[i] / weights[i].sum():.3g} of its mass falls outside. "
            "Use a larger kernel size.")
    acc = np.bincount(np.concatenate(flat_parts),
                      weights=np.concatenate(weight_parts),
                      minlength=batch * size * size)
    kernels = acc.reshape(batch, size, size)
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    used = np.array([d["expl"] for d in draws], dtype=np.float64)
    return kernels.astype(np.float32), used


def motion_kernel(length, exposure, size, seed, expl=None,
                  iters=MOTION_ITERS):
    """Samples one motion-blur kernel (wrapper of ``sample_motion_kernels``).

    Args:
        length: Path length L in pixels (> 0).
        exposure: Exposure fraction T in (0, 1].
        size: Odd python int K, the kernel window size.
        seed: Python int (``np.random.default_rng(seed)``) or a
            numpy.random.Generator, which is advanced.
        expl: The "anxiety" parameter, or None to draw it.
        iters: Number of trajectory samples.

    Returns:
        tf.float32 tensor ``[K, K]``, non-negative, unit sum, with its
        exposure-weighted centroid on the centre tap.

    Raises:
        ValueError: As ``sample_motion_kernels``.
    """
    kernels, _ = sample_motion_kernels(
        length, exposure, size, [_as_generator(seed)], expls=[expl],
        iters=iters)
    return tf.constant(kernels[0], dtype=tf.float32)


# ---------------------------------------------------------------------------
# Entropy and blurring (TensorFlow)
# ---------------------------------------------------------------------------


def kernel_entropy(kernels):
    """Entropy in nats of unit-sum kernels, H(k) = -sum k ln k, 0 ln 0 = 0.

    Computed as -sum k * ln(max(k, tiny)), which is exact for k > tiny, gives
    0 for zero taps and has a finite gradient everywhere. The kernels are
    not renormalised here; pass unit-sum kernels.

    Args:
        kernels: Tensor or array ``[..., K, K]``, non-negative, each kernel
            summing to 1. float64 stays float64; any other float dtype is
            computed in float32.

    Returns:
        Tensor ``[...]`` (float32, or float64 for float64 input), >= 0. The
        identity kernel gives exactly 0; a uniform n x n kernel gives
        ln(n^2).
    """
    k = tf.convert_to_tensor(kernels)
    if k.dtype != tf.float64:
        k = tf.cast(k, tf.float32)
    tiny = np.finfo(k.dtype.as_numpy_dtype).tiny
    terms = k * tf.math.log(tf.maximum(k, tiny))
    return -tf.reduce_sum(terms, axis=[-2, -1])


def blur(images, kernels):
    """Blurs each image with its kernel: true convolution, reflect borders.

    Every channel of image b is convolved with the same kernel (flipped, i.e.
    a true convolution, as ``scipy.ndimage.convolve``) after reflect padding
    by K//2 (``tf.pad`` mode REFLECT = numpy 'reflect' = scipy 'mirror'),
    so the output has the input size. Per-image kernels are applied with one
    depthwise convolution by folding the batch into the channels (spec
    section 7). Works inside ``tf.function`` with a dynamic batch size and is
    differentiable with respect to both arguments.

    Args:
        images: ``[B, H, W, C]`` float tensor (float32, float16 or bfloat16;
            normally in [0, 1]). Computed in float32.
        kernels: ``[B, K, K]`` (one kernel per image) or ``[K, K]`` (shared)
            float tensor; K must be odd and statically known, and
            K // 2 < H, W.

    Returns:
        ``[B, H, W, C]`` float32 tensor. No clipping is applied.

    Raises:
        ValueError: On wrong ranks, an even or unknown K, a non-square kernel,
            K // 2 >= H or W, or mismatching static batch sizes.
    """
    x = tf.convert_to_tensor(images)
    k = tf.convert_to_tensor(kernels)
    if not (x.dtype.is_floating and k.dtype.is_floating):
        raise ValueError(
            f"blur expects float images and kernels, got {x.dtype.name} and "
            f"{k.dtype.name}.")
    x = tf.cast(x, tf.float32)
    k = tf.cast(k, tf.float32)
    if x.shape.rank != 4:
        raise ValueError(
            f"images must be [B, H, W, C], got shape {x.shape}.")
    if k.shape.rank not in (2, 3):
        raise ValueError(
            f"kernels must be [B, K, K] or [K, K], got shape {k.shape}.")
    ksize, ksize_w = k.shape[-2], k.shape[-1]
    if ksize is None or ksize_w is None:
        raise ValueError("The kernel size K must be statically known.")
    if ksize != ksize_w or ksize % 2 == 0:
        raise ValueError(
            f"Kernels must be square with an odd size, got {ksize}x{ksize_w}.")
    pad = ksize // 2
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    for name, dim in (("height", height), ("width", width)):
        if dim is not None and pad >= dim:
            raise ValueError(
                f"Reflect padding by K//2 = {pad} needs image {name} > {pad}, "
                f"got {dim}.")
    if channels is None:
        raise ValueError("The number of channels C must be statically known.")
    paddings = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    flipped = tf.reverse(k, axis=[-2, -1])

    if k.shape.rank == 2:
        filt = tf.tile(flipped[:, :, tf.newaxis, tf.newaxis],
                       [1, 1, channels, 1])
        padded = tf.pad(x, paddings, mode="REFLECT")
        return tf.nn.depthwise_conv2d(padded, filt, [1, 1, 1, 1], "VALID")

    if (x.shape[0] is not None and k.shape[0] is not None
            and x.shape[0] != k.shape[0]):
        raise ValueError(
            f"Got {x.shape[0]} images but {k.shape[0]} kernels; pass one "
            "kernel per image or a single [K, K] kernel.")
    dyn = tf.shape(x)
    batch, h_dyn, w_dyn = dyn[0], dyn[1], dyn[2]
    # [B, H, W, C] -> [1, H, W, B*C]; folded channel index = b*C + c.
    folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]),
                        tf.stack([1, h_dyn, w_dyn, batch * channels]))
    folded = tf.pad(folded, paddings, mode="REFLECT")
    # [B, K, K] -> [K, K, B, C] -> [K, K, B*C, 1], same channel order.
    filt = tf.tile(tf.transpose(flipped, [1, 2, 0])[..., tf.newaxis],
                   [1, 1, 1, channels])
    filt = tf.reshape(filt, tf.stack([ksize, ksize, batch * channels, 1]))
    out = tf.nn.depthwise_conv2d(folded, filt, [1, 1, 1, 1], "VALID")
    out = tf.reshape(out, tf.stack([h_dyn, w_dyn, batch, channels]))
    return tf.transpose(out, [2, 0, 1, 3])
