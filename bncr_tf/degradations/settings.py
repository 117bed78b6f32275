"""Degradation settings (A)-(Q) of BNCR-GAN and their reproducible sampling.

Two users:

* the data side (`tools/make_degraded_dataset.py`, via
  `bncr_tf.degradations.builder`): `sample_params` draws the degradation of
  each image of a static data set, `apply_params` applies it (spec
  `degradations.md` section 8);
* the generator side (the AmbientGAN baseline, which simulates the true
  degradation of a setting on generated images): `kernel_bank` and
  `sample_degradation_tf`, stateless TF code that runs inside
  `tf.function`; the sampled degradation is applied by the TRUE mode of
  the stages in `bncr_tf.stages` (through `synthesis.degrade`).

Data-side randomness (spec section 0). Every draw for image `i` of a set of
`N` images comes from its own stream

    numpy.random.Generator(PCG64(SeedSequence([seed, setting_id, stage, i])))

with `stage` one of `STAGES` (name and id, then the draws in order):

* `select_blur` (0), `select_noise` (3), `select_jpeg` (5): subset
  permutations (see below), no per-image draws;
* `blur_type` (1), mixed settings only: `random()`, disk iff < `p_disk`;
* `blur_params` (2): disk: `uniform(r_lo, r_hi)`; motion: `integers(3)`
  picks T from `motion_exposures`, then `kernels.sample_motion_kernels`
  continues on the same generator (expl from `kernels.MOTION_EXPL_CHOICES`,
  then the trajectory);
* `noise` (4): `noise.camera_noise_levels(rng)` (uniform, then normal),
  then `standard_normal((H, W, 3), dtype=float32)` = eps;
* `jpeg_q` (6): `integers(lo, hi + 1)` (uniform integer, inclusive).

A degradation with rate 1 applies to every image. With rate `p` in (0, 1),
exactly `floor(p * N + 1/2)` images are selected: the first ones of
`Generator(PCG64(SeedSequence([seed, setting_id, stage]))).permutation(N)`
for the stage's `select_*` id. Blur, noise and JPEG use different stage ids,
so in (O)-(Q) their subsets are independent, as the paper requires.

Consequently the parameters of image `i` depend only on
`(seed, setting, N, i)` (N matters only for partial settings, through the
subsets), never on processing order, chunking or worker count. Pixels:
`apply_params` treats each image on its own (its own kernel in one
depthwise convolution whose channels are independent, element-wise noise,
per-image JPEG), so a degraded image depends only on its clean pixels and
its parameters, not on the batch it was processed in. Floating-point
kernels could in principle vectorise differently for other batch sizes;
this was checked to be bit-exact (tests build with chunk sizes 37, 50, 64,
128 and 300, and compare per-image with batched `apply_params`, byte for
byte). For the strongest guarantee across machines and library versions,
the builder calls `sample_params` / `apply_params` only on fixed
index-aligned chunks [k c, (k + 1) c) (default c = 256): keep
`--chunk_size` at its default when comparing data sets bit for bit.
"""

import dataclasses
import functools
import math
from typing import NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from bncr_tf.degradations import kernels as blur_lib
from bncr_tf.degradations import jpeg as jpeg_lib
from bncr_tf.degradations import noise as noise_lib

STAGES = {
    "select_blur": 0,
    "blur_type": 1,
    "blur_params": 2,
    "select_noise": 3,
    "noise": 4,
    "select_jpeg": 5,
    "jpeg_q": 6,
}
# Streams of the generator-side kernel bank (never used by the data side).
BANK_STAGES = {"bank_type": 100, "bank_params": 101}

