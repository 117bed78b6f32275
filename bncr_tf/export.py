"""SavedModels for TF Serving: G_x and the learned degradation generators.

`export_generators` writes `<export_root>/<name>/<version>/` (TF Serving's
model-base-path layout) for each model a run has; `export_from_run` does it
for a run directory's checkpoint (tools/export_savedmodel.py) and
`export_run` for a trainer at the end of training. Signatures (R: resolution,
K: kernel size, every batch dimension None; full table in docs/serving.md):

  generator    serving_default  z float32 [None, z_dim]
               from_seed        seed int64 [None]
                 -> image uint8 [None, R, R, 3],
                    image_float float32 [None, R, R, 3] in [-1, 1]
               from_seed_png    seed -> image_png_bytes string [None]
  blur_kernel  serving_default  z_k float32 [None, z_dim];  from_seed  seed
                 -> kernel, mask [None, K, K], entropy [None]
  quality      serving_default  z_q float32 [None, z_dim];  from_seed  seed
                 -> quality [None] in [0, 100], mask [None]
  noise        serving_default  image uint8 [None, R, R, 3], seed
                 -> noise [None, R, R, 3] ([0, 1] units), image, image_float
  degrade      serving_default  image, seed
                 -> image, image_float and, per stage the variant has,
                    kernel, mask_kernel, noise, quality, mask_quality

Which models exist depends on the variant (`available_models`): `generator`
always; `blur_kernel`, `noise`, `quality` when G_k, G_n, G_q exist (learned,
or P-AmbientGAN's parameters); `degrade` when any degradation stage exists
(for AmbientGAN the true degradation of its setting, sampled from the seed).

Seeds: seed s gives the latents `synthesis.latents_from_seeds([s])`, and
`degrade` / `noise` draw their noise from the stateless seed
[s, DEGRADE_SALT], one image at a time: row i of a request depends only on
its own seed (and image), and `generator/from_seed(s)`,
`blur_kernel/from_seed(s)`, `quality/from_seed(s)` and `degrade(., s)` use
the same latents.

Inputs are float32 / uint8 / int64 even when the run trained with mixed
precision; floating outputs are float32. Every endpoint checks the runtime
shapes of its inputs and fails with a message naming the signature;
`check_request` does the same (and dtypes) on the client side. Each version
also holds `assets.extra/tf_serving_warmup_requests` (one PredictionLog per
signature, see `warmup_record`) and `assets.extra/bncr_export.json` (source
run, checkpoint and signatures). Exports are written to a hidden temporary
directory next to the versions and renamed into place; an existing version
is never overwritten or modified. All models of one export share one
version number: one more than the largest version of any of them. A failed
write (no space left, I/O error) removes what the export had written so
far and raises `UserError`; earlier versions stay valid.
"""

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from bncr_tf import runs
from bncr_tf import stages as stages_lib
from bncr_tf import synthesis
from bncr_tf import variants as variants_lib
from bncr_tf.errors import UserError

MODEL_NAMES = ("generator", "blur_kernel", "noise", "quality", "degrade")
DEFAULT_SIGNATURE = stages_lib.DEFAULT_SIGNATURE
WARMUP_FILE = "tf_serving_warmup_requests"
INFO_FILE = "bncr_export.json"
WARMUP_BATCH = 2
WARMUP_SIZE = 32  # H and W of warm-up images of the restore export
# Second word of the stateless seed [s, DEGRADE_SALT] of degrade and noise.
DEGRADE_SALT = 7


# === Conversions ===


def _to_uint8(images):
    """[B, R, R, 3] float in [-1, 1] -> uint8 in [0, 255] (rounded,
    clipped)."""
    images = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0,
                                    255.0), tf.uint8)


def _from_uint8(images):
    """uint8 [0, 255] -> float32 in [-1, 1]."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def _f32(x):
    return tf.cast(x, tf.float32)


def spec_text(spec):
    """'float32 [None, 16]' for a TensorSpec."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name} [unknown rank]"
    dims = ", ".join("None" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype.name} [{dims}]"


def signature_text(specs):
    """'image: uint8 [None, 32, 32, 3], seed: int64 [None]' for a dict of
    TensorSpecs."""
    return ", ".join(f"{name}: {spec_text(spec)}"
                     for name, spec in sorted(specs.items()))


# === Input checks ===


