"""Query adherence: the share of a top-K list in the queried categories, checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from karma.baselines.popularity import PopularityRetriever
from karma.data.dataset import PreparedDataset
from karma.eval.adherence import adherence_per_user, query_adherence, query_words
from karma.eval.evaluate import evaluate
from karma.testing.datasets import write_leave_one_out

CATEGORIES = [["Action", "Sci-Fi"], ["Drama"], ["Comedy", "Romance"], ["Action"], []]


def test_adherence_by_hand() -> None:
    top = np.array(
        [
            [0, 1, 3, 4],  # "action": items 0 and 3 -> 2/4
            [0, 1, 2, 3],  # "sci-fi drama": items 0 (Sci-Fi) and 1 (Drama) -> 2/4
            [2, 2, -1, -1],  # "romance": item 2 twice, two padding slots (misses) -> 2/4
            [4, 3, 2, 1],  # "western": no item has it -> 0
            [0, 1, 2, 3],  # no query: not counted
        ]
    )
    queries = ["action", "sci-fi drama", "Romance", "western", None]
    per_user = adherence_per_user(top, queries, CATEGORIES)
    assert per_user[:4].tolist() == [0.5, 0.5, 0.5, 0.0]
    assert np.isnan(per_user[4])
    assert query_adherence(top, queries, CATEGORIES) == pytest.approx(1.5 / 4)
    assert np.isnan(query_adherence(top[4:], [None], CATEGORIES))


def test_query_words_match_the_synthetic_queries_words() -> None:
    # The synthetic queries are category words (karma.data.queries): split the same way.
    assert query_words("action sci-fi children's") == {"action", "sci-fi", "children's"}
    assert query_words("Film-Noir, the") == {"film-noir"}  # stop words out, lower-cased


def test_adherence_rejects_a_top_list_of_another_length() -> None:
    with pytest.raises(ValueError, match="top must be"):
        adherence_per_user(np.zeros((2, 3), dtype=np.int64), ["action"], CATEGORIES)


def test_evaluate_reports_adherence_of_a_query_blind_ranking(tmp_path: Path) -> None:
    # Popularity: item 0 (clicked 3 times in training), then 1 (2), then 2 (1); history masked.
    sequences = [[0, 1, 2, 3, 4], [0, 1, 5, 6], [0, 7, 8]]
    queries = [[None, None, None, None, "comedy"], [None] * 4, [None, None, "drama"]]
    root = write_leave_one_out(tmp_path / "ds", sequences, 10, queries=queries)
    items = pd.read_parquet(root / "items.parquet")
    items["categories"] = [["Comedy"] if i in (5, 6) else ["Drama"] for i in range(10)]
    items.to_parquet(root / "items.parquet", index=False)
    dataset = PreparedDataset(root)
    result = evaluate(PopularityRetriever.from_dataset(dataset), dataset, bootstrap=0)
    # User 0 (history 0-3 masked; query "comedy"): top 10 of the 6 items left = 4..9, whose
    # comedies are 5 and 6 -> 2 of 10 listed (4 padding slots are misses). User 1 has no test
    # query. User 2 (history 0, 7 masked; "drama"): 8 items left, every one a drama but 5 and 6
    # -> 6 of 10. Mean over the two users with a query: (0.2 + 0.6) / 2.
    assert result.metrics["query_adherence@10"] == pytest.approx(0.4)
