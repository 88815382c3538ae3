"""The micro-batcher: concurrent callers share encoder calls and each gets its own result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx
import numpy as np
import pytest

from karma.serve.app import ServeConfig, create_app
from karma.serve.artifact import ServingModel
from karma.serve.batcher import MicroBatcher


def test_concurrent_callers_get_their_own_results_in_few_batches() -> None:
    sizes: list[int] = []

    def square_all(requests: Sequence[int]) -> list[int]:
        sizes.append(len(requests))
        time.sleep(0.01)  # an encoder call takes a while; meanwhile more requests queue up
        return [r * r for r in requests]

    async def scenario() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(square_all, max_batch=8, max_wait_ms=5)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(40)))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert results == [i * i for i in range(40)]
    assert sum(sizes) == 40
    assert max(sizes) == 8  # batches fill up to max_batch and never beyond
    assert len(sizes) < 40  # really batched


def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def explode(requests: Sequence[int]) -> list[int]:
        raise RuntimeError("encoder down")

    async def scenario() -> list[object]:
        batcher: MicroBatcher[int, int] = MicroBatcher(explode, max_batch=4, max_wait_ms=1)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) and "encoder down" in str(o) for o in outcomes)


def test_submit_before_start_is_an_error() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda r: list(r))
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(batcher.submit(1))


def test_concurrent_http_requests_are_batched_and_answered_correctly(
    serving_model: ServingModel,
) -> None:
    app = create_app(serving_model, ServeConfig(max_batch=16, max_wait_ms=20))
    histories = [[i, (i * 7) % 60, (i * 13) % 60] for i in range(24)]
    queries = [None if i % 3 else f"genre {i}" for i in range(24)]

    async def scenario() -> list[httpx.Response]:
        await app.state.batcher.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                calls = [
                    client.post("/v1/embed", json={"history": [f"m{j}" for j in h], "query": q})
                    for h, q in zip(histories, queries)
                ]
                return await asyncio.gather(*calls)
        finally:
            await app.state.batcher.stop()

    responses = asyncio.run(scenario())
    got = np.array([r.json()["embedding"] for r in responses])
    expected = serving_model.encode(histories, queries)  # one offline batch
    np.testing.assert_allclose(got, expected, atol=1e-5)
    stats = app.state.batcher.stats
    assert stats.requests == 24 and stats.largest_batch > 1
