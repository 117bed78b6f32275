"""The degradation stages of y = psi(x * k + n, q): blur, noise and JPEG.

A stage is one factor of the degradation model (paper eq. 1): blur by a
kernel k, additive noise n, JPEG compression at quality q. A variant
(`bncr_tf.variants`) gives each stage one of four modes:

  none     the stage is absent (no network, no output);
  learned  a generator learns it: G_k, G_n or G_q (BNCR-GAN, BR-GAN,
           NR-GAN, CR-GAN);
  param    a single learned parameter (P-AmbientGAN);
  true     the true degradation of the setting, sampled (AmbientGAN).

Each stage object below owns, for its mode, everything the rest of the
package does with that stage: building its network (`build`), sampling its
parameters and applying them to an image (`degrade`), its regularisers
(`ds_loss`: the diversity-sensitive term; `ac_loss`: L_AC, eqs. 7-8), its
monitor statistics (`monitor`) and what its exports return
(`export_model`, `export_endpoints`, `generator_outputs`,
`degrade_outputs`). `synthesis.degrade` is a loop over `STAGES`; the model
builder, the G step, the monitor, the grids and the export loop over them
too.

The stages run in the order of `STAGES` (blur, then noise, then JPEG: the
order of eq. 1). `DS_ORDER` is the order in which the G step adds the
diversity-sensitive terms; it differs from `STAGES` because float addition
is not associative and checkpoints must stay bit-identical to those of
earlier versions.

Units: images inside `degrade` are in [0, 1]; the results in `Synthesis`
are in the units of the `synthesis` module docstring.
"""

import dataclasses

import tensorflow as tf

from bncr_tf import losses
from bncr_tf import networks
from bncr_tf import variants as variants_lib
from bncr_tf.degradations import jpeg as jpeg_lib
from bncr_tf.degradations import kernels as blur_lib
from bncr_tf.degradations import noise as noise_camera
from bncr_tf.networks import noise_generator as noise_lib
from bncr_tf.networks import param_degradation

