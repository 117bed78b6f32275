"""tools/run_restoration_comparison.py: jobs, commands, median choice."""

import argparse

import pytest
from conftest import load_tool

tool = load_tool("run_restoration_comparison")


def _args(**kw):
    values = dict(settings=["N", "P"], seeds=[0, 1], data="builtin:x",
                  resolution=32, log_every=50, runs_dir="runs/x",
                  bncrgan_width=8, bncrgan_batch=16, bncrgan_iterations=30,
                  unir_width=4, unir_iterations=20, cyclegan_width=8,
                  cyclegan_iterations=10, batch=8, bncrgan_flags="",
                  unir_flags="--grid_size=2", cyclegan_flags="")
    values.update(kw)
    return argparse.Namespace(**values)


def test_jobs_leave_cyclegan_out_of_n_and_wait_for_bncrgan():
    jobs = tool.jobs(_args())
    names = [tool.run_name(*j[:3]) for j in jobs]
    assert "cyclegan-N-s0" not in names and "cyclegan-P-s1" in names
    assert len(names) == 2 * (3 + 4)
    for model, setting, seed, needs in jobs:
        if model == "bncrunir":
            assert needs == f"bncrgan-{setting}-s{seed}"
            assert names.index(needs) < names.index(
                tool.run_name(model, setting, seed))
        else:
            assert needs is None


def test_train_commands():
    args = _args()
    cmd, iterations = tool.train_command("bncrunir", "P", 1, args,
                                         source_run="runs/x/00003-b")
    assert iterations == 20
    assert "--variant=unir" in cmd and "--degradation_from=runs/x/00003-b" \
        in cmd and "--setting=P" in cmd and "--seed=1" in cmd
    assert cmd[-1] == "--grid_size=2"  # extra flags come last
    cmd, iterations = tool.train_command("cyclegan", "P", 0, args)
    assert iterations == 10 and "--variant=cyclegan" in cmd
    assert "--degradation_from" not in " ".join(cmd)
    cmd, iterations = tool.train_command("bncrgan", "N", 0, args)
    assert iterations == 30 and "--g_batch=32" in cmd


@pytest.mark.parametrize("fids,want", [([3.0], 3.0), ([5.0, 1.0, 3.0], 3.0),
                                       ([4.0, 2.0], 2.0),
                                       ([9.0, 1.0, 7.0, 3.0, 5.0], 5.0)])
def test_median_run_is_the_median_fid(fids, want):
    rows = [{"fid": f, "seed": i} for i, f in enumerate(fids)]
    assert tool.median_run(rows)["fid"] == want
