"""TensorBoard event files of a resumed run: drop what is recomputed.

A resumed run recomputes the steps after its checkpoint and writes their
summaries again. Event files are append-only, so without this
TensorBoard's Python loader (`--load_fast=false`) shows those steps twice
(measured with TensorBoard 2.21: steps 1, 2, 3, 4, 3, 4, 5, 6 after a
resume from step 2; the Rust data server of `--load_fast=true` showed
each step once). That loader (`plugin_event_accumulator`) would purge
later steps on a `SessionLog.START` event, but TF2's `tf.summary` file
writers cannot write one (only `tf.compat.v1.summary.FileWriter` could,
and not eagerly). So `truncate_events` rewrites the event files the way
`rundir.truncate_jsonl` rewrites stats.jsonl, which works for every
reader: records with a step after the restored checkpoint are dropped
(and a record cut off by a kill), each file is replaced atomically (a
temporary file without "tfevents" in its name, which TensorBoard
ignores, then a rename). Restart a TensorBoard that was watching the run
while it was resumed.
"""

import glob
import os

import tensorflow as tf

from tensorboard.compat.proto import event_pb2

TEMP_NAME = ".rewrite-events.tmp"


def event_files(log_dir):
    """The TensorBoard event files of a directory, in name order."""
    return sorted(glob.glob(os.path.join(glob.escape(log_dir),
                                         "*tfevents*")))


def _records(path):
    """Yields the serialised records of an event file; stops at a record
    cut off by a kill (DataLossError) and then yields None."""
    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.DataLossError:
        yield None


def truncate_events(log_dir, max_step):
    """Keeps only the events of steps <= max_step in every event file.

    Args:
      log_dir: a directory of TensorBoard event files (`<run>/tb`).
      max_step: the step of the restored checkpoint.
    Returns:
      The number of records dropped (a cut-off record counts as one).
    """
    dropped = 0
    for path in event_files(log_dir):
        tmp = os.path.join(os.path.dirname(path), TEMP_NAME)
        removed = 0
        with tf.io.TFRecordWriter(tmp) as writer:
            for raw in _records(path):
                if raw is None:
                    removed += 1
                    break
                event = event_pb2.Event.FromString(raw)
                if event.step > max_step and not event.HasField(
                        "file_version"):
                    removed += 1
                    continue
                writer.write(raw)
        if removed:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dropped += removed
        else:
            os.remove(tmp)
    return dropped
