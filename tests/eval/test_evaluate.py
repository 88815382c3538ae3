"""The evaluation harness on tiny synthetic datasets written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.baselines.popularity import PopularityRetriever
from karma.cli import main
from karma.data.dataset import Examples, PreparedDataset
from karma.errors import KarmaError
from karma.eval.evaluate import (
    average_ranks,
    bootstrap_ci,
    evaluate,
    long_tail_items,
    sample_negatives,
    sampled_auc,
)
from karma.runs import load_retriever
from karma.runs.layout import start_run
from karma.testing.datasets import write_leave_one_out


class OracleRetriever:
    """Knows each example's target: one-hot users over one-hot items (HR@1 = 1)."""

    name = "oracle"

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def item_vectors(self) -> np.ndarray:
        return np.eye(self.num_items, dtype=np.float32)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        return np.eye(self.num_items, dtype=np.float32)[examples.targets]


class ConstantRetriever:
    name = "constant"

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def item_vectors(self) -> np.ndarray:
        return np.ones((self.num_items, 1), dtype=np.float32)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        return np.ones((len(examples), 1), dtype=np.float32)


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    rng = np.random.default_rng(0)
    num_items = 50
    # Item 49 is never clicked in training: some users' test target is cold.
    sequences = [list(rng.integers(0, 40, size=rng.integers(3, 12))) for _ in range(60)]
    for u in range(0, 60, 6):
        sequences[u][-1] = 49
    return PreparedDataset(write_leave_one_out(tmp_path / "ds", sequences, num_items))


def test_targets_never_in_training_part(dataset: PreparedDataset) -> None:
    for split in ("valid", "test"):
        examples = dataset.examples(split)
        by_user = {s.user_id: s for s in dataset.sequences}
        for user, history, target in zip(examples.user_ids, examples.histories, examples.targets):
            seq = by_user[user]
            position = int(np.flatnonzero(seq.splits == split)[0])
            assert seq.items[position] == target
            assert len(history) == position  # history stops strictly before the target
            assert set(seq.splits[:position]) <= (
                {"train"} if split == "valid" else {"train", "valid"}
            )


def test_oracle_and_constant(dataset: PreparedDataset) -> None:
    oracle = evaluate(OracleRetriever(dataset.num_items), dataset, bootstrap=50)
    assert oracle.metrics["hr@1"] == 1.0
    assert oracle.metrics["mrr"] == 1.0
    assert oracle.metrics["auc"] == 1.0
    const = evaluate(ConstantRetriever(dataset.num_items), dataset, bootstrap=0, segments=False)
    # Ties are random: with history masked each user has N - |unique history \ target| candidates.
    examples = dataset.examples("test")
    candidates = np.array(
        [
            dataset.num_items - len(set(h.tolist()) - {t})
            for h, t in zip(examples.histories, examples.targets)
        ]
    )
    assert const.metrics["hr@10"] == pytest.approx(np.mean(np.minimum(10 / candidates, 1)))
    assert const.metrics["auc"] == pytest.approx(0.5)
    assert const.metrics["gauc"] == pytest.approx(0.5)


def test_segments_and_ci(dataset: PreparedDataset) -> None:
    result = evaluate(PopularityRetriever.from_dataset(dataset), dataset, bootstrap=200)
    assert result.segments["cold"]["users"] == 10
    # A cold target ties with the other unclicked items at the bottom of the popularity ranking.
    assert result.segments["cold"]["hr@10"] == 0.0
    for name in ("hr@10", "ndcg@10", "mrr"):
        lo, hi = result.ci[name]
        assert lo <= result.metrics[name] <= hi
        assert lo < hi
    table = result.to_markdown()
    assert "| hr@10 |" in table and "| cold | 10 |" in table
    short = sum(len(h) <= 5 for h in dataset.examples("test").histories)
    assert result.segments["short_history"]["users"] == short > 0
    data = json.loads(result.to_json(with_ranks=True))
    assert len(data["per_user"]["greater"]) == result.num_users
    # An empty segment has NaN metrics, written as JSON null (strict JSON).
    empty = evaluate(
        PopularityRetriever.from_dataset(dataset), dataset, bootstrap=0, short_history=0
    )
    assert json.loads(empty.to_json())["segments"]["short_history"]["hr@10"] is None
    assert "| short_history | 0 | – | – | – |" in empty.to_markdown()  # not "nan"


