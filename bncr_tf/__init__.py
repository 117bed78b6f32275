"""bncr_tf: BNCR-GAN (Kaneko & Harada, CVPR 2021) in TensorFlow 2 / Keras 3.

Subpackages mirror the method:
  degradations/  blur, camera noise, JPEG, differentiable JPEG, settings A-Q
  networks/      G_x, G_k, G_n, G_q and D
  losses.py      adversarial loss, R1, diversity-sensitive and AC losses
  training/      the training loop, checkpoints, monitoring
  metrics/       FID / KID, LPIPS
  pretrained/    offline ImageNet networks (AlexNet, VGG16, EfficientNet-Lite0)
  export.py      SavedModels for TF Serving
"""

__version__ = "0.1.0"
