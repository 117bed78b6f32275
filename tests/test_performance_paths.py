"""The speed-motivated code paths compute what the plain definitions do.

* The fused convolutions of the residual blocks (nearest upsampling + 3x3
  conv as one transposed conv; 3x3 conv + mean pooling as one stride-2
  conv), values and first and second derivatives.
* The D step's shared forward pass of the reals (logistic loss and R1 from
  one pass) against the two-pass formulation of `losses.r1_penalty`.
* XLA (jit_compile=True) and mixed_bfloat16 iterations run on CPU.
"""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import losses
from bncr_tf import networks as N
from bncr_tf import synthesis
from bncr_tf.networks import layers as L
from bncr_tf.training import loop
from bncr_tf.training import steps
from bncr_tf.training.config import TrainConfig


def _normal(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape),
                       tf.float32)


def _up_then_conv(x, kernel, bias):
    h = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
    return tf.nn.bias_add(tf.nn.conv2d(h, kernel, 1, "SAME"), bias)


def _conv_then_pool(x, kernel, bias):
    h = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)
    return tf.nn.avg_pool2d(h, 2, 2, "VALID")


@pytest.mark.parametrize("fused,plain,size", [
    (L.upsample_conv3x3, _up_then_conv, 4),
    (L.upsample_conv3x3, _up_then_conv, 1),
    (L.conv3x3_meanpool, _conv_then_pool, 8),
    (L.conv3x3_meanpool, _conv_then_pool, 2)])
def test_fused_convolutions_equal_their_definition(fused, plain, size):
    x = _normal(2, size, size, 3)
    kernel = _normal(3, 3, 3, 5, seed=1)
    bias = _normal(5, seed=2)
    weights = _normal(*plain(x, kernel, bias).shape, seed=3)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            out = fn(x, kernel, bias)
            loss = tf.reduce_sum(weights * out)
        return [out] + tape.gradient(loss, [x, kernel, bias])

    for a, b in zip(grads(fused), grads(plain)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("c_in", [3, 6])
def test_conv1x1_as_matmul_equals_convolution(c_in):
    x = _normal(2, 4, 4, c_in)
    kernel = _normal(1, 1, c_in, 5, seed=1)
    bias = _normal(5, seed=2)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            out = fn(x, kernel, bias)
            loss = tf.reduce_sum(out * out)
        return [out] + tape.gradient(loss, [x, kernel, bias])

    def conv(x, kernel, bias):
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias)

    for a, b in zip(grads(L.conv1x1), grads(conv)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5,
                                   atol=1e-5)


def test_fused_down_block_double_backward_equals_definition():
    """R1's gradient with respect to the weights (a double backward)
    through the fused stride-2 conv equals that of conv + pool."""
    block = N.DownBlock(4, first=False, downsample=True)
    x = _normal(2, 8, 8, 4)
    block(x)

    def r1_grads(conv_pool):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                h = tf.nn.relu(block.conv1(tf.nn.relu(x)))
                h = conv_pool(h, block.conv2.kernel, block.conv2.bias)
                out = tf.reduce_sum(tf.nn.relu(h) ** 2)
            g = inner.gradient(out, x)
            r1 = tf.reduce_sum(g ** 2)
        return outer.gradient(r1, block.trainable_variables)

    fused, plain = r1_grads(L.conv3x3_meanpool), r1_grads(_conv_then_pool)
    for a, b in zip(fused, plain):
        if a is None:
            assert b is None
            continue
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_shared_forward_r1_equals_two_pass_r1():
    """Loss, R1 and D gradients of the D step's single forward pass equal
    those of a second D pass inside `losses.r1_penalty`."""
    d = N.Discriminator(resolution=16, width=8)
    reals = tf.random.stateless_uniform([4, 16, 16, 3], [1, 2], -1, 1)
    fakes = tf.random.stateless_uniform([4, 16, 16, 3], [3, 4], -1, 1)

    def two_pass():
        with tf.GradientTape() as tape:
            values = losses.d_logistic_loss(d(reals), d(fakes))
            values.update(losses.r1_penalty(d, reals))
            total = values["D/loss"] + values["D/r1"]
        return values, tape.gradient(total, d.trainable_variables)

    def shared():
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                inner.watch(reals)
                real_logits = d(reals)
                real_sum = tf.reduce_sum(real_logits)
            values = losses.d_logistic_loss(real_logits, d(fakes))
            values.update(losses.r1_from_input_gradients(
                inner.gradient(real_sum, reals)))
            total = values["D/loss"] + values["D/r1"]
        return values, tape.gradient(total, d.trainable_variables)

    (va, ga), (vb, gb) = two_pass(), shared()
    for key in va:
        np.testing.assert_allclose(va[key], vb[key], rtol=1e-5)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4,
                                   atol=1e-6)