BLUR_TYPES = ("none", "disk", "motion")
BLUR_NONE, BLUR_DISK, BLUR_MOTION = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Setting:
    """One degradation setting of the paper.

    Attributes:
        name: key in `SETTINGS` ("A" ... "Q", "noise", "ffhq_D", ...).
        setting_id: integer mixed into every random stream.
        description: the paper's definition of the setting.
        dataset: "cifar10" (32 px) or "ffhq" (128 px), the paper's data set.
        resolution: nominal image size of that data set.
        blur: "disk", "motion", "mixed" or None.
        disk_radius: (lo, hi), r ~ U[lo, hi] (continuous).
        motion_length: trajectory length L in pixels.
        motion_exposures: exposure fractions T, drawn uniformly.
        p_disk: probability of a disk kernel for a blurred image (1 for
            "disk", 0 for "motion", 0.5 for "mixed").
        noise: whether Brooks et al. camera noise is part of the setting.
        jpeg_quality: (lo, hi) integer libjpeg quality range (inclusive) or
            None.
        blur_rate, noise_rate, jpeg_rate: fraction of images each
            degradation applies to (0 when the degradation is absent).
        kernel_size: K of the K x K kernel window (7 at 32 px, 11 at 128 px).
    """

    name: str
    setting_id: int
    description: str
    dataset: str = "cifar10"
    resolution: int = 32
    blur: Optional[str] = None
    disk_radius: Tuple[float, float] = (0.5, 2.0)
    motion_length: float = 5.0
    motion_exposures: Tuple[float, ...] = (0.1, 0.5, 1.0)
    p_disk: float = 0.0
    noise: bool = False
    jpeg_quality: Optional[Tuple[int, int]] = None
    blur_rate: float = 0.0
    noise_rate: float = 0.0
    jpeg_rate: float = 0.0
    kernel_size: int = 7

    def __post_init__(self):
        if self.blur not in (None, "disk", "motion", "mixed"):
            raise ValueError(f"bad blur kind {self.blur!r}")
        want_p = {None: 0.0, "disk": 1.0, "motion": 0.0}.get(self.blur)
        if want_p is not None and self.p_disk != want_p:
            raise ValueError(f"{self.name}: p_disk must be {want_p}")
        for attr, present in (("blur_rate", self.blur is not None),
                              ("noise_rate", self.noise),
                              ("jpeg_rate", self.jpeg_quality is not None)):
            rate = getattr(self, attr)
            if not 0.0 <= rate <= 1.0 or (rate > 0) != present:
                raise ValueError(f"{self.name}: inconsistent {attr}={rate}")
        if self.jpeg_quality is not None:
            lo, hi = self.jpeg_quality
            if not (isinstance(lo, int) and isinstance(hi, int)
                    and 1 <= lo <= hi <= 100):
                raise ValueError(f"{self.name}: bad jpeg_quality")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"{self.name}: kernel_size must be odd")

    @property
    def is_clean(self):
        """True if the setting applies no degradation at all."""
        return (self.blur_rate == 0 and self.noise_rate == 0
                and self.jpeg_rate == 0)


