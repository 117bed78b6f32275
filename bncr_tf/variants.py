"""The registry of GAN variants compared in the BNCR-GAN paper.

Every variant is the same image-formation model y = psi(x * k + n, q)
(paper eq. 1) with each stage either absent, learned by a generator
(G_k, G_n, G_q), learned as a single parameter (P-AmbientGAN), or simulated
with the true degradation of a named setting (AmbientGAN). Names are used by
configs, TensorBoard tags, checkpoints and exports.
"""

import dataclasses

# How a degradation stage is produced.
NONE = "none"          # stage absent
LEARNED = "learned"    # a generator (G_k, G_n or G_q) from a latent
PARAM = "param"        # one learned parameter shared by all images
TRUE = "true"          # ground-truth distribution of a named setting

STAGE_MODES = (NONE, LEARNED, PARAM, TRUE)
NOISE_PRIORS = ("additive_gaussian", "multiplicative_gaussian", "poisson",
                "camera", "none")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model of the paper.

    Attributes:
      name: registry key, e.g. "bncrgan".
      title: the paper's name, e.g. "BNCR-GAN".
      blur: stage mode of the blur kernel k.
      noise: stage mode of the noise n.
      jpeg: stage mode of the JPEG quality q.
      blur_mask: use the kernel mask m_k (paper eq. 3).
      jpeg_mask: use the quality mask m_q (paper eq. 5).
      noise_prior: reparameterisation of G_n's output (NR-GAN priors or our
        camera prior n = eps * sqrt(a + b x)).
      implicit: SD-NR-GAN-II/III latent sharing (z_n[:dim z_x] = z_x).
      rotation, channel_shuffle, sign_flip: SI-NR-GAN-II / SD-NR-GAN-III
        random transforms of the noise.
      adaptive_consistency: add L_AC^blur and L_AC^comp (paper eqs. 7-8).
      stages_from_setting: AmbientGAN and P-AmbientGAN model exactly the
        stages present in the training setting (the other stages are off).
    """

    name: str
    title: str
    blur: str = NONE
    noise: str = NONE
    jpeg: str = NONE
    blur_mask: bool = True
    jpeg_mask: bool = True
    noise_prior: str = "none"
    implicit: bool = False
    rotation: bool = False
    channel_shuffle: bool = False
    sign_flip: bool = False
    adaptive_consistency: bool = False
    stages_from_setting: bool = False

    def __post_init__(self):
        for stage in (self.blur, self.noise, self.jpeg):
            if stage not in STAGE_MODES:
                raise ValueError(f"unknown stage mode {stage!r}")
        if self.noise_prior not in NOISE_PRIORS:
            raise ValueError(f"unknown noise prior {self.noise_prior!r}")

    @property
    def has_generator_stage(self):
        return LEARNED in (self.blur, self.noise, self.jpeg)

    def for_setting(self, setting):
        """Resolves stages that depend on the training setting.

        AmbientGAN / P-AmbientGAN simulate only the stages that the setting
        contains; the other variants are returned unchanged.

        Args:
          setting: a `bncr_tf.degradations.settings.Setting` or None (clean).
        Returns:
          A `Variant` with concrete stage modes.
        """
        if not self.stages_from_setting:
            return self
        mode = TRUE if self.name == "ambientgan" else PARAM
        has_blur = setting is not None and setting.blur is not None
        has_noise = setting is not None and setting.noise
        has_jpeg = setting is not None and setting.jpeg_quality is not None
        return dataclasses.replace(
            self,
            blur=mode if has_blur else NONE,
            noise=mode if has_noise else NONE,
            jpeg=mode if has_jpeg else NONE,
            noise_prior="camera" if has_noise else "none",
            blur_mask=False, jpeg_mask=False)


_VARIANTS = (
    Variant("gan", "GAN"),
    Variant("ambientgan", "AmbientGAN (true degradation)",
            stages_from_setting=True),
    Variant("p_ambientgan", "P-AmbientGAN (learned parameters)",
            stages_from_setting=True),
    Variant("brgan", "BR-GAN", blur=LEARNED),
    Variant("brgan_nomask", "BR-GAN w/o mask", blur=LEARNED,
            blur_mask=False),
    Variant("nrgan_si1", "SI-NR-GAN-I", noise=LEARNED,
            noise_prior="additive_gaussian"),
    Variant("nrgan_si2", "SI-NR-GAN-II", noise=LEARNED, rotation=True,
            channel_shuffle=True, sign_flip=True),
    Variant("nrgan_sd1", "SD-NR-GAN-I", noise=LEARNED, noise_prior="poisson"),
    Variant("nrgan_sd2", "SD-NR-GAN-II", noise=LEARNED, implicit=True,
            noise_prior="additive_gaussian"),
    Variant("nrgan_sd3", "SD-NR-GAN-III", noise=LEARNED, implicit=True,
            sign_flip=True),
    Variant("crgan", "CR-GAN", jpeg=LEARNED),
    Variant("crgan_nomask", "CR-GAN w/o mask", jpeg=LEARNED, jpeg_mask=False),
    Variant("bncrgan", "BNCR-GAN", blur=LEARNED, noise=LEARNED, jpeg=LEARNED,
            noise_prior="camera", adaptive_consistency=True),
    Variant("bncrgan_noac", "BNCR-GAN w/o L_AC", blur=LEARNED, noise=LEARNED,
            jpeg=LEARNED, noise_prior="camera"),
)

VARIANTS = {v.name: v for v in _VARIANTS}

# Restoration models (issue 15, paper section 7.6): they learn a restorer
# G: y -> x_hat from degraded images instead of a generator of clean ones,
# and are trained by `bncr_tf.training.restoration`. Not `Variant`s: they
# have no G_x and no degradation stages of their own.
RESTORATION_MODELS = {
    "unir": "UNIR (true degradation, or a BNCR-GAN run's generators with "
            "--degradation_from)",
    "cyclegan": "CycleGAN with set-level supervision (the setting's clean "
                "vs degraded images; needs a partly clean setting, e.g. O, "
                "P, Q)",
    "deblurgan": "DeblurGAN (supervised on (sharp, blurred) pairs; "
                 "docs/deblurgan.md)",
    "deblurganv2": "DeblurGAN-v2 (FPN on EfficientNet-Lite0, supervised on "
                   "pairs; docs/deblurgan.md)",
}

# Defaults of flags the user did not give for a restoration model (the
# entry point applies them). unir: UNIR's Adam, G 1e-4, D 4e-4, betas
# (0, 0.999) (the released code, unir/factory/modules.py), no EMA.
RESTORATION_DEFAULTS = {
    "unir": {"lr": 1e-4, "d_lr_scale": 4.0, "beta1": 0.0, "beta2": 0.999,
             "ema_decay": 0.0},
    # CycleGAN's reference code (junyanz/pytorch-CycleGAN-and-pix2pix):
    # Adam 2e-4, beta1 0.5, the same rate for G, F and both Ds; no EMA.
    "cyclegan": {"lr": 2e-4, "d_lr_scale": 1.0, "beta1": 0.5,
                 "beta2": 0.999, "ema_decay": 0.0},
    # DeblurGAN: Adam 1e-4, beta1 0.5 (options/train_options.py);
    # DeblurGAN-v2: Adam 1e-4 with torch's default betas (config.yaml).
    # Both: width 64 (ngf / the heads' W), no EMA.
    "deblurgan": {"lr": 1e-4, "d_lr_scale": 1.0, "beta1": 0.5,
                  "beta2": 0.999, "ema_decay": 0.0, "width": 64},
    "deblurganv2": {"lr": 1e-4, "d_lr_scale": 1.0, "beta1": 0.9,
                    "beta2": 0.999, "ema_decay": 0.0, "width": 64},
}


DEGRADATION_STAGES = ("blur", "noise", "jpeg")


def no_clean_reason(setting):
    """Why CycleGAN's set-level supervision is not defined on `setting`:
    no clean image, or no degraded one; None when both sets exist.

    Args:
      setting: a `bncr_tf.degradations.settings.Setting`.
    """
    if setting.is_clean:
        return f"setting {setting.name} is clean: no image is degraded"
    full = [stage for stage in DEGRADATION_STAGES
            if getattr(setting, stage + "_rate") >= 1.0]
    if full:
        return (f"setting {setting.name} applies {' and '.join(full)} to "
                f"every image, so no training image is clean")
    return None


@dataclasses.dataclass(frozen=True)
class PairedModel:
    """A supervised restorer trained on (sharp, blurred) pairs.

    Attributes:
      name: registry key.
      critic_steps: D updates per G update (on the same batch).
      adversarial: "wgan_gp" or "ragan_ls".
      adv_weight: weight of G's adversarial loss.
      perceptual_weight: weight of the VGG conv3_3 feature MSE.
      mse_weight: weight of the pixel MSE (images in [0, 1]).
      gp_weight: WGAN-GP's lambda (unused by RaGAN-LS).
    """

    name: str
    critic_steps: int
    adversarial: str
    adv_weight: float
    perceptual_weight: float
    mse_weight: float
    gp_weight: float = 0.0


# DeblurGAN: WGAN-GP, lambda 10, 5 critic steps, 100 x perceptual.
# DeblurGAN-v2: the paper's RaGAN-LS at 0.01 (the released config.yaml
# uses WGAN-GP at 0.001), 0.5 MSE + 0.006 perceptual (models/losses.py).
PAIRED_MODELS = {
    "deblurgan": PairedModel("deblurgan", critic_steps=5,
                             adversarial="wgan_gp", adv_weight=1.0,
                             perceptual_weight=100.0, mse_weight=0.0,
                             gp_weight=10.0),
    "deblurganv2": PairedModel("deblurganv2", critic_steps=1,
                               adversarial="ragan_ls", adv_weight=0.01,
                               perceptual_weight=0.006, mse_weight=0.5),
}


def is_paired(name):
    """True for the supervised restorers of `PAIRED_MODELS`."""
    return name in PAIRED_MODELS


def is_restoration(name):
    """True for the restoration models of `RESTORATION_MODELS`."""
    return name in RESTORATION_MODELS


def get_variant(name):
    """Returns the registered `Variant` called `name`.

    Raises:
      ValueError: with the list of valid names, if `name` is unknown.
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown model variant {name!r}; choose one of "
            f"{', '.join(list(VARIANTS) + list(RESTORATION_MODELS))}") \
            from None
