"""The HTTP contract: request and response models, the one error body, the declared status codes.

Every limit the service enforces is a constraint of these models, so the OpenAPI document states it
(`history` length, `k` range, query and item-reference lengths) and FastAPI enforces it. Request
models are built per app (`request_models`) because the limits come from `ServeConfig`.

`k` and integer item ids are JSON Schema integers; JSON Schema counts 321.0 as an integer, so the
service accepts an integral float (321.0 -> 321) and rejects 321.5, strings and booleans.

Every 4xx/5xx body is an `ErrorResponse`: `error` (a stable code), `message` (one line), and, by
code, `unknown` (unknown_items), `candidates` (ambiguous_items) or `errors` (invalid_request).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

MAX_QUERY_CHARS = 1000
MAX_REF_CHARS = 500

ErrorCode = Literal[
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "unknown_items",
    "ambiguous_items",
    "invalid_request",
    "internal_error",
]


def _integral(value: Any) -> Any:
    """321.0 -> 321 (JSON Schema's `integer` includes integral floats); anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


IntegralInt = Annotated[int, BeforeValidator(_integral)]
ItemRef = Annotated[str, StringConstraints(max_length=MAX_REF_CHARS)] | IntegralInt


# --- errors --------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One problem with the request (FastAPI / pydantic validation)."""

    loc: list[str | int] = Field(description="Where: e.g. ['body', 'k'].")
    msg: str
    type: str


class Candidate(BaseModel):
    """One item an ambiguous title may mean."""

    item_id: str
    title: str
    year: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorCode = Field(description="Stable machine-readable code.")
    message: str = Field(description="One line for a human.")
    unknown: list[str] | None = Field(
        default=None, description="unknown_items: the references that match no item."
    )
    candidates: dict[str, list[Candidate]] | None = Field(
        default=None,
        description="ambiguous_items: each ambiguous reference -> the items it may mean.",
    )
    errors: list[FieldError] | None = Field(
        default=None, description="invalid_request: every validation problem."
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of an operation for the given error statuses."""
    descriptions = {
        400: "The body is not readable as JSON (e.g. not UTF-8).",
        401: "Missing or wrong X-API-Key header (only when the service has an API key).",
        404: "A history entry matches no item id or title (`unknown` lists them).",
        409: "A history title is shared by several items (`candidates` lists their ids and years); "
        "pass an item id, or add the year: 'Title (1995)'.",
        422: "The request breaks the schema (`errors` lists every problem).",
        500: "Internal error (a bug; logged by the service).",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}


# --- requests ------------------------------------------------------------------------------


def request_models(
    max_history: int, max_k: int, example_history: list[str] | None = None
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(EmbedRequest, SearchRequest) with the service's limits as schema constraints."""
    history_field = Field(
        min_length=1,
        max_length=max_history,
        description="Items the user interacted with, oldest first: item ids, or titles in any case, "
        "optionally with the year ('Toy Story (1995)').",
    )

    def examples(**extra: Any) -> dict[str, Any] | None:
        return {"examples": [{"history": example_history, **extra}]} if example_history else None

    class EmbedRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=examples())

        history: list[ItemRef] = history_field
        query: str | None = Field(
            default=None, max_length=MAX_QUERY_CHARS, description="Optional search query."
        )

    class SearchRequest(EmbedRequest):
        model_config = ConfigDict(
            strict=True,
            extra="forbid",
            json_schema_extra=examples(k=5),
        )

        k: IntegralInt = Field(default=10, ge=1, le=max_k, description="How many items to return.")
        exclude_seen: bool = Field(default=True, description="Leave the history's items out.")

    return EmbedRequest, SearchRequest


# --- responses -----------------------------------------------------------------------------


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
