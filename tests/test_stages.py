"""The stage contract of bncr_tf.stages (docs/design.md, "The stage
contract"): what each stage declares, the typed result of degrade, the
order of the regularisers and the names the consumers rely on."""

import dataclasses

import numpy as np
import tensorflow as tf

from bncr_tf import export
from bncr_tf import models
from bncr_tf import stages
from bncr_tf import synthesis
from bncr_tf import variants
from bncr_tf.training.config import TrainConfig

TINY = dict(width=8, d_batch=4, g_batch=4, z_dim=16, resolution=32)


def _gens(variant, setting="N"):
    return models.build_generators(
        TrainConfig(variant=variant, setting=setting, **TINY))


def _latents(batch):
    return synthesis.sample_latents(batch, TINY["z_dim"], [0, 0])


def test_stage_table():
    assert [s.name for s in stages.STAGES] == ["blur", "noise", "jpeg"]
    assert [s.network for s in stages.STAGES] == ["G_k", "G_n", "G_q"]
    assert synthesis.LATENTS == ("z_x", "z_k", "z_n", "z_q")
    assert sorted(s.name for s in stages.DS_ORDER) == sorted(
        s.name for s in stages.STAGES)
    for stage in stages.STAGES:
        assert stages.by_name(stage.name) is stage
        # Every declared endpoint is a method of the export with known
        # input specs.
        specs = export._specs(16, 32)
        for _, method, inputs in stage.export_endpoints:
            assert callable(getattr(export._Endpoints, method))
            assert set(inputs) <= set(specs)
    assert [s.name for s in stages.active(variants.get_variant("crgan"))
            ] == ["jpeg"]


def test_absent_stages_leave_their_fields_none():
    gens = synthesis.Generators(
        G_x=None, G_q=lambda z: {"q": tf.constant([50.0, 90.0]),
                                 "m_q": tf.ones([2])},
        variant=variants.get_variant("crgan"))
    x = tf.zeros([2, 32, 32, 3])
    out = synthesis.degrade(gens, x, _latents(2), [0, 0])
    assert isinstance(out, stages.Synthesis)
    assert set(out.present()) == {"x", "y", "q", "m_q"}
    assert out.k is None and out.n is None and out.x_comp is None
    aux = synthesis.degrade(gens, x, _latents(2), [0, 0], with_aux=True)
    assert set(aux.present()) == {"x", "y", "q", "m_q", "x_comp"}


def test_monitor_names_and_regulariser_order_bncrgan():
    config = TrainConfig(variant="bncrgan", setting="N", **TINY)
    gens = models.build_generators(config)
    latents = _latents(4)
    out = synthesis.synthesize(gens, latents, [1, 2], with_aux=True)
    for stage in gens.stages():
        values = stage.monitor(out)
        assert values and set(values) <= set(stage.stat_names)
        for v in values.values():
            assert v.shape == (4,)
    regs = stages.regularisers(gens.variant, out, latents,
                               stages.Regularisers.from_config(config))
    # DS in DS_ORDER (noise, blur, JPEG), then L_AC (blur, JPEG).
    assert [next(iter(r)) for r in regs] == [
        "G/ds_noise", "G/ds_kernel", "G/ds_quality", "G/ac_blur",
        "G/ac_comp"]
    noac = dataclasses.replace(gens.variant, adaptive_consistency=False)
    names = [next(iter(r)) for r in stages.regularisers(
        noac, out, latents, stages.Regularisers.from_config(config))]
    assert names == ["G/ds_noise", "G/ds_kernel", "G/ds_quality"]


def test_view_keeps_only_the_named_stages():
    gens = _gens("bncrgan")
    view = gens.view("noise")
    assert view.G_n is gens.G_n and view.G_x is gens.G_x
    assert view.G_k is None and view.G_q is None
    assert [s.name for s in view.stages()] == ["noise"]
    assert (view.variant.blur, view.variant.jpeg) == ("none", "none")
    # The view degrades with G_n alone.
    x = tf.zeros([2, 32, 32, 3])
    out = synthesis.degrade(view, x, _latents(2), [3, 4])
    assert out.k is None and out.q is None
    assert np.all(np.isfinite(out.n.numpy()))
