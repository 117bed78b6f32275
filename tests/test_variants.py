"""Variants and the synthesis function: masks, gradients, one step each."""

import numpy as np
import pytest
import tensorflow as tf

from bncr_tf import models
from bncr_tf import synthesis
from bncr_tf import variants
from bncr_tf.degradations import kernels as blur_lib
from bncr_tf.degradations import jpeg as jpeg_lib
from bncr_tf.training import checkpoints as checkpoints_lib
from bncr_tf.training import steps
from bncr_tf.training.config import TrainConfig

TINY = dict(width=8, d_batch=4, g_batch=4, z_dim=16)


def _config(variant, setting="N", resolution=32, **kw):
    return TrainConfig(variant=variant, setting=setting,
                       resolution=resolution, **dict(TINY, **kw))


def _latents(batch, z_dim=16, seed=0):
    return synthesis.sample_latents(batch, z_dim, [seed, 0])


class _Fixed:
    """A stand-in generator returning fixed outputs (for mask tests)."""

    def __init__(self, **outputs):
        self.outputs = outputs

    def __call__(self, z, z_x=None):
        return {k: tf.constant(v, tf.float32) for k, v in self.outputs.items()}


def _image(batch=2, size=32, seed=1):
    return tf.random.stateless_uniform([batch, size, size, 3], [seed, 2],
                                       -1.0, 1.0)


def test_registry_names_and_errors():
    expected = {"gan", "ambientgan", "p_ambientgan", "brgan", "brgan_nomask",
                "nrgan_si1", "nrgan_si2", "nrgan_sd1", "nrgan_sd2",
                "nrgan_sd3", "crgan", "crgan_nomask", "bncrgan",
                "bncrgan_noac"}
    assert set(variants.VARIANTS) == expected
    with pytest.raises(ValueError, match="bncrgan"):
        variants.get_variant("bncr")


def test_ambient_stages_follow_the_setting():
    for setting, stages in (("B", ("true", "none", "none")),
                            ("J", ("none", "none", "true")),
                            ("N", ("true", "true", "true")),
                            ("A", ("none", "none", "none"))):
        v = models.resolve_variant(_config("ambientgan", setting))
        assert (v.blur, v.noise, v.jpeg) == stages, setting
    v = models.resolve_variant(_config("p_ambientgan", "H"))
    assert (v.blur, v.noise, v.jpeg) == ("none", "none", "param")


def test_zero_jpeg_mask_gives_y_equal_x_exactly():
    gens = synthesis.Generators(
        G_x=None, G_q=_Fixed(q=[37.0, 80.0], m_q=[0.0, 0.0]),
        variant=variants.get_variant("crgan"))
    x = _image()
    out = synthesis.degrade(gens, x, _latents(2), [0, 0])
    np.testing.assert_array_equal(out.y.numpy(), x.numpy())
    # And with m_q = 1 the image is the differentiable JPEG of x.
    gens.G_q = _Fixed(q=[37.0, 80.0], m_q=[1.0, 1.0])
    out = synthesis.degrade(gens, x, _latents(2), [0, 0])
    want = 2 * jpeg_lib.diff_jpeg((x + 1) / 2, [37.0, 80.0]) - 1
    np.testing.assert_allclose(out.y.numpy(), want.numpy(), atol=1e-5)


def test_jpeg_storage_fakes_are_dequantised_8bit_jpeg():
    """--jpeg_storage: a compressed fake is (c + u) / 128 - 1 with c the
    8-bit output of psi^g (sample rounding) and u ~ U(0, 1), exactly the
    form data.dequantize gives the reals; masks still blend."""
    x = _image(batch=2)
    q = [55.0, 85.0]
    gens = synthesis.Generators(
        G_x=None, G_q=_Fixed(q=q, m_q=[1.0, 1.0]),
        variant=variants.get_variant("crgan"), jpeg_storage=True)
    y = synthesis.degrade(gens, x, _latents(2), [3, 0]).y.numpy()
    c = np.round(255.0 * jpeg_lib.diff_jpeg(
        (x + 1) / 2, q, sample_rounding=True).numpy())
    u = (y.astype(np.float64) + 1.0) * 128.0 - c
    assert u.min() > -1e-3 and u.max() < 1.0 + 1e-3, (u.min(), u.max())
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.std() - 12 ** -0.5) < 0.02
    # Another seed draws other dequantisation noise, same 8-bit image.
    y2 = synthesis.degrade(gens, x, _latents(2), [4, 0]).y.numpy()
    assert np.abs(y2 - y).max() > 1e-3
    u2 = (y2.astype(np.float64) + 1.0) * 128.0 - c
    assert u2.min() > -1e-3 and u2.max() < 1.0 + 1e-3
    # m_q = 0 still bypasses compression (and storage) exactly.
    gens.G_q = _Fixed(q=q, m_q=[0.0, 0.0])
    out = synthesis.degrade(gens, x, _latents(2), [3, 0])
    np.testing.assert_array_equal(out.y.numpy(), x.numpy())


