"""Networks of BNCR-GAN: G_x, G_n, G_k, G_q and D (see docs/networks.md).

Images are NHWC. Generators output and D consumes images in [-1, 1]; every
network returns float32 whatever the Keras dtype policy (float64 only
under a float64 policy).
"""

from bncr_tf.networks.discriminator import Discriminator
from bncr_tf.networks.image_generator import ImageGenerator
from bncr_tf.networks.kernel_generator import KernelGenerator
from bncr_tf.networks.kernel_generator import compose_kernel
from bncr_tf.networks.kernel_generator import identity_kernel
from bncr_tf.networks.layers import DownBlock
from bncr_tf.networks.layers import UpBlock
from bncr_tf.networks.layers import default_channel_multipliers
from bncr_tf.networks.layers import stage_channels
from bncr_tf.networks.noise_generator import PRIORS
from bncr_tf.networks.noise_generator import NoiseGenerator
from bncr_tf.networks.noise_generator import additive_gaussian
from bncr_tf.networks.noise_generator import apply_prior
from bncr_tf.networks.noise_generator import camera
from bncr_tf.networks.noise_generator import multiplicative_gaussian
from bncr_tf.networks.noise_generator import poisson
from bncr_tf.networks.noise_generator import random_noise_transforms
from bncr_tf.networks.quality_generator import QualityGenerator

__all__ = [
    "Discriminator",
    "DownBlock",
    "ImageGenerator",
    "KernelGenerator",
    "NoiseGenerator",
    "PRIORS",
    "QualityGenerator",
    "UpBlock",
    "additive_gaussian",
    "apply_prior",
    "camera",
    "compose_kernel",
    "default_channel_multipliers",
    "identity_kernel",
    "multiplicative_gaussian",
    "poisson",
    "random_noise_transforms",
    "stage_channels",
]
