"""Stats by name: `report(name, value)` during a tick, `flush()` per tick.

Names are hierarchical (Loss/..., Degradation/..., Timing/..., Progress/...),
and the same names are used in TensorBoard, stats.jsonl and the status line.
"""

import collections
import json
import math

import numpy as np


class StatsCollector:
    """Accumulates scalars per name and averages them at each flush."""

    def __init__(self):
        self._sums = collections.defaultdict(float)
        self._counts = collections.defaultdict(int)

    def report(self, name, value):
        value = float(np.asarray(value))
        self._sums[name] += value
        self._counts[name] += 1

    def report_dict(self, values, prefix=""):
        for name, value in values.items():
            self.report(prefix + name, value)

    def flush(self):
        """Returns {name: mean since the last flush} and resets."""
        out = {n: self._sums[n] / self._counts[n] for n in sorted(self._sums)}
        self._sums.clear()
        self._counts.clear()
        return out


class JsonlWriter:
    """Appends one JSON object per line, flushing each line to disk."""

    def __init__(self, path):
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record):
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v)
                     else v) for k, v in record.items()}
        self._file.write(json.dumps(clean, sort_keys=True) + "\n")
        self._file.flush()

    def close(self):
        self._file.close()
