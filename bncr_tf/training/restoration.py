"""The compiled training iteration of UNIR (restoration from degraded data).

One iteration on a batch y of degraded training images (paper section 7.6,
Pajot et al. 2019; docs/restoration.md):

  G step: x_hat = G(y); theta ~ p(theta); y_hat = F(x_hat, theta)
          L_G = LS-adv(D(y_hat)) + w ||F(G(y_hat), theta) - sg(y_hat)||^2
  D step: L_D = LS(D(y), 1) + LS(D(sg(y_hat)), 0), halved

D sees the real degraded y and the re-degraded F(G(y)): the released UNIR
code feeds G(y) to D (unir/closures/unsupervised_image_reconstruction.py),
which contradicts its paper; this follows the paper. The G step runs first
and the D step scores the y_hat of that forward pass (as the released code
does: one forward pass of G per iteration, before G's update).

F's generators (BNCR-GAN+UNIR) are frozen: they are not in any optimiser
and their variables are never assigned. Randomness comes from the
stateless seed (config.seed, step), so a resumed run continues exactly.
The trainer has the interface `bncr_tf.training.loop` uses (train_iteration,
checkpoint, grid, degradation_stats, histograms, opt_d, opt_g).
"""

import keras
import numpy as np
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import measurement as measurement_lib
from bncr_tf import models as models_lib
from bncr_tf.training import grids
from bncr_tf.training import restorer_base


def _seed_pair(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


class RestorationTrainer(restorer_base.RestorerTrainer):
    """G, D, F, optimisers and the compiled UNIR iteration.

    Build it inside `strategy.scope()`.

    Args:
      config: the run's `TrainConfig` (variant unir).
      strategy: a tf.distribute strategy.
      images: uint8 [N, R, R, 3] degraded training images; the first
        grid_size of them are the fixed inputs of the grids.
    """

    def __init__(self, config, strategy, images):
        self.config = config
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        keras.utils.set_random_seed(config.seed)
        self.F = measurement_lib.build_measurement(config)
        self.setup_players(config, models_lib.build_restorer(config),
                           models_lib.build_discriminator(config))
        rows = config.grid_size
        self._monitor_y = tf.constant(
            np.asarray(images[:rows], np.float32) / 127.5 - 1.0)

    # --- Training ---------------------------------------------------------------

    def measure_pair(self, y, seed, training=True):
        """(x_hat, y_hat, y_back) of one G step (exposed for tests)."""
        x_hat = self.G(y, training=training)
        batch = tf.shape(y)[0]
        latents = self.F.theta(batch, _seed_pair(seed, 0))
        f_seed = _seed_pair(seed, 1)
        y_hat = self.F(x_hat, latents, f_seed)
        x_back = self.G(y_hat, training=training)
        y_back = self.F(x_back, latents, f_seed)
        return x_hat, y_hat, y_back

    def _replica_step(self, reals, seed):
        c = self.config
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = _seed_pair(seed, tf.cast(rid, tf.int64))
        y = tf.convert_to_tensor(reals)
        with tf.GradientTape() as tape:
            x_hat, y_hat, y_back = self.measure_pair(y, seed)
            values = losses.g_least_squares_loss(self.D(y_hat))
            values.update(losses.measurement_reconstruction_loss(
                y_back, y_hat, c.measurement_weight))
            values["G/loss"] = values["G/adv"] + values["G/recon"]
        values["G/grad_norm"] = self._apply(
            self.opt_g, values["G/loss"], self.G.trainable_variables, tape)
        fakes = tf.stop_gradient(y_hat)
        with tf.GradientTape() as tape:
            d_values = losses.d_least_squares_loss(self.D(y), self.D(fakes))
        d_values["D/grad_norm"] = self._apply(
            self.opt_d, d_values["D/loss"], self.D.trainable_variables, tape)
        values.update(d_values)
        values["Restoration/change"] = tf.reduce_mean(tf.abs(x_hat - y))
        return {("Loss/" + k if not k.startswith("Restoration/") else k): v
                for k, v in values.items()}

    # --- Monitoring -----------------------------------------------------------

    def degradation_stats(self, step):
        """Restoration/grid_change: mean |x_hat - y| of the grid inputs
        (inference mode, 0-255 grey levels)."""
        del step
        x_hat = self.G(self._monitor_y, training=False)
        return {"Restoration/grid_change": float(tf.reduce_mean(
            tf.abs(x_hat - self._monitor_y))) * 127.5}

    def grid(self, rows):
        """y | x_hat | F(x_hat) of the first `rows` training images
        (inference mode, a fixed theta)."""
        y = self._monitor_y[:rows]
        x_hat = self.G(y, training=False)
        seed = tf.constant([self.config.seed, -3], tf.int64)
        latents = self.F.theta(tf.shape(y)[0], _seed_pair(seed, 0))
        y_hat = self.F(x_hat, latents, _seed_pair(seed, 1))
        columns = [grids.to_uint8(t.numpy()) for t in (y, x_hat, y_hat)]
        stacked = np.stack(columns, axis=1).reshape(
            (-1,) + columns[0].shape[1:])
        return grids.tile(stacked, 3)
