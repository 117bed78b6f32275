"""CycleGAN with set-level supervision (paper section 7.6, Table 4).

The training images (degraded by --setting as for every model) are split
by the setting's ground truth into a clean set X (no degradation selected
for the image) and a degraded set Y (at least one). CycleGAN (Zhu et al.
2017) learns G: Y -> X (the restorer) and F: X -> Y with two PatchGAN
discriminators D_x, D_y. One iteration on an unpaired batch y from Y and
x from X, with the reference code's defaults (junyanz/pytorch-CycleGAN-
and-pix2pix, read for facts only):

  G step: x_hat = G(y), y_fake = F(x)
          L = LS(D_x(x_hat)) + LS(D_y(y_fake))                 (LSGAN)
              + 10 |F(x_hat) - y| + 10 |G(y_fake) - x|          (cycle, L1)
              + 5 |G(x) - x| + 5 |F(y) - y|                    (identity)
  D step: D_x scores x against pool_x(x_hat), D_y scores y against
          pool_y(y_fake); each LS loss halved. The pools hold 50 earlier
          fakes (`ImagePool`).

Adam 2e-4, beta1 0.5 (the entry point's defaults for --variant=cyclegan).
The setting must have both sets: setting N (everything degraded) has no
clean image, so CycleGAN is not defined there (paper footnote 12).

Randomness is a pure function of (config.seed, step): the batches of both
sets, their dequantisation noise and the pools' draws; the pools are in
the checkpoint, so a resumed run continues exactly.
"""

import keras
import numpy as np
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import variants
from bncr_tf.errors import UserError
from bncr_tf.networks import cyclegan as networks
from bncr_tf.training import grids
from bncr_tf.training import restorer_base

STAGES = variants.DEGRADATION_STAGES


def clean_mask(setting, num_images, seed):
    """Which of the N training images the setting left clean.

    The ground truth of the dataset builder: an image is clean when none
    of the setting's degradations selected it (`settings.selection_mask`
    with the same N and seed as `loop.load_training_images`).

    Args:
      setting: `Setting` or name.
      num_images: N.
      seed: the run's --data_seed.
    Returns:
      bool numpy [N].
    """
    from bncr_tf.degradations import settings as settings_lib
    clean = np.ones(num_images, bool)
    for stage in STAGES:
        clean &= ~settings_lib.selection_mask(setting, stage, num_images,
                                              seed)
    return clean


def pool_query(pool, count, images, uniforms, picks):
    """CycleGAN's image pool on a batch, image by image (a pure function).

    For each image in order: while the pool holds fewer than its size
    images, the image is stored and returned; once full, with probability
    1/2 (uniform > 0.5) a uniformly picked stored image is returned and
    replaced by the new one, else the new image is returned.

    Args:
      pool: [S, H, W, C] stored images (the first `count` are valid).
      count: int32 scalar, images stored so far (<= S).
      images: [B, H, W, C] new fakes, B static.
      uniforms: float32 [B] in [0, 1).
      picks: int32 [B] in [0, S).
    Returns:
      (returned images [B, H, W, C], new pool, new count).
    """
    size = pool.shape[0]
    out = []
    for i in range(images.shape[0]):
        image = images[i]
        filling = count < size
        swap = tf.logical_and(tf.logical_not(filling), uniforms[i] > 0.5)
        slot = tf.where(filling, count, picks[i])
        stored = pool[slot]
        out.append(tf.where(swap, stored, image))
        row = tf.where(tf.logical_or(filling, swap), image, stored)
        pool = tf.tensor_scatter_nd_update(pool, [[slot]], row[None])
        count = count + tf.cast(filling, tf.int32)
    return tf.stack(out), pool, count


class ImagePool:
    """A history of generated images for D (Shrivastava et al. 2017), as
    CycleGAN uses it; its state is two variables (checkpointed)."""

    def __init__(self, size, shape, name):
        self.size = size
        self.images = tf.Variable(tf.zeros((max(size, 1),) + tuple(shape)),
                                  trainable=False, name=name + "_images")
        self.count = tf.Variable(0, dtype=tf.int32, trainable=False,
                                 name=name + "_count")

    def variables(self):
        return {"images": self.images, "count": self.count}

    def query(self, images, seed):
        """Returns the batch D sees instead of `images` (module
        docstring); draws from the stateless `seed` [2]."""
        if self.size == 0:
            return images
        batch = images.shape[0]
        uniforms = tf.random.stateless_uniform([batch], seed)
        picks = tf.random.stateless_uniform(
            [batch], tf.random.experimental.stateless_fold_in(seed, 1),
            minval=0, maxval=self.size, dtype=tf.int32)
        out, pool, count = pool_query(self.images, self.count, images,
                                      uniforms, picks)
        self.images.assign(pool)
        self.count.assign(count)
        return out


