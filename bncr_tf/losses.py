"""Losses of BNCR-GAN as pure functions returning dicts of float32 scalars.

Every function returns {name: scalar}; the training loop sums the entries
it optimises and logs all of them. Names: "D/..." for the discriminator
step, "G/..." (or a caller-chosen name) for the generator step.

Functions (paper equation or reference -> returned keys):
  d_logistic_loss: eq. 6, D side (NR-GAN 3.1) -> D/real, D/fake, D/loss,
    D/real_logit, D/fake_logit.
  g_nonsaturating_loss: eq. 6, G side, non-saturating -> G/adv,
    G/fake_logit.
  r1_penalty: Mescheder et al. 2018 (NR-GAN 3.2) -> D/r1.
  r1_from_input_gradients: the same penalty from dD(y_r)/dy_r computed by
    the caller (so the D step can share one forward pass of the reals
    between the logistic loss and R1) -> D/r1.
  diversity_sensitive_loss: NR-GAN 3.3 (DS) -> {name}.
  ac_blur_loss: eq. 7 -> G/ac_blur, G/ac_blur_weight.
  ac_comp_loss: eq. 8 -> G/ac_comp, G/ac_comp_weight.
"""

import tensorflow as tf

# Scale parameters of the adaptive-consistency weights (paper eqs. 7-8; the
# paper does not give values, see docs/networks.md). With MU_K = 1 per nat
# the blur weight is e^-1 at H = 1 nat (disk r ~ 0.7) and e^-2 to e^-2.9
# for the stronger CIFAR blurs (motion T = 1, disk r = 1-2: H = 1.9-2.9
# nats). With MU_Q = 10 the compression weight is e^-1 at q = 90, e^-2 at
# q = 80 and e^-4 at q = 60.
MU_K = 1.0
MU_Q = 10.0

DS_WEIGHT = 0.02
R1_WEIGHT = 10.0


def _f32(x):
    return tf.cast(x, tf.float32)


def d_logistic_loss(real_logits, fake_logits):
    """Discriminator logistic loss (paper eq. 6, maximised by D).

    D/real = mean softplus(-D(y_r)), D/fake = mean softplus(D(y_g)),
    D/loss = D/real + D/fake, i.e. BCE-with-logits with targets 1 and 0.
    The caller stops the gradient into the generators (detached fakes).

    Args:
      real_logits: D logits of real images [B_r], float.
      fake_logits: D logits of generated images [B_g], float.
    Returns:
      {"D/real", "D/fake", "D/loss", "D/real_logit", "D/fake_logit"}:
      float32 scalars; the last two are mean logits for monitoring.
    """
    real_logits = _f32(real_logits)
    fake_logits = _f32(fake_logits)
    real = tf.reduce_mean(tf.nn.softplus(-real_logits))
    fake = tf.reduce_mean(tf.nn.softplus(fake_logits))
    return {
        "D/real": real,
        "D/fake": fake,
        "D/loss": real + fake,
        "D/real_logit": tf.reduce_mean(real_logits),
        "D/fake_logit": tf.reduce_mean(fake_logits),
    }


def g_nonsaturating_loss(fake_logits):
    """Non-saturating generator loss (paper eq. 6, G side; NR-GAN 3.1).

    G/adv = mean softplus(-D(y_g)) = BCE-with-logits with target 1.

    Args:
      fake_logits: D logits of generated images [B], float.
    Returns:
      {"G/adv", "G/fake_logit"}: float32 scalars.
    """
    fake_logits = _f32(fake_logits)
    return {
        "G/adv": tf.reduce_mean(tf.nn.softplus(-fake_logits)),
        "G/fake_logit": tf.reduce_mean(fake_logits),
    }


