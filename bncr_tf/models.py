"""Builds the networks of a run from its `TrainConfig`.

Used by the trainer, by evaluation and by export, so a run directory's
config.json is enough to rebuild every network before restoring weights.
"""

import dataclasses

import numpy as np

from bncr_tf import networks
from bncr_tf import stages as stages_lib
from bncr_tf import synthesis
from bncr_tf import variants as variants_lib
from bncr_tf.degradations import settings as settings_lib
from bncr_tf.networks import reference_images

KERNEL_BANK_SIZE = 4096  # AmbientGAN draws true kernels from this many


def resolve_variant(config):
    """The config's variant with setting-dependent stages made concrete."""
    variant = variants_lib.get_variant(config.variant)
    setting = settings_lib.get_setting(config.ambient_setting
                                       or config.setting)
    variant = variant.for_setting(None if setting.is_clean else setting)
    if config.noise_prior:
        variant = dataclasses.replace(variant, noise_prior=config.noise_prior)
    return variant


def build_generators(config, name_suffix=""):
    """Builds G_x and the degradation generators the variant needs (each
    stage builds its own network for its mode, `stages.Stage.build`).

    Args:
      config: a `TrainConfig`.
      name_suffix: appended to model names (e.g. "_ema").
    Returns:
      A `synthesis.Generators` whose models are built (weights created).
    """
    v = resolve_variant(config)
    r, z = config.resolution, config.z_dim
    if config.clean_reference:
        g_x = reference_images.ReferenceImages(
            load_reference_images(config), name="G_x" + name_suffix)
    else:
        g_x = networks.ImageGenerator(resolution=r, z_dim=z,
                                      width=config.width,
                                      residual_factor=config.residual_factor,
                                      name="G_x" + name_suffix)
    gens = synthesis.Generators(
        G_x=g_x, variant=v, noise_prior=v.noise_prior,
        rounding=config.rounding, jpeg_storage=config.jpeg_storage,
        quality_gradient=config.quality_gradient,
        fake_storage=config.fake_storage)
    for stage in stages_lib.STAGES:
        setattr(gens, stage.network, stage.build(v, config, name_suffix))
    if any(s.mode(v) == variants_lib.TRUE for s in stages_lib.STAGES):
        gens.ambient = ambient_degradation(config)
    _build(gens, config)
    return gens


def ambient_degradation(config):
    """(setting, kernel bank [n, K, K] float32) of the true degradation
    of --ambient_setting or --setting: what `synthesis.degrade` samples
    TRUE stages from (AmbientGAN, UNIR-dagger's measurement)."""
    setting = settings_lib.get_setting(config.ambient_setting
                                       or config.setting)
    bank = settings_lib.kernel_bank(
        setting, size=config.resolved_kernel_size(), n=KERNEL_BANK_SIZE,
        seed=config.seed)
    return setting, np.asarray(bank, np.float32)


def true_degradation(config):
    """The true degradation of a config's setting as `Generators` without
    G_x: `synthesis.degrade(true_degradation(c), x, latents, seed)` is
    AmbientGAN's TRUE path (the stages the setting has, no masks learned).
    """
    setting = settings_lib.get_setting(config.ambient_setting
                                       or config.setting)
    v = variants_lib.get_variant("ambientgan").for_setting(
        None if setting.is_clean else setting)
    return synthesis.Generators(
        G_x=None, variant=v, noise_prior=v.noise_prior,
        ambient=ambient_degradation(config), rounding=config.rounding,
        jpeg_storage=config.jpeg_storage,
        quality_gradient=config.quality_gradient,
        fake_storage=config.fake_storage)


_REFERENCE_CACHE = {}


def load_reference_images(config):
    """uint8 [N, R, R, 3] clean reference images of --clean_reference.

    Loaded once per process and shared by the raw and EMA "generators".
    """
    from bncr_tf import data
    from bncr_tf.errors import UserError
    key = (config.clean_reference, config.resolution,
           config.clean_reference_limit, config.clean_reference_seed)
    if key not in _REFERENCE_CACHE:
        try:
            images, _ = data.load_clean_uint8(
                config.clean_reference, config.resolution,
                limit=config.clean_reference_limit or None,
                seed=config.clean_reference_seed)
        except data.DataError as e:
            raise UserError(f"--clean_reference: {e}") from None
        _REFERENCE_CACHE.clear()
        _REFERENCE_CACHE[key] = images
    return _REFERENCE_CACHE[key]


def _build(gens, config):
    """Creates every weight by calling the models once on a tiny batch."""
    latents = synthesis.sample_latents(2, config.z_dim, [0, 0])
    synthesis.synthesize(gens, latents, [0, 0])


def build_discriminator(config):
    """Builds D for the config's resolution and width."""
    d = networks.Discriminator(resolution=config.resolution,
                               width=config.width,
                               residual_factor=config.residual_factor,
                               highpass=config.d_highpass,
                               block_grid=config.d_block_grid, name="D")
    d.build((None, config.resolution, config.resolution, 3))
    return d


def build_restorer(config, name="G"):
    """The restorer G of a restoration run, built: UNIR's (--variant=unir,
    width = ngf), CycleGAN's G (--variant=cyclegan, ngf = --width),
    DeblurGAN's ResNet (ngf = --width) or DeblurGAN-v2's FPN (heads
    W = --width, pyramid 2 W; EfficientNet-Lite0 weights loaded)."""
    if config.variant == "cyclegan":
        from bncr_tf.training import cyclegan
        return cyclegan.build_generator(config, name)
    if config.variant == "deblurgan":
        from bncr_tf.networks import deblurgan
        g = deblurgan.DeblurGANGenerator(ngf=config.width, name=name)
        g.build()
        return g
    if config.variant == "deblurganv2":
        from bncr_tf.networks import deblurgan
        g = deblurgan.FPNGenerator(num_filters=config.width,
                                   num_filters_fpn=2 * config.width,
                                   name=name)
        g.build()
        return g
    from bncr_tf.networks import restorer
    g = restorer.Restorer(ngf=config.width, name=name)
    g.build()
    return g


def checkpoint_variables(model):
    """{variable path: variable} of every weight of `model`.

    Checkpoints track networks through this dict rather than through Keras'
    object graph, in which layers held in Python lists are not visible to
    `tf.train.Checkpoint` (their weights would silently be left out).
    """
    out = {}
    for v in model.variables:
        # Drop the model's own name so raw and EMA copies share keys.
        key = v.path.split("/", 1)[-1].replace("/", ".")
        if key in out:
            raise ValueError(f"duplicate variable path {v.path} in "
                             f"{model.name}")
        out[key] = v
    return out
