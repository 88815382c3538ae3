"""The query-only floor of personalized search: rankings worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from karma.baselines.query_floor import QueryFloorRetriever
from karma.data.dataset import Examples, PreparedDataset
from karma.eval.evaluate import evaluate
from karma.eval.ranking import top_k_items
from karma.runs import load_retriever, recipe_for
from karma.testing.datasets import write_leave_one_out

CATEGORIES = [["Action"], ["Action", "Sci-Fi"], ["Drama"], ["Sci-Fi"], ["Comedy"]]
COUNTS = np.array([1, 0, 9, 5, 3])


def _examples(queries: list[str | None]) -> Examples:
    empty = [np.array([], dtype=np.int64)] * len(queries)
    return Examples([f"u{i}" for i in range(len(queries))], empty, np.zeros(len(queries)), queries)


def test_floor_ranks_by_matched_query_words_then_popularity() -> None:
    floor = QueryFloorRetriever(CATEGORIES, COUNTS)
    users = floor.user_vectors(_examples(["action sci-fi", "sci-fi", "western", None]))
    top, scores = top_k_items(users, floor.item_vectors(), 5)
    # "action sci-fi": item 1 matches both words; items 0 and 3 one each, 3 is the more clicked.
    assert top[0].tolist()[:3] == [1, 3, 0]
    assert scores[0, 0] == pytest.approx(2.0)  # the popularity term is 0 for an unclicked item
    assert top[1].tolist()[:2] == [3, 1]  # "sci-fi": both match, item 3 clicked more
    # No known query word (or no query): popularity alone, which never outweighs one match.
    assert top[2].tolist() == top[3].tolist() == [2, 3, 4, 0, 1]
    assert floor.item_vectors()[:, -1].max() < 1.0


def test_floor_round_trips_through_its_recipe(tmp_path: Path) -> None:
    sequences = [[0, 1, 2, 3, 4], [0, 1, 5, 6], [2, 7, 8]]
    queries = [[None, None, None, None, "comedy"], [None, None, None, "drama"], [None] * 3]
    root = write_leave_one_out(tmp_path / "ds", sequences, 10, queries=queries)
    items = pd.read_parquet(root / "items.parquet")
    items["categories"] = [["Comedy"] if i in (4, 9) else ["Drama"] for i in range(10)]
    items.to_parquet(root / "items.parquet", index=False)
    recipe = recipe_for("query-floor")
    recipe.train(recipe.config_type(), tmp_path / "run", root)
    floor = load_retriever(tmp_path / "run")
    assert isinstance(floor, QueryFloorRetriever)
    assert floor.train_counts.tolist()[:4] == [2, 2, 2, 0]
    dataset = PreparedDataset(root)
    result = evaluate(floor, dataset, bootstrap=0)
    # User 0 asks "comedy" (history 0-3 masked): the comedies 4 and 9 lead, both unclicked, so
    # the target 4 ties with 9 (HR@1 = 1/2, the expected value under random tie-breaking); 2 of
    # the 6 items listed in its top 10 are comedies. User 1 asks "drama" (0, 1, 5 masked): the
    # dramas 2, 3, 6, 7, 8 lead (5 of the 7 listed), item 2 (clicked) first, so the target 6 is
    # not. User 2 has no query: popularity alone, its target 8 behind items 0 and 1.
    assert result.metrics["hr@1"] == pytest.approx(0.5 / 3)
    assert result.metrics["query_adherence@10"] == pytest.approx((0.2 + 0.5) / 2)
    assert "| query_adherence@10 | 0.3500 |" in result.to_markdown()  # in `karma evaluate`'s table
