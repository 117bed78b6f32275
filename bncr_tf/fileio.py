"""File helpers shared by run directories, metrics caches and grids:
atomic writes and content hashes."""

import hashlib
import os
import tempfile


def atomic_write_bytes(path, data):
    """Replaces `path` by `data` so a reader sees the old or the new file.

    Writes a temporary file in the same directory, flushes and fsyncs it,
    then renames it over `path` (and fsyncs the directory), so neither a
    killed process nor a power cut leaves a half-written file.

    Args:
      path: destination file; its directory is created if missing.
      data: bytes.
    Raises:
      OSError: the write failed (e.g. no space left); `path` is unchanged
        and the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path, text):
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path, chunk=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