def _make_settings():
    """Builds the ordered dict of all settings (ids are stable)."""
    blur_d = dict(blur="mixed", p_disk=0.5)
    jpeg_j = dict(jpeg_quality=(60, 100))
    all_n = dict(noise=True, **blur_d, **jpeg_j)
    d_text = ("either (B) or (C) with a selection rate of 0.5: disk "
              "r ~ U[0.5, 2] or motion L = 5, T in {0.1, 0.5, 1}")
    table = [
        ("A", "clean images (reference)", {}),
        ("B", "out-of-focus blur with a disk kernel of radius r in "
              "[0.5, 2], all images",
         dict(blur="disk", p_disk=1.0, blur_rate=1.0)),
        ("C", "motion blur (Boracchi & Foi / DeblurGAN trajectories) with "
              "a trajectory length of 5 and exposure time T in "
              "{0.1, 0.5, 1}, all images",
         dict(blur="motion", blur_rate=1.0)),
        ("D", d_text + ", all images", dict(blur_rate=1.0, **blur_d)),
        ("E", "one-quarter of images blurred by (D), the rest clean",
         dict(blur_rate=0.25, **blur_d)),
        ("F", "one-half of images blurred by (D), the rest clean",
         dict(blur_rate=0.5, **blur_d)),
        ("G", "three-quarters of images blurred by (D), the rest clean",
         dict(blur_rate=0.75, **blur_d)),
        ("H", "JPEG with quality factor in [60, 80], all images",
         dict(jpeg_quality=(60, 80), jpeg_rate=1.0)),
        ("I", "JPEG with quality factor in [80, 100], all images",
         dict(jpeg_quality=(80, 100), jpeg_rate=1.0)),
        ("J", "JPEG with quality factor in [60, 100], all images",
         dict(jpeg_rate=1.0, **jpeg_j)),
        ("K", "one-quarter of images compressed by (J), the rest clean",
         dict(jpeg_rate=0.25, **jpeg_j)),
        ("L", "one-half of images compressed by (J), the rest clean",
         dict(jpeg_rate=0.5, **jpeg_j)),
        ("M", "three-quarters of images compressed by (J), the rest clean",
         dict(jpeg_rate=0.75, **jpeg_j)),
        ("N", "all images blurred by (D), noised by the setting of [7] "
              "(Brooks et al. read and shot noise), and compressed by (J)",
         dict(blur_rate=1.0, noise_rate=1.0, jpeg_rate=1.0, **all_n)),
        ("O", "one-quarter of images independently blurred, noised and "
              "compressed by (N) (each degradation selects its own subset)",
         dict(blur_rate=0.25, noise_rate=0.25, jpeg_rate=0.25, **all_n)),
        ("P", "one-half of images independently blurred, noised and "
              "compressed by (N) (each degradation selects its own subset)",
         dict(blur_rate=0.5, noise_rate=0.5, jpeg_rate=0.5, **all_n)),
        ("Q", "three-quarters of images independently blurred, noised and "
              "compressed by (N) (each degradation selects its own subset)",
         dict(blur_rate=0.75, noise_rate=0.75, jpeg_rate=0.75, **all_n)),
        ("noise", "noise only: the setting of [7] (Brooks et al. read and "
                  "shot noise), all images (Further analysis)",
         dict(noise=True, noise_rate=1.0)),
    ]
    ffhq = dict(dataset="ffhq", resolution=128, disk_radius=(0.5, 4.0),
                motion_length=10.0, kernel_size=11)
    ffhq_note = (" FFHQ-128 (footnote 10): disk r in [0.5, 4], motion "
                 "L = 10, T in {0.1, 0.5, 1}.")
    table += [
        ("ffhq_D", "(D) on FFHQ: disk or motion blur with a selection rate "
                   "of 0.5, all images." + ffhq_note,
         dict(blur_rate=1.0, **blur_d, **ffhq)),
        ("ffhq_J", "(J) on FFHQ: JPEG with quality factor in [60, 100], "
                   "all images." + ffhq_note,
         dict(jpeg_rate=1.0, **jpeg_j, **ffhq)),
        ("ffhq_P", "(P) on FFHQ: one-half of images independently blurred, "
                   "noised and compressed by (N)." + ffhq_note,
         dict(blur_rate=0.5, noise_rate=0.5, jpeg_rate=0.5, **all_n,
              **ffhq)),
    ]
    return {name: Setting(name=name, setting_id=sid, description=text, **kw)
            for sid, (name, text, kw) in enumerate(table)}


SETTINGS = _make_settings()


def get_setting(name):
    """Returns the `Setting` called `name` (a `Setting` is passed through).

    Raises:
        ValueError: if the name is unknown; the message lists valid names.
    """
    if isinstance(name, Setting):
        return name
    try:
        return SETTINGS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}"
        ) from None


# ---------------------------------------------------------------------------
# Data side: per-image parameters.
# ---------------------------------------------------------------------------


def _check_seed(seed):
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def image_rng(seed, setting_id, stage, index):
    """The numpy Generator of one (image, stage) stream.

    Args:
        seed: builder seed, int >= 0.
        setting_id: `Setting.setting_id`.
        stage: a key of `STAGES` / `BANK_STAGES` or its integer id.
        index: image index in the clean source, int >= 0.

    Returns:
        `Generator(PCG64(SeedSequence([seed, setting_id, stage_id, index])))`.
    """
    stage_id = STAGES.get(stage, BANK_STAGES.get(stage, stage))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), int(setting_id), int(stage_id), int(index)])))


def selected_count(rate, num_images):
    """Number of selected images: N if rate >= 1 else floor(rate*N + 1/2)."""
    if rate >= 1.0:
        return int(num_images)
    return int(math.floor(rate * num_images + 0.5))


@functools.lru_cache(maxsize=64)
def _selection_mask(seed, setting_id, stage_id, rate, num_images):
    mask = np.zeros(num_images, dtype=bool)
    if rate >= 1.0:
        mask[:] = True
    elif rate > 0.0:
        perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [seed, setting_id, stage_id]))).permutation(num_images)
        mask[perm[:selected_count(rate, num_images)]] = True
    mask.flags.writeable = False
    return mask


def selection_mask(setting, stage, num_images, seed):
    """Which of the N images a degradation applies to.

    Args:
        setting: `Setting` or name.
        stage: "blur", "noise" or "jpeg".
        num_images: N, size of the whole data set.
        seed: builder seed.

    Returns:
        Read-only bool numpy `[N]` with exactly `selected_count(rate, N)`
        True entries.
    """
    setting = get_setting(setting)
    rate = {"blur": setting.blur_rate, "noise": setting.noise_rate,
            "jpeg": setting.jpeg_rate}[stage]
    return _selection_mask(_check_seed(seed), setting.setting_id,
                           STAGES["select_" + stage], float(rate),
                           int(num_images))