def _check_inputs(model, key, specs, tensors):
    """In-graph checks of runtime shapes against the signature.

    The placeholders of a SavedModel signature carry static shapes, but a
    loaded signature runs with any shape of the right dtype: a wrong shape
    would fail deep inside a network ("Matrix size-incompatible: In[0]:
    [2,15], In[1]: [16,128]"). Float inputs (the latents) must be finite.
    The checks run before anything else. Values are not range-checked:
    uint8 images and int64 seeds have no invalid values, and latents far
    from N(0, 1) are accepted (docs/serving.md, "Numeric inputs").

    Args:
      model: exported model name, for the message.
      key: signature key, for the message.
      specs: {input name: TensorSpec} of the signature.
      tensors: {input name: tensor} as received.
    Returns:
      The tensors, made dependent on the checks.
    """
    expected = f"{model}/{key} expects {signature_text(specs)}"
    checks = []
    batch = None
    for name in sorted(specs):
        shape = tf.shape(tensors[name], out_type=tf.int64)
        static = specs[name].shape[1:]
        if specs[name].dtype.is_floating:
            # Numeric policy (docs/serving.md): a NaN / Inf latent is an
            # error, not a black image.
            checks.append(tf.debugging.assert_all_finite(
                tensors[name], message=f"{expected}; input {name!r} holds "
                f"NaN or Inf"))
        if static.rank and static.is_fully_defined():
            checks.append(tf.debugging.assert_equal(
                shape[1:], tf.constant(static.as_list(), tf.int64),
                message=f"{expected}; input {name!r} has the wrong shape"))
        elif static.rank:
            # Free dimensions (the restorer's H and W): the rank, the known
            # dimensions and at least one element per free dimension.
            wrong = f"{expected}; input {name!r} has the wrong shape"
            checks.append(tf.debugging.assert_equal(
                tf.size(shape), tf.constant(static.rank + 1, tf.int32),
                message=wrong))
            with tf.control_dependencies(checks[-1:]):
                dims = tf.identity(shape[1:])
            for i, d in enumerate(static.as_list()):
                checks.append(tf.debugging.assert_equal(
                    dims[i], tf.constant(d or 0, tf.int64), message=wrong)
                    if d is not None else tf.debugging.assert_positive(
                        dims[i], message=wrong))
        if batch is None:
            batch = shape[0]
        else:
            checks.append(tf.debugging.assert_equal(
                shape[0], batch,
                message=f"{expected}; all inputs need the same batch size"))
    with tf.control_dependencies(checks):
        return {name: tf.identity(t) for name, t in tensors.items()}


def check_request(signature, inputs, key=None):
    """Checks a request against a signature before calling it.

    A client-side check with a readable message: TF's own errors for a
    wrong dtype name an input by position only, and numpy inputs of another
    dtype are silently cast by loaded signatures.

    Args:
      signature: a signature of a loaded SavedModel
        (`tf.saved_model.load(path).signatures[key]`) or a dict
        {input name: tf.TensorSpec}.
      inputs: {input name: array-like}. numpy arrays and tensors must have
        the exact dtype; Python lists are converted to it (as TF Serving
        does with JSON).
      key: signature key used in messages.
    Returns:
      {input name: tf.Tensor} ready for `signature(**tensors)`.
    Raises:
      ValueError: naming the expected signature, on missing or unexpected
        input names, wrong dtype, values the dtype cannot hold (a seed of
        0.7, an image value of 300), NaN / Inf latents, rank, shape or
        inconsistent batch sizes.
    """
    if isinstance(signature, dict):
        specs = signature
    else:
        specs = signature.structured_input_signature[1]
    label = f"signature {key!r}" if key else "the signature"
    expected = f"{label} expects {signature_text(specs)}"
    missing = sorted(set(specs) - set(inputs))
    unexpected = sorted(set(inputs) - set(specs))
    if missing or unexpected:
        raise ValueError(f"{expected}; missing inputs {missing}, unexpected "
                         f"inputs {unexpected}")
    out = {}
    batch = None
    for name in sorted(specs):
        spec, value = specs[name], inputs[name]
        want = spec.dtype.as_numpy_dtype
        if isinstance(value, (tf.Tensor, np.ndarray, np.generic)):
            have = np.dtype(value.dtype.as_numpy_dtype
                            if isinstance(value, tf.Tensor) else value.dtype)
            if have != np.dtype(want):
                raise ValueError(f"{expected}; input {name!r} is {have.name}, "
                                 f"not {spec.dtype.name}")
            array = np.asarray(value)
        else:
            raw = np.asarray(value)
            try:
                array = np.asarray(value, dtype=want)
            except (ValueError, TypeError, OverflowError):
                array = None
            if array is None or (np.issubdtype(want, np.integer)
                                 and not np.array_equal(raw, array)):
                raise ValueError(f"{expected}; input {name!r} holds values "
                                 f"that are not {spec.dtype.name}")
        if np.issubdtype(array.dtype, np.floating) and not np.all(
                np.isfinite(array)):
            raise ValueError(f"{expected}; input {name!r} holds NaN or Inf")
        if not spec.shape.is_compatible_with(array.shape):
            raise ValueError(f"{expected}; input {name!r} has shape "
                             f"{list(array.shape)}")
        if batch is not None and array.shape[0] != batch:
            raise ValueError(f"{expected}; inputs have different batch "
                             f"sizes ({batch} and {array.shape[0]})")
        batch = array.shape[0]
        out[name] = tf.constant(array, spec.dtype)
    return out


