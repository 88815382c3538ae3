"""The HTTP service: FastAPI app over a `ServingModel`, with micro-batched encoding.

Endpoints (OpenAPI docs at /docs):
- `POST /v1/search` {history, query?, k=10, exclude_seen=true} -> ranked items (id, title, score);
- `POST /v1/embed` {history, query?} -> the interest embedding e_u;
- `GET /healthz` -> status, catalog size, index kind, batching counters.

History entries are item ids or exact titles. Unknown ones -> 404 naming them; an empty or too long
history, k out of range, wrong types or unknown fields -> 422. With an API key configured, /v1/*
requires header `X-API-Key`.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from karma import __version__
from karma.serve.artifact import Recommendations, ServingModel, UnknownItemsError
from karma.serve.batcher import MicroBatcher
from karma.serve.config import ServeConfig

logger = logging.getLogger(__name__)


# --- request / response schemas ------------------------------------------------------------


class EmbedRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    history: list[str | int] = Field(
        min_length=1, description="Items the user interacted with, oldest first: ids or titles."
    )
    query: str | None = Field(default=None, max_length=1000, description="Optional search query.")


class SearchRequest(EmbedRequest):
    k: int = Field(default=10, ge=1, description="How many items to return.")
    exclude_seen: bool = Field(default=True, description="Leave the history's items out.")


class ScoredItem(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float


class SearchResponse(BaseModel):
    items: list[ScoredItem]
    index: str
    took_ms: float


class EmbedResponse(BaseModel):
    embedding: list[float]
    dim: int
    took_ms: float


class HealthResponse(BaseModel):
    status: str
    karma_version: str
    num_items: int
    embedding_dim: int
    index: str
    batches: int
    requests: int
    mean_batch: float


# --- batching ------------------------------------------------------------------------------


@dataclass
class EncodeJob:
    """One request inside a micro-batch; k = 0 means embed only."""

    history: list[int]
    query: str | None
    k: int = 0
    exclude_seen: bool = True


@dataclass
class EncodeResult:
    embedding: np.ndarray  # (e,)
    recommendations: Recommendations | None


def run_batch(model: ServingModel, jobs: Sequence[EncodeJob]) -> list[EncodeResult]:
    """One encoder call for all jobs, then one index search for those that asked for items."""
    embeddings = model.encode([j.history for j in jobs], [j.query for j in jobs])  # (B, e)
    searching = [i for i, j in enumerate(jobs) if j.k > 0]
    found: dict[int, Recommendations] = {}
    if searching:
        k = max(jobs[i].k for i in searching)
        exclude = [jobs[i].history if jobs[i].exclude_seen else [] for i in searching]
        for i, recs in zip(searching, model.search_embeddings(embeddings[searching], k, exclude)):
            found[i] = Recommendations(recs.item_indices[: jobs[i].k], recs.scores[: jobs[i].k])
    return [EncodeResult(embeddings[i], found.get(i)) for i in range(len(jobs))]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the app -------------------------------------------------------------------------------


def create_app(model: ServingModel, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `model` (the micro-batcher starts with the app's lifespan)."""
    config = config or ServeConfig()
    batcher: MicroBatcher[EncodeJob, EncodeResult] = MicroBatcher(
        lambda jobs: run_batch(model, jobs), config.max_batch, config.max_wait_ms
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="karma retrieval service",
        version=__version__,
        description="Next-interest retrieval from a user's history and an optional query.",
        lifespan=lifespan,
    )
    app.state.model = model
    app.state.batcher = batcher
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def check_key(key: str | None = Security(key_header)) -> None:
        if config.api_key is None:
            return
        if key is None or not secrets.compare_digest(key.encode(), config.api_key.encode()):
            raise HTTPException(401, detail="missing or wrong X-API-Key header")

    def resolve(request: EmbedRequest) -> list[int]:
        if len(request.history) > config.max_history:
            raise HTTPException(
                422,
                detail=f"history has {len(request.history)} items; at most {config.max_history} are accepted",
            )
        try:
            return model.resolve_items(request.history)
        except UnknownItemsError as exc:
            raise HTTPException(
                404, detail={"message": "unknown items in history", "unknown": exc.unknown}
            ) from None

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        return HealthResponse(
            status="ok",
            karma_version=__version__,
            num_items=model.num_items,
            embedding_dim=model.embedding_dim,
            index=model.index_config.kind,
            batches=batcher.stats.batches,
            requests=batcher.stats.requests,
            mean_batch=batcher.stats.mean_batch,
        )

    @app.post("/v1/search", response_model=SearchResponse, dependencies=[Depends(check_key)])
    async def search(request: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        if request.k > config.max_k:
            raise HTTPException(422, detail=f"k={request.k} is above the maximum {config.max_k}")
        history = resolve(request)
        job = EncodeJob(history, request.query, request.k, request.exclude_seen)
        recs = (await batcher.submit(job)).recommendations
        assert recs is not None
        described = model.describe(recs.item_indices.tolist())
        items = [
            ScoredItem(rank=r + 1, score=float(s), **d)
            for r, (s, d) in enumerate(zip(recs.scores, described))
        ]
        took = (time.perf_counter() - start) * 1000
        return SearchResponse(items=items, index=model.index_config.kind, took_ms=took)

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(check_key)])
    async def embed(request: EmbedRequest) -> EmbedResponse:
        start = time.perf_counter()
        result = await batcher.submit(EncodeJob(resolve(request), request.query))
        took = (time.perf_counter() - start) * 1000
        vector = result.embedding.astype(float).tolist()
        return EmbedResponse(embedding=vector, dim=len(vector), took_ms=took)

    return app


def serve(model: ServingModel, config: ServeConfig) -> None:
    """Run the service with uvicorn (blocking)."""
    import uvicorn

    if not is_loopback(config.host) and config.api_key is None:
        logger.warning(
            "binding %s, which is reachable from other machines, WITHOUT an API key: anyone who "
            "can reach this port can query the model; pass --api-key KEY or bind 127.0.0.1",
            config.host,
        )
    uvicorn.run(create_app(model, config), host=config.host, port=config.port, log_level="info")
