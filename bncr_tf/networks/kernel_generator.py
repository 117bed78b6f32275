"""G_k: the blur-kernel generator and the masked kernel of paper eq. 3."""

import math

import keras
from keras import ops

from bncr_tf.networks import layers as L

MASK_BIAS_INIT = -2.0   # sigmoid(-2) = 0.119: start close to the identity.


def _float_dtype(x):
    """float64 for float64 tensors, float32 for every other dtype."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return "float64" if dtype == "float64" else "float32"


def identity_kernel(size, dtype="float32"):
    """k_I: [size, size] with 1 at the centre tap (size // 2, size // 2)."""
    centre = (size // 2) * size + size // 2
    return ops.reshape(ops.one_hot(centre, size * size, dtype=dtype),
                       (size, size))


def compose_kernel(k_hat, m_k):
    """Masked kernel, paper eq. 3, renormalised (spec section 6 [choice]).

    k = m_k * k_hat + (1 - m_k) * k_I, divided by its sum. With m_k = 0
    this is exactly k_I; with m_k = 1 it is k_hat / sum(k_hat).

    Args:
      k_hat: generated kernels [B, K, K] float, non-negative (softmax).
      m_k: masks [B, K, K] (or broadcastable) float in [0, 1].
    Returns:
      k [B, K, K] float32 (float64 if k_hat is float64), non-negative,
      unit sum.
    """
    dtype = _float_dtype(k_hat)
    k_hat = ops.cast(k_hat, dtype)
    m_k = ops.cast(m_k, dtype)
    k_id = identity_kernel(k_hat.shape[-1], dtype)
    k = m_k * k_hat + (1.0 - m_k) * k_id
    total = ops.sum(k, axis=(-2, -1), keepdims=True)
    return k / ops.maximum(total, 1e-12)


def centre_kernel(k):
    """Moves every kernel so that its centre of mass is the centre tap.

    Each tap's mass moves by -d, d = (d_y, d_x) the kernel's centroid
    offset from the centre tap, and is split bilinearly between the taps
    around its new position: k_c = A k C^T with A[p, q] = max(0, 1 - |p -
    q + d_y|) and C likewise with d_x. Without mass leaving the window the
    centroid of k_c is exactly the centre; mass that would leave it is
    dropped and the result renormalised. A shifted delta becomes the
    identity kernel, a centred kernel is unchanged. Differentiable in k.

    A translation of the image cannot be told from a translation of G_x's
    output, so an uncentred kernel adds nothing the data can identify,
    while a shifted delta has zero entropy and so the full L_AC weight
    (issue 14). The true kernels of every setting are centred
    (degradations.md).

    Args:
      k: kernels [B, K, K] float, non-negative, unit sum.
    Returns:
      centred kernels, same shape and dtype, unit sum.
    """
    dtype = _float_dtype(k)
    k = ops.cast(k, dtype)
    size = k.shape[-1]
    pos = ops.cast(ops.arange(size), dtype) - (size // 2)
    d_y = ops.sum(ops.sum(k, axis=2) * pos, axis=1)   # [B]
    d_x = ops.sum(ops.sum(k, axis=1) * pos, axis=1)
    # diff[p, q] = p - q.
    diff = pos[:, None] - pos[None, :]

    def spread(d):
        return ops.maximum(0.0, 1.0 - ops.abs(diff[None] + d[:, None, None]))

    k_c = ops.matmul(ops.matmul(spread(d_y), k),
                     ops.transpose(spread(d_x), (0, 2, 1)))
    total = ops.sum(k_c, axis=(-2, -1), keepdims=True)
    return k_c / ops.maximum(total, 1e-12)


@keras.saving.register_keras_serializable(package="bncr_tf")
class KernelGenerator(keras.Model):
    """G_k: latent z_k -> blur kernel k (paper section 4).

    A 3-layer MLP: Linear z_dim -> hidden, ReLU, Linear hidden -> hidden,
    ReLU, then two Linear heads hidden -> K*K giving the kernel logits (G_k^k
    of eq. 3; k_hat = softmax over the K*K taps) and the mask logits (G_k^m;
    m_k = sigmoid). Heads run in float32 (float64 under a float64 policy).
    Init: Xavier-uniform (gain sqrt(2) for the ReLU layers, 1 for the
    heads), zero biases except the mask bias, `mask_bias_init` (-2: m_k is
    centred on 0.12, so the initial kernel is ~85% identity, entropy
    ~0.9 nats, a mild blur).

    Args:
      kernel_size: K, odd (7 at 32 px, 11 at 128 px).
      z_dim: latent size.
      hidden: width of the two hidden layers.
      use_mask: False for "BR-GAN w/o mask": k = k_hat and m_k = 1.
      mask_bias_init: initial bias of the mask logits.
      centre: move each output kernel k so that its centroid is the
        centre tap (`centre_kernel`; [choice], off = the paper's eq. 3).
      **kwargs: standard `keras.Model` arguments (name, dtype).

    Example:
      >>> g_k = KernelGenerator(kernel_size=7)
      >>> out = g_k(keras.random.normal((4, 128)))   # out["k"]: [4, 7, 7]
    """

    def __init__(self, kernel_size=7, z_dim=128, hidden=128, use_mask=True,
                 mask_bias_init=MASK_BIAS_INIT, centre=False, **kwargs):
        super().__init__(**kwargs)
        self.centre = centre
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.z_dim = z_dim
        self.hidden = hidden
        self.use_mask = use_mask
        self.mask_bias_init = mask_bias_init
        policy = self.dtype_policy
        taps = kernel_size * kernel_size

        # === Layers ===
        self.fc1 = L.dense(hidden, math.sqrt(2.0), dtype=policy, name="fc1")
        self.fc2 = L.dense(hidden, math.sqrt(2.0), dtype=policy, name="fc2")
        self.kernel_head = L.dense(taps, dtype=policy, name="kernel_head")
        self.mask_head = None
        if use_mask:
            self.mask_head = L.dense(
                taps, bias_initializer=keras.initializers.Constant(
                    mask_bias_init), dtype=policy, name="mask_head")

    def build(self, input_shape=None):
        if self.built:
            return
        L.build_layer(self.fc1, (None, self.z_dim))
        L.build_layer(self.fc2, (None, self.hidden))
        L.build_layer(self.kernel_head, (None, self.hidden))
        if self.mask_head is not None:
            L.build_layer(self.mask_head, (None, self.hidden))
        self.built = True

    def call(self, z_k):
        """Generates kernels.

        Args:
          z_k: latents [B, z_dim], float.
        Returns:
          A dict of float32 tensors [B, K, K] (float64 under a float64
          policy):
            "k": the kernel to blur with (eq. 3, unit sum);
            "k_hat": the generated kernel (softmax, unit sum);
            "m_k": the mask in [0, 1] (ones if use_mask=False).
        """
        size = self.kernel_size
        h = ops.relu(self.fc1(z_k))
        h = ops.relu(self.fc2(h))
        logits = ops.cast(self.kernel_head(h), L.head_dtype(self))
        k_hat = ops.reshape(ops.softmax(logits, axis=-1), (-1, size, size))
        if self.mask_head is None:
            m_k = ops.ones_like(k_hat)
            k = k_hat
        else:
            mask_logits = ops.cast(self.mask_head(h), L.head_dtype(self))
            m_k = ops.reshape(ops.sigmoid(mask_logits), (-1, size, size))
            k = compose_kernel(k_hat, m_k)
        if self.centre:
            k = centre_kernel(k)
        return {"k": k, "k_hat": k_hat, "m_k": m_k}

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size, z_dim=self.z_dim,
            hidden=self.hidden, use_mask=self.use_mask,
            mask_bias_init=self.mask_bias_init, centre=self.centre)
        return config
