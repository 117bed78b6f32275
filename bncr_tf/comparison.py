"""The model comparison of docs/results.md (Experiments 2 and 4, issue 18):
train a list of (setting, model, seed) runs and score them, resumably.

Used by `tools/run_comparison.py` (colour patches, issue 18) and
`tools/run_fmnist_comparison.py` (Experiment 2, a preset of the same
machinery). Each run is a `python -m bncr_tf.train` subprocess, --jobs at
a time, its command written to `<out>/logs/<name>.command.txt`; rerunning
the same command keeps finished runs and resumes unfinished ones
(`--resume=auto`). Wall time per run is the sum over the sessions that
trained it (`<out>/logs/<name>.wall.json`).

Scoring: per run, --fid_samples images of the EMA G_x (all degradation
stages off, image i from seed i) give its FID against the reference
statistics and, on the same images, the degradation statistics of
`bncr_tf.metrics.degradation_stats` (noise level, sharpness, JPEG
blockiness). The result is cached in the run's `fid.json` with a key
(checkpoint, features, reference, samples, data), so rescoring an
unchanged run is free; the FIDs and statistics of the clean and degraded
training images are cached in `<out>/cache/data_scores.json`. With an
--extractor other than the tool's default, every such file (and
`summary.json`, `table.md`) is named with the suffix `-<extractor>`, so
one set of runs is scored on several feature networks side by side.

Models (`MODELS`): every registered variant of `bncr_tf.variants` by its
name, plus the tool's rows
  nrgan        NR-GAN: variant nrgan_si1 with the camera noise prior
               (`--noise_prior=camera`, as Experiment 1) [choice];
  deblur_gan   Deblur+GAN†: a plain GAN on the training set restored with
               the true kernels (Krishnan-Fergus), built once under
               <out>/data/;
  deblock_gan  Deblock+GAN: the same with POCS deblocking.
A model that learns or simulates degradations is refused on a degraded
setting that has none of them (e.g. brgan on J, nrgan on D); on the clean
setting A (the paper's A column) only the models that simulate or undo
the setting's own degradations are refused (ambientgan, p_ambientgan,
deblur_gan, deblock_gan).
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys

from bncr_tf import variants as variants_lib
from bncr_tf.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("blur", "noise", "jpeg")


@dataclasses.dataclass(frozen=True)
class Model:
    """One row of the comparison.

    Attributes:
      name: the name in --runs.
      title: the row title of the table.
      variant: the `bncr_tf.variants` variant trained.
      flags: extra training flags of this model.
      restorer: `bncr_tf.baselines.restore` restorer of the training set
        (restoration baselines; they train variant gan on setting A of the
        restored set), or None.
      needs: degradation stages of which a degraded setting must have at
        least one (empty: any setting).
      on_clean: runs on the clean setting A too (the paper's A column);
        False for the models that simulate or undo the setting's own
        degradations.
    """

    name: str
    title: str
    variant: str
    flags: tuple = ()
    restorer: str = None
    needs: tuple = ()
    on_clean: bool = True


TITLES = {"gan": "GAN", "ambientgan": "AmbientGAN",
          "p_ambientgan": "P-AmbientGAN", "brgan": "BR-GAN",
          "crgan": "CR-GAN", "bncrgan": "BNCR-GAN",
          "bncrgan_noac": "BNCR-GAN w/o L_AC"}


def _variant_model(variant):
    if variant.stages_from_setting:
        needs = STAGES  # it models exactly the setting's stages
    else:
        needs = tuple(s for s in STAGES
                      if getattr(variant, s) == variants_lib.LEARNED)
    return Model(variant.name, TITLES.get(variant.name, variant.title),
                 variant.name, needs=needs,
                 on_clean=not variant.stages_from_setting)


MODELS = {name: _variant_model(v) for name, v in
          variants_lib.VARIANTS.items()}
MODELS.update({
    "nrgan": Model("nrgan", "NR-GAN (camera prior)", "nrgan_si1",
                   flags=("--noise_prior=camera",), needs=("noise",)),
    "deblur_gan": Model("deblur_gan", "Deblur+GAN†", "gan",
                        restorer="deblur_gt", needs=("blur",), on_clean=False),
    "deblock_gan": Model("deblock_gan", "Deblock+GAN", "gan",
                         restorer="deblock", needs=("jpeg",), on_clean=False),
})

# Issue 18, point 4: on D, J and N the GAN and the robust models; BR-GAN on
# D, CR-GAN on J, the restoration baselines on their setting, NR-GAN on
# noise; three seeds for GAN and BNCR-GAN, one for the rest.


def _runs_text(setting, models):
    return [f"{setting}:{m}:{seed}" for m, seeds in models for seed in seeds]


THREE = (0, 1, 2)
COLOUR_RUNS = ",".join(
    _runs_text("D", [("gan", THREE), ("ambientgan", (0,)),
                     ("p_ambientgan", (0,)), ("brgan", (0,)),
                     ("bncrgan", THREE), ("bncrgan_noac", (0,)),
                     ("deblur_gan", (0,))])
    + _runs_text("J", [("gan", THREE), ("ambientgan", (0,)),
                       ("p_ambientgan", (0,)), ("crgan", (0,)),
                       ("bncrgan", THREE), ("bncrgan_noac", (0,)),
                       ("deblock_gan", (0,))])
    + _runs_text("N", [("gan", THREE), ("ambientgan", (0,)),
                       ("p_ambientgan", (0,)), ("bncrgan", THREE),
                       ("bncrgan_noac", (0,))])
    + _runs_text("noise", [("nrgan", (0,))]))


def parse_runs(text):
    """'SETTING:MODEL:SEED,...' -> list of (setting, model, seed).

    Raises:
      ValueError: a malformed entry.
    """
    runs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"bad --runs entry {item!r}; expected "
                             f"SETTING:VARIANT:SEED")
        runs.append((parts[0], parts[1], int(parts[2])))
    if not runs:
        raise ValueError("--runs is empty")
    return runs


def check_runs(runs):
    """Refuses unknown settings and models, models that cannot run on
    their setting, and repeated runs (one message naming the entry).

    Raises:
      ValueError.
    """
    from bncr_tf.degradations import settings as settings_lib
    from bncr_tf.baselines import restore as restore_lib
    seen = set()
    for setting_name, model_name, seed in runs:
        entry = f"{setting_name}:{model_name}:{seed}"
        if (setting_name, model_name, seed) in seen:
            raise ValueError(f"--runs names {entry} twice")
        seen.add((setting_name, model_name, seed))
        try:
            setting = settings_lib.get_setting(setting_name)
        except ValueError as e:
            raise ValueError(f"--runs entry {entry}: {e}") from None
        model = MODELS.get(model_name)
        if model is None:
            raise ValueError(
                f"--runs entry {entry}: unknown model {model_name!r}; "
                f"choose one of {', '.join(MODELS)}")
        present = [s for s in STAGES if getattr(setting, s + "_rate") > 0]
        if not present and not model.on_clean:
            raise ValueError(
                f"--runs entry {entry}: {model_name} cannot run on the "
                f"clean setting {setting_name}: it "
                + ("undoes" if model.restorer else "simulates")
                + " the setting's own degradations, and there are none")
        if present and model.needs and not set(model.needs) & set(present):
            raise ValueError(
                f"--runs entry {entry}: {model_name} cannot run on setting "
                f"{setting_name}: it models {' or '.join(model.needs)}, "
                f"and {setting_name} ({setting.description}) has "
                f"{' and '.join(present)} only")
        if model.restorer:
            restore_lib.check_restorable(setting, model.restorer)


def check_commands(runs, args):
    """Parses each run's training command with `bncr_tf.train`'s flags
    and validates the config, so a bad --train_flags (an unknown flag, a
    bad value) stops the tool before any run starts.

    Raises:
      ValueError: naming the run and the flag.
    """
    from absl import flags
    from bncr_tf import train
    for setting, model, seed in runs:
        cmd = train_command(setting, model, seed, args, "/runs")
        values = flags.FlagValues()
        train.define_flags(values)
        try:
            values(["bncr_tf.train"] + cmd[3:])
            train.config_from_flags(values)
        except (flags.Error, ValueError, UserError) as e:
            raise ValueError(
                f"the training command of {run_name(setting, model, seed)} "
                f"(with --train_flags={args.train_flags!r}) is refused: "
                f"{e}") from None


def run_name(setting, model, seed):
    return f"{model}-{setting}-s{seed}"


def restored_dir(out, setting, model):
    return os.path.join(out, "data", f"{setting}_{MODELS[model].restorer}")


def build_restored(runs, args, out):
    """Builds the restored training set of every restoration-baseline run
    that does not have one yet (same images, setting and seed 0 as the
    in-memory degradation of the other runs)."""
    from bncr_tf import data
    from bncr_tf.baselines import restore as restore_lib
    from bncr_tf.degradations import builder
    images = None
    for setting, model in sorted({(r[0], r[1]) for r in runs
                                  if MODELS[r[1]].restorer}):
        target = restored_dir(out, setting, model)
        if os.path.isfile(os.path.join(target, data.SUMMARY_FILE)):
            continue
        restore = MODELS[model].restorer
        if images is None:
            images, labels = data.load_clean_uint8(
                args.data, args.resolution, limit=args.data_limit or None)

        def fn(degraded, params, restore=restore):
            return restore_lib.restore_images(restore, degraded, params)
        print(f"building {target} ({restore} on {setting})", flush=True)
        builder.build_degraded_dataset(
            images, labels, setting, target, seed=0, workers=2,
            source=f"{args.data} (limit {args.data_limit})", restore=fn,
            restore_info={"name": restore, **restore_lib.describe(restore)},
            overwrite=True)


def train_command(setting, model, seed, args, run_root):
    """The `python -m bncr_tf.train` command of one run."""
    spec = MODELS[model]
    if spec.restorer:
        out = os.path.dirname(run_root)
        data_flags = [f"--data={restored_dir(out, setting, model)}",
                      "--data_limit=0", "--setting=A", "--variant=gan"]
    else:
        data_flags = [f"--data={args.data}",
                      f"--data_limit={args.data_limit}",
                      f"--setting={setting}", f"--variant={spec.variant}"]
    flags = data_flags + list(spec.flags) + [
        f"--resolution={args.resolution}",
        f"--width={args.width}",
        f"--d_batch={args.d_batch}", f"--g_batch={args.g_batch}",
        f"--iterations={args.iterations}", f"--lr={args.lr}",
        f"--ema_decay={args.ema_decay}", f"--seed={seed}",
        f"--log_every={args.log_every}", f"--grid_every={args.iterations}",
        f"--checkpoint_every={args.checkpoint_every}",
        "--noexport_at_end", f"--outdir={run_root}",
        f"--run_name={run_name(setting, model, seed)}", "--resume=auto",
    ] + shlex.split(args.train_flags)
    return [sys.executable, "-m", "bncr_tf.train"] + flags


def _wall_path(logs, name):
    return os.path.join(logs, name + ".wall.json")


def wall_seconds(out, name):
    """Training wall time of a run: the sum over its sessions (None when
    no session of this tool trained it)."""
    path = _wall_path(os.path.join(out, "logs"), name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return float(sum(json.load(f)["sessions"]))


def _add_session(logs, name, seconds):
    path = _wall_path(logs, name)
    sessions = []
    if os.path.isfile(path):
        with open(path) as f:
            sessions = json.load(f)["sessions"]
    with open(path, "w") as f:
        json.dump({"sessions": sessions + [round(seconds, 1)]}, f)


def train_all(runs, args, out):
    """Trains the runs that are not finished, --jobs at a time.

    Raises:
      RuntimeError: a run failed (the others still finish).
    """
    from bncr_tf import jobs as jobs_lib
    from bncr_tf.training import rundir
    run_root = os.path.join(out, "runs")
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    todo = []
    for setting, model, seed in runs:
        name = run_name(setting, model, seed)
        cmd = train_command(setting, model, seed, args, run_root)
        with open(os.path.join(logs, name + ".command.txt"), "w") as f:
            f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        done = rundir.last_logged_step(rundir.newest_run(run_root, name))
        if done >= args.iterations:
            print(f"[{name}] already trained", flush=True)
            continue
        todo.append((name, cmd))
    names = [name for name, _ in todo]
    commands = dict(todo)

    def launch(name):
        waiting = len(names) - names.index(name) - 1
        return (commands[name], os.path.join(logs, name + ".log"),
                f"[{name}] training ({waiting} waiting)")

    def on_finish(name, seconds, returncode):
        _add_session(logs, name, seconds)

    _, failed = jobs_lib.run_jobs([(name, None) for name in names],
                                  args.jobs, launch, ROOT,
                                  on_finish=on_finish)
    if failed:
        raise RuntimeError(f"training failed: {', '.join(failed)}")


def ensure_classifier(args):
    """Path of the Fashion-MNIST feature classifier, training it first
    when it does not exist (Fashion-MNIST data only)."""
    path = args.classifier
    if os.path.isfile(path):
        return path
    if not args.data.startswith("fashion_mnist"):
        raise UserError(f"--extractor=classifier: {path} does not exist, "
                        f"and it is trained only on Fashion-MNIST data; "
                        f"give --classifier or another --extractor")
    out_dir = os.path.dirname(path) or "."
    cmd = [sys.executable, os.path.join(ROOT, "tools",
                                        "train_fmnist_classifier.py"),
           f"--out={out_dir}", f"--data={args.data}",
           f"--test_data={args.reference}"]
    print(f"training the feature classifier: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return path


def median_run(records):
    """The run of median FID among a model's seeds (the paper's report):
    with an even count, the lower of the two middle runs."""
    ordered = sorted(records, key=lambda r: (r["fid"], r["seed"]))
    return ordered[(len(ordered) - 1) // 2]


def criterion(rows, data_fids, setting="N", model="gan", factor=1.5,
              offset=2.0):
    """Issue 18's test of the set-up: on `setting`, FID(GAN) <= factor x
    FID(degraded training images) + offset, GAN's FID being its median
    seed. None when there is no such run or no such data FID."""
    mine = [r for r in rows if r["setting"] == setting
            and r["variant"] == model]
    if not mine or setting not in data_fids:
        return None
    run = median_run(mine)
    bound = factor * data_fids[setting] + offset
    return {"setting": setting, "model": model, "run": run["name"],
            "fid": run["fid"], "degraded_fid": data_fids[setting],
            "factor": factor, "offset": offset, "bound": bound,
            "satisfied": bool(run["fid"] <= bound)}


def criterion_line(c, setting="N"):
    if c is None:
        return (f"Issue 18 criterion (setting {setting}): not evaluated "
                f"(no GAN run on {setting}).")
    return (f"Issue 18 criterion (setting {c['setting']}): FID(GAN) = "
            f"{c['fid']:.2f} ({c['run']}, the median seed) "
            f"{'<=' if c['satisfied'] else '>'} {c['factor']:g} × "
            f"{c['degraded_fid']:.2f} + {c['offset']:g} = "
            f"{c['bound']:.2f}: "
            f"{'satisfied' if c['satisfied'] else 'NOT satisfied'}.")


def _settings_order(rows):
    from bncr_tf.degradations import settings as settings_lib
    names = {r["setting"] for r in rows}
    return [s for s in settings_lib.SETTINGS if s in names]


def fid_table(rows, data_fids, seeds="mean"):
    """Markdown lines: settings as columns, models as rows.

    seeds: "mean" (Experiment 2: the mean, single values in brackets) or
      "median" (the paper: the median seed's FID, its seed, and all
      values in brackets).
    """
    settings = (sorted({r["setting"] for r in rows}) if seeds == "mean"
                else _settings_order(rows))
    models = []
    for r in rows:
        if r["variant"] not in models:
            models.append(r["variant"])
    lines = ["| model | " + " | ".join(f"({s})" for s in settings) + " |",
             "|---|" + "---|" * len(settings)]
    for m in models:
        cells = []
        for s in settings:
            mine = [r for r in rows
                    if r["variant"] == m and r["setting"] == s]
            fids = [r["fid"] for r in mine]
            if not fids:
                cells.append("–")
            elif len(fids) == 1:
                cells.append(f"{fids[0]:.2f}")
            elif seeds == "mean":
                cells.append(f"{sum(fids) / len(fids):.2f} "
                             f"({', '.join(f'{f:.2f}' for f in fids)})")
            else:
                med = median_run(mine)
                cells.append(f"{med['fid']:.2f} (s{med['seed']}; all "
                             f"{', '.join(f'{f:.2f}' for f in fids)})")
        title = MODELS[m].title if m in MODELS else m
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("| *degraded training images* | " + " | ".join(
        f"*{data_fids[s]:.2f}*" for s in settings) + " |")
    return lines


def runs_table(rows, grids=False):
    """Markdown lines: one row per run (iterations, wall time, FID[, the
    decomposition grid])."""
    head = "| run | iterations | wall time | FID |"
    rule = "|---|---|---|---|"
    if grids:
        head, rule = head + " grid |", rule + "---|"
    lines = [head, rule]
    for r in rows:
        minutes = (f"{r['seconds'] / 60:.1f} min" if r.get("seconds")
                   else "–")
        line = (f"| {r['name']} | {r['iterations']} | {minutes} | "
                f"{r['fid']:.2f} |")
        if grids:
            line += f" {r.get('grid') or '–'} |"
        lines.append(line)
    return lines


def fmnist_table(rows, data_fids, classifier_info, extractor=None):
    """Experiment 2's table.md (tools/run_fmnist_comparison.py); with
    other features than the classifier (no `classifier_info`), their
    label instead of its accuracy."""
    lines = fid_table(rows, data_fids, seeds="mean")
    features = (f"Feature classifier test accuracy: "
                f"{100 * classifier_info['test_accuracy']:.2f} %."
                if classifier_info else extractor_label(extractor))
    lines += ["", f"Clean training images: FID {data_fids['clean']:.2f} "
              f"(the floor). {features}", ""]
    lines += runs_table(rows)
    return "\n".join(lines) + "\n"


def extractor_label(info, classifier_info=None):
    if info["name"].startswith("fmnist") or classifier_info:
        what = "the Fashion-MNIST classifier's penultimate features"
        if classifier_info:
            what += (f" (test accuracy "
                     f"{100 * classifier_info['test_accuracy']:.2f} %)")
    else:
        what = f"`{info['name']}` features"
    return (f"FID on {what}: **not Inception FID**, not comparable with "
            f"published numbers; it compares the rows of this table only.")


def full_table(summary):
    """Issue 18's table.md: header, FID table (median seeds), floor and
    criterion, the degradation statistics, and the runs."""
    from bncr_tf.metrics import degradation_stats as ds
    a = summary["args"]
    rows, data_fids = summary["rows"], summary["data_fids"]
    flags = a["train_flags"].strip()
    lines = [
        f"Data: `{a['data']}` at {a['resolution']} px "
        f"({summary['num_train_images']} training images, degraded once "
        f"at load by each setting, seed 0); FID reference: "
        f"`{a['reference']}` (seed {a['reference_seed']}), "
        f"{summary['fid_samples']} samples per FID.",
        "",
        extractor_label(summary["extractor"], summary.get("classifier")),
        "",
        f"Training: {a['iterations']} iterations, width {a['width']}, "
        f"D batch {a['d_batch']}, G batch {a['g_batch']}, lr {a['lr']}, "
        f"EMA {a['ema_decay']}; extra training flags (small-scale "
        f"hyper-parameters, every run): "
        + (f"`{flags}`" if flags else "none") + ".",
        "",
        "Several seeds: the median seed's FID (the paper's report), its "
        "seed, and every seed's FID.",
        ""]
    lines += fid_table(rows, data_fids, seeds="median")
    lines += ["", f"Clean training images not used as reference: FID "
              f"{data_fids['clean']:.2f} (the floor).", "",
              criterion_line(summary["criterion"]), ""]
    if summary.get("stats_rows"):
        lines += [f"Degradation statistics of the same "
                  f"{summary['fid_samples']} images (median, 10th–90th "
                  f"percentile per image; sep. = per-image separability "
                  f"from the clean training images, 0.5 = none):", ""]
        lines += ds.rows_markdown(summary["stats_rows"]) + [""]
    lines += runs_table(rows, grids=True)
    return "\n".join(lines) + "\n"


class Scorer:
    """FIDs and degradation statistics of the training data and of runs,
    with caches (see the module doc)."""

    def __init__(self, args, out, stats=True, suffix=""):
        import numpy as np
        from bncr_tf import data
        from bncr_tf.metrics import features
        from bncr_tf.metrics import reference
        self.args, self.out, self.stats = args, out, stats
        self.suffix = suffix
        self.classifier_info = None
        if args.extractor == "classifier":
            path = ensure_classifier(args)
            with open(os.path.splitext(path)[0] + ".json") as f:
                self.classifier_info = json.load(f)
            self.extractor = features.make_extractor(
                "classifier", classifier_path=path)
        else:
            self.extractor = features.make_extractor(
                args.extractor, weights_dir=args.weights_dir or None)
        self.info = features.extractor_info(self.extractor)
        self.ref = reference.reference_stats(
            args.reference, args.resolution, self.extractor,
            limit=args.reference_limit or None, seed=args.reference_seed,
            cache=os.path.join(out, "cache"), progress=False)
        self.train, _ = data.load_clean_uint8(
            args.data, args.resolution, limit=args.data_limit or None)
        self.n = args.fid_samples
        if self.n > len(self.train):
            raise UserError(
                f"--fid_samples={self.n} is more than the {len(self.train)}"
                f" training images; lower it")
        rng = np.random.default_rng(0)
        self.pick = np.sort(rng.choice(len(self.train), self.n,
                                       replace=False))
        self.key = {"extractor": self.info["fingerprint"],
                    "reference": self.ref.meta.get("key"),
                    "fid_samples": self.n, "data": args.data,
                    "data_limit": args.data_limit,
                    "resolution": args.resolution, "stats": stats}
        self._clean_per_image = None

    def _fid(self, images, label):
        from bncr_tf.metrics import evaluation
        chunks = (images[i:i + 500] for i in range(0, len(images), 500))
        return evaluation.evaluate_images(
            chunks, self.ref, self.extractor, len(images), progress=False,
            label=label)["fid"]

    def clean_per_image(self):
        from bncr_tf.metrics import degradation_stats as ds
        if self._clean_per_image is None:
            self._clean_per_image = ds.per_image_stats(
                self.train[self.pick])
        return self._clean_per_image

    def data_scores(self, settings):
        """({"clean": fid, setting: fid}, [stats rows]) of the clean and
        degraded training images (cached)."""
        from bncr_tf.degradations import settings as settings_lib
        from bncr_tf.metrics import degradation_stats as ds
        from bncr_tf.training import loop
        path = os.path.join(self.out, "cache",
                            f"data_scores{self.suffix}.json")
        cache = {}
        if os.path.isfile(path):
            with open(path) as f:
                cache = json.load(f)
        if cache.get("key") != self.key:
            cache = {"key": self.key, "entries": {}}
        entries = cache["entries"]
        for name in ["clean"] + list(settings):
            if name in entries:
                continue
            if name == "clean":
                images = self.train[self.pick]
                label, kind, extra = "training images, clean", "data", {}
            else:
                images = loop.degrade_in_memory(
                    self.train, settings_lib.get_setting(name), 0)[self.pick]
                label, kind = f"training images, setting {name}", "degraded"
                extra = {"setting": name}
            entry = {"fid": self._fid(images, label)}
            if self.stats:
                entry["stats_row"] = ds.finite(ds.stats_row(
                    label, kind, images,
                    None if name == "clean" else self.clean_per_image(),
                    **extra)[0])
            entries[name] = entry
            print(f"FID of the {label}: {entry['fid']:.2f}", flush=True)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(cache, f, indent=2)
        fids = {k: entries[k]["fid"] for k in ["clean"] + list(settings)}
        rows = [entries[k]["stats_row"] for k in ["clean"] + list(settings)
                if "stats_row" in entries[k]]
        return fids, rows

    def run_score(self, setting, model, seed):
        """The record of one run (cached in its fid.json)."""
        from bncr_tf import runs as runs_lib
        from bncr_tf.metrics import degradation_stats as ds
        from bncr_tf.metrics import evaluation
        from bncr_tf.training import rundir
        name = run_name(setting, model, seed)
        run_dir = rundir.newest_run(os.path.join(self.out, "runs"), name)
        if run_dir is None:
            raise UserError(f"run {name} has not been trained in "
                            f"{self.out}/runs")
        ckpt = runs_lib.checkpoint_path(run_dir, None)
        key = dict(self.key, checkpoint=os.path.relpath(ckpt, run_dir),
                   seed=0)
        fid_path = os.path.join(run_dir, f"fid{self.suffix}.json")
        old = {}
        if os.path.isfile(fid_path):
            with open(fid_path) as f:
                old = json.load(f)
        if old.get("cache_key") == key:
            record = old
            print(f"[{name}] FID {record['fid']:.2f} (cached)", flush=True)
        else:
            _, ckpt, images = evaluation.run_images(
                run_dir, None, self.n, seed=0)
            record = {"setting": setting, "variant": model, "seed": seed,
                      "name": name, "fid": self._fid(images, name),
                      "checkpoint": ckpt,
                      "iterations": rundir.last_logged_step(run_dir),
                      "cache_key": key}
            if self.stats:
                title = MODELS[model].title
                record["stats_row"] = ds.finite(ds.stats_row(
                    f"G_x of {title}, {setting}, seed {seed}", "generated",
                    images, self.clean_per_image(), run=name,
                    setting=setting)[0])
            print(f"[{name}] FID {record['fid']:.2f}", flush=True)
        record["run_dir"] = os.path.relpath(run_dir, self.out)
        seconds = wall_seconds(self.out, name)
        record["seconds"] = seconds if seconds is not None \
            else old.get("seconds")
        with open(fid_path, "w") as f:
            json.dump(record, f, indent=2)
        grid_dir = os.path.join(run_dir, "grids")
        grids = sorted(g for g in (os.listdir(grid_dir)
                                   if os.path.isdir(grid_dir) else ())
                       if g.startswith("fakes-"))
        record["grid"] = (os.path.relpath(os.path.join(grid_dir, grids[-1]),
                                          self.out) if grids else None)
        return record


def evaluate(runs, args, out, stats=True, suffix=""):
    """Scores every run and the data; returns the summary dict."""
    scorer = Scorer(args, out, stats=stats, suffix=suffix)
    settings = []
    for r in runs:
        if r[0] not in settings:
            settings.append(r[0])
    data_fids, data_rows = scorer.data_scores(settings)
    rows = [scorer.run_score(*r) for r in runs]
    summary = {"args": vars(args), "train_flags": args.train_flags,
               "rows": rows, "data_fids": data_fids,
               "extractor": scorer.info,
               "num_train_images": int(len(scorer.train)),
               "fid_samples": scorer.n,
               "criterion": criterion(rows, data_fids)}
    if scorer.classifier_info is not None:
        summary["classifier"] = scorer.classifier_info
    if stats:
        summary["stats_rows"] = data_rows + [r["stats_row"] for r in rows]
    return summary


def add_flags(p, defaults):
    """The flags of both tools; `defaults` overrides their defaults."""
    from bncr_tf.metrics import features
    d = dict(out="results/comparison", runs=COLOUR_RUNS,
             data="builtin:skimage_patches:count=4096", data_limit=0,
             reference="builtin:skimage_patches:count=4096",
             reference_seed=1, reference_limit=0, resolution=32,
             extractor="alexnet_imagenet",
             classifier="results/fmnist_classifier/classifier.keras",
             weights_dir="", width=32, d_batch=32, g_batch=64,
             iterations=1500, lr=2e-4, ema_decay=0.99, log_every=100,
             checkpoint_every=500, train_flags="", jobs=2, fid_samples=4096)
    d.update(defaults)
    p.add_argument("--out", default=d["out"])
    p.add_argument("--runs", default=d["runs"],
                   help="SETTING:MODEL:SEED,... to train and score "
                        f"(models: {', '.join(MODELS)}).")
    p.add_argument("--data", default=d["data"])
    p.add_argument("--data_limit", type=int, default=d["data_limit"],
                   help="Train on the first N images (0 = all).")
    p.add_argument("--reference", default=d["reference"],
                   help="Clean images the FIDs are measured against.")
    p.add_argument("--reference_seed", type=int, default=d["reference_seed"],
                   help="Seed of a builtin reference source (1: other "
                        "patches than the training data's seed 0).")
    p.add_argument("--reference_limit", type=int,
                   default=d["reference_limit"],
                   help="First N reference images (0 = all).")
    p.add_argument("--resolution", type=int, default=d["resolution"])
    p.add_argument("--extractor", default=d["extractor"],
                   choices=features.EXTRACTORS,
                   help="FID features (none is Inception FID but "
                        "'inception').")
    p.add_argument("--classifier", default=d["classifier"],
                   help="Feature classifier of --extractor=classifier "
                        "(trained if missing, Fashion-MNIST only).")
    p.add_argument("--weights_dir", default=d["weights_dir"],
                   help="ImageNet weights (default $BNCR_TF_WEIGHTS or "
                        "~/.cache/bncr_tf/weights).")
    p.add_argument("--width", type=int, default=d["width"])
    p.add_argument("--d_batch", type=int, default=d["d_batch"])
    p.add_argument("--g_batch", type=int, default=d["g_batch"])
    p.add_argument("--iterations", type=int, default=d["iterations"])
    p.add_argument("--lr", type=float, default=d["lr"])
    p.add_argument("--ema_decay", type=float, default=d["ema_decay"])
    p.add_argument("--log_every", type=int, default=d["log_every"])
    p.add_argument("--checkpoint_every", type=int,
                   default=d["checkpoint_every"])
    p.add_argument("--train_flags", default=d["train_flags"],
                   help="Extra flags passed to every training run "
                        "(recorded in summary.json and table.md).")
    p.add_argument("--jobs", type=int, default=d["jobs"],
                   help="Training runs at a time.")
    p.add_argument("--fid_samples", type=int, default=d["fid_samples"])
    p.add_argument("--evaluate_only", action="store_true",
                   help="Score the existing runs without training.")


def main(argv, doc, defaults, layout="full"):
    """The command of both tools.

    layout: "full" (issue 18: header, median seeds, floor, criterion,
      degradation statistics, runs with grids) or "fmnist" (Experiment
      2's table.md, FIDs only).
    """
    import argparse
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_flags(p, defaults)
    args = p.parse_args(argv)
    # Scores on another extractor than the tool's default go to files of
    # their own, so one set of runs can be scored on several.
    suffix = ("" if args.extractor == p.get_default("extractor")
              else f"-{args.extractor}")
    from bncr_tf import cli
    try:
        runs = parse_runs(args.runs)
        check_runs(runs)
        for flag in ("iterations", "jobs", "width", "fid_samples"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} must be >= 1")
        shlex.split(args.train_flags)
        check_commands(runs, args)
    except ValueError as e:
        return cli.error(e)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    if not args.evaluate_only:
        try:
            build_restored(runs, args, out)
            train_all(runs, args, out)
        except ValueError as e:
            return cli.error(e)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        summary = evaluate(runs, args, out, stats=layout == "full",
                           suffix=suffix)
    except UserError as e:
        return cli.error(e)
    with open(os.path.join(out, f"summary{suffix}.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    if layout == "fmnist":
        text = fmnist_table(summary["rows"], summary["data_fids"],
                            summary.get("classifier"), summary["extractor"])
    else:
        text = full_table(summary)
    with open(os.path.join(out, f"table{suffix}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0
