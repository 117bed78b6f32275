"""Reference statistics of real images, cached on disk.

The statistics (mean and covariance of the features, optionally raw
features for KID) of a data source are cached in
`<cache dir>/reference-stats/<key>.npz`, where the key is a sha256 of
(source spec, resolution, limit, source seed, feature extractor
fingerprint). Files are numpy .npz written atomically (temporary file +
os.replace) and read with allow_pickle=False.

The source is read clean: no --setting degradation is applied (the paper
measures FID of the generated clean images against clean real images).
"""

import dataclasses
import hashlib
import io
import json
import os
import re

import numpy as np

from bncr_tf import data as data_lib
from bncr_tf import fileio
from bncr_tf.errors import UserError
from bncr_tf.metrics import features as features_lib
from bncr_tf.metrics import inception

CACHE_SUBDIR = "reference-stats"
CACHE_VERSION = 1


@dataclasses.dataclass
class ReferenceStats:
    """Feature statistics of a set of real images.

    Attributes:
      mu: float64 [D] mean feature.
      sigma: float64 [D, D] covariance.
      num_images: number of images the statistics come from.
      features: float32 [M, D] raw features (M <= num_images) or None.
      meta: dict describing the source and extractor (JSON-ready).
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    features: np.ndarray = None
    meta: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_feature_stats(cls, stats, meta=None):
        """Builds from a `fid.FeatureStats`."""
        kept = stats.features()
        return cls(mu=stats.mean(), sigma=stats.cov(), num_images=stats.count,
                   features=kept if len(kept) else None, meta=dict(meta or {}))

    def save(self, path):
        """Writes an .npz atomically (temporary file + os.replace)."""
        arrays = {"mu": self.mu, "sigma": self.sigma,
                  "num_images": np.int64(self.num_images),
                  "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        if self.features is not None:
            arrays["features"] = np.asarray(self.features, np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        fileio.atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path):
        """Reads an .npz written by `save` (never unpickles)."""
        with np.load(path, allow_pickle=False) as f:
            return cls(mu=f["mu"].astype(np.float64),
                       sigma=f["sigma"].astype(np.float64),
                       num_images=int(f["num_images"]),
                       features=(f["features"] if "features" in f.files
                                 else None),
                       meta=json.loads(str(f["meta"])))


def source_description(spec, resolution, limit=None, seed=0):
    """Canonical description of a reference source (part of the key).

    The seed only matters for builtin:skimage_patches and is dropped for
    other sources, so the same images share one cache entry.
    """
    source = data_lib.parse_source(spec)
    return {"source": str(source), "resolution": int(resolution),
            "limit": int(limit) if limit else None,
            "seed": int(seed) if source.kind == "builtin" else None}


def cache_key(description, extractor_id):
    """sha256 (hex) of the source description and the extractor id."""
    payload = json.dumps({"version": CACHE_VERSION, "extractor": extractor_id,
                          **description}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_path(description, extractor_id, cache=None):
    """`<cache>/reference-stats/<readable prefix>-<key[:24]>.npz`."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", description["source"]).strip("_")
    key = cache_key(description, extractor_id)
    return os.path.join(inception.cache_dir(cache), CACHE_SUBDIR,
                        f"{slug[-48:]}-{description['resolution']}px-"
                        f"{key[:24]}.npz")


def reference_stats(spec, resolution, extractor, limit=None, seed=0,
                    cache=None, use_cache=True, num_features=0,
                    progress=True):
    """Loads (or computes and caches) the statistics of a clean source.

    Args:
      spec: data source spec (tfds:NAME[:SPLIT], folder, TFRecord dir,
        builtin:skimage_patches, fashion_mnist:SPLIT).
      resolution: image size R the source is read at.
      extractor: feature extractor; caching needs its `fingerprint`.
      limit: use the first `limit` images (None: all).
      seed: seed of builtin:skimage_patches.
      cache: cache directory (None: $BNCR_CACHE_DIR or ~/.cache/bncr_tf).
      use_cache: read and write the cache (False recomputes, no write).
      num_features: raw features to keep for KID (0: none).
      progress: print progress lines to stderr.
    Returns:
      A `ReferenceStats` whose meta holds the description, the extractor
      info, the cache key and "cache_path" (None if not cached).
    Raises:
      UserError: bad source or unreadable data.
    """
    description = source_description(spec, resolution, limit, seed)
    extractor_id = getattr(extractor, "fingerprint", None)
    path = (cache_path(description, extractor_id, cache)
            if use_cache and extractor_id else None)
    if path and os.path.isfile(path):
        stats = ReferenceStats.load(path)
        kept = 0 if stats.features is None else len(stats.features)
        if kept >= min(num_features, stats.num_images):
            return stats
    chunks = (images for images, _ in data_lib.iter_source_uint8(
        spec, resolution, chunk_size=1024, limit=limit, seed=seed))
    feature_stats = features_lib.extract_statistics(
        chunks, extractor, total=limit, max_features=num_features,
        label=f"reference {description['source']}", progress=progress)
    meta = dict(description, extractor=features_lib.extractor_info(extractor),
                key=cache_key(description, extractor_id), cache_path=path)
    stats = ReferenceStats.from_feature_stats(feature_stats, meta)
    if path:
        stats.save(path)
    return stats