@dataclasses.dataclass
class DegradationParams:
    """Sampled degradation of n images (numpy arrays, first axis n).

    Attributes:
        setting: setting name.
        seed: builder seed.
        index: int64 `[n]`, indices in the clean source.
        blur_type: int8 `[n]`, 0 none, 1 disk, 2 motion (`BLUR_TYPES`).
        blur_radius: float32 `[n]`, disk radius (0 if not disk).
        motion_length, motion_exposure, motion_expl: float32 `[n]` (0 if not
            motion).
        kernel: float32 `[n, K, K]`, unit sum; identity if not blurred.
        noise_applied: bool `[n]`.
        noise_shot, noise_read: float32 `[n]`, Brooks variance coefficients
            (0 if no noise).
        noise_eps: float32 `[n, H, W, 3]` standard normal draws of the
            image's noise stream (0 if no noise).
        jpeg_quality: int64 `[n]`, libjpeg quality (0 if not compressed).
    """

    setting: str
    seed: int
    index: np.ndarray
    blur_type: np.ndarray
    blur_radius: np.ndarray
    motion_length: np.ndarray
    motion_exposure: np.ndarray
    motion_expl: np.ndarray
    kernel: np.ndarray
    noise_applied: np.ndarray
    noise_shot: np.ndarray
    noise_read: np.ndarray
    noise_eps: np.ndarray
    jpeg_quality: np.ndarray

    def __len__(self):
        return len(self.index)


def _draw_blur_types(setting, type_rngs):
    """Blur type codes for blurred images, one type stream per image."""
    if setting.blur == "disk":
        return [BLUR_DISK] * len(type_rngs)
    if setting.blur == "motion":
        return [BLUR_MOTION] * len(type_rngs)
    return [BLUR_DISK if rng.random() < setting.p_disk else BLUR_MOTION
            for rng in type_rngs]


def _draw_kernels(setting, types, param_rngs, size):
    """Draws kernels of the given types from per-kernel parameter streams.

    Returns:
        (kernels float32 [m, K, K], radius f64 [m], exposure f64 [m],
        expl f64 [m]) with zeros in the fields that do not apply.
    """
    m = len(types)
    kernels = np.zeros((m, size, size), np.float32)
    radius = np.zeros(m)
    exposure = np.zeros(m)
    expl = np.zeros(m)
    motion_pos = []
    for j, (kind, rng) in enumerate(zip(types, param_rngs)):
        if kind == BLUR_DISK:
            radius[j] = rng.uniform(*setting.disk_radius)
        else:
            exposure[j] = setting.motion_exposures[
                int(rng.integers(len(setting.motion_exposures)))]
            motion_pos.append(j)
    disk_pos = np.flatnonzero(np.asarray(types) == BLUR_DISK)
    if len(disk_pos):
        kernels[disk_pos] = blur_lib.disk_kernel(radius[disk_pos],
                                                 size).numpy()
    if motion_pos:
        k, e = blur_lib.sample_motion_kernels(
            setting.motion_length, exposure[motion_pos], size,
            [param_rngs[j] for j in motion_pos])
        kernels[motion_pos] = k
        expl[motion_pos] = e
    return kernels, radius, exposure, expl


