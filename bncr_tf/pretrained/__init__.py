"""Pretrained ImageNet networks, offline (Keras Model subclasses, NHWC,
float32):

- `weights`: the weights directory ($BNCR_TF_WEIGHTS), the pinned sources,
  the restricted pickle / torch readers, `load(name)`;
- `alexnet_vgg`: `AlexNetFeatures` and `VGG16Features`, the torchvision
  convolution stacks with the ReLU taps that LPIPS reads;
- `efficientnet_lite`: `EfficientNetLite0`, the ImageNet classifier and its
  stride-4/8/16/32 feature maps.

Install the weights once with `bash tools/install_weights.sh`.
Importing this package does not import TensorFlow.
"""
