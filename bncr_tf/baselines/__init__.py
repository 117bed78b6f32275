"""Restoration baselines of the paper's Deblur+GAN† and Deblock+GAN.

* `deconvolution`: Krishnan & Fergus non-blind deconvolution with a
  hyper-Laplacian prior (the paper's [41]), used with each image's true
  kernel.
* `deblocking`: POCS deblocking with the JPEG quantisation constraint set,
  our substitute for Pointwise SA-DCT [19] (closed MATLAB binaries).
* `restore`: applies either to a degraded dataset's images and metadata.
"""
