"""Fréchet distance and kernel distance between two sets of features.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to
Inception pool3 features:

    FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

KID (Binkowski et al. 2018) is the unbiased estimate of the squared maximum
mean discrepancy with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets as in stylegan2-ada's
metrics/kernel_inception_distance.py.

Everything here is numpy float64 and independent of TensorFlow.
"""

import warnings

import numpy as np

# TTUR's fid.py: offset added to both covariances when sqrtm fails, and the
# tolerance on the imaginary part of the diagonal of sqrtm(S_1 S_2).
SQRTM_OFFSET = 1e-6
SQRTM_IMAG_ATOL = 1e-3


class FeatureStats:
    """Streaming mean and covariance of features (float64).

    Accumulates shifted moments so that the covariance stays accurate when
    the mean is large compared with the spread. Optionally keeps the first
    `max_features` raw features (what KID needs).

    Args:
      max_features: number of raw features to keep (0 keeps none).

    Example:
      stats = FeatureStats()
      for chunk in chunks:           # each [n, D]
          stats.update(chunk)
      mu, sigma = stats.mean(), stats.cov()
    """

    def __init__(self, max_features=0):
        self.max_features = int(max_features)
        self.count = 0
        self._shift = None
        self._sum = None
        self._outer = None
        self._kept = []
        self._num_kept = 0

    @property
    def dim(self):
        return None if self._shift is None else len(self._shift)

    def update(self, features):
        """Adds features [n, D] (any float dtype)."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [n, D], got {x.shape}")
        if len(x) == 0:
            return
        if self._shift is None:
            self._shift = x.mean(axis=0)
            d = x.shape[1]
            self._sum = np.zeros(d)
            self._outer = np.zeros((d, d))
        elif x.shape[1] != len(self._shift):
            raise ValueError(f"feature size {x.shape[1]} != {self.dim}")
        xc = x - self._shift
        self._sum += xc.sum(axis=0)
        self._outer += xc.T @ xc
        self.count += len(x)
        room = self.max_features - self._num_kept
        if room > 0:
            self._kept.append(x[:room].astype(np.float32))
            self._num_kept += len(self._kept[-1])

    def mean(self):
        """Mean feature, float64 [D]."""
        self._check(1)
        return self._shift + self._sum / self.count

    def cov(self):
        """Unbiased covariance (as np.cov(x, rowvar=False)), float64 [D, D]."""
        self._check(2)
        d = self._sum / self.count
        cov = (self._outer - self.count * np.outer(d, d)) / (self.count - 1)
        return (cov + cov.T) / 2.0

    def features(self):
        """The kept raw features, float32 [min(count, max_features), D]."""
        if not self._kept:
            return np.zeros((0, self.dim or 0), np.float32)
        return np.concatenate(self._kept)

    def _check(self, n):
        if self.count < n:
            raise ValueError(f"need at least {n} feature vectors, got "
                             f"{self.count}")


def feature_statistics(features):
    """(mu float64 [D], sigma float64 [D, D]) of features [N, D], N >= 2."""
    stats = FeatureStats()
    stats.update(features)
    return stats.mean(), stats.cov()


def _psd_factor(sigma):
    """F with F^T F = sigma for a symmetric PSD matrix, float64 [D, D].

    Eigenvalues below the numerical-rank tolerance D * eps * max (numpy's
    matrix_rank default) are set to 0: they are rounding noise, and their
    square roots (~sqrt(eps)) would otherwise add up to a visible error for
    singular covariances.
    """
    values, vectors = np.linalg.eigh(sigma)
    tol = len(values) * np.finfo(np.float64).eps * max(values.max(), 0.0)
    values = np.where(values > tol, values, 0.0)
    return np.sqrt(values)[:, None] * vectors.T


def trace_sqrt_product(sigma1, sigma2):
    """Tr((S_1 S_2)^(1/2)) for symmetric PSD S_1, S_2, without sqrtm.

    The eigenvalues of S_1 S_2 are those of (F_1 F_2^T)(F_1 F_2^T)^T for
    factors S_i = F_i^T F_i, so the trace of the square root is the sum of
    the singular values of F_1 F_2^T (its nuclear norm). Always real, and
    exact for singular covariances (fewer samples than dimensions).

    Args:
      sigma1, sigma2: float [D, D] symmetric positive semi-definite.
    Returns:
      float, >= 0.
    """
    f1 = _psd_factor(np.asarray(sigma1, np.float64))
    f2 = _psd_factor(np.asarray(sigma2, np.float64))
    return float(np.linalg.svd(f1 @ f2.T, compute_uv=False).sum())


def _trace_sqrt_product_sqrtm(sigma1, sigma2):
    """TTUR's computation: scipy sqrtm of S_1 S_2 with an offset fallback."""
    from scipy import linalg
    with warnings.catch_warnings():
        # Singular products are expected; the checks below handle them.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * SQRTM_OFFSET
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > SQRTM_IMAG_ATOL:
            raise ValueError(
                f"sqrtm(S1 S2) has an imaginary component of {imag:.3g} "
                f"(> {SQRTM_IMAG_ATOL}); the covariances are not valid")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method="svd"):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
      mu1, mu2: float [D] means.
      sigma1, sigma2: float [D, D] covariances (symmetric PSD).
      method: "svd" (default; `trace_sqrt_product`, real and robust for
        singular covariances) or "sqrtm" (TTUR's scipy.linalg.sqrtm with
        its 1e-6 offset fallback; raises on a large imaginary part).
    Returns:
      Python float, the squared Fréchet distance (>= 0 up to rounding).
    Raises:
      ValueError: shape mismatch, unknown method, or (sqrtm) a large
        imaginary component.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = len(mu1)
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma "
            f"{sigma1.shape} / {sigma2.shape}")
    if method == "svd":
        tr_covmean = trace_sqrt_product(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2)
    else:
        raise ValueError(f"unknown method {method!r}; use svd or sqrtm")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * tr_covmean)


