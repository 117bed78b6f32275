"""The compiled training iteration of DeblurGAN and DeblurGAN-v2.

One iteration on a batch x of sharp training images (docs/deblurgan.md):

  pairs:   theta ~ p(theta);  y = q8(F(x, theta))      (no gradient)
  forward: x_hat = G(y)
  D steps (critic_steps times, on the same x, sg(x_hat)):
           DeblurGAN:    L_D = mean D(x_hat) - mean D(x) + 10 GP
           DeblurGAN-v2: L_D = RaGAN-LS(D(x), D(x_hat)), averaged over the
                         patch and the full-image D
  G step:  L_G = adv_weight * L_adv + perceptual_weight * ||phi(x_hat) -
           phi(x)||^2 + mse_weight * ||x_hat - x||^2

F is `bncr_tf.pairs.build_pair_maker` (true degradation of a setting, a
BNCR-GAN run's frozen generators, or a degrade export); q8 rounds to
8 bits; phi is VGG16 conv3_3 (the offline substitute of VGG19's). The D
steps use the x_hat of the forward pass made before them, and the G step
scores that same x_hat with the updated D, as the released DeblurGAN code
does (one forward pass of G per iteration). Randomness (theta, the GP's
alpha, the dropout masks) comes from the stateless seed (config.seed,
step), so a resumed run continues exactly. The trainer has the interface
`bncr_tf.training.loop` uses (train_iteration, checkpoint, grid,
degradation_stats, histograms, opt_d, opt_g; `restorer` and `F` for the
export).
"""

import keras
import numpy as np
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import models as models_lib
from bncr_tf import pairs
from bncr_tf import variants as variants_lib
from bncr_tf.networks import deblurgan
from bncr_tf.training import grids
from bncr_tf.training import restorer_base


def _fold(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


def build_critic(config):
    """D of a paired run: DeblurGAN's 3-layer PatchGAN, or DeblurGAN-v2's
    double-scale D (ndf = --width)."""
    if config.variant == "deblurganv2":
        d = deblurgan.DoubleScaleDiscriminator(ndf=config.width, name="D")
    else:
        d = deblurgan.PatchDiscriminator(ndf=config.width, n_layers=3,
                                         name="D")
    d.build()
    return d


def psnr(a, b):
    """Mean PSNR (dB, peak 2) of images in [-1, 1], over the batch."""
    mse = tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])
    return tf.reduce_mean(10.0 * tf.math.log(4.0 / tf.maximum(mse, 1e-10))
                          / tf.math.log(10.0))


