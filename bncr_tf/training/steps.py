"""Networks, optimisers, EMA and the compiled training iteration.

One iteration = one D step then one G step (NR-GAN: n_dis = 1), compiled
once as a `tf.function` with a fixed input signature (no retracing). The
fakes of the D step are generated outside the gradient tape, and one
forward pass of the reals serves both the logistic loss and R1 (see
docs/performance.md). All randomness of iteration s comes from the
stateless seed (config.seed, s).
"""

import keras
import numpy as np
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import models as models_lib
from bncr_tf import stages as stages_lib
from bncr_tf import synthesis
from bncr_tf.training import grids

MONITOR_BATCH = 256  # fixed latents for the degradation statistics


def _seed_pair(seed, salt):
    return tf.random.experimental.stateless_fold_in(seed, salt)


class Trainer:
    """Holds every network and optimiser of a run and its compiled steps.

    Build it inside `strategy.scope()`.

    Attributes:
      gens: raw `synthesis.Generators`; gens_ema: their EMA copies.
      D: the discriminator.
      checkpoint: a `tf.train.Checkpoint` of the full training state.
    """

    def __init__(self, config, strategy):
        self.config = config
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        # Initial weights are a function of the seed.
        keras.utils.set_random_seed(config.seed)
        self.gens = models_lib.build_generators(config)
        self.gens_ema = models_lib.build_generators(config, "_ema")
        self.D = models_lib.build_discriminator(config)
        self.variant = self.gens.variant
        for name, model in self.gens.models().items():
            self.gens_ema.models()[name].set_weights(model.get_weights())
        self._g_vars = self.gens.trainable_variables()
        # Which G variables belong to a degradation generator (G_k, G_n,
        # G_q): they wait out --degradation_warmup.
        self._g_is_degradation = [
            name != "G_x" for name, model in self.gens.models().items()
            for _ in model.trainable_variables]
        self._ema_pairs = list(zip(self.gens_ema.trainable_variables(),
                                   self._g_vars))
        self.opt_d = self._optimizer("opt_D", config.lr * config.d_lr_scale)
        self.opt_g = self._optimizer("opt_G")
        self.opt_d.build(self.D.trainable_variables)
        # --degradation_lr_scale != 1: G_k, G_n and G_q get their own Adam
        # with that multiple of the learning rate (a slower time scale).
        self.opt_deg = None
        deg_vars = [v for v, d in zip(self._g_vars, self._g_is_degradation)
                    if d]
        if config.degradation_lr_scale != 1.0 and deg_vars:
            self.opt_deg = self._optimizer(
                "opt_G_deg", config.lr * config.degradation_lr_scale)
            self.opt_deg.build(deg_vars)
            self.opt_g.build([v for v, d in zip(
                self._g_vars, self._g_is_degradation) if not d])
        else:
            self.opt_g.build(self._g_vars)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="step")
        tracked = dict(step=self.step, opt_D=self.opt_d, opt_G=self.opt_g,
                       D=models_lib.checkpoint_variables(self.D))
        if self.opt_deg is not None:
            tracked["opt_G_deg"] = self.opt_deg
        for name, model in self.gens.models().items():
            tracked[name] = models_lib.checkpoint_variables(model)
            tracked[name + "_ema"] = models_lib.checkpoint_variables(
                self.gens_ema.models()[name])
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self._tracked = tracked
        self.regularisers = stages_lib.Regularisers.from_config(config)
        # A fixed signature (one trace). Distributed inputs (PerReplica
        # values) cannot match a TensorSpec; their batches have fixed shapes
        # (drop_remainder), so they also trace once.
        signature = None if self.replicas > 1 else [
            tf.TensorSpec([None, config.resolution, config.resolution, 3],
                          tf.float32),
            tf.TensorSpec([2], tf.int64)]
        self._iteration = tf.function(
            self._iteration_fn, jit_compile=config.jit_compile or None,
            input_signature=signature)
        self._monitor = tf.function(self._monitor_fn)
        self._monitor_latents = synthesis.sample_latents(
            MONITOR_BATCH, config.z_dim, [config.seed, -1])

    # --- Construction ---------------------------------------------------------

    def _optimizer(self, name, lr=None):
        c = self.config
        opt = keras.optimizers.Adam(
            learning_rate=c.lr if lr is None else lr, beta_1=c.beta1,
            beta_2=c.beta2, name=name)
        if c.mixed_precision == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt, name=name + "_ls")
        return opt

    def step_value(self):
        return int(self.step.numpy())

    def image_model_checkpoint(self):
        """A `tf.train.Checkpoint` of G_x (raw and EMA) and D alone, under
        the names of the full training checkpoint (--init_from reads a
        run's checkpoint through it)."""
        return tf.train.Checkpoint(**{
            name: self._tracked[name] for name in ("D", "G_x", "G_x_ema")})

    # --- Training ---------------------------------------------------------------

    def train_iteration(self, reals, step):
        """Runs iteration `step` on per-replica `reals`; returns scalars."""
        seed = tf.constant([self.config.seed, step], tf.int64)
        return self._iteration(reals, seed)

    def _iteration_fn(self, reals, seed):
        per_replica = self.strategy.run(self._replica_step, (reals, seed))
        values = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v,
                                          axis=None)
                  for k, v in per_replica.items()}
        self._update_ema()
        self.step.assign_add(1)
        return values

    def _replica_step(self, reals, seed):
        # Latents are drawn for the global batch from the shared seed and
        # sliced per replica, so N replicas see the same latents as one
        # device; other randomness (eps, transforms) uses a per-replica seed.
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        values = self._d_step(reals, _seed_pair(seed, 1), rid)
        values.update(self._g_step(_seed_pair(seed, 2), rid))
        return values

    def _replica_latents(self, global_batch, seed, rid, paired):
        """This replica's share of the global batch of latents.

        Args:
          global_batch: the global batch size.
          seed: the (replica-independent) seed of the latents.
          rid: replica id (int tensor).
          paired: keep the diversity-sensitive pairing (sample i with
            i + B/2 of the global batch) inside each replica.
        """
        latents = synthesis.sample_latents(global_batch, self.config.z_dim,
                                           seed)
        b = global_batch // self.replicas
        if self.replicas == 1:
            return latents
        if paired:
            h, g = b // 2, global_batch // 2
            idx = tf.concat([tf.range(rid * h, rid * h + h),
                             tf.range(g + rid * h, g + rid * h + h)], 0)
        else:
            idx = tf.range(rid * b, rid * b + b)
        return {k: tf.gather(v, idx) for k, v in latents.items()}

    def _scaled(self, opt, loss):
        """Per-replica share of the loss (and loss scaling); inside a tape."""
        loss = loss / self.replicas
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            loss = opt.scale_loss(loss)
        return loss

    def _apply(self, opt, scaled_loss, variables, tape, frozen=None):
        """Differentiates the scaled loss and applies the update.

        Args:
          frozen: optional (bool list over variables, bool tensor): while
            the tensor is true, the flagged variables get zero gradients
            (from the start of training their Adam moments stay zero, so
            they do not move).
        Returns the global gradient norm of the unscaled, summed loss.
        """
        grads = tape.gradient(scaled_loss, variables)
        if frozen is not None:
            flags, active = frozen
            keep = 1.0 - tf.cast(active, tf.float32)
            grads = [g * tf.cast(keep, g.dtype) if (flag and g is not None)
                     else g for g, flag in zip(grads, flags)]
        norm = tf.linalg.global_norm([g for g in grads if g is not None])
        scaled = isinstance(opt, keras.optimizers.LossScaleOptimizer)
        if scaled:
            # The scale in force for this step (apply may change it).
            scale = tf.cast(opt.dynamic_scale, norm.dtype)
            norm = norm / scale
        if opt is self.opt_g and self.opt_deg is not None:
            # Degradation generators: their own (slower) Adam. With loss
            # scaling, their gradients are rescaled to that optimiser's
            # own scale, which its apply() removes.
            deg = self._g_is_degradation
            if scaled:
                ratio = tf.cast(self.opt_deg.dynamic_scale, norm.dtype) / (
                    scale)
                deg_grads = [
                    None if g is None else g * tf.cast(ratio, g.dtype)
                    for g, d in zip(grads, deg) if d]
            else:
                deg_grads = [g for g, d in zip(grads, deg) if d]
            self.opt_deg.apply(deg_grads,
                               [v for v, d in zip(variables, deg) if d])
            grads = [g for g, d in zip(grads, deg) if not d]
            variables = [v for v, d in zip(variables, deg) if not d]
        opt.apply(grads, variables)
        return norm * self.replicas

    def _d_step(self, reals, seed, rid):
        """D step: non-saturating logistic loss + R1 on reals."""
        c = self.config
        latents = self._replica_latents(c.d_batch, _seed_pair(seed, 0), rid,
                                        paired=False)
        fakes = tf.stop_gradient(synthesis.synthesize(
            self.gens, latents, _seed_pair(_seed_pair(seed, 1), rid)).y)
        reals = tf.convert_to_tensor(reals)
        with tf.GradientTape() as tape:
            # One forward pass of the reals serves the logistic loss and
            # R1 (the inner tape gives dD/dy_r; the outer tape then
            # differentiates both terms through the same activations).
            with tf.GradientTape() as r1_tape:
                r1_tape.watch(reals)
                real_logits = self.D(
                    reals, maps_constant=(c.r1_inputs == "image"))
                real_sum = tf.reduce_sum(tf.cast(real_logits, tf.float32))
            input_grads = r1_tape.gradient(real_sum, reals)
            fake_logits = self.D(fakes)
            values = losses.d_logistic_loss(real_logits, fake_logits)
            values.update(losses.r1_from_input_gradients(input_grads,
                                                         c.r1_weight))
            scaled = self._scaled(self.opt_d,
                                  values["D/loss"] + values["D/r1"])
        values["D/grad_norm"] = self._apply(
            self.opt_d, scaled, self.D.trainable_variables, tape)
        return {"Loss/" + k: v for k, v in values.items()}

    def _g_step(self, seed, rid):
        """G step: adversarial + DS (G_k, G_n, G_q) + AC (BNCR-GAN)."""
        c, v = self.config, self.variant
        latents = self._replica_latents(c.g_batch, _seed_pair(seed, 0), rid,
                                        paired=True)
        with tf.GradientTape() as tape:
            s = synthesis.synthesize(
                self.gens, latents, _seed_pair(_seed_pair(seed, 1), rid),
                with_aux=v.adaptive_consistency)
            values = losses.g_nonsaturating_loss(self.D(s.y))
            total = values["G/adv"]
            # Each stage's DS and L_AC terms; "*_weight" entries are logged,
            # not added.
            for reg in stages_lib.regularisers(v, s, latents,
                                               self.regularisers):
                values.update(reg)
                for name, value in reg.items():
                    if not name.endswith("_weight"):
                        total += value
            values["G/loss"] = total
            scaled = self._scaled(self.opt_g, total)
        frozen = None
        if c.degradation_warmup > 0:
            frozen = (self._g_is_degradation,
                      self.step < c.degradation_warmup)
        values["G/grad_norm"] = self._apply(self.opt_g, scaled, self._g_vars,
                                            tape, frozen)
        return {"Loss/" + k: v for k, v in values.items()}

    def _update_ema(self):
        decay = self.config.ema_decay
        for ema_var, var in self._ema_pairs:
            ema_var.assign(decay * ema_var + (1.0 - decay) * var)

    # --- Monitoring -----------------------------------------------------------

    def _monitor_fn(self, latents, seed):
        s = synthesis.synthesize(self.gens_ema, latents, seed)
        out = {}
        for stage in self.gens_ema.stages():
            out.update(stage.monitor(s))
        return out

    def _monitor_values(self):
        seed = tf.constant([self.config.seed, -2], tf.int64)
        with self.strategy.scope():
            return {k: v.numpy() for k, v in
                    self._monitor(self._monitor_latents, seed).items()}

    def degradation_stats(self, step):
        """Means of the learned degradations on fixed latents (EMA nets).

        Names: Degradation/q_mean, m_q_mean, m_k_mean, kernel_entropy,
        noise_std (in 0-255 grey levels).
        """
        del step
        values = self._monitor_values()
        names = {}
        for stage in stages_lib.STAGES:
            names.update(stage.stat_names)
        return {names[k]: float(np.mean(v)) for k, v in values.items()}

    def histograms(self, step):
        """Per-sample values of the learned degradations (EMA nets).

        Tagged Degradation_hist/<name>: TensorBoard keys its data by tag,
        so a histogram must not share a tag with the scalar of its mean
        (Degradation/...), or neither shows.
        """
        del step
        return {"Degradation_hist/" + k: v
                for k, v in self._monitor_values().items()}

    def grid(self, rows):
        """x | k | n | y decomposition grid of `rows` fixed-latent samples."""
        latents = {k: v[:rows] for k, v in self._monitor_latents.items()}
        s = synthesis.synthesize(self.gens_ema, latents,
                                 tf.constant([self.config.seed, -3],
                                             tf.int64))
        return grids.decomposition_grid(
            {k: v.numpy() for k, v in s.present().items()}, rows)