def test_fd_quality_gradient_reaches_g_q():
    """quality_gradient="fd" changes only d y / d q, to the central
    difference of psi^g; the forward pass is the analytic one's."""
    x = _image(batch=2)
    q = tf.constant([55.0, 85.0])
    w = tf.random.stateless_normal(x.shape, [5, 0])
    grads, ys = {}, {}
    for mode in ("analytic", "fd"):
        gens = synthesis.Generators(
            G_x=None, G_q=lambda z, q=q: {"q": q, "m_q": tf.ones([2])},
            variant=variants.get_variant("crgan_nomask"),
            quality_gradient=mode)
        with tf.GradientTape() as tape:
            tape.watch(q)
            ys[mode] = synthesis.degrade(gens, x, _latents(2), [0, 0]).y
            loss = tf.reduce_sum(w * ys[mode])
        grads[mode] = tape.gradient(loss, q).numpy()
    np.testing.assert_array_equal(ys["fd"].numpy(), ys["analytic"].numpy())
    x01 = (x + 1) / 2
    for i in range(2):
        hi = 2 * jpeg_lib.diff_jpeg(x01[i:i + 1], q[i] + 5.0) - 1
        lo = 2 * jpeg_lib.diff_jpeg(x01[i:i + 1], q[i] - 5.0) - 1
        want = float(tf.reduce_sum(w[i:i + 1] * (hi - lo))) / 10.0
        np.testing.assert_allclose(grads["fd"][i], want, rtol=1e-4,
                                   atol=1e-4)


def test_zero_kernel_mask_gives_identity_kernel_and_unblurred_image():
    from bncr_tf.networks import compose_kernel
    k_hat = tf.nn.softmax(tf.random.normal([2, 49]), -1)
    k_hat = tf.reshape(k_hat, [2, 7, 7])
    k = compose_kernel(k_hat, tf.zeros_like(k_hat))
    np.testing.assert_array_equal(k.numpy(),
                                  blur_lib.identity_kernel(7, 2).numpy())
    gens = synthesis.Generators(
        G_x=None, G_k=_Fixed(k=k.numpy(), k_hat=k_hat.numpy(),
                             m_k=np.zeros([2, 7, 7])),
        variant=variants.get_variant("brgan"))
    x = _image()
    out = synthesis.degrade(gens, x, _latents(2), [0, 0], with_aux=True)
    np.testing.assert_array_equal(out.y.numpy(), x.numpy())
    np.testing.assert_allclose(out.entropy.numpy(), 0.0, atol=1e-6)


def test_sd1_noise_gives_no_gradient_to_the_image():
    cfg = _config("nrgan_sd1")
    gens = models.build_generators(cfg)
    latents = _latents(2)
    x = _image()
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = synthesis.degrade(gens, x, latents, [0, 0], with_aux=True)
        noise_only = tf.reduce_sum(out.n)
    assert tape.gradient(noise_only, x) is None
    # The noise does reach G_n's weights.
    with tf.GradientTape() as tape:
        out = synthesis.degrade(gens, x, latents, [0, 0])
        total = tf.reduce_sum(out.n ** 2)
    grads = tape.gradient(total, gens.G_n.trainable_variables)
    assert all(g is not None for g in grads)


def test_synthesis_shapes_and_ranges_bncrgan():
    gens = models.build_generators(_config("bncrgan"))
    out = synthesis.synthesize(gens, _latents(3), [1, 2], with_aux=True)
    assert out.x.shape == out.y.shape == (3, 32, 32, 3)
    assert out.k.shape == out.m_k.shape == (3, 7, 7)
    assert out.q.shape == out.m_q.shape == (3,)
    for name in ("x", "y"):
        v = getattr(out, name).numpy()
        assert v.min() >= -1.0 and v.max() <= 1.0
    np.testing.assert_allclose(out.k.numpy().sum((1, 2)), 1.0, atol=1e-5)
    q = out.q.numpy()
    assert (q >= 0).all() and (q <= 100).all()
    # Same seed -> same result; another seed -> other noise.
    again = synthesis.synthesize(gens, _latents(3), [1, 2])
    np.testing.assert_array_equal(again.y.numpy(), out.y.numpy())
    other = synthesis.synthesize(gens, _latents(3), [1, 3])
    assert not np.array_equal(other.n.numpy(), out.n.numpy())


