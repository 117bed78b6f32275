"""bncr_tf.jobs: the run pool of the experiment tools."""

import sys

from bncr_tf import jobs


def test_run_jobs_order_dependencies_failures_and_skips(tmp_path, capsys):
    """Jobs start in order, at most `parallel` at once; a job waits for its
    dependency and fails without running when that failed; launch() None
    skips a job; on_finish sees every exit."""
    marker = tmp_path / "order.txt"
    codes = {"a": 0, "b": 3, "c": 0, "d": 0}
    launched, finished = [], {}

    def launch(name):
        if name == "skip":
            return None
        launched.append(name)
        code = (f"import time; time.sleep(0.2); "
                f"open({str(marker)!r}, 'a').write({name!r}); "
                f"raise SystemExit({codes[name]})")
        return ([sys.executable, "-c", code], str(tmp_path / f"{name}.log"),
                f"[{name}] start")

    def on_finish(name, seconds, returncode):
        finished[name] = returncode

    seconds, failed = jobs.run_jobs(
        [("a", None), ("b", None), ("c", "b"), ("skip", None), ("d", "a")],
        parallel=2, launch=launch, cwd=str(tmp_path), on_finish=on_finish,
        poll_seconds=0.05)
    # c depends on b, which failed: c fails without being launched.
    assert launched == ["a", "b", "d"]
    assert failed == ["b", "c"]
    assert set(seconds) == {"a", "d"} and all(s > 0.1 for s in seconds.values())
    assert finished == {"a": 0, "b": 3, "d": 0}
    # d waited for a: it wrote after a.
    order = marker.read_text()
    assert order.index("a") < order.index("d")
    out = capsys.readouterr().out
    assert "[a] start" in out and "[b] FAILED (exit 3)" in out
    assert "[skip]" not in out
