"""2-D projections of test embeddings (t-SNE, UMAP) on a capped, seeded subsample."""

from __future__ import annotations

import warnings

import numpy as np

from firekd.metrics.efficiency import cpu_threads

METHODS = ("tsne", "umap")
MIN_POINTS = 5  # below this neither projection says anything


def subsample(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``cap`` of ``n`` points; the same for every model of a seed."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def project(embeddings: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2). Neighbourhood sizes shrink with N so that small test sets work."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n < MIN_POINTS:
        raise ValueError(f"{method} needs at least {MIN_POINTS} points, got {n}")
    if x.shape[1] > 50:  # the usual PCA step first: faster, and less noise for both methods
        from sklearn.decomposition import PCA

        x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
    if method == "tsne":
        return _tsne(x, seed)
    if method == "umap":
        return _umap(x, seed)
    raise ValueError(f"unknown projection {method!r}; expected one of {', '.join(METHODS)}")


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(x)
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    # Small inputs: OpenMP barriers cost more than the work (seconds become a minute on a busy CPU).
    with threadpool_limits(1 if n < 1000 else None):
        return tsne.fit_transform(x)


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    """UMAP on exact neighbours computed here: skips umap's own neighbour search, whose numba
    compilation is a large part of its first-call cost."""
    from sklearn.neighbors import NearestNeighbors

    k = min(15, len(x) - 1)
    dists, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    # numba starts its OpenMP pool with every core on its first launch, and that count is torch's
    # too: a --jobs worker's share of the threads (or OMP_NUM_THREADS) would become all cores
    with warnings.catch_warnings(), cpu_threads(None):
        warnings.simplefilter("ignore")  # random_state disables parallelism; no search index for transform
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=k, random_state=seed,
                            init="random" if len(x) < 50 else "spectral",
                            precomputed_knn=(idx.astype(np.int32), dists.astype(np.float32), None),
                            force_approximation_algorithm=True)
        return reducer.fit_transform(x)