def _fold(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


def build_generator(config, name):
    """A CycleGAN generator of width --width, built."""
    g = networks.CycleGANGenerator(ngf=config.width, name=name)
    g.build()
    return g


def build_discriminator(config, name):
    d = networks.PatchDiscriminator(ndf=config.width, name=name)
    d.build()
    return d


class CycleGANTrainer(restorer_base.RestorerTrainer):
    """G, F, D_x, D_y, the pools, optimisers and the compiled iteration.

    Build it inside `strategy.scope()`; the interface is the one
    `bncr_tf.training.loop` uses (plus `real_batches`, the two-set batches).

    Args:
      config: the run's `TrainConfig` (variant cyclegan).
      strategy: a one-device tf.distribute strategy.
      images: uint8 [N, R, R, 3] training images degraded by --setting.
    Raises:
      UserError: more than one replica, or a set smaller than a batch.
    """

    def __init__(self, config, strategy, images):
        from bncr_tf.degradations import settings as settings_lib
        from bncr_tf import models as models_lib
        self.config = config
        self.strategy = strategy
        if strategy.num_replicas_in_sync > 1:
            raise UserError("--variant=cyclegan trains on one device; pass "
                            "--distribute=default")
        setting = settings_lib.get_setting(config.setting)
        reason = variants.no_clean_reason(setting)
        if reason:
            raise UserError(f"--variant=cyclegan needs clean and degraded "
                            f"training images (set-level supervision); "
                            f"{reason}")
        clean = clean_mask(setting, len(images), config.data_seed)
        self.clean_images = images[clean]
        self.degraded_images = images[~clean]
        for name, part in (("clean", self.clean_images),
                           ("degraded", self.degraded_images)):
            if len(part) < config.d_batch:
                raise UserError(
                    f"setting {setting.name} leaves {len(part)} {name} "
                    f"images of {len(images)}, fewer than one batch "
                    f"(--d_batch={config.d_batch}); use more data")
        keras.utils.set_random_seed(config.seed)
        self.G = build_generator(config, "G")
        self.F = build_generator(config, "F")
        self.D_x = build_discriminator(config, "D_x")
        self.D_y = build_discriminator(config, "D_y")
        self.restorer = self.G
        self.measurement_description = (
            f"CycleGAN's learned F (clean -> degraded), set-level "
            f"supervision on setting {setting.name}: "
            f"{len(self.clean_images)} clean, {len(self.degraded_images)} "
            f"degraded images")
        self.opt_g = self._optimizer("opt_G", config.lr)
        self.opt_d = self._optimizer("opt_D", config.lr * config.d_lr_scale)
        self.g_variables = (self.G.trainable_variables
                            + self.F.trainable_variables)
        self.d_variables = (self.D_x.trainable_variables
                            + self.D_y.trainable_variables)
        self.opt_g.build(self.g_variables)
        self.opt_d.build(self.d_variables)
        shape = (config.resolution, config.resolution, 3)
        self.pool_x = ImagePool(config.pool_size, shape, "pool_x")
        self.pool_y = ImagePool(config.pool_size, shape, "pool_y")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="step")
        self.checkpoint = tf.train.Checkpoint(
            step=self.step, opt_D=self.opt_d, opt_G=self.opt_g,
            G=models_lib.checkpoint_variables(self.G),
            F=models_lib.checkpoint_variables(self.F),
            D_x=models_lib.checkpoint_variables(self.D_x),
            D_y=models_lib.checkpoint_variables(self.D_y),
            pool_x=self.pool_x.variables(), pool_y=self.pool_y.variables())
        batch = tf.TensorSpec((config.d_batch,) + shape, tf.float32)
        self._iteration = tf.function(
            self._iteration_fn, jit_compile=config.jit_compile or None,
            input_signature=[batch, batch, tf.TensorSpec([2], tf.int64)])
        self._monitor_y = tf.constant(
            np.asarray(self.degraded_images[:config.grid_size], np.float32)
            / 127.5 - 1.0)

    # --- Data -------------------------------------------------------------------

    def _indices(self, n, domain, step):
        """Batch `step` of a set of n images: epoch-wise permutations
        seeded by (seed, domain, epoch)."""
        batch = self.config.d_batch
        epoch, pos = divmod(int(step), n // batch)
        perm = np.random.default_rng(
            [self.config.seed, domain, epoch]).permutation(n)
        return np.sort(perm[pos * batch:(pos + 1) * batch])

    def batch_u8(self, step):
        """(y, x) uint8 batches of step `step` (degraded, clean)."""
        y = self.degraded_images[self._indices(
            len(self.degraded_images), 1, step)]
        x = self.clean_images[self._indices(len(self.clean_images), 2, step)]
        return y, x

    def real_batches(self, start_step):
        """A tf.data.Dataset of (y, x) float32 [B, R, R, 3] in [-1, 1) for
        steps start_step, start_step + 1, ... (dequantised as the GANs'
        reals; a batch depends only on its step)."""
        from bncr_tf import data
        b = self.config.d_batch
        shape = (b,) + self.degraded_images.shape[1:]
        seed = self.config.seed

        def load(step):
            y, x = tf.numpy_function(self.batch_u8, [step],
                                     (tf.uint8, tf.uint8), stateful=False)
            y.set_shape(shape)
            x.set_shape(shape)
            pair = tf.stack([tf.cast(seed, tf.int64), step])
            return (data.dequantize(y, pair),
                    data.dequantize(x, _fold(pair, 1)))

        ds = tf.data.Dataset.range(start_step, 2 ** 62)
        return ds.map(load, num_parallel_calls=1).prefetch(2)

    # --- Training ---------------------------------------------------------------

    def train_iteration(self, reals, step):
        """Runs iteration `step` on reals = (y, x) of `real_batches`."""
        y, x = reals
        seed = tf.constant([self.config.seed, step], tf.int64)
        return self._iteration(y, x, seed)

    def generator_losses(self, y, x):
        """The G step's named losses (exposed for tests): x_hat = G(y),
        y_fake = F(x), their cycles and identities."""
        c = self.config
        x_hat = self.G(y, training=True)
        y_fake = self.F(x, training=True)
        values = {
            "G/adv": losses.g_least_squares_loss(self.D_x(x_hat))["G/adv"],
            "F/adv": losses.g_least_squares_loss(self.D_y(y_fake))["G/adv"],
        }
        values.update(losses.cycle_consistency_loss(
            y, self.F(x_hat, training=True), c.cycle_weight, "G/cycle_y"))
        values.update(losses.cycle_consistency_loss(
            x, self.G(y_fake, training=True), c.cycle_weight, "G/cycle_x"))
        if c.identity_weight > 0:
            w = c.identity_weight * c.cycle_weight
            values.update(losses.identity_loss(
                x, self.G(x, training=True), w, "G/identity"))
            values.update(losses.identity_loss(
                y, self.F(y, training=True), w, "F/identity"))
        values["G/loss"] = tf.add_n(list(values.values()))
        return values, x_hat, y_fake

    def _iteration_fn(self, y, x, seed):
        with tf.GradientTape() as tape:
            values, x_hat, y_fake = self.generator_losses(y, x)
        grads = tape.gradient(values["G/loss"], self.g_variables)
        self.opt_g.apply(grads, self.g_variables)
        values["G/grad_norm"] = tf.linalg.global_norm(grads)
        x_old = self.pool_x.query(tf.stop_gradient(x_hat), _fold(seed, 10))
        y_old = self.pool_y.query(tf.stop_gradient(y_fake), _fold(seed, 11))
        with tf.GradientTape() as tape:
            dx = losses.d_least_squares_loss(self.D_x(x), self.D_x(x_old))
            dy = losses.d_least_squares_loss(self.D_y(y), self.D_y(y_old))
            d_loss = dx["D/loss"] + dy["D/loss"]
        grads = tape.gradient(d_loss, self.d_variables)
        self.opt_d.apply(grads, self.d_variables)
        values.update({k.replace("D/", "D_x/"): v for k, v in dx.items()})
        values.update({k.replace("D/", "D_y/"): v for k, v in dy.items()})
        values["D/loss"] = d_loss
        values["D/grad_norm"] = tf.linalg.global_norm(grads)
        self.step.assign_add(1)
        out = {"Loss/" + k: v for k, v in values.items()}
        out["Restoration/change"] = tf.reduce_mean(tf.abs(x_hat - y))
        return out

    # --- Monitoring -----------------------------------------------------------

    def degradation_stats(self, step):
        """Restoration/grid_change: mean |G(y) - y| of the grid inputs in
        grey levels."""
        del step
        x_hat = self.G(self._monitor_y)
        return {"Restoration/grid_change": float(tf.reduce_mean(
            tf.abs(x_hat - self._monitor_y))) * 127.5}

    def grid(self, rows):
        """y | G(y) | F(G(y)) of the first `rows` degraded training images
        (CycleGAN's analogue of UNIR's y | x_hat | F(x_hat))."""
        y = self._monitor_y[:rows]
        x_hat = self.G(y)
        y_cyc = self.F(x_hat)
        columns = [grids.to_uint8(t.numpy()) for t in (y, x_hat, y_cyc)]
        stacked = np.stack(columns, axis=1).reshape(
            (-1,) + columns[0].shape[1:])
        return grids.tile(stacked, 3)
