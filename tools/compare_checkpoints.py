"""Bit-identity harness for behaviour-preserving refactors (issue 19).

Trains every model variant (and a few option cases) for a fixed number of
iterations with a fixed seed and TensorFlow op determinism
(`--deterministic`), one thread per process, on tiny builtin data, and
writes a manifest: for each case the exact command and, for every tensor of
its last checkpoint, the sha256 of its bytes (plus dtype and shape), and
the sha256 of its stats.jsonl records without their wall-clock fields.
Comparing the manifest of a refactored tree with the baseline proves that
the refactor changed no weight, EMA copy, optimiser slot or counter:

    python tools/compare_checkpoints.py run --out=/tmp/new.json \\
        --check=results/bit_identity/baseline.json
    python tools/compare_checkpoints.py check \\
        results/bit_identity/baseline.json /tmp/new.json
    python tools/compare_checkpoints.py list

`check` prints IDENTICAL, or each differing case and tensor, and exits 0
only when every case is identical. Bit identity holds on one TensorFlow
build and CPU; the manifest records both and `check` says when they
differ. `--repo=DIR` trains the bncr_tf of another source tree (e.g. a
`git archive` of an older commit) with this harness. See
docs/reliability.md ("Bit identity across refactors").
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT = 1
DEFAULT_ITERATIONS = 20

# Flags shared by every case: tiny data (8 batches per epoch, so 20
# iterations cross epoch boundaries), tiny networks, one status line, grid
# and checkpoint at the end, no export.
COMMON_FLAGS = (
    "--data=builtin:skimage_patches:count=64", "--width=8", "--z_dim=16",
    "--d_batch=8", "--g_batch=8", "--grid_size=2", "--seed=0",
    "--data_seed=0", "--noexport_at_end", "--deterministic",
    "--resume=none", "--keep_checkpoints=1")

# name -> extra flags. Every variant on a setting that has the stages it
# models, then options that switch other code paths on.
CASES = {
    "gan-A": ("--variant=gan", "--setting=A"),
    "ambientgan-N": ("--variant=ambientgan", "--setting=N"),
    "p_ambientgan-N": ("--variant=p_ambientgan", "--setting=N"),
    "brgan-D": ("--variant=brgan", "--setting=D"),
    "brgan_nomask-D": ("--variant=brgan_nomask", "--setting=D"),
    "nrgan_si1-noise": ("--variant=nrgan_si1", "--setting=noise"),
    "nrgan_si2-noise": ("--variant=nrgan_si2", "--setting=noise"),
    "nrgan_sd1-noise": ("--variant=nrgan_sd1", "--setting=noise"),
    "nrgan_sd2-noise": ("--variant=nrgan_sd2", "--setting=noise"),
    "nrgan_sd3-noise": ("--variant=nrgan_sd3", "--setting=noise"),
    "crgan-J": ("--variant=crgan", "--setting=J"),
    "crgan_nomask-H": ("--variant=crgan_nomask", "--setting=H"),
    "bncrgan-N": ("--variant=bncrgan", "--setting=N"),
    "bncrgan_noac-N": ("--variant=bncrgan_noac", "--setting=N"),
    # Options.
    "bncrgan-N-multiplicative_prior": (
        "--variant=bncrgan", "--setting=N",
        "--noise_prior=multiplicative_gaussian"),
    "bncrgan-N-fake_storage": (
        "--variant=bncrgan", "--setting=N", "--fake_storage"),
    "crgan-J-jpeg_storage-fd": (
        "--variant=crgan", "--setting=J", "--jpeg_storage",
        "--quality_gradient=fd"),
    "brgan-D-centre_kernels": (
        "--variant=brgan", "--setting=D", "--centre_kernels"),
    "bncrgan-N-optimisation": (
        "--variant=bncrgan", "--setting=N", "--d_highpass=20",
        "--degradation_lr_scale=2", "--d_lr_scale=2",
        "--degradation_warmup=10"),
    "bncrgan-N-losses": (
        "--variant=bncrgan", "--setting=N", "--rounding=cubic",
        "--ac_reduction=sum", "--ds_noise_target=log_std",
        "--ds_weight_kernel=0.05", "--ds_weight_quality=0.01", "--q_min=0"),
    "bncrgan-N-clean_reference": (
        "--variant=bncrgan", "--setting=N",
        "--clean_reference=builtin:skimage_patches:count=64",
        "--clean_reference_seed=1"),
    # Restoration models (their trainers share training/restorer_base.py).
    "unir-N": ("--variant=unir", "--setting=N"),
    "cyclegan-P": ("--variant=cyclegan", "--setting=P"),
    "deblurgan-C": ("--variant=deblurgan", "--setting=C"),
    "deblurganv2-C": ("--variant=deblurganv2", "--setting=C"),
}

# Fields of stats.jsonl that depend on wall-clock time.
CLOCK_KEYS = ("time", "Timing/sec_per_iter")
# One thread per process: results do not depend on the machine's core
# count, and --jobs processes share the CPUs predictably.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1",
             "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
             "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1"}


class ToolError(Exception):
    """A usage problem, reported as one sentence with exit 2."""


def case_flags(name, iterations):
    """The training flags of a case (without --outdir)."""
    return [*COMMON_FLAGS, *CASES[name], f"--iterations={iterations}",
            f"--checkpoint_every={iterations}", f"--log_every="
            f"{max(1, iterations // 4)}", f"--grid_every={iterations}",
            f"--run_name={name}"]


# ---------------------------------------------------------------- hashing

def _read_tensors(prefix):
    """{name: value} of a checkpoint, by the package's own reader
    (`checkpoints.read_tensors`), with TensorFlow's load-time lines
    hidden (`cli.quiet_tensorflow`)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bncr_tf import cli
    cli.quiet_tensorflow([])
    from bncr_tf.training import checkpoints
    return checkpoints.read_tensors(prefix)


