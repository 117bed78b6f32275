"""Restore a folder of photos with a trained restorer (docs/restoration.md).

    python -m bncr_tf.restore --model=runs/00007-unir-N-32px \\
        --input=photos/ --output=restored/

--model is a restoration run directory (its newest intact checkpoint), a
restore export (`<run>/export/restore`, its newest version) or one version
directory of it. Every .png / .jpg / .jpeg file directly inside --input is
restored at its own size and written under the same name and in the same
format to --output (other files are ignored and counted). The restorer is
fully convolutional apart from its self-attention, whose keys are resized
to at most 16 x 16 positions, and never resamples the image, so any
H x W >= 1 x 1 is restored as it is: no resizing, padding or cropping.

Per file (the reason of a skip is printed):
  * 8-bit RGB: restored.
  * grey (1 channel): replicated to RGB, restored, written back as grey
    (ITU-R 601 luma of the result).
  * RGBA / grey + alpha: the colour is restored, the alpha channel is
    copied unchanged.
  * 16-bit PNG: restored at float precision and written as 16-bit PNG.
  * palette PNG: written as RGB(A) PNG (the palette is not kept).
  * empty, corrupt or not-PNG/JPEG content, or more than --max_pixels
    pixels: skipped.
  * a file already in --output: skipped unless --overwrite.

Exit codes: 0 every image restored; 1 some images skipped (the others are
written); 2 user error (one `error:` line: bad --model, --output equal to
or inside --input, no image in --input); 130 / 143 Ctrl-C / SIGTERM.
"""

import os
import sys

from bncr_tf import cli

cli.quiet_tensorflow()

from absl import flags  # noqa: E402

from bncr_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
EXTENSIONS = (".png", ".jpg", ".jpeg")
EXIT_SKIPPED = 1


def define_flags():
    flags.DEFINE_string("model", "", "Restoration run directory, restore "
                        "export directory or one of its versions.")
    flags.DEFINE_string("input", "", "Folder of PNG / JPEG photos (not "
                        "recursive).")
    flags.DEFINE_string("output", "", "Folder receiving the restored "
                        "photos (created; never --input or inside it).")
    flags.DEFINE_bool("overwrite", False, "Replace files already in "
                      "--output.")
    flags.DEFINE_integer("jpeg_quality", 95, "Quality of written JPEGs.",
                         lower_bound=1, upper_bound=100)
    flags.DEFINE_integer("max_pixels", 4096 * 4096, "Skip larger images "
                         "(memory grows linearly with H x W).",
                         lower_bound=1)
    flags.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)


# --- Paths ------------------------------------------------------------------

def check_folders(input_dir, output_dir):
    """Raises UserError unless input is a folder and output is neither it
    nor inside it (nor an existing file)."""
    if not input_dir or not output_dir:
        raise UserError("give --input=<folder> and --output=<folder>")
    if not os.path.isdir(input_dir):
        raise UserError(f"--input={input_dir} is not a folder")
    src = os.path.realpath(input_dir)
    dst = os.path.realpath(output_dir)
    if dst == src or os.path.commonpath([src, dst]) == src:
        raise UserError(f"--output={output_dir} is --input or inside it; "
                        f"restored files are never written into the input "
                        f"folder")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise UserError(f"--output={output_dir} exists and is not a folder")


def list_images(input_dir):
    """(sorted image file names, number of other entries ignored)."""
    names, ignored = [], 0
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name)
        if os.path.isfile(path) and name.lower().endswith(EXTENSIONS):
            names.append(name)
        else:
            ignored += 1
    return names, ignored


# --- Model ------------------------------------------------------------------

