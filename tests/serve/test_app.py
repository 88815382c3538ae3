"""The HTTP service: parity with offline ranking, validation, API key, batching."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from karma.serve.app import ServeConfig, create_app, is_loopback
from karma.serve.artifact import ServingModel


@pytest.fixture
def client(serving_model: ServingModel) -> Iterator[TestClient]:
    with TestClient(create_app(serving_model, ServeConfig(max_history=5, max_k=60))) as c:
        yield c


def offline_top_k(model: ServingModel, history: list[int], query: str | None, k: int) -> list[str]:
    """Dot product against every item, history masked: the evaluation harness's ranking."""
    user = model.encode([history], [query])[0]  # (e,)
    scores = model.item_embeddings @ user  # (N,)
    scores[history] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [str(model.items["item_id"].iloc[i]) for i in order]


@pytest.mark.parametrize(
    ("history", "query"), [([0, 1, 2], None), ([10, 3], "space comedy"), ([59], "crime")]
)
def test_served_top_k_equals_offline_top_k(
    client: TestClient, serving_model: ServingModel, history: list[int], query: str | None
) -> None:
    ids = [f"m{i}" for i in history]
    response = client.post("/v1/search", json={"history": ids, "query": query, "k": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["item_id"] for r in body["items"]] == offline_top_k(serving_model, history, query, 7)
    assert [r["rank"] for r in body["items"]] == list(range(1, 8))
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert not set(ids) & {r["item_id"] for r in body["items"]}


def test_titles_resolve_like_ids_and_seen_items_can_be_kept(client: TestClient) -> None:
    by_id = client.post("/v1/search", json={"history": ["m4"], "k": 60, "exclude_seen": False})
    by_title = client.post(
        "/v1/search", json={"history": ["Movie 4 part 4"], "k": 60, "exclude_seen": False}
    )
    assert by_id.json()["items"] == by_title.json()["items"]
    assert "m4" in {r["item_id"] for r in by_id.json()["items"]}  # 60 = whole catalog


def test_embed_returns_the_unit_interest_embedding(
    client: TestClient, serving_model: ServingModel
) -> None:
    body = client.post("/v1/embed", json={"history": ["m1", "m2"], "query": "drama"}).json()
    expected = serving_model.encode([[1, 2]], ["drama"])[0]
    assert body["dim"] == len(expected)
    np.testing.assert_allclose(body["embedding"], expected, atol=1e-6)


def test_healthz_and_docs(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["num_items"] == 60 and health["index"] == "flat"
    assert client.get("/docs").status_code == 200
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"history": ["m1", "nope", "Not A Title"]}, 404, "nope"),
        ({"history": []}, 422, "history"),
        ({"history": ["m1"] * 6}, 422, "at most 5"),
        ({"history": ["m1"], "k": 7.5}, 422, "k"),
        ({"history": ["m1"], "k": True}, 422, "k"),
        ({"history": ["m1"], "k": 0}, 422, "k"),
        ({"history": ["m1"], "k": 61}, 422, "less than or equal to 60"),
        ({"history": ["m1"], "k": "10"}, 422, "k"),
        ({"history": "m1"}, 422, "history"),
        ({"history": ["m1"], "exclude_seen": "yes"}, 422, "exclude_seen"),
        ({"history": ["m1"], "query": 5}, 422, "query"),
        ({"history": ["m1"], "kk": 3}, 422, "kk"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    client: TestClient, body: dict, status: int, needle: str
) -> None:
    response = client.post("/v1/search", json=body)
    assert response.status_code == status
    assert needle in response.json()["message"]


def test_unknown_items_are_all_named(client: TestClient) -> None:
    body = client.post("/v1/embed", json={"history": ["m1", "x", "y"]}).json()
    assert body["error"] == "unknown_items" and body["unknown"] == ["x", "y"]


def test_integral_float_k_is_an_integer(client: TestClient) -> None:
    # JSON Schema's `integer` includes 321.0, so the service must accept it (and 5.0 as an id).
    as_float = client.post("/v1/search", json={"history": ["m1"], "k": 7.0})
    as_int = client.post("/v1/search", json={"history": ["m1"], "k": 7})
    assert as_float.status_code == 200
    assert as_float.json()["items"] == as_int.json()["items"]


def test_every_validation_problem_is_listed(client: TestClient) -> None:
    body = client.post("/v1/search", json={"history": [], "k": 0, "kk": 1}).json()
    assert body["error"] == "invalid_request"
    assert {tuple(e["loc"]) for e in body["errors"]} == {
        ("body", "history"),
        ("body", "k"),
        ("body", "kk"),
    }
    assert "(and 2 more problems)" in body["message"]


def test_api_key_is_required_when_configured(serving_model: ServingModel) -> None:
    app = create_app(serving_model, ServeConfig(api_key="s3cret"))
    with TestClient(app) as c:
        body = {"history": ["m1"]}
        assert c.post("/v1/search", json=body).status_code == 401
        assert c.post("/v1/search", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/v1/embed", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/v1/search", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        body = c.post("/v1/search", json=body).json()
        assert body == {"error": "unauthorized", "message": "missing or wrong X-API-Key header"}


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_serve_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=0)
    with pytest.raises(ValueError, match="max_batch"):
        ServeConfig(max_batch=0)


@pytest.mark.parametrize(
    ("host", "key", "warns"),
    [("0.0.0.0", None, True), ("0.0.0.0", "k", False), ("127.0.0.1", None, False)],
)
def test_serve_warns_when_exposed_without_a_key(
    serving_model: ServingModel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    host: str,
    key: str | None,
    warns: bool,
) -> None:
    import uvicorn

    from karma.serve.app import serve

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with caplog.at_level("WARNING"):
        serve(serving_model, ServeConfig(host=host, api_key=key))
    assert calls == [{"host": host, "port": 8000, "log_level": "info"}]
    assert ("WITHOUT an API key" in caplog.text) == warns