@pytest.fixture(scope="module")
def eager_functions():
    """Runs tf.functions eagerly: no tracing, so 14 variants stay fast."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


@pytest.mark.parametrize("variant", sorted(variants.VARIANTS))
def test_one_iteration_moves_every_variable(variant, eager_functions):
    """One D step and one G step: finite losses, and every trainable
    variable receives a non-zero gradient (so Adam moves it): G_k through the
    blur, G_q through psi^g, G_n through the noise, D through both losses.
    """
    cfg = _config(variant, setting="N")
    trainer = steps.Trainer(cfg, tf.distribute.get_strategy())
    variables = trainer.gens.trainable_variables() + (
        trainer.D.trainable_variables)
    before = [v.numpy().copy() for v in variables]
    reals = _image(4)
    values = trainer.train_iteration(reals, 0)
    for name, value in values.items():
        assert np.isfinite(value.numpy()), (name, value)
    unchanged = [v.path for v, b in zip(variables, before)
                 if np.array_equal(v.numpy(), b)]
    assert not unchanged, f"no gradient reached {unchanged}"
    assert trainer.step_value() == 1
    if variant in ("bncrgan",):
        assert "Loss/G/ac_blur" in values and "Loss/G/ac_comp" in values
        assert "Loss/G/ds_kernel" in values and "Loss/G/ds_quality" in values
    if variant == "bncrgan_noac":
        assert "Loss/G/ac_blur" not in values


def test_fake_storage_stores_every_fake_as_8bit_dequantised():
    """--fake_storage: every fake, compressed or not, is (c + u) / 128 - 1
    with c = round(255 u01) and u ~ U(0, 1), the form data.dequantize gives
    the reals; the gradient passes the rounding unchanged."""
    x = tf.Variable(_image(batch=2))
    gens = synthesis.Generators(
        G_x=None, G_q=_Fixed(q=[40.0, 90.0], m_q=[0.0, 0.0]),
        variant=variants.get_variant("crgan"), fake_storage=True)
    w = tf.random.stateless_normal(x.shape, [7, 0])
    with tf.GradientTape() as tape:
        y = synthesis.degrade(gens, x, _latents(2), [3, 0]).y
        loss = tf.reduce_sum(w * y)
    c = np.round(255.0 * (x.numpy().astype(np.float64) + 1.0) / 2.0)
    u = (y.numpy().astype(np.float64) + 1.0) * 128.0 - c
    assert u.min() > -1e-3 and u.max() < 1.0 + 1e-3, (u.min(), u.max())
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.std() - 12 ** -0.5) < 0.02
    # d y / d x = 255 / 256 where no clip is active (here: m_q = 0).
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(),
                               w.numpy() * 255.0 / 256.0, rtol=1e-5)


def test_noise_std_map_is_the_noise_without_eps():
    """"n_std" (the std target of DS) is G_n's std map: n = eps * n_std
    for the camera prior, and it does not change with the eps seed."""
    config = _config("bncrgan", "N")
    gens = models.build_generators(config)
    lat = _latents(2)
    a = synthesis.synthesize(gens, lat, [1, 0])
    b = synthesis.synthesize(gens, lat, [2, 0])
    np.testing.assert_allclose(a.n_std.numpy(), b.n_std.numpy(),
                               rtol=1e-6)
    assert np.abs(a.n_ds.numpy() - b.n_ds.numpy()).max() > 1e-3
    eps = a.n_ds.numpy() / a.n_std.numpy()
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1.0) < 0.05
    assert np.all(a.n_std.numpy() > 0)


def test_degradation_warmup_freezes_only_the_degradation_generators(
        eager_functions):
    """--degradation_warmup=2: iterations 0 and 1 move G_x and D but leave
    G_k, G_n and G_q (and their Adam moments) exactly as they were;
    iteration 2 moves them."""
    cfg = _config("bncrgan", setting="N", degradation_warmup=2)
    trainer = steps.Trainer(cfg, tf.distribute.get_strategy())
    models_ = trainer.gens.models()
    snap = {name: [v.numpy().copy() for v in m.trainable_variables]
            for name, m in models_.items()}

    def moved(name):
        return any(not np.array_equal(v.numpy(), b) for v, b in
                   zip(models_[name].trainable_variables, snap[name]))

    for step in (0, 1):
        trainer.train_iteration(_image(4), step)
        assert moved("G_x")
        for name in ("G_k", "G_n", "G_q"):
            assert not moved(name), (step, name)
    trainer.train_iteration(_image(4), 2)
    for name in ("G_k", "G_n", "G_q"):
        assert moved(name), name


def test_degradation_lr_scale_slows_only_the_degradation_generators(
        eager_functions):
    """--degradation_lr_scale=0.1: on the first Adam step (update =
    lr * g / (|g| + eps)) G_k, G_n and G_q move 0.1 times as far as with
    the default, and G_x exactly as far."""
    moves = {}
    for scale in (1.0, 0.1):
        cfg = _config("bncrgan", setting="N", degradation_lr_scale=scale)
        trainer = steps.Trainer(cfg, tf.distribute.get_strategy())
        assert (trainer.opt_deg is None) == (scale == 1.0)
        models_ = trainer.gens.models()
        before = {n: [v.numpy().copy() for v in m.trainable_variables]
                  for n, m in models_.items()}
        trainer.train_iteration(_image(4), 0)
        moves[scale] = {
            n: max(float(np.abs(v.numpy() - b).max()) for v, b in
                   zip(m.trainable_variables, before[n]))
            for n, m in models_.items()}
    assert moves[0.1]["G_x"] == pytest.approx(moves[1.0]["G_x"], rel=1e-4)
    for name in ("G_k", "G_n", "G_q"):
        assert moves[0.1][name] == pytest.approx(0.1 * moves[1.0][name],
                                                 rel=1e-2), name


def test_d_lr_scale_speeds_up_only_d(eager_functions):
    """--d_lr_scale=4: on the first Adam step (update =
    lr * g / (|g| + eps), so the largest move is about lr) D moves 4 times
    as far as with the default, and every generator as far."""
    moves = {}
    for scale in (1.0, 4.0):
        cfg = _config("bncrgan", setting="N", d_lr_scale=scale)
        trainer = steps.Trainer(cfg, tf.distribute.get_strategy())
        nets = dict(trainer.gens.models(), D=trainer.D)
        before = {n: [v.numpy().copy() for v in m.trainable_variables]
                  for n, m in nets.items()}
        trainer.train_iteration(_image(4), 0)
        moves[scale] = {
            n: max(float(np.abs(v.numpy() - b).max()) for v, b in
                   zip(m.trainable_variables, before[n]))
            for n, m in nets.items()}
    assert moves[4.0]["D"] == pytest.approx(4.0 * moves[1.0]["D"], rel=1e-2)
    # The G step follows the D step, so its gradients differ slightly;
    # their Adam moves do not (3e-4 relative measured on G_k).
    for name in ("G_x", "G_k", "G_n", "G_q"):
        assert moves[4.0][name] == pytest.approx(moves[1.0][name],
                                                 rel=2e-3), name


def test_init_from_copies_only_g_x_and_d(tmp_path):
    """--init_from: a new run's G_x (raw and EMA) and D become the source
    run's saved values (read back from the file independently); G_k, G_n,
    G_q keep their own initialisation. A directory without checkpoints is
    a user error before anything is built."""
    from bncr_tf.training import loop
    from bncr_tf.training.config import UserError
    source = steps.Trainer(_config("gan", setting="A", seed=0),
                           tf.distribute.get_strategy())
    # Make EMA differ from raw so the two are told apart.
    source.gens.models()["G_x"].trainable_variables[0].assign_add(
        tf.ones_like(source.gens.models()["G_x"].trainable_variables[0]))
    ckpt_dir = tmp_path / "source" / "checkpoints"
    manager = tf.train.CheckpointManager(source.checkpoint, str(ckpt_dir), 1)
    saved = checkpoints_lib.read_tensors(checkpoints_lib.save(manager, 7))

    target = steps.Trainer(_config("bncrgan", setting="N", seed=1),
                           tf.distribute.get_strategy())
    own = {name: [v.numpy().copy()
                  for v in target.gens.models()[name].variables]
           for name in ("G_k", "G_n", "G_q")}
    loop._initialise_from(target, str(tmp_path / "source"))
    nets = {"D": target.D, "G_x": target.gens.models()["G_x"],
            "G_x_ema": target.gens_ema.models()["G_x"]}
    for name, model in nets.items():
        for key, var in models.checkpoint_variables(model).items():
            # Checkpoint keys escape "." as "..".
            stored = saved[f"{name}/{key.replace('.', '..')}"
                           "/.ATTRIBUTES/VARIABLE_VALUE"]
            np.testing.assert_array_equal(var.numpy(), stored,
                                          err_msg=f"{name} {key}")
    assert not np.array_equal(nets["G_x"].variables[0].numpy(),
                              nets["G_x_ema"].variables[0].numpy())
    for name, values in own.items():
        for var, value in zip(target.gens.models()[name].variables, values):
            np.testing.assert_array_equal(var.numpy(), value, err_msg=name)
    assert target.step_value() == 0
    with pytest.raises(UserError, match="init_from"):
        loop._check_cheap_inputs(_config("bncrgan", init_from=str(tmp_path)))