def polynomial_kernel(x, y):
    """k(x, y) = (x.y / d + 1)^3 for all pairs: [n, D], [m, D] -> [n, m]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel.

    MMD^2 = sum_{i != j} k(x_i, x_j) / (n (n - 1))
          + sum_{i != j} k(y_i, y_j) / (m (m - 1))
          - 2 sum_{i, j} k(x_i, y_j) / (n m).

    Args:
      x: float [n, D], n >= 2.
      y: float [m, D], m >= 2.
    Returns:
      Python float (may be slightly negative).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need [n >= 2, D] and [m >= 2, D] features, got "
                         f"{x.shape} and {y.shape}")
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.sum() / (n * m))


def kernel_distance(features1, features2, num_subsets=100,
                    max_subset_size=1000, seed=0):
    """KID: unbiased MMD^2 averaged over random subsets.

    Each subset draws m = min(n1, n2, max_subset_size) features from each
    set without replacement (stylegan2-ada's protocol). With one subset and
    m = n1 = n2 it is exactly `mmd2_unbiased` of the full sets.

    Args:
      features1, features2: float [n1, D], [n2, D].
      num_subsets: number of subsets averaged.
      max_subset_size: largest subset size m.
      seed: seed of the subset draws.
    Returns:
      dict with "kid" (mean over subsets), "kid_std" (standard deviation
      over subsets), "subset_size" and "num_subsets".
    """
    x = np.asarray(features1, np.float64)
    y = np.asarray(features2, np.float64)
    m = min(len(x), len(y), int(max_subset_size))
    if m < 2 or num_subsets < 1:
        raise ValueError(f"KID needs at least 2 features per set and one "
                         f"subset, got {len(x)}, {len(y)}, {num_subsets}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(num_subsets)):
        xs = x if m == len(x) else x[rng.choice(len(x), m, replace=False)]
        ys = y if m == len(y) else y[rng.choice(len(y), m, replace=False)]
        values.append(mmd2_unbiased(xs, ys))
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)),
            "subset_size": m, "num_subsets": int(num_subsets)}