# === Endpoints ===


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One signature: key, function and its named input specs."""

    key: str
    fn: object
    specs: dict


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """One exported model: its name, tracked networks and endpoints."""

    name: str
    networks: tuple
    endpoints: tuple


class _Endpoints:
    """The endpoint functions of one set of (EMA) generators.

    Every method is a plain named function of named tensors returning a
    dict, so signature keys, input keys and output keys are the public
    names (no `<lambda>` or positional `output_0`).
    """

    def __init__(self, gens, z_dim, resolution):
        self.gens = gens
        self.z_dim = z_dim
        self.r = resolution
        self.noise_gens = gens.view(stages_lib.NOISE.name)
        self.specs = _specs(z_dim, resolution)

    def _latents(self, seed):
        return synthesis.latents_from_seeds(seed, self.z_dim)

    def _check(self, model, key, **tensors):
        specs = {name: self.specs[name] for name in tensors}
        return _check_inputs(model, key, specs, tensors)

    # --- generator ---

    def _image(self, z_x):
        x = _f32(self.gens.G_x(z_x))
        return {"image": _to_uint8(x), "image_float": x}

    def generate(self, z):
        t = self._check("generator", DEFAULT_SIGNATURE, z=z)
        return self._image(t["z"])

    def generate_from_seed(self, seed):
        t = self._check("generator", "from_seed", seed=seed)
        return self._image(self._latents(t["seed"])["z_x"])

    def generate_png_from_seed(self, seed):
        t = self._check("generator", "from_seed_png", seed=seed)
        images = self._image(self._latents(t["seed"])["z_x"])["image"]
        png = tf.map_fn(tf.io.encode_png, images,
                        fn_output_signature=tf.TensorSpec([], tf.string))
        return {"image_png_bytes": png}

    # --- blur_kernel ---

    def _kernel(self, z_k):
        return stages_lib.BLUR.generator_outputs(self.gens.G_k(z_k))

    def kernel(self, z_k):
        t = self._check("blur_kernel", DEFAULT_SIGNATURE, z_k=z_k)
        return self._kernel(t["z_k"])

    def kernel_from_seed(self, seed):
        t = self._check("blur_kernel", "from_seed", seed=seed)
        return self._kernel(self._latents(t["seed"])["z_k"])

    # --- quality ---

    def _quality(self, z_q):
        return stages_lib.JPEG.generator_outputs(self.gens.G_q(z_q))

    def quality(self, z_q):
        t = self._check("quality", DEFAULT_SIGNATURE, z_q=z_q)
        return self._quality(t["z_q"])

    def quality_from_seed(self, seed):
        t = self._check("quality", "from_seed", seed=seed)
        return self._quality(self._latents(t["seed"])["z_q"])

    # --- degrade / noise: one image at a time ---

    def _per_image(self, gens, image, seed):
        """`_degrade_one` mapped over the rows of a request."""
        # Output specs from one eager dry run (lifted out of the trace).
        with tf.init_scope():
            elems = {"image": tf.zeros([self.r, self.r, 3], tf.uint8),
                     "seed": tf.constant(0, tf.int64)}
            elems.update({k: v[0] for k, v in self._latents(
                tf.constant([0], tf.int64)).items()})
            signature = {k: tf.TensorSpec(v.shape, v.dtype)
                         for k, v in _degrade_one(gens, elems).items()}
        elems = {"image": image, "seed": seed}
        elems.update(self._latents(seed))
        return tf.map_fn(functools.partial(_degrade_one, gens), elems,
                         fn_output_signature=signature)

    def degrade(self, image, seed):
        t = self._check("degrade", DEFAULT_SIGNATURE, image=image, seed=seed)
        return self._per_image(self.gens, t["image"], t["seed"])

    def noise(self, image, seed):
        t = self._check("noise", DEFAULT_SIGNATURE, image=image, seed=seed)
        return self._per_image(self.noise_gens, t["image"], t["seed"])


def _degrade_one(gens, elems):
    """Degrades one image with the latents and noise of its own seed.

    Args:
      gens: `synthesis.Generators` (possibly a stage view).
      elems: dict of image uint8 [R, R, 3], seed int64 [], and the latents
        z_x, z_k, z_n, z_q [z_dim] of that seed.
    Returns:
      dict: image uint8 [R, R, 3]; image_float float32 [R, R, 3] in [-1, 1];
      kernel, mask_kernel [K, K] if blurred; noise [R, R, 3] in [0, 1] units
      if noisy; quality, mask_quality [] if compressed. All float32.
    """
    latents = {k: elems[k][None] for k in synthesis.LATENTS}
    seed = tf.stack([elems["seed"], tf.constant(DEGRADE_SALT, tf.int64)])
    out = synthesis.degrade(gens, _from_uint8(elems["image"])[None], latents,
                            seed)
    y = _f32(out.y)[0]
    result = {"image": _to_uint8(y), "image_float": y}
    for stage in gens.stages():
        result.update({name: value[0] for name, value in
                       stage.degrade_outputs(out).items()})
    return result


def _specs(z_dim, resolution):
    """The named input specs shared by all signatures."""
    r = resolution
    return {
        "z": tf.TensorSpec([None, z_dim], tf.float32, name="z"),
        "z_k": tf.TensorSpec([None, z_dim], tf.float32, name="z_k"),
        "z_q": tf.TensorSpec([None, z_dim], tf.float32, name="z_q"),
        "seed": tf.TensorSpec([None], tf.int64, name="seed"),
        "image": tf.TensorSpec([None, r, r, 3], tf.uint8, name="image"),
    }


def plan_models(gens, z_dim, resolution):
    """What `export_generators` writes for these generators.

    Args:
      gens: a `synthesis.Generators` (use the EMA copies).
      z_dim: latent size.
      resolution: image size R.
    Returns:
      {model name: `ModelPlan`} in `MODEL_NAMES` order.
    """
    ep = _Endpoints(gens, z_dim, resolution)
    s = ep.specs

    def endpoint(key, fn, *names):
        return Endpoint(key, fn, {n: s[n] for n in names})

    plans = [ModelPlan("generator", (gens.G_x,), (
        endpoint(DEFAULT_SIGNATURE, ep.generate, "z"),
        endpoint("from_seed", ep.generate_from_seed, "seed"),
        endpoint("from_seed_png", ep.generate_png_from_seed, "seed")))]
    for stage in stages_lib.STAGES:
        network = gens.network(stage)
        if network is not None:
            plans.append(ModelPlan(stage.export_model, (network,), tuple(
                endpoint(key, getattr(ep, method), *inputs)
                for key, method, inputs in stage.export_endpoints)))
    if gens.stages():
        plans.append(ModelPlan(
            "degrade", tuple(gens.models().values()),
            (endpoint(DEFAULT_SIGNATURE, ep.degrade, "image", "seed"),)))
    return {p.name: p for p in plans}


def available_models(gens):
    """Names of the models `export_generators` can write for `gens`."""
    names = ["generator"]
    names += [stage.export_model for stage in stages_lib.STAGES
              if gens.network(stage) is not None]
    if gens.stages():
        names.append("degrade")
    return [n for n in MODEL_NAMES if n in names]


# === Warm-up requests ===


def warmup_record(model_name, signature_name, inputs):
    """One serialised `tensorflow.serving.PredictionLog` holding a Predict
    request (the protos of the tensorflow-serving-api package, which needs
    the same TensorFlow and adds no other package to ours).

    Args:
      model_name: the served model name (TF Serving's MODEL_NAME).
      signature_name: signature key.
      inputs: {input name: numpy array}.
    Returns:
      bytes.
    """
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name in sorted(inputs):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(inputs[name]))
    record = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    return record.SerializeToString()


def warmup_inputs(specs, batch=WARMUP_BATCH):
    """Deterministic example inputs of `batch` rows for a signature."""
    rng = np.random.default_rng(0)
    out = {}
    for name, spec in sorted(specs.items()):
        # Free dimensions (the restorer's H, W) get WARMUP_SIZE.
        shape = [batch] + [WARMUP_SIZE if d is None else d
                           for d in spec.shape.as_list()[1:]]
        if spec.dtype == tf.float32:
            out[name] = rng.standard_normal(shape).astype(np.float32)
            if name == "image_float":  # images in [-1, 1]
                out[name] = np.tanh(out[name])
        elif spec.dtype == tf.uint8:
            out[name] = rng.integers(0, 256, shape).astype(np.uint8)
        elif spec.dtype == tf.int64:
            out[name] = np.arange(np.prod(shape), dtype=np.int64).reshape(
                shape)
        else:
            raise ValueError(f"no warm-up values for {spec}")
    return out


def _write_warmup(path, model_name, endpoints):
    with tf.io.TFRecordWriter(path) as writer:
        for ep in endpoints:
            writer.write(warmup_record(model_name, ep.key,
                                       warmup_inputs(ep.specs)))


# === Writing ===


class _DropSaveChatter(logging.Filter):
    """Drops the INFO lines `tf.saved_model.save` prints for every endpoint
    (captured variable handles "with unsupported characters", sharding
    callbacks, asset and fingerprint paths); warnings pass."""

    PATTERNS = ("with unsupported characters", "Sharding callback",
                "Assets written to", "Writing fingerprint")

    def filter(self, record):
        if record.levelno > logging.INFO:
            return True
        return not any(p in str(record.msg) for p in self.PATTERNS)


@contextlib.contextmanager
def _quiet_save():
    loggers = [logging.getLogger("absl"), logging.getLogger("tensorflow")]
    f = _DropSaveChatter()
    for logger in loggers:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(f)


def next_version(model_dir):
    """1 + the largest integer version directory in model_dir (1 if none)."""
    names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
    return max((int(d) for d in names if d.isdigit()), default=0) + 1


def _signature_info(fn, specs):
    outputs = fn.get_concrete_function().structured_outputs
    return {"inputs": {k: spec_text(v) for k, v in sorted(specs.items())},
            "outputs": {k: spec_text(tf.TensorSpec(v.shape, v.dtype))
                        for k, v in sorted(outputs.items())}}


def _write_model(plan, model_dir, version, info):
    """Writes one SavedModel to a temporary directory, then renames it to
    `<model_dir>/<version>` (or the next free version if that appeared in
    the meantime). Never writes into an existing version directory."""
    archive = keras.export.ExportArchive()
    for network in plan.networks:
        archive.track(network)
    signatures = {}
    for ep in plan.endpoints:
        # Specs are in argument order; their names are the input keys.
        fn = archive.add_endpoint(ep.key, ep.fn,
                                  input_signature=list(ep.specs.values()))
        signatures[ep.key] = _signature_info(fn, ep.specs)
    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir)
    try:
        staged = os.path.join(tmp, "model")
        with _quiet_save():
            archive.write_out(staged, verbose=False)
        extra = os.path.join(staged, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        _write_warmup(os.path.join(extra, WARMUP_FILE), plan.name,
                      plan.endpoints)
        with open(os.path.join(extra, INFO_FILE), "w") as f:
            json.dump(dict(info, model=plan.name, signatures=signatures), f,
                      indent=2, sort_keys=True)
        version = max(version, next_version(model_dir))
        while True:
            target = os.path.join(model_dir, str(version))
            # os.rename replaces an empty directory: never race into one.
            if not os.path.lexists(target):
                try:
                    os.rename(staged, target)
                    return target
                except OSError:
                    if not os.path.lexists(target):
                        raise
            version = max(version + 1, next_version(model_dir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_model_names(gens, models):
    """The requested model names (None or [] = all the variant has).

    Raises:
      UserError: a name is unknown or the variant lacks that model.
    """
    available = available_models(gens)
    if models is None or list(models) == []:
        return available
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(MODEL_NAMES)}")
    absent = [m for m in models if m not in available]
    if absent:
        raise UserError(
            f"variant {gens.variant.name} has no {', '.join(absent)} model; "
            f"it can export {', '.join(available)}")
    return list(models)


def exported_versions(export_root, step, models):
    """The versions that hold an export of `step` for every model in
    `models` ("generator/1", ...), or [] if one of them has none.

    Reads `assets.extra/bncr_export.json` of each version.
    """
    found = []
    for name in models:
        model_dir = os.path.join(export_root, name)
        names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
        match = None
        for version in sorted((d for d in names if d.isdigit()), key=int):
            path = os.path.join(model_dir, version, "assets.extra",
                                INFO_FILE)
            try:
                with open(path, encoding="utf-8") as f:
                    if json.load(f).get("step") == step:
                        match = f"{name}/{version}"
            except (OSError, ValueError, AttributeError):
                continue
        if match is None:
            return []
        found.append(match)
    return found


def export_generators(gens, z_dim, resolution, export_root, models=None,
                      info=None):
    """Exports one SavedModel per model of `gens` (use the EMA copies).

    Args:
      gens: a `synthesis.Generators`.
      z_dim: latent size.
      resolution: image size R.
      export_root: directory receiving <name>/<version>/.
      models: names to export (subset of `available_models(gens)`); None
        exports all of them.
      info: JSON-serialisable dict stored in assets.extra/bncr_export.json.
    Returns:
      list of the written version directories.
    Raises:
      UserError: if a requested model is unknown or absent from the
        variant, or a write fails (e.g. no space left); then no model of
        this export is kept and existing versions are unchanged.
    """
    models = _check_model_names(gens, models)
    plans = plan_models(gens, z_dim, resolution)
    names = [m for m in MODEL_NAMES if m in models]
    version = max(next_version(os.path.join(export_root, n)) for n in names)
    info = dict(info or {}, variant=gens.variant.name, z_dim=z_dim,
                resolution=resolution,
                exported=datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"))
    written = []
    for name in names:
        model_dir = os.path.join(export_root, name)
        try:
            written.append(_write_model(plans[name], model_dir, version,
                                        info))
        except (OSError, tf.errors.OpError) as e:
            # All models of one export share a version: drop the ones this
            # call already wrote, so no half export is ever served.
            for path in written:
                shutil.rmtree(path, ignore_errors=True)
            reason = (getattr(e, "strerror", None)
                      or getattr(e, "message", None) or str(e))
            reason = reason.strip().splitlines()[0] if reason.strip() \
                else type(e).__name__
            raise UserError(
                f"cannot write the {name} export to {model_dir}: {reason}; "
                f"nothing of this export was kept and existing versions "
                f"are unchanged") from None
    return written


def export_from_run(run_dir=None, checkpoint=None, export_root=None,
                    models=None, warn=None):
    """Exports the EMA generators of a run directory's checkpoint.

    Args:
      run_dir: a run directory; None if `checkpoint` is a checkpoint path
        inside `<run_dir>/checkpoints/`.
      checkpoint: None or "latest" (the newest), a step number, or a
        checkpoint prefix path.
      export_root: default `<run_dir>/export`.
      models: model names (see `export_generators`); None = all.
      warn: function receiving the one-line warning when the latest
        checkpoint is damaged and an older one is used
        (`checkpoints.restore_latest_valid`).
    Returns:
      list of the written version directories.
    Raises:
      UserError: for a missing run directory, checkpoint or model, or when
        every checkpoint is damaged.
    """
    if checkpoint in (None, "", "latest"):
        checkpoint = None
    if run_dir is None:
        if checkpoint is None or str(checkpoint).isdigit():
            raise UserError("give a run directory, or a checkpoint path "
                            "inside <run_dir>/checkpoints/")
        run_dir = os.path.dirname(os.path.dirname(
            os.path.abspath(str(checkpoint))))
    config = runs.load_config(run_dir)
    if variants_lib.is_restoration(config.variant):
        if models and list(models) != [RESTORE_MODEL]:
            raise UserError(f"a {config.variant} run has only the "
                            f"{RESTORE_MODEL} model")
        _, restorer, path = runs.load_restorer(run_dir, checkpoint, warn)
        info = {"run_dir": os.path.abspath(run_dir),
                "checkpoint": os.path.abspath(path), "ema": False,
                "setting": config.setting, "variant": config.variant,
                "step": runs.checkpoint_step(path),
                "degradation_from": config.degradation_from}
        return [export_restorer(
            restorer, export_root or os.path.join(run_dir, "export"), info)]
    gens = runs.build_generators(config, ema=True)
    # The names are checked before any checkpoint is read.
    _check_model_names(gens, models)
    path = runs.restore_generators(run_dir, gens, checkpoint, ema=True,
                                   warn=warn)
    root = export_root or os.path.join(run_dir, "export")
    info = {"run_dir": os.path.abspath(run_dir),
            "checkpoint": os.path.abspath(path), "ema": True,
            "setting": config.setting, "step": runs.checkpoint_step(path)}
    return export_generators(gens, config.z_dim, config.resolution, root,
                             models=models, info=info)




# === Restore export (restoration runs, docs/serving.md) ===

RESTORE_MODEL = "restore"


def restore_specs():
    """Input specs of the restore signatures: any batch, height and width."""
    return {
        "image": tf.TensorSpec([None, None, None, 3], tf.uint8,
                               name="image"),
        "image_float": tf.TensorSpec([None, None, None, 3], tf.float32,
                                     name="image_float"),
    }


class _RestoreEndpoints:
    """serving_default: image uint8 [N, H, W, 3] -> image (uint8),
    image_float (float32 in [-1, 1]); from_float: image_float float32
    [N, H, W, 3] in [-1, 1] -> the same outputs. Batch norm runs with its
    moving statistics, so each row is restored independently of the
    others. Outputs are clipped to [-1, 1]."""

    def __init__(self, restorer):
        self.restorer = restorer
        self.specs = restore_specs()

    def _restore(self, x):
        x_hat = tf.clip_by_value(_f32(self.restorer(x, training=False)),
                                 -1.0, 1.0)
        return {"image": _to_uint8(x_hat), "image_float": x_hat}

    def restore(self, image):
        t = _check_inputs(RESTORE_MODEL, DEFAULT_SIGNATURE,
                          {"image": self.specs["image"]}, {"image": image})
        return self._restore(_from_uint8(t["image"]))

    def restore_float(self, image_float):
        spec = {"image_float": self.specs["image_float"]}
        t = _check_inputs(RESTORE_MODEL, "from_float", spec,
                          {"image_float": image_float})
        return self._restore(t["image_float"])


def plan_restore(restorer):
    """The `ModelPlan` of the restore export of a restorer network."""
    ep = _RestoreEndpoints(restorer)
    s = ep.specs
    return ModelPlan(RESTORE_MODEL, (restorer,), (
        Endpoint(DEFAULT_SIGNATURE, ep.restore, {"image": s["image"]}),
        Endpoint("from_float", ep.restore_float,
                 {"image_float": s["image_float"]})))


def export_restorer(restorer, export_root, info=None):
    """Writes `<export_root>/restore/<version>/` for a restorer network.

    Returns:
      The written version directory.
    Raises:
      UserError: the write failed (nothing of it is kept).
    """
    model_dir = os.path.join(export_root, RESTORE_MODEL)
    info = dict(info or {}, model=RESTORE_MODEL,
                exported=datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"))
    try:
        return _write_model(plan_restore(restorer), model_dir,
                            next_version(model_dir), info)
    except (OSError, tf.errors.OpError) as e:
        reason = (getattr(e, "strerror", None)
                  or getattr(e, "message", None) or str(e))
        reason = (reason.strip().splitlines()[0] if reason.strip()
                  else type(e).__name__)
        raise UserError(f"cannot write the restore export to {model_dir}: "
                        f"{reason}; existing versions are unchanged") \
            from None


def _is_restoration_trainer(trainer):
    return getattr(trainer, "restorer", None) is not None


def run_models(trainer):
    """Names of the models `export_run` writes for a trainer."""
    if _is_restoration_trainer(trainer):
        return [RESTORE_MODEL]
    return available_models(trainer.gens_ema)


def export_run(trainer, export_root):
    """Exports a trainer's EMA generators, or a restoration trainer's
    restorer (called at the end of training)."""
    c = trainer.config
    info = {"ema": True, "setting": c.setting,
            "step": int(trainer.step.numpy())
            if hasattr(trainer, "step") else None}
    if _is_restoration_trainer(trainer):
        info.update(ema=False, variant=c.variant,
                    measurement=getattr(trainer, "measurement_description",
                                        None) or trainer.F.description,
                    degradation_from=c.degradation_from)
        return [export_restorer(trainer.restorer, export_root, info)]
    return export_generators(trainer.gens_ema, c.z_dim, c.resolution,
                             export_root, info=info)