def sample_params(setting, indices, num_images, seed, image_shape):
    """Draws the degradation of the images `indices` of an N-image set.

    The result for image i depends only on (seed, setting, N, i): see the
    module docstring for the streams and draw order.

    Args:
        setting: `Setting` or name.
        indices: int sequence `[n]`, each in [0, num_images).
        num_images: N, the size of the whole data set (fixes the subsets of
            partial settings).
        seed: builder seed, int >= 0.
        image_shape: (H, W) or (H, W, 3) of the images (for the noise eps).

    Returns:
        A `DegradationParams` for the n images, in the order of `indices`.
    """
    setting = get_setting(setting)
    seed = _check_seed(seed)
    sid = setting.setting_id
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_images):
        raise ValueError(f"indices must lie in [0, {num_images})")
    n, size = len(idx), setting.kernel_size
    height, width = int(image_shape[0]), int(image_shape[1])

    blur_type = np.zeros(n, np.int8)
    kernel = np.tile(np.eye(1, size * size, (size * size) // 2,
                            dtype=np.float32).reshape(1, size, size),
                     (n, 1, 1))
    radius = np.zeros(n, np.float32)
    length = np.zeros(n, np.float32)
    exposure = np.zeros(n, np.float32)
    expl = np.zeros(n, np.float32)
    sel = np.flatnonzero(selection_mask(setting, "blur", num_images, seed)[idx])
    if len(sel):
        types = _draw_blur_types(
            setting, [image_rng(seed, sid, "blur_type", idx[j]) for j in sel])
        k, r, t, e = _draw_kernels(
            setting, types,
            [image_rng(seed, sid, "blur_params", idx[j]) for j in sel], size)
        blur_type[sel] = types
        kernel[sel] = k
        radius[sel] = r
        exposure[sel] = t
        expl[sel] = e
        length[sel] = np.where(np.asarray(types) == BLUR_MOTION,
                               setting.motion_length, 0.0)

    noise_applied = selection_mask(setting, "noise", num_images, seed)[idx]
    shot = np.zeros(n, np.float32)
    read = np.zeros(n, np.float32)
    eps = np.zeros((n, height, width, 3), np.float32)
    for j in np.flatnonzero(noise_applied):
        rng = image_rng(seed, sid, "noise", idx[j])
        shot[j], read[j] = noise_lib.camera_noise_levels(rng)
        eps[j] = rng.standard_normal((height, width, 3), dtype=np.float32)

    quality = np.zeros(n, np.int64)
    if setting.jpeg_quality is not None:
        lo, hi = setting.jpeg_quality
        for j in np.flatnonzero(
                selection_mask(setting, "jpeg", num_images, seed)[idx]):
            quality[j] = image_rng(seed, sid, "jpeg_q",
                                   idx[j]).integers(lo, hi + 1)

    return DegradationParams(
        setting=setting.name, seed=seed, index=idx, blur_type=blur_type,
        blur_radius=radius, motion_length=length, motion_exposure=exposure,
        motion_expl=expl, kernel=kernel,
        noise_applied=np.array(noise_applied, dtype=bool), noise_shot=shot,
        noise_read=read, noise_eps=eps, jpeg_quality=quality)


def apply_params(clean_u8, params):
    """Degrades clean images with sampled parameters (spec section 8).

    Per image: x = u8 / 255 (float32); if blurred, `kernels.blur` with its
    kernel (true convolution, reflect padding), clip to [0, 1]; if noised,
    x + eps * sqrt(read + shot * x), clip to [0, 1]; round(255 x) half to
    even to uint8; if q > 0, libjpeg encode (4:2:0) / accurate decode
    (`jpeg.jpeg_compress_uint8`).

    Every image is processed independently of the others, so the output for
    image i depends only on its clean pixels and its parameters, i.e. on
    (seed, setting, N, i), and not on which other images share the call
    (checked bit for bit by the tests; see the module docstring). The
    builder calls this on fixed index-aligned chunks.

    Args:
        clean_u8: uint8 `[n, H, W, 3]` clean images, aligned with `params`.
        params: `DegradationParams` for the same n images.

    Returns:
        uint8 numpy `[n, H, W, 3]`, the degraded images.
    """
    clean_u8 = np.asarray(clean_u8)
    if clean_u8.dtype != np.uint8 or clean_u8.ndim != 4:
        raise ValueError("clean_u8 must be uint8 [n, H, W, 3]")
    if len(clean_u8) != len(params):
        raise ValueError("clean_u8 and params have different lengths")
    x = clean_u8.astype(np.float32) / np.float32(255.0)
    blurred = np.flatnonzero(params.blur_type != BLUR_NONE)
    if len(blurred):
        xb = blur_lib.blur(x[blurred], params.kernel[blurred]).numpy()
        x[blurred] = np.clip(xb, 0.0, 1.0)
    noised = np.flatnonzero(params.noise_applied)
    if len(noised):
        x[noised] = noise_lib.add_camera_noise(
            x[noised], params.noise_shot[noised], params.noise_read[noised],
            eps=params.noise_eps[noised], clip=True).numpy()
    out = np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)
    for j in np.flatnonzero(params.jpeg_quality > 0):
        out[j] = jpeg_lib.jpeg_compress_uint8(
            out[j], int(params.jpeg_quality[j])).numpy()
    return out


# ---------------------------------------------------------------------------
# Generator side (AmbientGAN): TF-only, stateless.
# ---------------------------------------------------------------------------


