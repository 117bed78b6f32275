"""What the restoration trainers share (UNIR, CycleGAN, DeblurGAN and
DeblurGAN-v2; `bncr_tf.training.restoration`, `cyclegan`, `paired`).

`RestorerTrainer` owns the parts that do not depend on the model: Adam
with the run's betas, the step counter, the compiled iteration over
replicas (each replica's gradients are its share of the mean), and the
empty histograms. `setup_players` finishes a trainer with one restorer G
and one D: optimisers, step, checkpoint and the compiled iteration. A
subclass builds its networks first (their initial weights depend on the
order of construction) and defines `_replica_step`, `degradation_stats`
and `grid`; CycleGAN, with two generators and two Ds, uses only the
shared methods. The interface is the one `bncr_tf.training.loop` uses
(train_iteration, checkpoint, grid, degradation_stats, histograms, opt_d,
opt_g).
"""

import keras
import tensorflow as tf

from bncr_tf import models as models_lib


class RestorerTrainer:
    """Base of the restoration trainers (see the module docstring)."""

    def setup_players(self, config, G, D):
        """Optimisers, step, checkpoint and the compiled iteration of a
        trainer with restorer G and discriminator (critic) D."""
        self.G, self.D = G, D
        self.restorer = G
        self.opt_g = self._optimizer("opt_G", config.lr)
        self.opt_d = self._optimizer("opt_D", config.lr * config.d_lr_scale)
        self.opt_g.build(G.trainable_variables)
        self.opt_d.build(D.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="step")
        self._tracked = dict(
            step=self.step, opt_D=self.opt_d, opt_G=self.opt_g,
            D=models_lib.checkpoint_variables(D),
            G=models_lib.checkpoint_variables(G))
        self.checkpoint = tf.train.Checkpoint(**self._tracked)
        signature = None if self.replicas > 1 else [
            tf.TensorSpec([None, config.resolution, config.resolution, 3],
                          tf.float32),
            tf.TensorSpec([2], tf.int64)]
        self._iteration = tf.function(
            self._iteration_fn, jit_compile=config.jit_compile or None,
            input_signature=signature)

    def _optimizer(self, name, lr):
        c = self.config
        return keras.optimizers.Adam(learning_rate=lr, beta_1=c.beta1,
                                     beta_2=c.beta2, name=name)

    def step_value(self):
        return int(self.step.numpy())

    def train_iteration(self, reals, step):
        """Runs iteration `step` on the per-replica training batch."""
        seed = tf.constant([self.config.seed, step], tf.int64)
        return self._iteration(reals, seed)

    def _iteration_fn(self, reals, seed):
        per_replica = self.strategy.run(self._replica_step, (reals, seed))
        values = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v,
                                          axis=None)
                  for k, v in per_replica.items()}
        self.step.assign_add(1)
        return values

    def _apply(self, opt, loss, variables, tape):
        # Each replica's share of the mean over replicas.
        grads = [g / self.replicas for g in tape.gradient(loss, variables)]
        opt.apply(grads, variables)
        return tf.linalg.global_norm(grads) * self.replicas

    def histograms(self, step):
        del step
        return {}