def _tensor_bytes(value):
    import numpy as np
    value = np.asarray(value)
    if value.dtype.kind == "O":  # strings: length-prefixed items
        return b"".join(len(v).to_bytes(8, "little") + bytes(v)
                        for v in value.reshape(-1))
    return np.ascontiguousarray(value).tobytes()


def hash_checkpoint(prefix):
    """{tensor name: {"dtype", "shape", "sha256"}} of a checkpoint.

    Every saved tensor except the object-graph record (which holds no
    values, only the names that are already the keys).
    """
    import numpy as np
    out = {}
    for name, value in _read_tensors(prefix).items():
        array = np.asarray(value)
        out[name] = {"dtype": str(array.dtype), "shape": list(array.shape),
                     "sha256": hashlib.sha256(
                         _tensor_bytes(array)).hexdigest()}
    return out


def hash_stats(path):
    """sha256 and record count of stats.jsonl without clock fields."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                records.append({k: v for k, v in record.items()
                                if k not in CLOCK_KEYS})
    text = json.dumps(records, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), len(records)


# ------------------------------------------------------------- environment

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    return sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|avx2|fma|amx_"
                                 r"[a-z0-9]+|avx_vnni)\b", text)))


def _git(repo, *args):
    try:
        return subprocess.run(
            ["git", "-C", repo, *args], capture_output=True, text=True,
            timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _child_env(repo):
    env = dict(os.environ, **CHILD_ENV)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"]
                                if env.get("PYTHONPATH") else "")
    return env


def environment(repo):
    """What the bits depend on: the package trained, versions, CPU."""
    probe = subprocess.run(
        [sys.executable, "-c",
         "import json, numpy, bncr_tf, tensorflow as tf; print(json.dumps("
         "{'package': bncr_tf.__file__, 'tensorflow': tf.__version__, "
         "'numpy': numpy.__version__}))"],
        cwd=repo, env=_child_env(repo), capture_output=True, text=True)
    if probe.returncode != 0:
        raise ToolError(f"cannot import bncr_tf and tensorflow from {repo}: "
                        + (probe.stderr.strip().splitlines() or ["?"])[-1])
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    package = os.path.dirname(os.path.realpath(info.pop("package")))
    if package != os.path.join(os.path.realpath(repo), "bncr_tf"):
        raise ToolError(f"python imports bncr_tf from {package}, not from "
                        f"--repo {repo}")
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"repo": os.path.realpath(repo),
            "git_commit": commit,
            "git_dirty": None if dirty is None else bool(dirty),
            "python": platform.python_version(), **info,
            "machine": platform.machine(), "cpu_flags": _cpu_flags(),
            "threads": {k: CHILD_ENV[k] for k in (
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}}


# -------------------------------------------------------------------- run

def run_case(name, iterations, workdir, repo):
    """Trains one case; returns its manifest entry."""
    outdir = os.path.join(workdir, name)
    cmd = [sys.executable, "-m", "bncr_tf.train",
           *case_flags(name, iterations), f"--outdir={outdir}"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=repo, env=_child_env(repo),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    seconds = round(time.time() - started, 1)
    entry = {"command": ["python", "-m", "bncr_tf.train",
                         *case_flags(name, iterations),
                         "--outdir=<workdir>/" + name],
             "seconds": seconds}
    runs = sorted(d for d in (os.listdir(outdir) if os.path.isdir(outdir)
                              else []) if d.endswith("-" + name))
    prefix = runs and os.path.join(outdir, runs[-1], "checkpoints",
                                   f"ckpt-{iterations}")
    if proc.returncode != 0 or not prefix or not os.path.exists(
            prefix + ".index"):
        entry["error"] = (f"training exited {proc.returncode}"
                          + ("" if proc.returncode else
                             f" without writing ckpt-{iterations}")
                          + ": " + proc.stdout[-2000:])
        return entry
    entry["checkpoint"] = f"ckpt-{iterations}"
    entry["variables"] = hash_checkpoint(prefix)
    entry["stats_sha256"], entry["stats_records"] = hash_stats(
        os.path.join(outdir, runs[-1], "stats.jsonl"))
    return entry


def run(args):
    names = list(CASES)
    if args.cases:
        names = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = [n for n in names if n not in CASES]
        if unknown:
            raise ToolError(f"unknown case {unknown[0]!r}; "
                            f"`python tools/compare_checkpoints.py list` "
                            f"shows the {len(CASES)} cases")
    baseline = load_manifest(args.check) if args.check else None
    repo = os.path.abspath(args.repo)
    if not os.path.isdir(os.path.join(repo, "bncr_tf")):
        raise ToolError(f"--repo {args.repo} has no bncr_tf package")
    if args.workdir:
        workdir = args.workdir
        if os.path.isdir(workdir) and os.listdir(workdir):
            raise ToolError(f"--workdir {workdir} is not empty")
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tempfile.mkdtemp(prefix="compare_checkpoints-")
    manifest = {"format": FORMAT, "iterations": args.iterations,
                "label": args.label, "environment": environment(repo),
                "cases": {}}
    print(f"training {len(names)} cases for {args.iterations} iterations "
          f"({args.jobs} at a time) from {repo} in {workdir}", flush=True)
    started = time.time()
    lock = threading.Lock()
    done = []

    def one(name):
        entry = run_case(name, args.iterations, workdir, repo)
        with lock:
            done.append(name)
            status = ("FAILED: " + entry["error"].splitlines()[0]
                      if "error" in entry else
                      f"{len(entry['variables'])} tensors")
            if baseline and "error" not in entry \
                    and name in baseline["cases"]:
                diffs = compare_case(baseline["cases"][name], entry)
                status += ", identical" if not diffs else \
                    f", DIFFERENT ({len(diffs)} differences)"
            print(f"[{len(done)}/{len(names)}] {name}: {entry['seconds']} s,"
                  f" {status}", flush=True)
        return name, entry

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(one, names))
    manifest["cases"] = {n: results[n] for n in names}
    manifest["seconds"] = round(time.time() - started, 1)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)),
                    exist_ok=True)
        write_manifest(args.out, manifest)
        print(f"manifest: {args.out} ({manifest['seconds']} s)")
    if not args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [n for n in names if "error" in results[n]]
    for name in failed:
        print(f"FAILED {name}: {results[name]['error']}")
    code = 1 if failed else 0
    if baseline is not None:
        code = max(code, report(baseline, manifest,
                                subset=bool(args.cases)))
    return code


# ------------------------------------------------------------------ check

def write_manifest(path, manifest):
    """Writes JSON with one line per tensor (readable diffs)."""
    text = json.dumps(manifest, indent=1, sort_keys=True)
    # Collapse each {"dtype", "sha256", "shape"} record onto one line.
    text = re.sub(r'\{\s+"dtype": ("[^"]*"),\s+"sha256": ("[0-9a-f]*"),'
                  r'\s+"shape": \[([^\]]*)\]\s+\}',
                  lambda m: '{"dtype": %s, "sha256": %s, "shape": [%s]}' % (
                      m.group(1), m.group(2),
                      ", ".join(re.findall(r"\d+", m.group(3)))), text)
    if json.loads(text) != manifest:
        raise AssertionError("manifest formatting changed its content")
    with open(path, "w") as f:
        f.write(text + "\n")


def load_manifest(path):
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ToolError(f"cannot read manifest {path}: {reason}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ToolError(f"{path} is not a manifest of this tool "
                        f"(format {FORMAT})")
    return manifest


def _flags(entry):
    return [a for a in entry.get("command", [])
            if not a.startswith("--outdir=")]


def compare_case(base, new):
    """Differences of one case, one line each (empty when identical)."""
    if "error" in base:
        return ["the baseline run failed: "
                + base["error"].splitlines()[0]]
    if "error" in new:
        return ["the new run failed: " + new["error"].splitlines()[0]]
    diffs = []
    if _flags(base) != _flags(new):
        diffs.append(f"command differs: {' '.join(_flags(base))} -> "
                     f"{' '.join(_flags(new))}")
    bv, nv = base["variables"], new["variables"]
    for name in sorted(set(bv) - set(nv)):
        diffs.append(f"{name}: missing from the new checkpoint")
    for name in sorted(set(nv) - set(bv)):
        diffs.append(f"{name}: not in the baseline checkpoint")
    for name in sorted(set(bv) & set(nv)):
        b, n = bv[name], nv[name]
        if (b["dtype"], b["shape"]) != (n["dtype"], n["shape"]):
            diffs.append(f"{name}: {b['dtype']}{b['shape']} -> "
                         f"{n['dtype']}{n['shape']}")
        elif b["sha256"] != n["sha256"]:
            diffs.append(f"{name}: values differ")
    if base.get("stats_sha256") != new.get("stats_sha256"):
        diffs.append("stats.jsonl records differ (without clock fields)")
    return diffs


def report(baseline, new, subset=False):
    """Prints IDENTICAL or every difference; returns the exit code."""
    notes = []
    be, ne = baseline.get("environment", {}), new.get("environment", {})
    for key in ("tensorflow", "numpy", "python", "machine", "cpu_flags",
                "threads"):
        if be.get(key) != ne.get(key):
            notes.append(f"{key} {be.get(key)} -> {ne.get(key)}")
    if notes:
        print("note: the environments differ (bit identity is only "
              "expected on one build and CPU): " + "; ".join(notes))
    lines = []
    if baseline.get("iterations") != new.get("iterations"):
        lines.append(f"iterations {baseline.get('iterations')} -> "
                     f"{new.get('iterations')}")
    bc, nc = baseline["cases"], new["cases"]
    for name in bc:
        if name not in nc:
            if not subset:
                lines.append(f"{name}: not run")
            continue
        for diff in compare_case(bc[name], nc[name]):
            lines.append(f"{name}: {diff}")
    for name in nc:
        if name not in bc:
            lines.append(f"{name}: not in the baseline")
    compared = [n for n in bc if n in nc]
    tensors = sum(len(nc[n].get("variables", {})) for n in compared)
    if not lines:
        print(f"IDENTICAL: {len(compared)} cases, {tensors} tensors")
        return 0
    cases = sorted({line.split(":", 1)[0] for line in lines})
    print(f"DIFFERENT: {len(lines)} differences in {len(cases)} of "
          f"{len(compared)} cases")
    for line in lines:
        print("  " + line)
    return 1


def check(args):
    return report(load_manifest(args.baseline), load_manifest(args.new),
                  subset=args.subset)


# ------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train every case and write a "
                           "manifest")
    p_run.add_argument("--out", default="",
                       help="manifest to write (JSON)")
    p_run.add_argument("--check", default="",
                       help="baseline manifest to compare with")
    p_run.add_argument("--cases", default="",
                       help="comma-separated case names (default: all)")
    p_run.add_argument("--iterations", type=int,
                       default=DEFAULT_ITERATIONS)
    p_run.add_argument("--jobs", type=int, default=1,
                       help="cases trained in parallel (one thread each)")
    p_run.add_argument("--repo", default=ROOT,
                       help="source tree whose bncr_tf is trained")
    p_run.add_argument("--label", default="",
                       help="free text stored in the manifest (e.g. the "
                       "commit of a --repo that is not a git checkout)")
    p_run.add_argument("--workdir", default="",
                       help="run directories (default: a temporary "
                       "directory, removed at the end)")
    p_run.add_argument("--keep", action="store_true",
                       help="keep the temporary run directories")
    p_check = sub.add_parser("check", help="compare two manifests")
    p_check.add_argument("baseline")
    p_check.add_argument("new")
    p_check.add_argument("--subset", action="store_true",
                         help="baseline cases missing from NEW are not "
                         "differences")
    sub.add_parser("list", help="print the cases and their flags")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in CASES:
                print(f"{name}: {' '.join(CASES[name])}")
            print(f"common: {' '.join(COMMON_FLAGS)}")
            return 0
        if args.command == "check":
            return check(args)
        if args.iterations < 1:
            raise ToolError("--iterations must be at least 1")
        if args.jobs < 1:
            raise ToolError("--jobs must be at least 1")
        if not args.out and not args.check:
            raise ToolError("give --out (write a manifest) and/or --check "
                            "(compare with a baseline)")
        return run(args)
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