def kernel_bank(setting, size=None, n=4096, seed=0):
    """Precomputes n kernels distributed as the setting's blur.

    Kernel j draws its type from stream [seed, setting_id, 100, j] and its
    parameters from [seed, setting_id, 101, j] exactly like a blurred data
    image (disk / motion mixed per `p_disk`). These streams are disjoint from
    the data-side ones, so the bank does not reuse the data set's kernels.

    Args:
        setting: `Setting` or name.
        size: odd K (default `setting.kernel_size`).
        n: number of kernels.
        seed: int >= 0.

    Returns:
        float32 numpy `[n, K, K]`, unit-sum kernels (identity kernels if the
        setting has no blur).
    """
    setting = get_setting(setting)
    seed = _check_seed(seed)
    size = setting.kernel_size if size is None else int(size)
    if setting.blur is None:
        return np.tile(np.eye(1, size * size, (size * size) // 2,
                              dtype=np.float32).reshape(1, size, size),
                       (n, 1, 1))
    sid = setting.setting_id
    types = _draw_blur_types(
        setting, [image_rng(seed, sid, "bank_type", j) for j in range(n)])
    kernels, _, _, _ = _draw_kernels(
        setting, types,
        [image_rng(seed, sid, "bank_params", j) for j in range(n)], size)
    return kernels


class TFDegradation(NamedTuple):
    """A batch of generator-side degradation parameters (all tf.float32).

    Attributes:
        kernels: `[B, K, K]` unit-sum kernels; identity where blur_mask = 0.
        blur_mask: `[B]` in {0, 1}.
        noise_mask: `[B]` in {0, 1}.
        shot, read: `[B]` Brooks noise levels (drawn for every image; use
            with noise_mask).
        jpeg_mask: `[B]` in {0, 1}.
        quality: `[B]` integer-valued libjpeg quality in [lo, hi] (drawn for
            every image; 100 if the setting has no JPEG; use with jpeg_mask).
    """

    kernels: tf.Tensor
    blur_mask: tf.Tensor
    noise_mask: tf.Tensor
    shot: tf.Tensor
    read: tf.Tensor
    jpeg_mask: tf.Tensor
    quality: tf.Tensor


def sample_degradation_tf(setting, batch, seed, kernel_bank):
    """Samples the true degradation of a setting for B generated images.

    TF-only and stateless: usable inside `tf.function`; the result depends
    only on (setting, batch, seed, kernel_bank). Each degradation applies to
    an image independently with probability equal to its rate (Bernoulli;
    the data side uses exact subsets instead, which has the same marginal).

    Args:
        setting: `Setting` or name (a Python value, static under tracing).
        batch: B, int or scalar int tensor.
        seed: int tensor `[2]`, stateless seed.
        kernel_bank: float32 `[n, K, K]` from `kernel_bank(setting, ...)`
            (numpy array or tensor); kernels are drawn uniformly from it.

    Returns:
        A `TFDegradation`.
    """
    setting = get_setting(setting)
    bank = tf.convert_to_tensor(kernel_bank, dtype=tf.float32)
    size = bank.shape[-1]
    seeds = tf.random.experimental.stateless_split(
        tf.cast(seed, tf.int64), num=6)

    def bernoulli(rate, s):
        if rate >= 1.0:
            return tf.ones([batch], tf.float32)
        if rate <= 0.0:
            return tf.zeros([batch], tf.float32)
        u = tf.random.stateless_uniform([batch], seed=s)
        return tf.cast(u < rate, tf.float32)

    blur_mask = bernoulli(setting.blur_rate, seeds[0])
    pick = tf.random.stateless_uniform(
        [batch], seed=seeds[1], minval=0, maxval=tf.shape(bank)[0],
        dtype=tf.int32)
    drawn = tf.gather(bank, pick)
    identity = blur_lib.identity_kernel(size, batch)
    m = blur_mask[:, None, None]
    kernels = m * drawn + (1.0 - m) * identity
    noise_mask = bernoulli(setting.noise_rate, seeds[2])
    shot, read = noise_lib.sample_camera_noise_levels(batch, seeds[3])
    jpeg_mask = bernoulli(setting.jpeg_rate, seeds[4])
    lo, hi = setting.jpeg_quality or (100, 100)
    quality = tf.cast(tf.random.stateless_uniform(
        [batch], seed=seeds[5], minval=lo, maxval=hi + 1, dtype=tf.int32),
        tf.float32)
    return TFDegradation(kernels, blur_mask, noise_mask, shot, read,
                         jpeg_mask, quality)