def _tiny_config(**kw):
    values = dict(variant="gan", setting="N", width=8, d_batch=8, g_batch=8,
                  z_dim=16)
    values.update(kw)
    return TrainConfig(**values).validate_all()


def test_trainer_d_step_matches_two_pass_formulation():
    """The Trainer's D step reports the losses and gradient norm of the
    reference formulation (two D passes of the reals, fakes from the same
    seed)."""
    keras.mixed_precision.set_global_policy("float32")
    config = _tiny_config()
    trainer = steps.Trainer(config, tf.distribute.get_strategy())
    reals = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2], -1, 1)
    seed = tf.constant([0, 3], tf.int64)
    rid = tf.constant(0)
    latents = trainer._replica_latents(
        config.d_batch, steps._seed_pair(seed, 0), rid, paired=False)
    fakes = synthesis.synthesize(
        trainer.gens, latents,
        steps._seed_pair(steps._seed_pair(seed, 1), rid)).y
    d = trainer.D
    with tf.GradientTape() as tape:
        expected = losses.d_logistic_loss(d(reals), d(fakes))
        expected.update(losses.r1_penalty(d, reals, config.r1_weight))
        total = expected["D/loss"] + expected["D/r1"]
    norm = tf.linalg.global_norm(tape.gradient(total, d.trainable_variables))
    got = tf.function(lambda r, s: trainer._d_step(r, s, rid))(reals, seed)
    for key, value in expected.items():
        np.testing.assert_allclose(got["Loss/" + key], value, rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_allclose(got["Loss/D/grad_norm"], norm, rtol=1e-4)


def test_one_xla_iteration_of_the_cheapest_variant():
    """jit_compile=True (the GPU path) compiles and runs on CPU."""
    keras.mixed_precision.set_global_policy("float32")
    config = _tiny_config(jit_compile=True)
    trainer = steps.Trainer(config, tf.distribute.get_strategy())
    reals = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2], -1, 1)
    started = time.time()
    for step in range(2):
        values = trainer.train_iteration(reals, step)
        assert all(np.isfinite(v.numpy()) for v in values.values())
    assert time.time() - started < 120
    assert trainer._iteration.experimental_get_tracing_count() == 1
    assert int(trainer.step.numpy()) == 2


def test_bf16_blocks_stay_close_to_float32():
    """Under mixed_bfloat16 the fused blocks compute in bfloat16 from the
    float32 weights and stay within bfloat16 rounding of float32."""
    x = _normal(2, 4, 4, 8)
    up32 = N.UpBlock(8)
    down32 = N.DownBlock(8, first=False, downsample=True)
    ref_up, ref_down = up32(x), down32(_normal(2, 8, 8, 8))
    up16 = N.UpBlock(8, dtype="mixed_bfloat16")
    down16 = N.DownBlock(8, first=False, downsample=True,
                         dtype="mixed_bfloat16")
    up16(x)
    down16(_normal(2, 8, 8, 8))
    up16.set_weights(up32.get_weights())
    down16.set_weights(down32.get_weights())
    out_up, out_down = up16(x), down16(_normal(2, 8, 8, 8))
    assert out_up.dtype == tf.bfloat16 and out_down.dtype == tf.bfloat16
    for got, ref in ((out_up, ref_up), (out_down, ref_down)):
        got = tf.cast(got, tf.float32).numpy()
        scale = np.abs(ref.numpy()).max()
        assert np.abs(got - ref.numpy()).max() < 0.05 * scale


def test_bf16_iteration_runs_with_float32_variables():
    config = _tiny_config(mixed_precision="mixed_bfloat16")
    try:
        loop.setup_tensorflow(config)
        trainer = steps.Trainer(config, tf.distribute.get_strategy())
        reals = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2], -1, 1)
        values = trainer.train_iteration(reals, 0)
        assert all(np.isfinite(v.numpy()) for v in values.values())
        assert all(v.dtype == "float32"
                   for v in trainer.D.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
