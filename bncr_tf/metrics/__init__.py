"""Evaluation metrics: FID and KID on Inception pool3 features; LPIPS.

- `fid`: Fréchet distance, KID (unbiased MMD^2), streaming statistics.
- `inception`: the TTUR Inception graph (cache, one-time download,
  sha256 check, loader).
- `features`: feature extractors (TTUR Inception, Keras InceptionV3, the
  Fashion-MNIST classifier, the offline ImageNet networks VGG16 / AlexNet /
  EfficientNet-Lite0 (not Inception FID), a random conv net for tests) and
  batched extraction with progress.
- `classifier`: the small Fashion-MNIST classifier whose penultimate
  features score the offline experiments (tools/train_fmnist_classifier.py).
- `reference`: cached reference statistics of a data source.
- `evaluation`: sampling G_x, scoring, metric names, metric-*.jsonl lines.
- `runner`: what `python -m bncr_tf.evaluate` runs.
- `degradation_stats`: noise level, sharpness and JPEG blockiness of
  images (numpy; tools/measure_degradation_stats.py).
- `lpips`: LPIPS v0.1 (AlexNet / VGG16) between paired images, on the
  offline weights of `bncr_tf.pretrained` (tools/install_weights.sh).

The command-line entry point is `python -m bncr_tf.evaluate`; see
docs/evaluation.md.
"""