class PairedTrainer(restorer_base.RestorerTrainer):
    """G, D, F, phi, optimisers and the compiled paired iteration.

    Build it inside `strategy.scope()`.

    Args:
      config: the run's `TrainConfig` (variant deblurgan or deblurganv2).
      strategy: a tf.distribute strategy.
      images: uint8 [N, R, R, 3] sharp training images; the first
        grid_size of them are the fixed inputs of the grids.
    """

    def __init__(self, config, strategy, images):
        self.config = config
        self.spec = variants_lib.PAIRED_MODELS[config.variant]
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        keras.utils.set_random_seed(config.seed)
        self.F = pairs.build_pair_maker(config)
        G = models_lib.build_restorer(config)
        D = build_critic(config)
        self.phi = deblurgan.VGGConv33(name="phi")
        self.setup_players(config, G, D)
        rows = config.grid_size
        self._monitor_x = tf.constant(
            np.asarray(images[:rows], np.float32) / 127.5 - 1.0)
        self._monitor_y = self.make_pairs(
            self._monitor_x, tf.constant([config.seed, -3], tf.int64))

    # --- Pairs and losses -----------------------------------------------------

    def make_pairs(self, x, seed):
        """y = q8(F(x, theta)) for sharp x in [-1, 1] (no gradient)."""
        latents = self.F.theta(tf.shape(x)[0], _fold(seed, 0))
        y = self.F(x, latents, _fold(seed, 1))
        return tf.stop_gradient(pairs.quantise(tf.cast(y, tf.float32)))

    def critic(self, images):
        """{branch: scores} of D (one branch for DeblurGAN)."""
        out = self.D(images)
        return out if isinstance(out, dict) else {"patch": out}

    def d_loss(self, x, fake, seed):
        """L_D (module docstring), averaged over D's branches."""
        real_scores, fake_scores = self.critic(x), self.critic(fake)
        values, total = {}, 0.0
        for name in sorted(real_scores):
            if self.spec.adversarial == "wgan_gp":
                v = losses.wgan_d_loss(real_scores[name], fake_scores[name])
                alpha = tf.random.stateless_uniform(
                    [tf.shape(x)[0], 1, 1, 1], seed)
                v.update(losses.gradient_penalty(
                    lambda u, n=name: self.critic(u)[n], x, fake, alpha,
                    self.spec.gp_weight))
                branch = v["D/wgan"] + v["D/gp"]
            else:
                v = losses.ragan_ls_d_loss(real_scores[name],
                                           fake_scores[name])
                branch = v["D/ragan_ls"]
            total += branch / len(real_scores)
            suffix = "" if len(real_scores) == 1 else "_" + name
            values.update({k + suffix: val for k, val in v.items()})
        values["D/loss"] = total
        return values

    def g_loss(self, x, x_hat):
        """L_G (module docstring)."""
        s = self.spec
        fake_scores = self.critic(x_hat)
        real_scores = (self.critic(x) if s.adversarial == "ragan_ls"
                       else None)
        adv = 0.0
        for name in sorted(fake_scores):
            if s.adversarial == "wgan_gp":
                v = losses.wgan_g_loss(fake_scores[name])
            else:
                v = losses.ragan_ls_g_loss(real_scores[name],
                                           fake_scores[name])
            adv += v["G/adv"] / len(fake_scores)
        values = losses.content_loss(x_hat, x, self.phi(x_hat), self.phi(x),
                                     s.perceptual_weight, s.mse_weight)
        values["G/adv"] = s.adv_weight * adv
        values["G/loss"] = (values["G/adv"] + values["G/perceptual"]
                            + values["G/mse"])
        return values

    # --- Training -------------------------------------------------------------

    def _d_step(self, x, fake, seed):
        """One update of D; returns its loss values."""
        with tf.GradientTape() as tape:
            values = self.d_loss(x, fake, seed)
        values["D/grad_norm"] = self._apply(
            self.opt_d, values["D/loss"], self.D.trainable_variables, tape)
        return values

    def _replica_step(self, reals, seed):
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = _fold(seed, tf.cast(rid, tf.int64))
        x = tf.convert_to_tensor(reals)
        y = self.make_pairs(x, _fold(seed, 0))
        with tf.GradientTape() as tape:
            x_hat = self.G(y, training=True, dropout_seed=_fold(seed, 1))
            with tape.stop_recording():
                fake = tf.stop_gradient(x_hat)
                d_values = self._d_step(x, fake, _fold(seed, 10))
                # The other critic steps in a graph loop (traced once).
                for i in tf.range(1, self.spec.critic_steps):
                    d_values = self._d_step(
                        x, fake, _fold(seed, 10 + tf.cast(i, tf.int64)))
            values = self.g_loss(x, x_hat)
        values["G/grad_norm"] = self._apply(
            self.opt_g, values["G/loss"], self.G.trainable_variables, tape)
        values.update(d_values)
        out = {"Loss/" + k: v for k, v in values.items()}
        out["Restoration/psnr_restored"] = psnr(fake, x)
        out["Restoration/psnr_blurred"] = psnr(y, x)
        return out

    # --- Monitoring -----------------------------------------------------------

    def degradation_stats(self, step):
        """PSNR (dB) of the grid's restored and blurred images against the
        sharp ones (inference mode)."""
        del step
        x_hat = self.G(self._monitor_y, training=False)
        return {"Restoration/grid_psnr_restored":
                float(psnr(x_hat, self._monitor_x)),
                "Restoration/grid_psnr_blurred":
                float(psnr(self._monitor_y, self._monitor_x))}

    def grid(self, rows):
        """blurred | restored | sharp of the first `rows` training images
        (inference mode, a fixed theta)."""
        x = self._monitor_x[:rows]
        y = self._monitor_y[:rows]
        x_hat = self.G(y, training=False)
        columns = [grids.to_uint8(np.asarray(t)) for t in (y, x_hat, x)]
        stacked = np.stack(columns, axis=1).reshape(
            (-1,) + columns[0].shape[1:])
        return grids.tile(stacked, 3)
