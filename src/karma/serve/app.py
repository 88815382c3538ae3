"""The HTTP service: FastAPI app over a `ServingModel`, with micro-batched encoding.

Endpoints (OpenAPI document at /openapi.json, docs at /docs):
- `POST /v1/search` {history, query?, k=10, exclude_seen=true} -> ranked items (id, title, score);
- `POST /v1/embed` {history, query?} -> the interest embedding e_u;
- `GET /healthz` -> status, catalog size, index kind, batching counters.

The contract (`karma.serve.api_schema`) is exact: every limit is a schema constraint, every status
the service answers is declared, and every error body is an `ErrorResponse`. History entries are
item ids or titles (any case, optionally "Title (year)"; `karma.serve.lookup`). Unknown ones -> 404
naming them; a title several items share -> 409 listing their ids and years; anything the schema
rejects -> 422 listing every problem. With an API key configured (`--api-key` or `KARMA_API_KEY`),
/v1/* requires header `X-API-Key` (401 otherwise) and the OpenAPI document declares that scheme.
"""

import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from karma import __version__
from karma.serve.api_schema import (
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    ScoredItem,
    SearchResponse,
    error_responses,
    request_models,
)
from karma.serve.artifact import Recommendations, ServingModel
from karma.serve.batcher import MicroBatcher
from karma.serve.config import ServeConfig
from karma.serve.lookup import AmbiguousItemsError, UnknownItemsError

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error answer: status code plus `ErrorResponse` body."""

    def __init__(self, status: int, body: ErrorResponse, headers: dict[str, str] | None = None):
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers


def error_json(
    status: int, body: ErrorResponse, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


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
    install_error_handlers(app)
    example = model.lookup.ids[: min(2, model.num_items, config.max_history)]
    EmbedRequest, SearchRequest = request_models(config.max_history, config.max_k, example)

    # The key scheme (and its 401) is part of the contract only when a key is configured.
    guarded: list[Any] = []
    statuses = [400, 404, 409, 422]
    if config.api_key is not None:
        expected = config.api_key.encode()
        key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

        def check_key(key: str | None = Security(key_header)) -> None:
            if key is None or not secrets.compare_digest(key.encode(), expected):
                raise ServiceError(
                    401,
                    ErrorResponse(
                        error="unauthorized", message="missing or wrong X-API-Key header"
                    ),
                )

        guarded = [Security(check_key)]
        statuses = [401, *statuses]

    def resolve(history: Sequence[str | int]) -> list[int]:
        try:
            return model.resolve_items(history)
        except UnknownItemsError as exc:
            raise ServiceError(
                404,
                ErrorResponse(error="unknown_items", message=str(exc), unknown=exc.unknown),
            ) from None
        except AmbiguousItemsError as exc:
            candidates = {ref: [c.to_dict() for c in cs] for ref, cs in exc.candidates.items()}
            raise ServiceError(
                409,
                ErrorResponse(error="ambiguous_items", message=str(exc), candidates=candidates),
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

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        dependencies=guarded,
        responses=error_responses(*statuses, 500),
    )
    async def search(request: SearchRequest) -> SearchResponse:  # type: ignore[valid-type]
        start = time.perf_counter()
        job = EncodeJob(resolve(request.history), request.query, request.k, request.exclude_seen)
        recs = (await batcher.submit(job)).recommendations
        assert recs is not None
        described = model.describe(recs.item_indices.tolist())
        items = [
            ScoredItem(rank=r + 1, score=float(s), **d)
            for r, (s, d) in enumerate(zip(recs.scores.tolist(), described))
        ]
        took = (time.perf_counter() - start) * 1000
        return SearchResponse(items=items, index=model.index_config.kind, took_ms=took)

    @app.post(
        "/v1/embed",
        response_model=EmbedResponse,
        dependencies=guarded,
        responses=error_responses(*statuses, 500),
    )
    async def embed(request: EmbedRequest) -> EmbedResponse:  # type: ignore[valid-type]
        start = time.perf_counter()
        result = await batcher.submit(EncodeJob(resolve(request.history), request.query))
        took = (time.perf_counter() - start) * 1000
        vector = result.embedding.astype(float).tolist()
        return EmbedResponse(embedding=vector, dim=len(vector), took_ms=took)

    return app


def install_error_handlers(app: FastAPI) -> None:
    """Every error answer, FastAPI's and Starlette's own included, as an `ErrorResponse`."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_json(exc.status, exc.body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], **_msg(e)}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        message = f"{where}: {first['msg']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problems)"
        body = ErrorResponse(error="invalid_request", message=message, errors=errors)
        return error_json(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            422: "invalid_request",
        }
        code = codes.get(
            exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request"
        )
        body = ErrorResponse(error=code, message=str(exc.detail))  # type: ignore[arg-type]
        return error_json(exc.status_code, body, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        body = ErrorResponse(
            error="internal_error", message=f"internal error: {type(exc).__name__}"
        )
        return error_json(500, body)


def _msg(error: dict[str, Any]) -> dict[str, str]:
    return {"msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def serve(model: ServingModel, config: ServeConfig) -> None:
    """Run the service with uvicorn (blocking)."""
    import uvicorn

    if not is_loopback(config.host) and config.api_key is None:
        logger.warning(
            "binding %s, which is reachable from other machines, WITHOUT an API key: anyone who "
            "can reach this port can query the model; set KARMA_API_KEY (or --api-key) or bind 127.0.0.1",
            config.host,
        )
    uvicorn.run(create_app(model, config), host=config.host, port=config.port, log_level="info")
