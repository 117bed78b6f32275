"""Kills a training run at random moments and checks that nothing is lost.

Runs `python -m bncr_tf.train` on a tiny deterministic config twice:

1. a reference run, uninterrupted, keeping every checkpoint;
2. the same run SIGKILLed at `--kills` seeded random moments, each time
   restarted with the same command (`--resume=auto`, same --outdir and
   --run_name) until it finishes.

A kill lands during start-up (imports, config.json, restore, tracing), at
a random moment of the training loop (steps, stats.jsonl, grids,
TensorBoard, checkpoint writes), or while a checkpoint is being written
(the tool watches checkpoints/ for TensorFlow's `ckpt-N_temp` directory
and kills as soon as it appears). After each kill the committed checkpoint
must equal the reference checkpoint of the same step, and the resumed
process must restore it; at the end every checkpoint tensor (weights, EMA
copies, optimiser slots, step and counters) and every stats.jsonl record
(except wall-clock fields) must equal the reference run's. Op determinism
(--deterministic) makes "equal" exact: a resumed run recomputes the steps
after its checkpoint with the same randomness, a pure function of (seed,
step).

    python tools/kill_resume.py --kills=10 --seed=0 --workdir=/tmp/kill_resume

Prints a table of the kills and ends with "N/N resumes with equal final
state"; exits 1 if anything differs. See docs/reliability.md.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RUN_NAME = "kill_resume"
TRAIN_FLAGS = [
    "--data=builtin:skimage_patches", "--data_limit=64", "--setting=N",
    "--variant=bncrgan", "--width=8", "--d_batch=8", "--g_batch=8",
    "--z_dim=16", "--log_every=2", "--grid_every=4", "--grid_size=4",
    "--noexport_at_end", "--deterministic", f"--run_name={RUN_NAME}",
    "--resume=auto"]
# Fields of stats.jsonl that depend on wall-clock time.
CLOCK_KEYS = ("time", "Timing/sec_per_iter")
_TRAINING_RE = re.compile(r"training \S+ from step (\d+) to (\d+)")
_STEP_RE = re.compile(r" step (\d+)/(\d+) ")
_RESTORED_RE = re.compile(r"restored (\S+) at step (\d+)")


class Child:
    """A training process whose stdout lines are timestamped."""

    def __init__(self, args, outdir, iterations, checkpoint_every, keep):
        cmd = [sys.executable, "-m", "bncr_tf.train", *TRAIN_FLAGS,
               f"--outdir={outdir}", f"--iterations={iterations}",
               f"--checkpoint_every={checkpoint_every}",
               f"--keep_checkpoints={keep}"]
        self.command = cmd
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   TF_CPP_MIN_LOG_LEVEL="3")
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines = []  # (seconds since start, line)
        self.training_at = None  # when "training ... from step" appeared
        self.start_step = None
        self.first_tick = None  # (seconds, step) of the first status line
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            now = time.time() - self.started
            self.lines.append((now, line.rstrip("\n")))
            match = _TRAINING_RE.search(line)
            if match and self.training_at is None:
                self.start_step = int(match.group(1))
                self.training_at = now
            match = _STEP_RE.search(line)
            if match and self.first_tick is None:
                self.first_tick = (now, int(match.group(1)))

    def wait(self, timeout=None):
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.wait()

    def alive(self):
        return self.proc.poll() is None

    def text(self):
        return "\n".join(line for _, line in self.lines)


def _run_dirs(outdir):
    return sorted(glob.glob(os.path.join(outdir, f"*-{RUN_NAME}")))


def _committed_step(outdir):
    """(run dir, step) of the newest committed checkpoint, or (None, None)."""
    from bncr_tf.training import rundir
    run = rundir.find_resumable(outdir, RUN_NAME)
    if run is None:
        return None, None
    state = rundir.read_checkpoint_state(os.path.join(run, "checkpoints"))
    return run, int(state["latest"].rsplit("-", 1)[1])


def _tensors(prefix):
    from bncr_tf import cli
    cli.quiet_tensorflow([])  # TensorFlow's load-time lines hidden
    from bncr_tf.training import checkpoints
    return checkpoints.read_tensors(prefix)


def compare_checkpoints(a, b):
    """Names of the tensors that differ (bitwise) between two checkpoints."""
    import numpy as np
    ta, tb = _tensors(a), _tensors(b)
    diff = sorted(set(ta) ^ set(tb))
    for name in sorted(set(ta) & set(tb)):
        if not np.array_equal(ta[name], tb[name]):
            diff.append(name)
    return diff, len(ta)


def _stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in CLOCK_KEYS}
            for r in records]


def _snapshot(outdir):
    """What the run directories hold at the moment of a kill."""
    from bncr_tf.training import rundir
    notes = []
    for run in _run_dirs(outdir):
        ckpt = os.path.join(run, "checkpoints")
        names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
        temps = sorted(n for n in names if "_temp" in n)
        if temps:
            notes.append(f"{', '.join(temps)} being written")
        leftovers = sorted(
            os.path.relpath(p, run) for p in
            glob.glob(os.path.join(run, "**", "*.tmp"), recursive=True)
            + glob.glob(os.path.join(run, "**", ".*.tmp"), recursive=True))
        if leftovers:
            notes.append(f"{', '.join(leftovers)} being written")
        stats = os.path.join(run, "stats.jsonl")
        if os.path.exists(stats) and os.path.getsize(stats):
            with open(stats, "rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    notes.append("stats.jsonl ends mid-line")
        state = rundir.read_checkpoint_state(ckpt)
        listed = {os.path.basename(p) for p in state["paths"]} if state \
            else set()
        loose = sorted(n[:-len(".index")] for n in names
                       if n.endswith(".index")
                       and n[:-len(".index")] not in listed)
        if loose:
            notes.append(f"{', '.join(loose)} written, not committed")
        if state is None:
            notes.append(f"{os.path.basename(run)}: no committed checkpoint")
    return "; ".join(notes)


def _short(text):
    """A log line without directory names."""
    return re.sub(r"/\S*/", "", text)


def _wait_for(child, predicate, timeout, poll=0.001):
    deadline = time.time() + timeout
    while time.time() < deadline and child.alive():
        if predicate():
            return True
        time.sleep(poll)
    return False


def _kill_plan(rng, reference, remaining):
    """Chooses where the next kill lands (seeded).

    startup: a uniform moment between 0.5 s and the reference's start-up
    time (imports, config.json, data, restore, tracing); training: a
    uniform moment within the next min(16, remaining / 3) steps after the
    first status line (steps, stats.jsonl, grids, TensorBoard and
    checkpoint writes), so the run does not finish before the last kill;
    checkpoint: 0-100 ms after TensorFlow created the temporary directory
    of the 1st-3rd save of the process (its data and index writes, the
    merge, the state file and the deletion of old checkpoints take about
    as long).
    """
    mode = rng.choice(["startup", "training", "training", "checkpoint",
                       "checkpoint"])
    if mode == "startup":
        return mode, (rng.uniform(0.5, reference["startup"]),)
    if mode == "training":
        span = max(2, min(16, remaining // 3))
        return mode, (rng.uniform(0.0, 1.0) * span * reference["per_step"],)
    return mode, (rng.randint(0, 2), rng.uniform(0.0, 0.1))


def reference_run(args):
    outdir = os.path.join(args.workdir, "reference")
    child = Child(args, outdir, args.iterations, args.checkpoint_every,
                  keep=10 ** 6)
    code = child.wait()
    if code != 0:
        sys.exit(f"error: the reference run failed (exit {code}):\n"
                 + child.text()[-3000:])
    run = _run_dirs(outdir)[-1]
    total = child.lines[-1][0]
    tick_at, tick_step = child.first_tick
    return {"run": run, "startup": child.training_at,
            "training": total - child.training_at,
            "per_step": (total - tick_at) / (args.iterations - tick_step),
            "command": child.command}


def interrupted_run(args, reference, rng):
    outdir = os.path.join(args.workdir, "interrupted")
    rows = []
    kills = 0
    failures = []
    resume_ok = 0
    while True:
        child = Child(args, outdir, args.iterations, args.checkpoint_every,
                      keep=args.keep_checkpoints)
        if rows:  # the process resuming the previous kill
            row = rows[-1]
            if not _wait_for(child, lambda: child.training_at is not None,
                             600):
                if not child.alive():
                    child.wait()
                    failures.append(f"resume after kill {row['n']} failed: "
                                    + child.text()[-2000:])
                    return rows, failures, resume_ok
            restored = _RESTORED_RE.search(child.text())
            row["resumed"] = int(restored.group(2)) if restored else 0
            expected = row["committed"] or 0
            if row["resumed"] == expected:
                resume_ok += 1
            else:
                failures.append(f"kill {row['n']}: committed step "
                                f"{expected} but resumed from "
                                f"{row['resumed']}")
            notes = [line for _, line in child.lines
                     if "damaged" in line or "removed" in line
                     or "dropped" in line]
            row["resume_log"] = "; ".join(_short(n.split(" ", 1)[1])
                                          for n in notes)
        if kills == args.kills:
            code = child.wait()
            if code != 0:
                failures.append(f"final run failed (exit {code}): "
                                + child.text()[-2000:])
            return rows, failures, resume_ok
        done = (rows[-1]["committed"] or 0) if rows else 0
        mode, param = _kill_plan(rng, reference, args.iterations - done)
        if mode == "startup":
            delay, = param
            _wait_for(child, lambda: time.time() - child.started >= delay,
                      600)
            where = f"{delay:.2f} s after the start"
        elif mode == "training":
            delay, = param
            _wait_for(child, lambda: child.first_tick is not None, 600)
            t0 = time.time()
            _wait_for(child, lambda: time.time() - t0 >= delay, 600)
            where = f"{delay:.2f} s after the first status line"
        else:
            skip, delay = param
            seen = set()
            ckpt_dirs = os.path.join(outdir, "*", "checkpoints", "*_temp*")

            def saving():
                now = set(glob.glob(ckpt_dirs)) - seen
                if len(now) and len(seen) >= skip:
                    return True
                seen.update(now)
                return False
            _wait_for(child, lambda: child.training_at is not None, 600)
            _wait_for(child, saving, 600, poll=0.0005)
            t0 = time.time()
            _wait_for(child, lambda: time.time() - t0 >= delay, 1)
            where = (f"{delay * 1000:.0f} ms into checkpoint write "
                     f"#{skip + 1}")
        if not child.alive():
            code = child.wait()
            if code != 0:
                failures.append(f"process failed before kill (exit {code}):"
                                f" " + child.text()[-2000:])
                return rows, failures, resume_ok
            print(f"(run finished before kill {kills + 1}; stopping)")
            return rows, failures, resume_ok
        at = time.time() - child.started
        child.kill()
        kills += 1
        snapshot = _snapshot(outdir)
        last = [line for _, line in child.lines if line[:2].isdigit()]
        last = _short(last[-1].split(" ", 1)[1]) if last else \
            "(no log line yet)"
        run, committed = _committed_step(outdir)
        row = {"n": kills, "mode": mode, "where": where, "at": at,
               "last": last, "snapshot": snapshot, "committed": committed,
               "resumed": None, "resume_log": ""}
        if committed is not None:
            ref = os.path.join(reference["run"], "checkpoints",
                               f"ckpt-{committed}")
            diff, _ = compare_checkpoints(
                os.path.join(run, "checkpoints", f"ckpt-{committed}"), ref)
            if diff:
                failures.append(f"kill {kills}: committed ckpt-{committed} "
                                f"differs from the reference in "
                                f"{len(diff)} tensors ({diff[:3]})")
        rows.append(row)
        print(f"kill {kills:2d}: {mode:10s} {where:32s} last log: "
              f"{last[:60]!r} committed step {committed} {snapshot}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--checkpoint_every", type=int, default=2)
    parser.add_argument("--keep_checkpoints", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/kill_resume",
                        help="scratch directory (emptied if it holds an "
                        "earlier run of this tool)")
    args = parser.parse_args()
    import random
    rng = random.Random(args.seed)
    if os.path.isdir(args.workdir) and os.listdir(args.workdir):
        if not set(os.listdir(args.workdir)) <= {"reference", "interrupted"}:
            print(f"error: --workdir {args.workdir} is not empty and was not "
                  f"written by this tool", file=sys.stderr)
            return 2
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)
    started = time.time()
    print("command: python tools/kill_resume.py " + " ".join(
        f"--{k}={v}" for k, v in sorted(vars(args).items())))
    print("training flags: " + " ".join(TRAIN_FLAGS) + f" --iterations="
          f"{args.iterations} --checkpoint_every={args.checkpoint_every} "
          f"--keep_checkpoints={args.keep_checkpoints} (reference: all kept)")
    reference = reference_run(args)
    print(f"reference run {reference['run']}: start-up "
          f"{reference['startup']:.1f} s, training loop "
          f"{reference['training']:.1f} s "
          f"({reference['per_step'] * 1000:.0f} ms per step after "
          f"tracing)", flush=True)
    rows, failures, resume_ok = interrupted_run(args, reference, rng)

    outdir = os.path.join(args.workdir, "interrupted")
    run, step = _committed_step(outdir)
    final_equal = False
    if run is None:
        failures.append("the interrupted run has no checkpoint")
    else:
        diff, count = compare_checkpoints(
            os.path.join(run, "checkpoints", f"ckpt-{step}"),
            os.path.join(reference["run"], "checkpoints",
                         f"ckpt-{args.iterations}"))
        if step != args.iterations:
            failures.append(f"final step {step} != {args.iterations}")
        elif diff:
            failures.append(f"final checkpoint differs in {len(diff)} of "
                            f"{count} tensors: {diff[:5]}")
        else:
            final_equal = True
        stats_a, stats_b = _stats(run), _stats(reference["run"])
        if stats_a != stats_b:
            failures.append(
                f"stats.jsonl differs: steps "
                f"{[r['step'] for r in stats_a]} vs "
                f"{[r['step'] for r in stats_b]}")
            final_equal = False

    print()
    print("| kill | mode | moment | last log line before the kill | "
          "on disk at the kill | committed step | resumed from | resume "
          "log |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']} | {r['mode']} | {r['where']} | "
              f"{r['last'][:70]} | {r['snapshot'] or '-'} | "
              f"{r['committed']} | {r['resumed']} | "
              f"{r['resume_log'] or '-'} |")
    print()
    runs = [os.path.basename(p) for p in _run_dirs(outdir)]
    print(f"run directories: {', '.join(runs)}")
    if run is not None:
        print(f"final state: {os.path.basename(run)} ckpt-{step} vs "
              f"reference ckpt-{args.iterations}: "
              f"{count} tensors, {len(diff)} differ; stats.jsonl "
              f"{len(stats_a)} records "
              f"{'equal' if stats_a == stats_b else 'DIFFERENT'}")
    for failure in failures:
        print("FAILED:", failure)
    equal = resume_ok if (final_equal and not failures) else 0
    print(f"{equal}/{len(rows)} resumes with equal final state "
          f"({time.time() - started:.0f} s)")
    return 0 if (final_equal and not failures
                 and len(rows) == args.kills) else 1


if __name__ == "__main__":
    sys.exit(main())