def r1_penalty(discriminator_fn, reals, weight=R1_WEIGHT):
    """R1 gradient penalty on real images (Mescheder et al. 2018).

    D/r1 = weight * mean_b sum_{h,w,c} (dD(y_r)_b / dy_r)^2, NR-GAN's
    convention: weight 10 and no 1/2 factor (gamma = 20 in StyleGAN terms).
    The input gradient comes from an inner GradientTape, so an outer tape
    watching D's variables can differentiate the penalty again (double
    backward). Works eagerly and inside tf.function.

    Args:
      discriminator_fn: callable images [B, H, W, C] -> logits [B].
      reals: real images [B, H, W, C] float (in [-1, 1]); no gradient needs
        to flow into them.
      weight: lambda_r1.
    Returns:
      {"D/r1": float32 scalar}.
    """
    reals = tf.stop_gradient(tf.convert_to_tensor(reals))
    with tf.GradientTape() as tape:
        tape.watch(reals)
        logits = _f32(discriminator_fn(reals))
        total = tf.reduce_sum(logits)
    return r1_from_input_gradients(tape.gradient(total, reals), weight)


def r1_from_input_gradients(grads, weight=R1_WEIGHT):
    """R1 penalty from the input gradient of the real logits.

    D/r1 = weight * mean_b sum_{h,w,c} grads_b^2 with
    grads = d(sum_b D(y_r)_b) / dy_r (as in `r1_penalty`). Use it when the
    logits of the reals are needed anyway: compute them once inside an
    inner GradientTape watching the reals, take that tape's gradient inside
    the outer (D-variable) tape, and the outer tape differentiates the loss
    and the penalty through one forward pass. (A separate forward pass for
    R1 also back-propagates all-zero gradients through its activations,
    since ReLU's second derivative is zero.)

    Args:
      grads: input gradients [B, H, W, C] float.
      weight: lambda_r1.
    Returns:
      {"D/r1": float32 scalar}.
    """
    grads = _f32(grads)
    rank = len(grads.shape)
    sq_norm = tf.reduce_sum(tf.square(grads), axis=list(range(1, rank)))
    return {"D/r1": weight * tf.reduce_mean(sq_norm)}


def _pairwise_mean_abs(values):
    """Mean |v_A,i - v_B,i| over all non-batch elements, halves A and B."""
    values = _f32(values)
    half = tf.shape(values)[0] // 2
    diff = tf.abs(values[:half] - values[half:2 * half])
    diff = tf.reshape(diff, [half, -1])
    return tf.reduce_mean(diff, axis=1)


def diversity_sensitive_loss(outputs, latents, weight=DS_WEIGHT,
                             name="G/ds"):
    """Diversity-sensitive regularisation (NR-GAN section 3.3).

    The batch is split into halves A = [0, B/2) and B = [B/2, 2 * (B/2));
    with an odd batch the last sample is unused. Then
      value = -weight * mean_i[ d(o_A,i, o_B,i) / (d(z_A,i, z_B,i) + 1e-12) ]
    where d is the mean absolute difference over all non-batch elements.
    Minimising it (added to the G loss) increases output diversity.

    What to pass (our conventions, docs/networks.md):
      * G_n: the noise n after the prior, before the random transforms,
        [B, H, W, C] in [-1, 1] units (NR-GAN exactly).
      * G_k: the generated kernel k_hat [B, K, K] (not the mask m_k, whose
        role is to switch blur off for clean images).
      * G_q: q / 100, [B] or [B, 1] (not the mask m_q, same reason).

    Args:
      outputs: generator outputs [B, ...] float; [B] is treated as [B, 1].
      latents: the latents that produced them [B, Z] float.
      weight: lambda_ds (0.02 in NR-GAN).
      name: key of the returned dict.
    Returns:
      {name: float32 scalar} (non-positive).
    """
    outputs = _f32(outputs)
    if len(outputs.shape) == 1:
        outputs = outputs[:, None]
    d_out = _pairwise_mean_abs(outputs)
    d_z = _pairwise_mean_abs(latents)
    return {name: -weight * tf.reduce_mean(d_out / (d_z + 1e-12))}