def _saved_model_dir(path):
    """The SavedModel directory of an export / version path, or None."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit() and os.path.isfile(
        os.path.join(path, d, "saved_model.pb"))] if os.path.isdir(path) \
        else []
    if versions:
        return os.path.join(path, max(versions, key=int))
    return None


def load_model(path):
    """A function float32 [1, H, W, 3] in [-1, 1] -> restored, clipped to
    [-1, 1], and a one-line description of the model.

    Raises:
      UserError: not a restoration run or restore export.
    """
    import tensorflow as tf
    if not path or not os.path.exists(path):
        raise UserError(f"--model={path} does not exist")
    if os.path.isfile(os.path.join(path, "config.json")):
        from bncr_tf import runs
        _, g, ckpt = runs.load_restorer(path, warn=cli.warning)

        @tf.function(input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.float32)])
        def restore(x):
            return tf.clip_by_value(g(x, training=False), -1.0, 1.0)
        return restore, f"restorer of {ckpt}"
    saved = _saved_model_dir(path)
    if saved is None:
        raise UserError(f"--model={path} is neither a restoration run "
                        f"directory nor a restore export (no config.json, no "
                        f"saved_model.pb)")
    model = tf.saved_model.load(saved)
    if "from_float" not in model.signatures:
        raise UserError(f"--model={path} is not a restore export (no "
                        f"from_float signature)")
    sig = model.signatures["from_float"]

    def restore(x):
        return sig(image_float=x)["image_float"]
    return restore, f"restore export {saved}"


# --- One file -----------------------------------------------------------------

class Skip(Exception):
    """A file that is not restored; the message is the reason."""


def _format(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def decode(data):
    """(format, image [H, W, C] uint8 or uint16 numpy) of PNG / JPEG bytes.

    Raises:
      Skip: empty, unknown or corrupt content.
    """
    import tensorflow as tf
    if not data:
        raise Skip("empty file")
    kind = _format(data)
    if kind is None:
        raise Skip("not PNG or JPEG content")
    from bncr_tf import quiet
    try:
        # libpng / libjpeg print their complaints straight to stderr; the
        # skip line says it once.
        with quiet.native_stderr(native=True):
            if kind == "png":
                depth = data[24] if len(data) > 25 else 0
                dtype = tf.uint16 if depth == 16 else tf.uint8
                image = tf.io.decode_png(data, channels=0, dtype=dtype)
            else:
                image = tf.io.decode_jpeg(data, channels=0)
            image = image.numpy()
    except tf.errors.OpError:
        raise Skip(f"corrupt or truncated {kind.upper()} data") from None
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or \
            min(image.shape[:2]) < 1:
        raise Skip(f"unsupported image shape {image.shape}")
    return kind, image


def restore_array(restore, image):
    """Restores a decoded image [H, W, C] (C = 1, 2, 3, 4; uint8 or
    uint16), keeping its channels, alpha and bit depth."""
    import numpy as np
    import tensorflow as tf
    peak = 65535.0 if image.dtype == np.uint16 else 255.0
    c = image.shape[-1]
    colour = image[..., :3] if c >= 3 else image[..., :1]
    alpha = image[..., -1:] if c in (2, 4) else None
    x = colour.astype(np.float32) / peak * 2.0 - 1.0
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    out = np.asarray(restore(tf.constant(x[None])))[0]
    out = np.clip(out, -1.0, 1.0)
    if colour.shape[-1] == 1:
        out = tf.image.rgb_to_grayscale(out).numpy()
    out = np.clip(np.round((out + 1.0) / 2.0 * peak), 0, peak).astype(
        image.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=-1)
    return out


def encode(kind, image, jpeg_quality):
    import tensorflow as tf
    if kind == "png":
        return tf.io.encode_png(image).numpy()
    if image.shape[-1] not in (1, 3):
        raise Skip("a JPEG with alpha cannot be written")
    return tf.io.encode_jpeg(image, quality=jpeg_quality).numpy()


def restore_file(restore, src, dst, jpeg_quality, max_pixels):
    """Restores one file; returns (H, W); raises Skip."""
    with open(src, "rb") as f:
        data = f.read()
    kind, image = decode(data)
    h, w = image.shape[:2]
    if h * w > max_pixels:
        raise Skip(f"{w}x{h} is more than --max_pixels={max_pixels}")
    out = restore_array(restore, image)
    from bncr_tf import fileio
    fileio.atomic_write_bytes(dst, encode(kind, out, jpeg_quality))
    return h, w


# --- Main -------------------------------------------------------------------

def restore_folder(model, input_dir, output_dir, overwrite=False,
                   jpeg_quality=95, max_pixels=4096 * 4096,
                   out=sys.stdout, err=sys.stderr):
    """Restores every image of input_dir into output_dir.

    Returns:
      (number restored, [(name, reason) skipped], number ignored).
    Raises:
      UserError: bad folders, no image, or a model that cannot be loaded.
    """
    check_folders(input_dir, output_dir)
    names, ignored = list_images(input_dir)
    if not names:
        raise UserError(f"--input={input_dir} holds no .png, .jpg or .jpeg "
                        f"file")
    cli.import_tensorflow()
    restore, description = load_model(model)
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --output={output_dir}: "
                        f"{e.strerror or e}") from None
    print(f"restoring {len(names)} image(s) with the {description}",
          file=err)
    done, skipped = 0, []
    for i, name in enumerate(names, 1):
        dst = os.path.join(output_dir, name)
        try:
            if os.path.exists(dst) and not overwrite:
                raise Skip("already in --output (use --overwrite)")
            h, w = restore_file(restore, os.path.join(input_dir, name), dst,
                                jpeg_quality, max_pixels)
            done += 1
            print(f"[{i}/{len(names)}] {name}: restored ({w}x{h})", file=err)
        except Skip as e:
            skipped.append((name, str(e)))
            print(f"[{i}/{len(names)}] {name}: skipped: {e}", file=err)
        except OSError as e:
            skipped.append((name, e.strerror or str(e)))
            print(f"[{i}/{len(names)}] {name}: skipped: "
                  f"{e.strerror or e}", file=err)
    print(f"restored {done}, skipped {len(skipped)}, ignored {ignored} "
          f"other file(s); output in {output_dir}", file=out)
    return done, skipped, ignored


def main(argv):
    del argv
    _, skipped, _ = restore_folder(
        FLAGS.model, FLAGS.input, FLAGS.output, overwrite=FLAGS.overwrite,
        jpeg_quality=FLAGS.jpeg_quality, max_pixels=FLAGS.max_pixels)
    return EXIT_SKIPPED if skipped else 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
