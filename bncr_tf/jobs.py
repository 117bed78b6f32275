"""Training subprocesses, a few at a time: the one run pool of the
experiment tools (tools/run_full_identification.py,
tools/run_restoration_comparison.py and `bncr_tf.comparison`).

Each job is a name and, optionally, the name of a job that must finish
first. When a job's turn comes, the caller's `launch(name)` gives its
command, log file and the line to print, or None when there is nothing to
run (e.g. the run is already trained). Jobs whose dependency failed fail
too, without running.
"""

import subprocess
import time


def run_jobs(jobs, parallel, launch, cwd, on_finish=None, poll_seconds=2.0):
    """Runs `jobs` in order, at most `parallel` subprocesses at a time.

    Args:
      jobs: list of (name, needs) with needs None or the name of an earlier
        job; a job waits while `needs` is pending or running.
      parallel: subprocesses at a time (>= 1).
      launch: function name -> None (nothing to run) or (cmd, log_path,
        message): the argv, the file stdout and stderr are appended to, and
        the line printed when the job starts.
      cwd: working directory of every subprocess.
      on_finish: optional function (name, seconds, returncode) called when
        a subprocess exits.
      poll_seconds: interval between polls of the running subprocesses.
    Returns:
      ({name: seconds} of the jobs that succeeded, [names that failed]).
    """
    pending, running, seconds, failed = list(jobs), [], {}, []
    while pending or running:
        for job in list(pending):
            if len(running) >= parallel:
                break
            name, needs = job
            if needs is not None:
                if needs in failed:
                    pending.remove(job)
                    failed.append(name)
                    continue
                if (any(r[0] == needs for r in running)
                        or any(p[0] == needs for p in pending)):
                    continue
            pending.remove(job)
            started = launch(name)
            if started is None:
                continue
            cmd, log_path, message = started
            print(message, flush=True)
            log = open(log_path, "a")
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=log,
                                    stderr=subprocess.STDOUT)
            running.append((name, proc, log, time.time()))
        if running:
            time.sleep(poll_seconds)
        for item in list(running):
            name, proc, log, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            elapsed = time.time() - started
            if on_finish is not None:
                on_finish(name, elapsed, proc.returncode)
            if proc.returncode:
                failed.append(name)
                print(f"[{name}] FAILED (exit {proc.returncode}); see "
                      f"{log.name}", flush=True)
            else:
                seconds[name] = elapsed
                print(f"[{name}] done in {elapsed / 60:.1f} min",
                      flush=True)
    return seconds, failed