def ac_weight_blur(entropy, mu_k=MU_K):
    """Blur AC weight e^{-mu_k H} (paper eq. 7); exactly 1 at H = 0.

    Args:
      entropy: kernel entropies H(k) [B] float, in nats (>= 0).
      mu_k: scale parameter (per nat).
    Returns:
      [B] float32 in (0, 1].
    """
    return tf.exp(-mu_k * _f32(entropy))


def ac_weight_comp(q, mu_q=MU_Q):
    """Compression AC weight e^{-mu_q (100 - q) / 100} (paper eq. 8).

    Exactly 1 at q = 100.

    Args:
      q: quality factors [B] (or [B, 1]) float in [0, 100].
      mu_q: scale parameter.
    Returns:
      [B] float32 in (0, 1].
    """
    q = tf.reshape(_f32(q), [-1])
    return tf.exp(-mu_q * (100.0 - q) / 100.0)


AC_REDUCTIONS = ("sum", "mean")


def _weighted_consistency(x, x_degraded, weights, reduction):
    """Batch mean of sg(weights) * ||x - sg(x_degraded)||^2.

    reduction "sum": the squared norm of eqs. 7-8 (summed over pixels and
    channels); "mean": averaged over them instead (H W C times smaller).
    """
    if reduction not in AC_REDUCTIONS:
        raise ValueError(f"unknown AC reduction {reduction!r}; expected one "
                         f"of {AC_REDUCTIONS}")
    x = _f32(x)
    x_degraded = tf.stop_gradient(_f32(x_degraded))
    rank = len(x.shape)
    reduce = tf.reduce_sum if reduction == "sum" else tf.reduce_mean
    per_image = reduce(tf.square(x - x_degraded), axis=list(range(1, rank)))
    return tf.reduce_mean(tf.stop_gradient(weights) * per_image)


def ac_blur_loss(x, x_blurred, entropy, mu_k=MU_K, weight=1.0,
                 reduction="mean"):
    """Adaptive-consistency loss for blur, paper eq. 7.

    L = weight * mean_b[ e^{-mu_k H(k_b)}
                         * ||x_b - sg(x_b * k_b)||^2 ]

    Gradient reaches only the undegraded term x = G_x(z): the blurred term
    is stop-gradient'ed (as the paper states) and so is the weight, so
    G_k gets no gradient from L_AC (otherwise it could lower the loss by
    blurring more). ||.||^2 is the squared norm of eq. 7, summed over
    pixels and channels (reduction "sum"); "mean" averages instead.

    Args:
      x: G_x(z) [B, H, W, C] float (pass [-1, 1] units).
      x_blurred: x * k [B, H, W, C] float, same units as x.
      entropy: H(k) [B] float, in nats.
      mu_k: scale parameter of the weight.
      weight: global multiplier of the loss.
      reduction: "sum" (the paper's squared norm) or "mean".
    Returns:
      {"G/ac_blur": loss, "G/ac_blur_weight": mean AC weight}, float32.
    """
    w = ac_weight_blur(entropy, mu_k)
    return {"G/ac_blur": weight * _weighted_consistency(x, x_blurred, w,
                                                        reduction),
            "G/ac_blur_weight": tf.reduce_mean(w)}


def ac_comp_loss(x, x_compressed, q, mu_q=MU_Q, weight=1.0,
                 reduction="mean"):
    """Adaptive-consistency loss for compression, paper eq. 8.

    L = weight * mean_b[ e^{-mu_q (100 - q_b) / 100}
                         * ||x_b - sg(psi(x_b, q_b))||^2 ]

    Gradient reaches only x = G_x(z): the compressed term and the weight
    are constants, so G_q gets no gradient from L_AC.

    Args:
      x: G_x(z) [B, H, W, C] float (pass [-1, 1] units).
      x_compressed: psi^g(x, q) [B, H, W, C] float, same units as x.
      q: quality factors [B] float in [0, 100].
      mu_q: scale parameter of the weight.
      weight: global multiplier of the loss.
      reduction: "sum" (the paper's squared norm) or "mean".
    Returns:
      {"G/ac_comp": loss, "G/ac_comp_weight": mean AC weight}, float32.
    """
    w = ac_weight_comp(q, mu_q)
    return {"G/ac_comp": weight * _weighted_consistency(x, x_compressed, w,
                                                        reduction),
            "G/ac_comp_weight": tf.reduce_mean(w)}


