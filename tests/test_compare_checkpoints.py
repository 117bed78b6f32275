"""tools/compare_checkpoints.py, the bit-identity harness of issue 19: two
runs of the same code give identical manifests, and a changed tensor is
reported by case and name."""

import copy
import json

from conftest import load_tool as _tool


def _save(tf, path, kernel, step):
    ckpt = tf.train.Checkpoint(
        kernel=tf.Variable(kernel), step=tf.Variable(step, dtype=tf.int64))
    return ckpt.write(str(path))


def test_check_names_the_changed_tensor(tmp_path, capsys):
    import numpy as np
    import tensorflow as tf
    tool = _tool("compare_checkpoints")
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = tool.hash_checkpoint(_save(tf, tmp_path / "a", kernel, 20))
    same = tool.hash_checkpoint(_save(tf, tmp_path / "same", kernel, 20))
    changed = kernel.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(10))  # one ulp
    b = tool.hash_checkpoint(_save(tf, tmp_path / "b", changed, 20))
    kernel_name = "kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert set(a) == {kernel_name, "step/.ATTRIBUTES/VARIABLE_VALUE"}
    assert a[kernel_name]["shape"] == [2, 3]
    assert a[kernel_name]["dtype"] == "float32"
    assert a == same
    assert a[kernel_name]["sha256"] != b[kernel_name]["sha256"]

    def manifest(variables):
        return {"format": 1, "iterations": 20, "environment": {},
                "cases": {"tiny": {"command": ["x"], "variables": variables,
                                   "stats_sha256": "s"}}}

    assert tool.report(manifest(a), manifest(same)) == 0
    assert capsys.readouterr().out.startswith("IDENTICAL: 1 cases, 2 ")
    assert tool.report(manifest(a), manifest(b)) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT: 1 differences in 1 of 1 cases" in out
    assert f"tiny: {kernel_name}: values differ" in out
    assert "step/" not in out
    # A missing tensor and a changed shape are named too.
    c = copy.deepcopy(a)
    del c["step/.ATTRIBUTES/VARIABLE_VALUE"]
    c[kernel_name]["shape"] = [3, 2]
    assert tool.report(manifest(a), manifest(c)) == 1
    out = capsys.readouterr().out
    assert "step/.ATTRIBUTES/VARIABLE_VALUE: missing from the new" in out
    assert "float32[2, 3] -> float32[3, 2]" in out


def test_two_runs_are_identical_and_check_cli(tmp_path, capsys):
    """One tiny case trained twice (2 iterations, op determinism): the
    manifests match; an edited copy is DIFFERENT through the CLI."""
    tool = _tool("compare_checkpoints")
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in paths:
        assert tool.main(["run", "--cases=gan-A", "--iterations=2",
                          f"--out={path}"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] gan-A:" in out and "tensors" in out
    first = json.loads(paths[0].read_text())
    case = first["cases"]["gan-A"]
    assert case["checkpoint"] == "ckpt-2" and "--deterministic" in \
        case["command"]
    assert len(case["variables"]) > 50
    assert tool.main(["check", str(paths[0]), str(paths[1])]) == 0
    assert "IDENTICAL: 1 cases" in capsys.readouterr().out
    name = sorted(case["variables"])[0]
    case["variables"][name]["sha256"] = "0" * 64
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(first))
    assert tool.main(["check", str(edited), str(paths[1])]) == 1
    out = capsys.readouterr().out
    assert f"gan-A: {name}: values differ" in out


def test_user_errors_are_one_sentence(tmp_path, capsys):
    tool = _tool("compare_checkpoints")
    assert tool.main(["run", "--cases=nope", f"--out={tmp_path}/m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown case 'nope'") and \
        err.count("\n") == 1
    assert tool.main(["check", str(tmp_path / "missing.json"),
                      str(tmp_path / "missing.json")]) == 2
    assert "cannot read manifest" in capsys.readouterr().err
    (tmp_path / "other.json").write_text("{}")
    assert tool.main(["check", str(tmp_path / "other.json"),
                      str(tmp_path / "other.json")]) == 2
    assert "is not a manifest of this tool" in capsys.readouterr().err
    assert tool.main(["run", "--cases=gan-A"]) == 2
    assert "give --out" in capsys.readouterr().err
