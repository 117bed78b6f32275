"""The README's first command, as on a fresh machine (docs/reliability.md).

`pip install -e .` installs only `install_requires`; the test suite runs in
an environment that also has the `[test]` extra. So the demo runs here in a
subprocess that cannot import any package the `[test]` extra brings in and
`install_requires` does not (a `sitecustomize` that blocks them): a
dependency of the demo that is only in the extra fails this test, as
scikit-image did (issue 20). `.ci/run` runs the suite in a fresh virtual
environment without system site packages.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The short run: the README's command plus these flags.
SHORT = ["--iterations=20"]
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]")


def readme_first_command():
    """The README's first command, split at `&&`: (install, run)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("    pip install") and "&&" in line:
                install, run = (p.strip() for p in line.split("&&"))
                return install, run
    raise AssertionError("README.md has no 'pip install ... && ...' command")


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(dist, extras=()):
    """Normalised names of `dist` and every installed distribution it
    requires (with `extras` of `dist`), transitively."""
    from packaging.requirements import Requirement
    done, names = set(), set()
    todo = [(dist, tuple(sorted(extras)))]
    while todo:
        name, wanted = todo.pop()
        if (_norm(name), wanted) in done:
            continue
        done.add((_norm(name), wanted))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        names.add(_norm(name))
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env)
                                      for env in envs):
                continue
            todo.append((req.name, tuple(sorted(req.extras))))
    return names


def _test_only_modules():
    """Top-level modules of the distributions only the [test] extra adds."""
    only = _closure("bncr_tf", ["test"]) - _closure("bncr_tf")
    modules = set()
    for module, dists in importlib.metadata.packages_distributions().items():
        if dists and all(_norm(d) in only for d in dists):
            modules.add(module)
    return only, modules


BLOCKER = """
# Makes the packages of the [test] extra look uninstalled: the path-based
# finder no longer finds them (importlib.util.find_spec returns None and
# an import raises ModuleNotFoundError, as without them).
import importlib.machinery
import sys

BLOCKED = {blocked!r}


class _WithoutTestExtra:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [
    _WithoutTestExtra(f) if f is importlib.machinery.PathFinder else f
    for f in sys.meta_path]
"""


def _fresh_env(tmp_path, blocked):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(
        blocked=sorted(blocked)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    return env


def _run(run, extra, env, timeout=600):
    args = run.split()
    assert args[0] == "python"
    cmd = [sys.executable] + args[1:] + extra
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_blocker_hides_the_test_extra(tmp_path):
    """The check below can fail: the [test] extra's own packages are
    unimportable in its environment, install_requires' are not."""
    only, modules = _test_only_modules()
    assert "pytest" in only and "pytest" in modules
    env = _fresh_env(tmp_path, modules)
    out = subprocess.run([sys.executable, "-c", "import pytest"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "No module named 'pytest'" in \
        out.stderr
    out = subprocess.run([sys.executable, "-c", "import skimage, absl"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_readme_first_command_runs_with_install_requires_only(tmp_path):
    """The README's demo command with --iterations=20, without the [test]
    extra: exit 0, no traceback, no TensorFlow C++ noise, the "compiling"
    line before the first step, and a complete run directory."""
    install, run = readme_first_command()
    assert install == "pip install -e ."
    assert run == "python -m bncr_tf.train --flagfile=configs/demo.flags"
    _, modules = _test_only_modules()
    started = time.time()
    out = _run(run, SHORT + [f"--outdir={tmp_path}/runs"],
               _fresh_env(tmp_path, modules))
    seconds = time.time() - started
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert not [line for line in out.stderr.splitlines()
                if CPP_LOG_LINE.match(line)], out.stderr
    lines = out.stdout.splitlines()
    compiling = [i for i, line in enumerate(lines)
                 if line.endswith("compiling the training step\u2026")]
    first_step = [i for i, line in enumerate(lines) if " step 20/20 " in line]
    assert compiling and first_step and compiling[0] < first_step[0], \
        out.stdout
    run_dir = os.path.join(tmp_path, "runs", "00000-demo")
    for path in ("checkpoints/ckpt-20.index", "grids/reals.png",
                 "grids/fakes-0000020.png", "export/generator/1",
                 "export/degrade/1", "stats.jsonl"):
        assert os.path.exists(os.path.join(run_dir, path)), path
    print(f"README demo, {SHORT}: {seconds:.0f} s")


def test_a_failed_start_leaves_no_run_directory(tmp_path):
    """Without scikit-image (the failure of issue 20) the demo stops with
    one line and exit 2, and leaves no empty run directory."""
    _, run = readme_first_command()
    _, modules = _test_only_modules()
    out = _run(run, SHORT + [f"--outdir={tmp_path}/runs"],
               _fresh_env(tmp_path, modules | {"skimage"}))
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        "error: builtin:skimage_patches needs scikit-image (pip install "
        "scikit-image)"], out.stderr
    assert os.listdir(tmp_path / "runs") == []