# --- UNIR (restoration, docs/restoration.md) ---------------------------------

def d_least_squares_loss(real_scores, fake_scores):
    """Least-squares D loss (Mao et al. 2017) as UNIR uses it.

    D/real = mean (D(y) - 1)^2, D/fake = mean D(F(G(y)))^2, D/loss =
    (D/real + D/fake) / 2 (UNIR halves the sum). Scores are D's raw
    outputs ([choice]: UNIR applies a sigmoid first, docs/restoration.md).

    Returns:
      {"D/real", "D/fake", "D/loss", "D/real_logit", "D/fake_logit"}.
    """
    real_scores = _f32(real_scores)
    fake_scores = _f32(fake_scores)
    real = tf.reduce_mean(tf.square(real_scores - 1.0))
    fake = tf.reduce_mean(tf.square(fake_scores))
    return {"D/real": real, "D/fake": fake, "D/loss": 0.5 * (real + fake),
            "D/real_logit": tf.reduce_mean(real_scores),
            "D/fake_logit": tf.reduce_mean(fake_scores)}


def g_least_squares_loss(fake_scores):
    """Least-squares G loss: G/adv = mean (D(F(G(y))) - 1)^2."""
    fake_scores = _f32(fake_scores)
    return {"G/adv": tf.reduce_mean(tf.square(fake_scores - 1.0)),
            "G/fake_logit": tf.reduce_mean(fake_scores)}


def measurement_reconstruction_loss(y_back, y_hat, weight=2.0,
                                    name="G/recon"):
    """UNIR's reconstruction of a measurement: weight * mean (y_back -
    sg(y_hat))^2, with y_hat = F(G(y), theta) and y_back = F(G(y_hat),
    theta) (the same theta). The target carries no gradient.

    Returns:
      {name: weighted loss, name + "_weight": weight}.
    """
    err = _f32(y_back) - tf.stop_gradient(_f32(y_hat))
    return {name: weight * tf.reduce_mean(tf.square(err)),
            name + "_weight": tf.constant(weight, tf.float32)}


# --- CycleGAN (restoration with set-level supervision) -----------------------

def cycle_consistency_loss(real, reconstructed, weight=10.0, name="G/cycle"):
    """CycleGAN's cycle loss (Zhu et al. 2017, eq. 2): weight * mean
    |reconstructed - real|, e.g. real y and F(G(y)). L1 over pixels and
    channels, as the reference code's `L1Loss` (lambda 10).

    Returns:
      {name: weighted loss}.
    """
    return {name: weight * tf.reduce_mean(
        tf.abs(_f32(reconstructed) - _f32(real)))}


def identity_loss(real, mapped, weight=5.0, name="G/identity"):
    """CycleGAN's identity loss: weight * mean |mapped - real|, e.g. real
    clean x and G(x). The reference code weights it lambda_idt * lambda
    = 0.5 * 10 = 5 (`--identity_weight` times `--cycle_weight`).

    Returns:
      {name: weighted loss}.
    """
    return {name: weight * tf.reduce_mean(tf.abs(_f32(mapped) - _f32(real)))}


# --- DeblurGAN / DeblurGAN-v2 (paired restoration, docs/deblurgan.md) ------

def wgan_d_loss(real_scores, fake_scores):
    """WGAN critic loss (Arjovsky et al. 2017), without the penalty:
    D/loss = mean D(G(y)) - mean D(x) over images and patches.

    Returns:
      {"D/wgan", "D/real_logit", "D/fake_logit"}.
    """
    real = tf.reduce_mean(_f32(real_scores))
    fake = tf.reduce_mean(_f32(fake_scores))
    return {"D/wgan": fake - real, "D/real_logit": real,
            "D/fake_logit": fake}


