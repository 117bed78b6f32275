"""Degradations of y = psi(x * k + n, q) (paper eq. 1), pure TF functions.

Images are [B, H, W, 3] float32 in [0, 1]; kernels [B, K, K] with unit sum;
quality is a per-image float tensor [B] in [0, 100]. See docs/design.md.

  kernels.py   disk (pillbox), motion (camera-shake), identity kernels; blur
  noise.py     Brooks et al. camera read + shot noise
  jpeg.py      real JPEG (libjpeg via tf.io) and the differentiable psi^g
  settings.py  the paper's settings (A)-(Q), noise-only and FFHQ presets
  builder.py   static degraded datasets (TFRecords + metadata)
"""

from bncr_tf.degradations.kernels import blur
from bncr_tf.degradations.kernels import disk_kernel
from bncr_tf.degradations.kernels import disk_support
from bncr_tf.degradations.kernels import identity_kernel
from bncr_tf.degradations.kernels import kernel_entropy
from bncr_tf.degradations.kernels import motion_kernel
from bncr_tf.degradations.kernels import motion_trajectory
from bncr_tf.degradations.kernels import sample_motion_kernels
from bncr_tf.degradations.jpeg import diff_jpeg
from bncr_tf.degradations.jpeg import jpeg_compress
from bncr_tf.degradations.jpeg import jpeg_compress_uint8
from bncr_tf.degradations.jpeg import quality_tables
from bncr_tf.degradations.noise import add_camera_noise
from bncr_tf.degradations.noise import camera_noise
from bncr_tf.degradations.noise import camera_noise_levels
from bncr_tf.degradations.noise import sample_camera_noise_levels
from bncr_tf.degradations.settings import SETTINGS
from bncr_tf.degradations.settings import Setting
from bncr_tf.degradations.settings import get_setting

__all__ = [
    "SETTINGS", "Setting", "add_camera_noise", "blur", "camera_noise",
    "camera_noise_levels", "diff_jpeg", "disk_kernel", "disk_support",
    "get_setting", "identity_kernel", "jpeg_compress", "jpeg_compress_uint8",
    "kernel_entropy", "motion_kernel", "motion_trajectory", "quality_tables",
    "sample_camera_noise_levels", "sample_motion_kernels",
]
