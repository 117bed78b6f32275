"""Measures the time of one training iteration (D step + G step) per variant.

Example (the paper's CIFAR configuration: width 128, D batch 64, G batch
128, R1 on every D step):

    python tools/benchmark_train_step.py \\
        --variants=gan,nrgan_si1,brgan,crgan,bncrgan \\
        --configs=fp32,fp32_xla,bf16 --warmup=2 --iters=5 \\
        --out=bench_train_step.json

Side by side with the PyTorch reference of ../shared/bench (alternating
A B A B in one session, ratios pair by pair):

    python tools/benchmark_train_step.py --compare \\
        --pairs=gan:gan,nrgan_si1:sinrgan1 --warmup=2 --iters=5 \\
        --repetitions=2 --torch_python=../.venv-torch/bin/python \\
        --torch_reference=../shared/bench/nrgan_torch_reference.py \\
        --out=bench_compare.json

Every (variant, configuration) runs in its own subprocess (the dtype
policy, XLA and the thread settings never leak between them), which builds
`steps.Trainer` exactly as training does, runs --warmup iterations
(tracing, XLA compilation) and then --iters timed ones, and reports:

* `sec_per_iter`: the median wall time of the timed iterations (each
  synchronised by reading its losses), also min/max and the first call
  (trace + compile + one iteration); `cpu_s_per_iter`: the median
  process CPU time of an iteration (all threads; on an idle 2-core machine
  about twice the wall time; steadier than wall time when other jobs
  share the machine);
* `gflop`: FLOPs of one iteration, counted on the traced graph (see
  `count_flops`), and `gflop_per_s` = gflop / sec_per_iter;
* `maxrss_mb`: the peak resident memory of the subprocess;
* with --breakdown, the D step and the G step timed as separately compiled
  functions;
* the 1-minute load average before and after, since this machine is
  shared.

Configurations: `fp32` (plain `tf.function`), `fp32_xla`
(`jit_compile=True`), `bf16` (`--mixed_precision=mixed_bfloat16` through
`loop.setup_tensorflow`), `bf16_xla`.

--data also measures the input side: `loop.degrade_in_memory` (setting N,
done once at load) and `loop.make_real_batches` on in-memory uint8 images,
in images/s, against what one iteration consumes (D batch / sec_per_iter).

JSON goes to --out; a table is printed.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Allow running as `python tools/benchmark_train_step.py` from a checkout.
sys.path.insert(0, ROOT)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS

CONFIGS = {
    # name: (mixed_precision, jit_compile)
    "fp32": ("none", False),
    "fp32_xla": ("none", True),
    "bf16": ("mixed_bfloat16", False),
    "bf16_xla": ("mixed_bfloat16", True),
}

flags.DEFINE_list("variants", ["gan", "nrgan_si1", "brgan", "crgan",
                               "bncrgan"], "Model variants to time.")
flags.DEFINE_list("configs", ["fp32", "fp32_xla", "bf16"],
                  f"Configurations, from {', '.join(CONFIGS)}.")
flags.DEFINE_integer("width", 128, "Channels of G_x, G_n and D.")
flags.DEFINE_integer("resolution", 32, "Image size.")
flags.DEFINE_integer("d_batch", 64, "D batch.")
flags.DEFINE_integer("g_batch", 128, "G batch.")
flags.DEFINE_string("setting", "N", "Training setting (sets the stages of "
                    "AmbientGAN-like variants; the data here is random).")
flags.DEFINE_integer("warmup", 2, "Untimed iterations (trace, compile).")
flags.DEFINE_integer("iters", 5, "Timed iterations; the median is "
                     "reported.")
flags.DEFINE_integer("inter_op_threads", 0, "tf.config inter-op threads "
                     "(0 = TensorFlow's default).")
flags.DEFINE_integer("intra_op_threads", 0, "tf.config intra-op threads "
                     "(0 = TensorFlow's default).")
flags.DEFINE_bool("flops", True, "Count the FLOPs of an iteration.")
flags.DEFINE_bool("breakdown", False, "Also time the D step and the G step "
                  "separately.")
flags.DEFINE_bool("data", False, "Also measure the data pipeline.")
flags.DEFINE_integer("data_images", 2048, "Images for --data.")
flags.DEFINE_string("out", "", "Write the JSON results here.")
flags.DEFINE_bool("compare", False, "Alternate bncr_tf and the PyTorch "
                  "reference, pair by pair (see --pairs).")
flags.DEFINE_list("pairs", ["gan:gan", "nrgan_si1:sinrgan1"],
                  "bncr_tf variant:reference model pairs for --compare.")
flags.DEFINE_integer("repetitions", 2, "Rounds of A B A B for --compare.")
flags.DEFINE_string("torch_python", "",
                    "Python of the venv with torch, for --compare.")
flags.DEFINE_string("torch_reference",
                    os.path.join(ROOT, "..", "shared", "bench",
                                 "nrgan_torch_reference.py"),
                    "The PyTorch reference script, for --compare.")
flags.DEFINE_integer("torch_threads", 2, "--threads of the reference.")
# Internal: run one configuration in this process and print its JSON.
flags.DEFINE_string("worker", "", "Internal: variant:config to run here.")


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --- FLOP count -----------------------------------------------------------

def _conv_flops(op):
    """2 * multiply-adds of a conv-like op, from its static shapes."""
    t = op.type
    if t == "Conv2D":
        out = op.outputs[0].shape
        kernel = op.inputs[1].shape
        return 2 * out.num_elements() * kernel[0] * kernel[1] * kernel[2]
    if t in ("Conv2DBackpropInput", "Conv2DBackpropFilter"):
        # inputs[2] is the output gradient; the filter is an input of the
        # first and the output of the second.
        kernel = (op.inputs[1] if t == "Conv2DBackpropInput"
                  else op.outputs[0]).shape
        grad = op.inputs[2].shape
        return 2 * grad.num_elements() * kernel[0] * kernel[1] * kernel[2]
    if t == "DepthwiseConv2dNative":
        kernel = op.inputs[1].shape
        return 2 * op.outputs[0].shape.num_elements() * kernel[0] * kernel[1]
    if t == "DepthwiseConv2dNativeBackpropInput":
        kernel = op.inputs[1].shape
        return 2 * op.inputs[2].shape.num_elements() * kernel[0] * kernel[1]
    if t == "DepthwiseConv2dNativeBackpropFilter":
        kernel = op.outputs[0].shape
        return 2 * op.inputs[2].shape.num_elements() * kernel[0] * kernel[1]
    if t in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, out = op.inputs[0].shape, op.outputs[0].shape
        transpose = (op.get_attr("transpose_a") if t == "MatMul"
                     else op.get_attr("adj_x"))
        k = a[-2] if transpose else a[-1]
        return 2 * out.num_elements() * k
    if t == "Einsum":
        return None  # not expected on the training path; reported
    return 0


def _live_ops(graph):
    """Ops that the function executes: reachable from its outputs and its
    stateful side effects (TensorFlow prunes the rest, e.g. the filter
    gradients that the G step does not need)."""
    roots = [t.op for t in graph.outputs] + list(graph.control_outputs)
    seen, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return [graph.get_operation_by_name(n) for n in seen]


def count_flops(graph):
    """FLOPs of one call of a traced function, counted on its graph.

    Counts 2 x multiply-adds of the convolutions (forward, input- and
    filter-gradient), depthwise convolutions and matrix products among the
    live ops (see `_live_ops`), with the static shapes of the graph (the
    batch must be static). Element-wise ops are not counted. Nested
    function calls (While, If, PartitionedCall) are reported, not counted.

    Returns:
      (total flops, {op type: flops}, [names of uncounted nested calls]).
    """
    by_type, nested = {}, []
    for op in _live_ops(graph):
        if op.type in ("While", "StatelessWhile", "If", "StatelessIf",
                       "PartitionedCall", "StatefulPartitionedCall"):
            nested.append(op.type)
            continue
        try:
            flops = _conv_flops(op)
        except (TypeError, ValueError):  # unknown dimension
            flops = None
        if flops is None:
            nested.append(op.type)
            continue
        if flops:
            by_type[op.type] = by_type.get(op.type, 0) + flops
    return sum(by_type.values()), by_type, sorted(set(nested))


# --- One configuration, in this process -------------------------------------

def _trainer(variant, config_name):
    import tensorflow as tf
    from bncr_tf.training import loop
    from bncr_tf.training import steps
    from bncr_tf.config import TrainConfig
    mixed, jit = CONFIGS[config_name]
    config = TrainConfig(
        variant=variant, setting=FLAGS.setting, width=FLAGS.width,
        resolution=FLAGS.resolution, d_batch=FLAGS.d_batch,
        g_batch=FLAGS.g_batch, mixed_precision=mixed,
        jit_compile=jit).validate_all()
    loop.setup_tensorflow(config)
    return config, steps.Trainer(config, tf.distribute.get_strategy())


def _time_calls(fn, n, cpu=None):
    """Wall times of n synchronised calls; appends CPU times to `cpu`."""
    times = []
    for _ in range(n):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        for value in out.values():
            value.numpy()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - cpu_start)
    return times


def run_worker(spec):
    """Times one variant:config here; returns a JSON-able dict."""
    import tensorflow as tf
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(
            FLAGS.inter_op_threads)
    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(
            FLAGS.intra_op_threads)
    variant, config_name = spec.split(":")
    load_before = _load()
    started = time.perf_counter()
    config, trainer = _trainer(variant, config_name)
    build_s = time.perf_counter() - started
    r = config.resolution
    reals = tf.random.stateless_uniform([config.d_batch, r, r, 3], [1, 2],
                                        -1.0, 1.0)
    step = [0]

    def iteration():
        step[0] += 1
        return trainer.train_iteration(reals, step[0])

    start = time.perf_counter()
    first = _time_calls(iteration, 1)[0]
    warm = _time_calls(iteration, max(FLAGS.warmup - 1, 0))
    times, loads, cpu = [], [], []
    for _ in range(FLAGS.iters):
        times += _time_calls(iteration, 1, cpu)
        loads.append(_load())
    result = dict(
        variant=variant, config=config_name, width=config.width,
        d_batch=config.d_batch, g_batch=config.g_batch,
        resolution=config.resolution,
        mixed_precision=config.mixed_precision,
        jit_compile=config.jit_compile, build_s=build_s,
        first_call_s=first, warmup_s=warm, times=times,
        sec_per_iter=statistics.median(times), min_s=min(times),
        max_s=max(times), cpu_s_per_iter=statistics.median(cpu),
        tracing_count=trainer._iteration.experimental_get_tracing_count(),
        load_before=load_before, loads_during=loads,
        wall_s=time.perf_counter() - start)
    if FLAGS.breakdown:
        result.update(_breakdown(trainer, reals, config))
    if FLAGS.flops:
        result.update(_flops(trainer, config))
        result["gflop_per_s"] = result["gflop"] / result["sec_per_iter"]
    if FLAGS.data:
        result.update(_data_pipeline(config))
        result["consumed_images_per_s"] = (config.d_batch
                                           / result["sec_per_iter"])
    result["maxrss_mb"] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["load_after"] = _load()
    return result


def _breakdown(trainer, reals, config):
    """Times the D step and the G step as separately compiled functions."""
    import tensorflow as tf
    rid = tf.constant(0)
    seed = tf.constant([config.seed, 7], tf.int64)
    jit = config.jit_compile or None
    d_step = tf.function(lambda r, s: trainer._d_step(r, s, rid),
                         jit_compile=jit)
    g_step = tf.function(lambda s: trainer._g_step(s, rid), jit_compile=jit)
    _time_calls(lambda: d_step(reals, seed), 2)
    _time_calls(lambda: g_step(seed), 2)
    d, g = [], []
    for _ in range(FLAGS.iters):
        d += _time_calls(lambda: d_step(reals, seed), 1)
        g += _time_calls(lambda: g_step(seed), 1)
    out = dict(d_step_s=statistics.median(d), g_step_s=statistics.median(g))
    if FLAGS.flops:
        r = config.resolution
        spec = tf.TensorSpec([config.d_batch, r, r, 3], tf.float32)
        seed_spec = tf.TensorSpec([2], tf.int64)
        out["d_step_gflop"] = count_flops(
            d_step.get_concrete_function(spec, seed_spec).graph)[0] / 1e9
        out["g_step_gflop"] = count_flops(
            g_step.get_concrete_function(seed_spec).graph)[0] / 1e9
    return out


def _flops(trainer, config):
    """Counts the FLOPs of the compiled iteration with a static batch."""
    import tensorflow as tf
    r = config.resolution
    fn = tf.function(trainer._iteration_fn)
    graph = fn.get_concrete_function(
        tf.TensorSpec([config.d_batch, r, r, 3], tf.float32),
        tf.TensorSpec([2], tf.int64)).graph
    total, by_type, nested = count_flops(graph)
    return dict(gflop=total / 1e9,
                gflop_by_op={k: v / 1e9 for k, v in sorted(by_type.items())},
                flops_uncounted=nested,
                flops_method="2 x multiply-adds of Conv2D, Conv2DBackprop"
                             "Input/Filter, depthwise convs and MatMuls "
                             "live in the traced iteration graph")


def _data_pipeline(config):
    """images/s of the setting-N load-time degradation and of the reals
    pipeline (make_real_batches) on in-memory uint8 images."""
    import numpy as np
    from bncr_tf.degradations import settings
    from bncr_tf.training import loop
    n, r = FLAGS.data_images, config.resolution
    rng = np.random.default_rng(0)
    # Smooth random colour images (JPEG and blur see image-like content).
    base = rng.integers(0, 256, (n, r // 4, r // 4, 3)).astype(np.float32)
    images = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    images = np.clip(images + rng.normal(0, 8, images.shape), 0, 255)
    images = images.astype(np.uint8)
    setting = settings.get_setting(FLAGS.setting)
    start = time.perf_counter()
    loop.degrade_in_memory(images[:256], setting, 0)  # warm-up
    warm = time.perf_counter() - start
    start = time.perf_counter()
    loop.degrade_in_memory(images, setting, 0)
    degrade_s = time.perf_counter() - start
    batches = iter(loop.make_real_batches(images, config.d_batch, 0, 0))
    for _ in range(3):
        next(batches)
    count = max(20, 4 * n // config.d_batch)
    start = time.perf_counter()
    for _ in range(count):
        next(batches).numpy()
    pipe_s = time.perf_counter() - start
    return dict(degrade_images_per_s=n / degrade_s,
                degrade_warmup_s=warm,
                pipeline_images_per_s=count * config.d_batch / pipe_s)


# --- Driver -------------------------------------------------------------------

def _worker_args(spec):
    args = [sys.executable, os.path.abspath(__file__), f"--worker={spec}"]
    for name in ("width", "resolution", "d_batch", "g_batch", "setting",
                 "warmup", "iters", "inter_op_threads", "intra_op_threads",
                 "data_images"):
        args.append(f"--{name}={getattr(FLAGS, name)}")
    for name in ("flops", "breakdown", "data"):
        args.append(f"--{name}" if getattr(FLAGS, name) else f"--no{name}")
    return args


def run_subprocess(spec, data=None):
    """Runs one configuration in a fresh interpreter; returns its dict."""
    args = _worker_args(spec)
    if data is not None:
        args.append("--data" if data else "--nodata")
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode or not lines:
        return dict(spec=spec, error=(out.stderr or out.stdout)[-2000:])
    return json.loads(lines[-1])


def run_torch(model):
    """Runs the PyTorch reference on one model; returns its result dict."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "torch.json")
        out = subprocess.run(
            [FLAGS.torch_python, FLAGS.torch_reference, "--model", model,
             "--iters", str(FLAGS.iters), "--warmup", str(FLAGS.warmup),
             "--threads", str(FLAGS.torch_threads), "--out", path],
            capture_output=True, text=True)
        if out.returncode or not os.path.exists(path):
            return dict(model=model, error=(out.stderr or out.stdout)[-2000:])
        with open(path) as f:
            data = json.load(f)
    for result in data.get("results", []):
        if result.get("variant") == model:
            return result
    return dict(model=model, error="no result in the reference's JSON")