def test_keep_history_changes_ranks(dataset: PreparedDataset) -> None:
    pop = PopularityRetriever.from_dataset(dataset)
    masked = evaluate(pop, dataset, bootstrap=0)
    kept = evaluate(pop, dataset, bootstrap=0, mask_history=False)
    assert (kept.ranks.greater >= masked.ranks.greater).all()
    assert (kept.ranks.greater > masked.ranks.greater).any()


def test_bootstrap_ci_of_constant_is_a_point() -> None:
    ci = bootstrap_ci({"x": np.full(30, 0.25)}, resamples=100, seed=1)
    assert ci["x"] == pytest.approx((0.25, 0.25))


def test_auc_hand_example() -> None:
    users = np.array([[1.0], [1.0]])
    items = np.array([[0.0], [1.0], [2.0], [3.0]])
    targets = np.array([2, 0])
    negatives = np.array([[0, 1, 2, 3], [1, 2, -1, -1]])
    # User 0: target score 2 vs negatives 0, 1, 2, 3 -> (1 + 1 + 0.5 + 0) / 4 = 0.625.
    # User 1: target score 0 vs 1, 2 -> 0.
    pooled, per_user = sampled_auc(users, items, targets, negatives)
    np.testing.assert_allclose(per_user, [0.625, 0.0])
    # Pooled: positives {2, 0} vs negatives {0, 1, 2, 3, 1, 2}: pos 2 beats 0,1,1 and ties 2,2
    # -> 4; pos 0 ties 0 -> 0.5; total 4.5 / 12.
    assert pooled == pytest.approx(4.5 / 12)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([10, 20, 20, 5], [2, 3.5, 3.5, 1]),  # 5 -> 1, 10 -> 2, the two 20s share (3 + 4) / 2
        ([3.0, 1.0, 2.0], [3, 1, 2]),  # no ties: plain 1-based ranks
        ([7, 7, 7], [2, 2, 2]),  # one group: (1 + 2 + 3) / 3
        ([1, 2, 2, 2, 3, 1], [1.5, 4, 4, 4, 6, 1.5]),  # 1s share (1+2)/2, 2s share (3+4+5)/3
        ([-0.5, 0.25, -0.5, 0.25, 9.0], [1.5, 3.5, 1.5, 3.5, 5]),
        ([42], [1]),
        ([], []),
    ],
)
def test_average_ranks_hand_values(values: list[float], expected: list[float]) -> None:
    np.testing.assert_array_equal(average_ranks(np.array(values)), np.array(expected, float))


def test_average_ranks_nan_propagates() -> None:
    assert np.isnan(average_ranks(np.array([1.0, np.nan, 2.0]))).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=30))
def test_average_ranks_matches_the_definition(values: list[int]) -> None:
    """rank(v) = #(values < v) + (#(values == v) + 1) / 2, counted by brute force."""
    x = np.array(values, dtype=np.float64)
    brute = [(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x]
    np.testing.assert_array_equal(average_ranks(x), np.array(brute, dtype=np.float64))


def test_negatives_avoid_target_and_history() -> None:
    examples = Examples(
        ["a", "b"], [np.array([0, 1, 2]), np.array([5])], np.array([3, 4]), [None, None]
    )
    negatives = sample_negatives(examples, num_items=8, count=200, seed=0, mask_history=True)
    assert not np.isin(negatives[0], [0, 1, 2, 3]).any()
    assert not np.isin(negatives[1], [4, 5]).any()
    np.testing.assert_array_equal(
        negatives, sample_negatives(examples, num_items=8, count=200, seed=0, mask_history=True)
    )


def test_long_tail_definition() -> None:
    counts = np.array([10, 0, 5, 5, 1])
    tail = long_tail_items(counts, 0.6)  # head = the 2 most clicked: item 0, then item 2 (index)
    assert tail.tolist() == [False, True, False, True, True]


def test_cli_popularity_roundtrip(dataset: PreparedDataset, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["baseline", "popularity", "--data", str(dataset.root), "--out", str(run_dir)]) == 0
    assert isinstance(load_retriever(run_dir), PopularityRetriever)
    assert main(["evaluate", str(run_dir), "--bootstrap", "20"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    direct = evaluate(PopularityRetriever.from_dataset(dataset), dataset, bootstrap=0)
    assert metrics["metrics"]["hr@10"] == pytest.approx(direct.metrics["hr@10"])
    assert "hr@10" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_karma_kind_without_a_training_config_is_a_clear_error(tmp_path: Path) -> None:
    start_run(tmp_path, "karma", tmp_path)
    with pytest.raises(KarmaError, match=r"run_config\.yaml"):
        load_retriever(tmp_path)
