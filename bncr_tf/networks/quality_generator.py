"""G_q: the JPEG quality-factor generator with its mask (paper eq. 5)."""

import math

import keras
from keras import ops

from bncr_tf.networks import layers as L

Q_INIT = 90.0           # initial quality factor (raw logit 0 -> q = 90)
MASK_BIAS_INIT = -2.0   # sigmoid(-2) = 0.119: start mostly uncompressed.
# Xavier gain of the 2-output head. With gain 1 the random head weights
# shift both logits by ~1 (the ReLU features have a positive mean), so the
# initial median q ranged from 69 to 95 over seeds; 0.25 keeps it near
# q_init while q still varies with z.
HEAD_GAIN = 0.25


@keras.saving.register_keras_serializable(package="bncr_tf")
class QualityGenerator(keras.Model):
    """G_q: latent z_q -> JPEG quality q and mask m_q (paper section 5).

    A 3-layer MLP: Linear z_dim -> hidden, ReLU, Linear hidden -> hidden,
    ReLU, Linear hidden -> 2 (quality logit, mask logit); q = q_min +
    (100 - q_min) * sigmoid(.), m_q = sigmoid(.), computed in float32
    (float64 under a float64 policy). Init: Xavier-uniform with gain
    sqrt(2) for the ReLU layers and `HEAD_GAIN` (0.25) for the head, zero
    hidden biases; the head biases are logit((q_init - q_min) / (100 -
    q_min)) and `mask_bias_init`, so at
    initialisation q sits near q_init (median 86-92 over seeds, p5-p95 of
    80-94 over z) and m_q near 0.12 (median 0.09-0.18).

    Use: y = m_q * psi(x, q) + (1 - m_q) * x (eq. 5).

    Args:
      z_dim: latent size.
      hidden: width of the two hidden layers.
      use_mask: False for "CR-GAN w/o mask": m_q = 1.
      q_init: quality at zero raw logit, in (0, 100).
      mask_bias_init: initial bias of the mask logit.
      q_min: lower end of the generated quality range (0 = the paper's
        [0, 100]). Below q = 2 psi^g's tables are clipped at 255 in every
        entry (and q is clamped at 1), so a quality there gets no
        gradient (a dead zone); training uses 20 (`--q_min`).
      **kwargs: standard `keras.Model` arguments (name, dtype).

    Example:
      >>> g_q = QualityGenerator()
      >>> out = g_q(keras.random.normal((4, 128)))  # out["q"]: [4] in [0,100]
    """

    def __init__(self, z_dim=128, hidden=128, use_mask=True, q_init=Q_INIT,
                 mask_bias_init=MASK_BIAS_INIT, q_min=0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= q_min < 100.0:
            raise ValueError(f"q_min must be in [0, 100), got {q_min}")
        if not q_min < q_init < 100.0:
            raise ValueError(
                f"q_init must be in (q_min, 100) = ({q_min}, 100), got "
                f"{q_init}")
        self.z_dim = z_dim
        self.hidden = hidden
        self.use_mask = use_mask
        self.q_init = q_init
        self.mask_bias_init = mask_bias_init
        self.q_min = q_min
        policy = self.dtype_policy
        frac = (q_init - q_min) / (100.0 - q_min)
        q_logit = math.log(frac / (1.0 - frac))

        # === Layers ===
        self.fc1 = L.dense(hidden, math.sqrt(2.0), dtype=policy, name="fc1")
        self.fc2 = L.dense(hidden, math.sqrt(2.0), dtype=policy, name="fc2")
        self.head = L.dense(
            2, HEAD_GAIN, bias_initializer=keras.initializers.Constant(
                [q_logit, mask_bias_init]), dtype=policy, name="head")

    def build(self, input_shape=None):
        if self.built:
            return
        L.build_layer(self.fc1, (None, self.z_dim))
        L.build_layer(self.fc2, (None, self.hidden))
        L.build_layer(self.head, (None, self.hidden))
        self.built = True

    def call(self, z_q):
        """Generates quality factors.

        Args:
          z_q: latents [B, z_dim], float.
        Returns:
          A dict of float32 tensors [B] (float64 under a float64 policy):
          "q" in [0, 100] and "m_q" in [0, 1] (ones if use_mask=False).
        """
        h = ops.relu(self.fc1(z_q))
        h = ops.relu(self.fc2(h))
        logits = ops.cast(self.head(h), L.head_dtype(self))
        q = self.q_min + (100.0 - self.q_min) * ops.sigmoid(logits[:, 0])
        if self.use_mask:
            m_q = ops.sigmoid(logits[:, 1])
        else:
            m_q = ops.ones_like(q)
        return {"q": q, "m_q": m_q}

    def get_config(self):
        config = super().get_config()
        config.update(
            z_dim=self.z_dim, hidden=self.hidden, use_mask=self.use_mask,
            q_init=self.q_init, mask_bias_init=self.mask_bias_init,
            q_min=self.q_min)
        return config