def _environment():
    import tensorflow as tf
    return dict(tensorflow=tf.__version__,
                python=platform.python_version(),
                platform=platform.platform(), cpu_count=os.cpu_count(),
                onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                inter_op_threads=FLAGS.inter_op_threads,
                intra_op_threads=FLAGS.intra_op_threads,
                command=" ".join(sys.argv))


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(rows):
    print("| variant | config | s / iter | min-max | CPU s / iter | GFLOP | "
          "GFLOP/s | peak RSS MB | first call s | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['spec']} | error | | | | | | | | |")
            continue
        load = f"{r['load_before']}-{r['load_after']}"
        print(f"| {r['variant']} | {r['config']} | {r['sec_per_iter']:.2f} "
              f"| {r['min_s']:.2f}-{r['max_s']:.2f} "
              f"| {r['cpu_s_per_iter']:.2f} "
              f"| {_fmt(r.get('gflop'), '.0f')} "
              f"| {_fmt(r.get('gflop_per_s'), '.0f')} "
              f"| {r['maxrss_mb']:.0f} | {r['first_call_s']:.1f} | {load} |")
    for r in rows:
        if "d_step_s" in r:
            print(f"{r['variant']}/{r['config']}: D step "
                  f"{r['d_step_s']:.2f} s ({_fmt(r.get('d_step_gflop'), '.0f')}"
                  f" GFLOP), G step {r['g_step_s']:.2f} s "
                  f"({_fmt(r.get('g_step_gflop'), '.0f')} GFLOP)")
        if "pipeline_images_per_s" in r:
            print(f"{r['variant']}/{r['config']}: data pipeline "
                  f"{r['pipeline_images_per_s']:.0f} images/s, setting "
                  f"{FLAGS.setting} degradation at load "
                  f"{r['degrade_images_per_s']:.0f} images/s; the iteration "
                  f"consumes {r['consumed_images_per_s']:.1f} images/s")


