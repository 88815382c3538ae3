"""The OpenAPI document is the exact contract: every answer's status is declared, every body matches.

In process (TestClient) for the fast suite; `test_schemathesis_finds_no_contract_violation` (slow)
runs schemathesis with all checks against `karma serve` on loopback.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from karma.serve.app import ServeConfig, create_app
from karma.serve.artifact import ServingModel, load_artifact

KEY = "s3cret"
SRC = Path(__file__).resolve().parents[2] / "src"


def validate(openapi: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """The status is declared for the operation and the JSON body matches its declared schema."""
    declared = openapi["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, (path, method, response.status_code)
    content = declared[str(response.status_code)]["content"]["application/json"]
    assert response.headers["content-type"].startswith("application/json")
    schema = {**content["schema"], "components": openapi["components"]}
    jsonschema.Draft202012Validator(schema).validate(response.json())


def requests_by_status(path: str, with_key: bool) -> dict[int, dict[str, Any]]:
    """One request per status code the /v1 operations can answer (movie catalog)."""
    headers = {"X-API-Key": KEY} if with_key else {}
    ok = {"history": ["1", "sabrina (1954)"], **({"k": 3} if path == "/v1/search" else {})}
    out: dict[int, dict[str, Any]] = {
        200: {"json": ok, "headers": headers},
        400: {
            "content": b"\xff\xfe{",
            "headers": {**headers, "content-type": "application/json"},
        },
        404: {"json": {"history": ["1", "ghost"]}, "headers": headers},
        409: {"json": {"history": ["Chasing Amy"]}, "headers": headers},
        422: {"json": {"history": ["1"] * 6, "k": 99, "x": 1}, "headers": headers},
        500: {"json": {"history": ["1"]}, "headers": headers},
    }
    if with_key:
        out[401] = {"json": {"history": ["1"]}, "headers": {"X-API-Key": "wrong"}}
    return out


@pytest.fixture
def movie_model(movie_artifact: Path) -> ServingModel:
    return load_artifact(movie_artifact)


@pytest.mark.parametrize("with_key", [False, True])
@pytest.mark.parametrize("path", ["/v1/search", "/v1/embed"])
def test_every_declared_status_is_answered_with_the_declared_body(
    movie_model: ServingModel, path: str, with_key: bool
) -> None:
    config = ServeConfig(api_key=KEY if with_key else None, max_history=5, max_k=8)
    app = create_app(movie_model, config)
    with TestClient(app, raise_server_exceptions=False) as client:
        openapi = client.get("/openapi.json").json()
        declared = {int(s) for s in openapi["paths"][path]["post"]["responses"]}
        seen = set()
        for status, request in requests_by_status(path, with_key).items():
            if status == 500:  # a failing encoder: the batch's exception reaches the caller
                original = movie_model.encoder.interest_embeddings
                movie_model.encoder.interest_embeddings = _raise  # type: ignore[method-assign]
            try:
                response = client.post(path, **request)
            finally:
                if status == 500:
                    movie_model.encoder.interest_embeddings = original  # type: ignore[method-assign]
            assert response.status_code == status, response.text
            validate(openapi, path, "post", response)
            seen.add(status)
        assert seen == declared  # nothing declared that the service never answers, and vice versa
        health = client.get("/healthz")
        validate(openapi, "/healthz", "get", health)


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("encoder failed")


def test_the_schema_states_every_limit(movie_model: ServingModel) -> None:
    app = create_app(movie_model, ServeConfig(max_history=7, max_k=30))
    schemas = TestClient(app).get("/openapi.json").json()["components"]["schemas"]
    search = schemas["SearchRequest"]
    assert search["additionalProperties"] is False
    assert search["properties"]["history"]["minItems"] == 1
    assert search["properties"]["history"]["maxItems"] == 7
    assert search["properties"]["k"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 30,
        "default": 10,
        "title": "K",
        "description": "How many items to return.",
    }
    refs = search["properties"]["history"]["items"]["anyOf"]
    assert {"type": "string", "maxLength": 500} in refs and {"type": "integer"} in refs
    assert {"type": "string", "maxLength": 1000} in search["properties"]["query"]["anyOf"]
    assert schemas["EmbedRequest"]["properties"]["history"]["maxItems"] == 7
    # The schema's example is a request the service answers with 200.
    example = search["examples"][0]
    with TestClient(app) as client:
        assert client.post("/v1/search", json=example).status_code == 200


def test_the_key_scheme_is_declared_only_when_a_key_is_set(movie_model: ServingModel) -> None:
    plain = TestClient(create_app(movie_model, ServeConfig())).get("/openapi.json").json()
    keyed = TestClient(create_app(movie_model, ServeConfig(api_key=KEY))).get("/openapi.json")
    keyed_doc = keyed.json()
    assert "securitySchemes" not in plain.get("components", {})
    assert "security" not in plain["paths"]["/v1/search"]["post"]
    assert keyed_doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert keyed_doc["paths"]["/v1/search"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in keyed_doc["paths"]["/healthz"]["get"]


def test_unknown_routes_and_methods_answer_the_error_body(movie_model: ServingModel) -> None:
    with TestClient(create_app(movie_model)) as client:
        missing = client.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        wrong = client.put("/v1/search", json={"history": ["1"]})
        assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
        assert wrong.headers["allow"] == "POST"


def test_ambiguous_titles_answer_409_with_the_candidates(movie_model: ServingModel) -> None:
    with TestClient(create_app(movie_model)) as client:
        body = client.post("/v1/search", json={"history": ["sabrina"]}).json()
    assert body["error"] == "ambiguous_items"
    assert body["candidates"] == {
        "sabrina": [
            {"item_id": "274", "title": "Sabrina", "year": "1995"},
            {"item_id": "486", "title": "Sabrina", "year": "1954"},
        ]
    }
    assert "pass one of these item ids" in body["message"]


# --- schemathesis against the live service -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_service(movie_artifact: Path) -> Iterator[str]:
    """`karma serve` on 127.0.0.1 with the key from KARMA_API_KEY; yields the base URL."""
    port = free_port()
    env = {**os.environ, "KARMA_API_KEY": KEY, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    # The artifact is of the test-only "toy" kind: register it in the server process, then run
    # exactly what `karma serve` runs.
    launch = (
        "import sys; from karma.testing.toy_encoder import register_toy_encoder; "
        "register_toy_encoder(); from karma.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", launch, "serve", str(movie_artifact), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "karma serve did not start"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_schemathesis_finds_no_contract_violation(live_service: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{live_service}/openapi.json"]
    command += ["--checks", "all"]
    command += ["-H", f"X-API-Key: {KEY}", "--max-examples", "100", "--workers", "1"]
    command += ["--seed", "0"]
    # cwd: schemathesis keeps its own state in ./.schemathesis
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    summary = result.stdout[-3000:]
    print(summary)
    assert result.returncode == 0, summary
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert cases is not None, summary
    assert int(cases[1]) >= 100 and int(cases[1]) == int(cases[2])
    assert "No issues found" in result.stdout
