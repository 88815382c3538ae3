"""FAISS inner-product indexes over the (normalized) item embeddings, and their quality check.

Because both towers are L2-normalized, inner product = cosine and exact search is `IndexFlatIP`.
IVF and HNSW trade a little recall for speed; `evaluate_index` measures that trade against exact
search on a sample of queries (recall@K = |ANN top-K ∩ exact top-K| / K, averaged over queries).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from karma.serve.config import INDEX_KINDS, IndexConfig, IndexKind  # noqa: F401 (re-exported)


def resolve_nlist(config: IndexConfig, num_items: int) -> int:
    """The IVF list count actually used for `num_items` vectors."""
    if config.nlist > 0:
        return min(config.nlist, num_items)
    return int(max(1, min(4 * np.sqrt(num_items), num_items // 39)))


def build_index(embeddings: np.ndarray, config: IndexConfig) -> faiss.Index:
    """An inner-product FAISS index holding `embeddings` (N, e) float32, rows = item indices."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, e)
    dim = vectors.shape[1]
    if config.kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(dim)
    elif config.kind == "ivf":
        nlist = resolve_nlist(config, len(vectors))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means on at most 256 points per list is what FAISS samples anyway; keep it explicit.
        rng = np.random.default_rng(0)
        sample = vectors
        if len(vectors) > 256 * nlist:
            sample = vectors[rng.choice(len(vectors), 256 * nlist, replace=False)]
        index.train(sample)
        index.nprobe = min(config.nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, config.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    index.add(vectors)
    return index


def configure_search(index: faiss.Index, config: IndexConfig) -> None:
    """Apply the search-time parameters (nprobe, efSearch) to a loaded index."""
    if config.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = config.nprobe
    elif config.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = config.ef_search


def index_path(directory: str | Path, kind: str) -> Path:
    return Path(directory) / "index" / f"{kind}.faiss"


def save_index(index: faiss.Index, directory: str | Path, kind: str) -> Path:
    path = index_path(directory, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return path


def load_index(directory: str | Path, kind: str) -> faiss.Index:
    return faiss.read_index(str(index_path(directory, kind)))


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item indices (Q, k) by dot product, best first (the reference for recall)."""
    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    _, ids = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx_q ∩ exact_q| / k; both (Q, k) item indices."""
    k = exact.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits) / k)


@dataclass
class IndexReport:
    """Build and search figures of one index against exact search."""

    kind: str
    num_items: int
    build_seconds: float
    recall: float
    k: int
    queries_per_second: float
    num_queries: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_index(
    index: faiss.Index,
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    kind: str,
    build_s: float,
    reference: np.ndarray | None = None,
) -> IndexReport:
    """Recall@k of `index` vs exact search over `embeddings`, and its batched queries/s.

    `reference` (Q, k) exact top-k ids may be passed in when several indexes share the queries.
    """
    k = min(k, len(embeddings))
    if reference is None:
        reference = exact_top_k(embeddings, queries, k)  # (Q, k)
    start = time.perf_counter()
    _, approx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    seconds = time.perf_counter() - start
    return IndexReport(
        kind=kind,
        num_items=int(index.ntotal),
        build_seconds=build_s,
        recall=recall_at_k(approx, reference),
        k=k,
        queries_per_second=len(queries) / max(seconds, 1e-9),
        num_queries=len(queries),
    )