def compare():
    """A B A B: bncr_tf then the reference, pair by pair."""
    if not FLAGS.torch_python:
        raise app.UsageError("--compare needs --torch_python")
    pairs = [p.split(":") for p in FLAGS.pairs]
    rounds = []
    for rep in range(FLAGS.repetitions):
        for ours, theirs in pairs:
            a = run_subprocess(f"{ours}:fp32", data=False)
            b = run_torch(theirs)
            ratio = cpu_ratio = None
            if "error" not in a and "error" not in b:
                ratio = a["sec_per_iter"] / b["sec_per_iter_median"]
                cpu_ratio = (a["cpu_s_per_iter"]
                             / b["process_cpu_sec_per_iter_median"])
            rounds.append(dict(repetition=rep, variant=ours, reference=theirs,
                               bncr_tf=a, torch=b, ratio=ratio,
                               cpu_ratio=cpu_ratio))
            print(f"rep {rep} {ours}: bncr_tf "
                  f"{_fmt(a.get('sec_per_iter'), '.2f')} s (load "
                  f"{a.get('load_before')}) | torch {theirs} "
                  f"{_fmt(b.get('sec_per_iter_median'), '.2f')} s | ratio "
                  f"{_fmt(ratio, '.3f')}", flush=True)
    print("| pair | repetition | bncr_tf s / iter | PyTorch s / iter | "
          "ratio | CPU-time ratio | load (ours, torch) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rounds:
        torch_loads = [x for x in r["torch"].get("loadavg_1min_during", [])
                       if x is not None]
        torch_load = (f"{statistics.median(torch_loads):.1f}"
                      if torch_loads else "-")
        ours_loads = r["bncr_tf"].get("loads_during") or [None]
        print(f"| {r['variant']} / {r['reference']} | {r['repetition']} | "
              f"{_fmt(r['bncr_tf'].get('sec_per_iter'), '.2f')} | "
              f"{_fmt(r['torch'].get('sec_per_iter_median'), '.2f')} | "
              f"{_fmt(r['ratio'], '.3f')} | "
              f"{_fmt(r['cpu_ratio'], '.3f')} | "
              f"{_fmt(statistics.median(ours_loads), '.1f')}, "
              f"{torch_load} |")
    summary = {}
    for ours, _ in pairs:
        ratios = [r["ratio"] for r in rounds
                  if r["variant"] == ours and r["ratio"] is not None]
        cpu = [r["cpu_ratio"] for r in rounds
               if r["variant"] == ours and r["cpu_ratio"] is not None]
        if ratios:
            summary[ours] = dict(wall=statistics.median(ratios),
                                 cpu=statistics.median(cpu))
            print(f"{ours}: median ratio bncr_tf / PyTorch "
                  f"{summary[ours]['wall']:.3f} (wall), "
                  f"{summary[ours]['cpu']:.3f} (CPU time)")
    return dict(rounds=rounds, median_ratio=summary)


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(run_worker(FLAGS.worker)), flush=True)
        return
    for name in FLAGS.configs:
        if name not in CONFIGS:
            raise app.UsageError(f"unknown config {name!r}")
    output = dict(environment=_environment())
    if FLAGS.compare:
        output["compare"] = compare()
    else:
        rows = []
        for variant in FLAGS.variants:
            for i, name in enumerate(FLAGS.configs):
                row = run_subprocess(f"{variant}:{name}",
                                     data=FLAGS.data and i == 0)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items()
                                  if k not in ("times", "gflop_by_op")}),
                      flush=True)
        print_table(rows)
        output["results"] = rows
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump(output, f, indent=1)


if __name__ == "__main__":
    app.run(main)