def wgan_g_loss(fake_scores):
    """WGAN generator loss: G/adv = -mean D(G(y))."""
    return {"G/adv": -tf.reduce_mean(_f32(fake_scores))}


def gradient_penalty(critic_fn, reals, fakes, alpha, weight=10.0):
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): weight * mean_i
    (||grad_u D(u_i)||_2 - 1)^2 at u = alpha x + (1 - alpha) G(y).

    [choice] The norm is over each image's pixels and channels (the
    paper's); the released DeblurGAN code takes it over channels per
    pixel (`gradients.norm(2, dim=1)`).

    Args:
      critic_fn: images [B, H, W, 3] -> scores of any shape [B, ...].
      reals, fakes: [B, H, W, 3] in [-1, 1].
      alpha: [B, 1, 1, 1] in [0, 1].
      weight: lambda (DeblurGAN: 10).
    Returns:
      {"D/gp": the weighted penalty}.
    """
    u = alpha * _f32(reals) + (1.0 - alpha) * _f32(tf.stop_gradient(fakes))
    with tf.GradientTape() as tape:
        tape.watch(u)
        scores = tf.reduce_sum(_f32(critic_fn(u)))
    grads = tape.gradient(scores, u)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return {"D/gp": weight * tf.reduce_mean(tf.square(norm - 1.0))}


def ragan_ls_d_loss(real_scores, fake_scores):
    """Relativistic average least-squares D loss (Jolicoeur-Martineau
    2019; DeblurGAN-v2 eq. 2): ([mean (D(x) - mean D(G(y)) - 1)^2] +
    [mean (D(G(y)) - mean D(x) + 1)^2]) / 2, means over the batch (the
    released code keeps a pool of past scores; here the batch is the pool).

    Returns:
      {"D/ragan_ls", "D/real_logit", "D/fake_logit"}.
    """
    real, fake = _f32(real_scores), _f32(fake_scores)
    real_mean, fake_mean = tf.reduce_mean(real), tf.reduce_mean(fake)
    loss = 0.5 * (tf.reduce_mean(tf.square(real - fake_mean - 1.0))
                  + tf.reduce_mean(tf.square(fake - real_mean + 1.0)))
    return {"D/ragan_ls": loss, "D/real_logit": real_mean,
            "D/fake_logit": fake_mean}


def ragan_ls_g_loss(real_scores, fake_scores):
    """RaGAN-LS generator loss: the D loss with the targets swapped,
    ([mean (D(x) - mean D(G(y)) + 1)^2] + [mean (D(G(y)) - mean D(x) -
    1)^2]) / 2."""
    real, fake = _f32(real_scores), _f32(fake_scores)
    real_mean, fake_mean = tf.reduce_mean(real), tf.reduce_mean(fake)
    loss = 0.5 * (tf.reduce_mean(tf.square(real - fake_mean + 1.0))
                  + tf.reduce_mean(tf.square(fake - real_mean - 1.0)))
    return {"G/adv": loss}


def content_loss(x_hat, x, features_hat, features, perceptual_weight,
                 mse_weight):
    """DeblurGAN's content loss: perceptual_weight * mean (phi(G(y)) -
    sg(phi(x)))^2 + mse_weight * mean ((G(y) - x) / 2)^2, phi = VGG
    conv3_3 features, the pixel MSE on images in [0, 1] (DeblurGAN: 100 x
    perceptual; DeblurGAN-v2: 0.006 x perceptual + 0.5 x MSE).

    Returns:
      {"G/perceptual", "G/mse"} (weighted).
    """
    perc = tf.reduce_mean(tf.square(_f32(features_hat)
                                    - tf.stop_gradient(_f32(features))))
    mse = tf.reduce_mean(tf.square((_f32(x_hat) - _f32(x)) / 2.0))
    return {"G/perceptual": perceptual_weight * perc,
            "G/mse": mse_weight * mse}