LEARNED, PARAM, TRUE, NONE = (variants_lib.LEARNED, variants_lib.PARAM,
                              variants_lib.TRUE, variants_lib.NONE)
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass
class Synthesis:
    """What `synthesis.degrade` returns: the clean and degraded images and
    the outputs of each stage the variant has (None where it has none).

    Attributes:
      x, y: clean and degraded images [B, R, R, 3] in [-1, 1].
      k: blur kernels [B, K, K] (unit sum); m_k: kernel mask [B, K, K];
        k_hat: the kernel before masking (learned / param only).
      entropy: kernel entropy [B]; x_blur: x * k in [-1, 1] (with_aux).
      n: noise [B, R, R, 3] in [-1, 1] units; n_ds: the noise before the
        random transforms and n_std: its std map (eps = 1) (learned /
        param only; the targets of the diversity-sensitive loss).
      q: JPEG quality [B] in [0, 100]; m_q: JPEG mask [B].
      x_comp: psi^g(x, q) without mask, in [-1, 1] (with_aux).
    """

    x: tf.Tensor
    y: tf.Tensor = None
    k: tf.Tensor = None
    k_hat: tf.Tensor = None
    m_k: tf.Tensor = None
    entropy: tf.Tensor = None
    x_blur: tf.Tensor = None
    n: tf.Tensor = None
    n_ds: tf.Tensor = None
    n_std: tf.Tensor = None
    q: tf.Tensor = None
    m_q: tf.Tensor = None
    x_comp: tf.Tensor = None

    def present(self):
        """{name: value} of the fields that are set."""
        return {f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclasses.dataclass(frozen=True)
class Pass:
    """The inputs shared by the stages during one `synthesis.degrade`.

    Attributes:
      gens: the `synthesis.Generators`.
      x: clean images [B, R, R, 3] in [-1, 1].
      latents: dict of z_x, z_k, z_n, z_q.
      seeds: int tensor [4, 2]: 0 noise eps, 1 noise transforms, 2
        dequantisation noise, 3 true degradation.
      true: the sampled `settings.TFDegradation` when a stage is TRUE,
        else None.
      with_aux: also compute the inputs of L_AC.
    """

    gens: object
    x: tf.Tensor
    latents: dict
    seeds: tf.Tensor
    true: object
    with_aux: bool


@dataclasses.dataclass(frozen=True)
class Regularisers:
    """The weights of the stage regularisers, resolved from a config once.

    Attributes:
      ds: {stage name: weight of its diversity-sensitive term}.
      ds_noise_target: "noise", "std" or "log_std" (--ds_noise_target).
      ac_weight, ac_reduction: of L_AC (--ac_weight, --ac_reduction).
      mu: {stage name: mu_k or mu_q of eqs. 7-8}.
    """

    ds: dict
    ds_noise_target: str
    ac_weight: float
    ac_reduction: str
    mu: dict

    @classmethod
    def from_config(cls, c):
        """--ds_weight_kernel / --ds_weight_quality < 0 take --ds_weight;
        --mu_k / --mu_q < 0 take the paper's values."""
        return cls(
            ds={BLUR.name: c.ds_weight if c.ds_weight_kernel < 0
                else c.ds_weight_kernel,
                NOISE.name: c.ds_weight,
                JPEG.name: c.ds_weight if c.ds_weight_quality < 0
                else c.ds_weight_quality},
            ds_noise_target=c.ds_noise_target, ac_weight=c.ac_weight,
            ac_reduction=c.ac_reduction,
            mu={BLUR.name: c.mu_k if c.mu_k >= 0 else losses.MU_K,
                JPEG.name: c.mu_q if c.mu_q >= 0 else losses.MU_Q})


class Stage:
    """One degradation stage; subclasses fill in the hooks.

    Class attributes:
      name: the `Variant` field giving its mode ("blur", "noise", "jpeg").
      network: the `Generators` field of its network ("G_k", ...).
      latent: its latent ("z_k", ...).
      grid_field: the `Synthesis` field shown as a column of the
        decomposition grid, or None.
      export_model: name of the SavedModel of its network.
      export_endpoints: ((signature key, `export._Endpoints` method, input
        names), ...) of that SavedModel.
    """

    name = network = latent = grid_field = export_model = None
    export_endpoints = ()

    def mode(self, variant):
        return getattr(variant, self.name)

    def active(self, variant):
        return self.mode(variant) != NONE

    def build(self, variant, config, name_suffix=""):
        """Its network for the variant's mode (None for none / true)."""
        raise NotImplementedError

    def degrade(self, p, result, u):
        """Samples the stage's parameters into `result` and applies them
        to u ([0, 1] units); returns the degraded u. Called only when the
        stage is active."""
        raise NotImplementedError

    # The diversity-sensitive term (learned mode only): its loss name and
    # whether it is left out at weight 0 (blur and JPEG; the noise term
    # is always added, as NR-GAN's).
    ds_name = None
    ds_only_positive = True

    def ds_target(self, result, weights):
        """What the diversity-sensitive term compares across latents."""
        raise NotImplementedError

    def ds_loss(self, variant, result, latents, weights):
        """{name: value} of its diversity-sensitive term, or None."""
        w = weights.ds.get(self.name)
        if (self.ds_name is None or self.mode(variant) != LEARNED
                or (self.ds_only_positive and not w > 0)):
            return None
        return losses.diversity_sensitive_loss(
            self.ds_target(result, weights), latents[self.latent], w,
            self.ds_name)

    def ac_loss(self, result, weights):
        """{name: value} of its L_AC term, or None."""
        del result, weights
        return None

    def monitor(self, result):
        """{short name: per-sample values [B]} of its statistics."""
        del result
        return {}

    # Short monitor names -> scalar names of `Trainer.degradation_stats`.
    stat_names = {}

    def generator_outputs(self, g):
        """Named float32 outputs of its network's export endpoint."""
        raise NotImplementedError

    def degrade_outputs(self, result):
        """Named float32 [B, ...] outputs of the `degrade` export."""
        raise NotImplementedError


class Blur(Stage):
    """x * k with the masked kernel of eq. 3."""

    name, network, latent, grid_field = "blur", "G_k", "z_k", "k"
    export_model = "blur_kernel"
    export_endpoints = ((DEFAULT_SIGNATURE, "kernel", ("z_k",)),
                        ("from_seed", "kernel_from_seed", ("seed",)))
    stat_names = {"kernel_entropy": "Degradation/kernel_entropy",
                  "m_k": "Degradation/m_k_mean"}

    def build(self, variant, config, name_suffix=""):
        mode = self.mode(variant)
        if mode == LEARNED:
            return networks.KernelGenerator(
                kernel_size=config.resolved_kernel_size(),
                z_dim=config.z_dim, use_mask=variant.blur_mask,
                centre=config.centre_kernels, name="G_k" + name_suffix)
        if mode == PARAM:
            return param_degradation.ParamKernel(
                kernel_size=config.resolved_kernel_size(),
                name="G_k" + name_suffix)
        return None

    def degrade(self, p, result, u):
        if self.mode(p.gens.variant) == TRUE:
            result.k = p.true.kernels
            result.m_k = p.true.blur_mask[:, None, None] * tf.ones_like(
                p.true.kernels)
        else:
            g = p.gens.G_k(p.latents["z_k"])
            result.k, result.m_k, result.k_hat = g["k"], g["m_k"], g["k_hat"]
        u = tf.clip_by_value(blur_lib.blur(u, result.k), 0.0, 1.0)
        if p.with_aux:
            result.entropy = blur_lib.kernel_entropy(result.k)
            result.x_blur = 2.0 * u - 1.0
        return u

    ds_name = "G/ds_kernel"

    def ds_target(self, result, weights):
        return result.k_hat

    def ac_loss(self, result, weights):
        return losses.ac_blur_loss(
            result.x, result.x_blur, result.entropy, weights.mu[self.name],
            weights.ac_weight, weights.ac_reduction)

    def monitor(self, result):
        return {"kernel_entropy": blur_lib.kernel_entropy(result.k),
                "m_k": tf.reduce_mean(result.m_k, axis=[1, 2])}

    def generator_outputs(self, g):
        k = tf.cast(g["k"], tf.float32)
        return {"kernel": k, "mask": tf.cast(g["m_k"], tf.float32),
                "entropy": tf.cast(blur_lib.kernel_entropy(k), tf.float32)}

    def degrade_outputs(self, result):
        return {"kernel": tf.cast(result.k, tf.float32),
                "mask_kernel": tf.cast(result.m_k, tf.float32)}


class Noise(Stage):
    """y = clip(x * k + n) in NR-GAN's [-1, 1] units."""

    name, network, latent, grid_field = "noise", "G_n", "z_n", "n"
    export_model = "noise"
    export_endpoints = ((DEFAULT_SIGNATURE, "noise", ("image", "seed")),)
    stat_names = {"noise_std": "Degradation/noise_std"}

    def build(self, variant, config, name_suffix=""):
        mode = self.mode(variant)
        if mode == LEARNED:
            prior = (variant.noise_prior
                     if variant.noise_prior in networks.PRIORS else "none")
            return networks.NoiseGenerator(
                resolution=config.resolution, z_dim=config.z_dim,
                width=config.width, prior=prior, implicit=variant.implicit,
                z_x_dim=config.z_dim, name="G_n" + name_suffix)
        if mode == PARAM:
            return param_degradation.ParamNoise(
                resolution=config.resolution, name="G_n" + name_suffix)
        return None

    def degrade(self, p, result, u):
        v, gens = p.gens.variant, p.gens
        if self.mode(v) == TRUE:
            eps = tf.random.stateless_normal(tf.shape(u), p.seeds[0])
            n01 = noise_camera.camera_noise(u, p.true.shot, p.true.read, eps)
            result.n = 2.0 * n01 * p.true.noise_mask[:, None, None, None]
        else:
            if v.implicit:
                maps = gens.G_n(p.latents["z_n"], p.latents["z_x"])
            else:
                maps = gens.G_n(p.latents["z_n"])
            n = noise_lib.apply_prior(gens.noise_prior, maps, x=2.0 * u - 1.0,
                                      seed=p.seeds[0])
            result.n_ds = n
            # The noise std map (eps = 1): what G_n controls, without the
            # sampled eps (the "std" target of the diversity-sensitive
            # loss).
            result.n_std = noise_lib.apply_prior(
                gens.noise_prior, maps, x=2.0 * u - 1.0, eps=tf.ones_like(n))
            if v.rotation or v.channel_shuffle or v.sign_flip:
                n = noise_lib.random_noise_transforms(
                    n, p.seeds[1], rotation=v.rotation,
                    channel_shuffle=v.channel_shuffle, sign_flip=v.sign_flip)
            result.n = n
        return tf.clip_by_value(u + result.n / 2.0, 0.0, 1.0)

    ds_name, ds_only_positive = "G/ds_noise", False

    def ds_target(self, result, weights):
        # --ds_noise_target: the noise, its std map or the log of it.
        return {
            "noise": lambda: result.n_ds,
            "std": lambda: result.n_std,
            "log_std": lambda: tf.math.log(tf.maximum(
                tf.abs(result.n_std), 1e-6)),
        }[weights.ds_noise_target]()

    def monitor(self, result):
        return {"noise_std": tf.math.reduce_std(result.n / 2.0 * 255.0,
                                                axis=[1, 2, 3])}

    def degrade_outputs(self, result):
        return {"noise": tf.cast(result.n, tf.float32) / 2.0}


class Jpeg(Stage):
    """y = m_q psi^g(., q) + (1 - m_q) (.), eq. 5."""

    name, network, latent, grid_field = "jpeg", "G_q", "z_q", None
    export_model = "quality"
    export_endpoints = ((DEFAULT_SIGNATURE, "quality", ("z_q",)),
                        ("from_seed", "quality_from_seed", ("seed",)))
    stat_names = {"q": "Degradation/q_mean", "m_q": "Degradation/m_q_mean"}

    def build(self, variant, config, name_suffix=""):
        mode = self.mode(variant)
        if mode == LEARNED:
            return networks.QualityGenerator(
                z_dim=config.z_dim, use_mask=variant.jpeg_mask,
                q_min=config.q_min, name="G_q" + name_suffix)
        if mode == PARAM:
            return param_degradation.ParamQuality(name="G_q" + name_suffix)
        return None

    def degrade(self, p, result, u):
        gens = p.gens
        if self.mode(gens.variant) == TRUE:
            result.q, result.m_q = p.true.quality, p.true.jpeg_mask
        else:
            g = gens.G_q(p.latents["z_q"])
            result.q, result.m_q = g["q"], g["m_q"]
        m_q = result.m_q[:, None, None, None]
        psi = jpeg_lib.diff_jpeg(u, result.q, rounding=gens.rounding,
                                 sample_rounding=gens.jpeg_storage,
                                 quality_gradient=gens.quality_gradient)
        if gens.jpeg_storage and not gens.fake_storage:
            # The reals are decoded to uint8 and dequantised (data.dequantize:
            # v = 2 (u8/255 * 255/256 - 1/2) + U(0, 1/128)); psi's output is
            # now u8/255, so give it the same map and noise, in [0, 1] units.
            psi = psi * (255.0 / 256.0) + tf.random.stateless_uniform(
                tf.shape(psi), p.seeds[2]) / 256.0
        u = m_q * psi + (1.0 - m_q) * u
        if p.with_aux:
            x01 = (p.x + 1.0) / 2.0
            result.x_comp = 2.0 * jpeg_lib.diff_jpeg(
                x01, result.q, rounding=gens.rounding,
                sample_rounding=gens.jpeg_storage) - 1.0
        return u

    ds_name = "G/ds_quality"

    def ds_target(self, result, weights):
        return result.q / 100.0

    def ac_loss(self, result, weights):
        return losses.ac_comp_loss(
            result.x, result.x_comp, result.q, weights.mu[self.name],
            weights.ac_weight, weights.ac_reduction)

    def monitor(self, result):
        return {"q": result.q, "m_q": result.m_q}

    def generator_outputs(self, g):
        return {"quality": tf.cast(g["q"], tf.float32),
                "mask": tf.cast(g["m_q"], tf.float32)}

    def degrade_outputs(self, result):
        return {"quality": tf.cast(result.q, tf.float32),
                "mask_quality": tf.cast(result.m_q, tf.float32)}


BLUR, NOISE, JPEG = Blur(), Noise(), Jpeg()
# The order of eq. 1: blur, noise, JPEG.
STAGES = (BLUR, NOISE, JPEG)
# The order in which the G step adds the diversity-sensitive terms (kept
# from earlier versions: it fixes the bits of every checkpoint).
DS_ORDER = (NOISE, BLUR, JPEG)


def by_name(name):
    """The stage called "blur", "noise" or "jpeg"."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; expected one of "
                     f"{[s.name for s in STAGES]}")


def active(variant):
    """The stages the variant has (mode other than none), in order."""
    return [s for s in STAGES if s.active(variant)]


def only(variant, names):
    """The variant with every stage not in `names` set to none."""
    return dataclasses.replace(variant, **{
        s.name: NONE for s in STAGES if s.name not in names})


def regularisers(variant, result, latents, weights):
    """The stage regularisers of one G step, in the order they are added
    to the loss: DS terms in `DS_ORDER`, then L_AC per stage when the
    variant uses adaptive consistency.

    Args:
      variant: the resolved `Variant`.
      result: the `Synthesis` of the step (with_aux when L_AC is on).
      latents: the step's latents.
      weights: `Regularisers`.
    Returns:
      list of {name: value} dicts (`losses` outputs).
    """
    regs = [s.ds_loss(variant, result, latents, weights) for s in DS_ORDER]
    if variant.adaptive_consistency:
        regs += [s.ac_loss(result, weights) for s in active(variant)]
    return [r for r in regs if r is not None]
