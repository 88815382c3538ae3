"""KnowledgeConfig validation, the builder, weights per stage, and 'weight 0 = never called'."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from knowledge_fixtures import HIDDEN, CallCounter, tiny_llama

from karma.config import field_docs, from_dict
from karma.errors import ConfigError
from karma.objectives.knowledge import (
    KnowledgeBatch,
    KnowledgeConfig,
    build_knowledge_objectives,
    sample_readout_positions,
)

EMBED, FEATURES = 8, 6


def test_every_field_has_a_docstring() -> None:
    docs = field_docs(KnowledgeConfig)
    assert {f.name for f in dataclasses.fields(KnowledgeConfig)} == set(docs)
    assert all(docs.values())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generation_weight", -1.0),
        ("reconstruction_weight", -0.1),
        ("flow_weight", -2.0),
        ("warmup_item_text_weight", -1.0),
        ("positions_per_sequence", 0),
        ("target_text_tokens", 0),
        ("prefix_tokens", 0),
        ("flow_hidden", 0),
        ("reconstruction_decoder", "copy"),
        ("flow_head", "gan"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        KnowledgeConfig(**{field: value})  # type: ignore[arg-type]


def test_flow_needs_a_feature_name() -> None:
    with pytest.raises(ValueError, match="feature_name"):
        KnowledgeConfig(flow_weight=0.1)
    with pytest.raises(ConfigError, match=r"knowledge\.flow_head"):
        from_dict(KnowledgeConfig, {"flow_head": "gan"}, prefix="knowledge.")


def test_defaults_are_action_only_and_build_nothing() -> None:
    objectives = build_knowledge_objectives(KnowledgeConfig(), HIDDEN, EMBED)
    assert objectives.generation is objectives.reconstruction is None
    assert objectives.flow is objectives.item_text is None
    assert not list(objectives.parameters())
    out = objectives(tiny_llama(), KnowledgeBatch(), "joint")
    assert float(out.loss) == 0.0 and out.parts == {}


def test_stage_weights() -> None:
    config = KnowledgeConfig(
        generation_weight=0.5, flow_weight=0.2, feature_name="text", warmup_item_text_weight=1.0
    )
    assert config.weights("joint") == {
        "item_text": 0.0, "generation": 0.5, "reconstruction": 0.0, "flow": 0.2
    }  # fmt: skip
    assert config.weights("warmup") == {
        "item_text": 1.0, "generation": 0.0, "reconstruction": 0.0, "flow": 0.0
    }  # fmt: skip


def _batch() -> KnowledgeBatch:
    torch.manual_seed(0)
    return KnowledgeBatch(
        prefix_embeds=torch.randn(2, 3, HIDDEN),
        prefix_mask=torch.ones(2, 3, dtype=torch.bool),
        interest_embedding=torch.randn(2, EMBED),
        target_ids=torch.tensor([[1, 2], [3, 4]]),
        target_mask=torch.ones(2, 2, dtype=torch.bool),
        target_features=torch.randn(2, FEATURES),
        item_tokens=torch.randn(2, HIDDEN),
        item_text_ids=torch.tensor([[5, 6], [7, 8]]),
        item_text_mask=torch.ones(2, 2, dtype=torch.bool),
    )


def test_weight_zero_objectives_are_never_called() -> None:
    model = tiny_llama()
    trunk = CallCounter(model.model)
    # flow only: no decoder call at all
    only_flow = build_knowledge_objectives(
        KnowledgeConfig(flow_weight=0.3, feature_name="text"), HIDDEN, EMBED, FEATURES
    )
    flow_calls = CallCounter(only_flow.flow.head)  # type: ignore[union-attr]
    out = only_flow(model, _batch(), "joint")
    assert (trunk.calls, flow_calls.calls) == (0, 1)
    assert set(out.parts) == {"flow_mse", "flow_weighted"}
    # in warm-up the flow weight is 0: nothing runs
    only_flow(model, _batch(), "warmup")
    assert (trunk.calls, flow_calls.calls) == (0, 1)

    # generation + reconstruction: two decoder passes, flow never built
    text = build_knowledge_objectives(
        KnowledgeConfig(generation_weight=1.0, reconstruction_weight=2.0), HIDDEN, EMBED
    )
    assert text.flow is None and text.item_text is None
    out = text(model, _batch(), "joint")
    assert trunk.calls == 2
    assert {"gen_nll", "rec_nll", "generation_weighted", "reconstruction_weighted"} <= set(
        out.parts
    )
    text(model, _batch(), "warmup")  # warm-up weights are all 0 here
    assert trunk.calls == 2


def test_total_is_the_weighted_sum() -> None:
    model = tiny_llama()
    config = KnowledgeConfig(
        generation_weight=0.5,
        reconstruction_weight=2.0,
        flow_weight=0.25,
        feature_name="text",
        flow_head="mse",
    )
    objectives = build_knowledge_objectives(config, HIDDEN, EMBED, FEATURES)
    batch = _batch()
    out = objectives(model, batch, "joint")
    gen = objectives.generation(
        model, batch.prefix_embeds, batch.prefix_mask, batch.target_ids, batch.target_mask
    )  # type: ignore[misc]
    rec = objectives.reconstruction(
        model, batch.interest_embedding, batch.target_ids, batch.target_mask
    )  # type: ignore[misc]
    flow = objectives.flow(batch.interest_embedding, batch.target_features)  # type: ignore[misc]
    torch.testing.assert_close(out.loss, 0.5 * gen.loss + 2.0 * rec.loss + 0.25 * flow.loss)


def test_warmup_item_text_runs_only_in_warmup() -> None:
    model = tiny_llama()
    objectives = build_knowledge_objectives(
        KnowledgeConfig(warmup_item_text_weight=1.0), HIDDEN, EMBED
    )
    trunk = CallCounter(model.model)
    assert objectives(model, _batch(), "joint").parts == {}
    assert trunk.calls == 0
    out = objectives(model, _batch(), "warmup")
    assert trunk.calls == 1 and "item_text_nll" in out.parts


def test_missing_inputs_name_the_field() -> None:
    objectives = build_knowledge_objectives(KnowledgeConfig(generation_weight=1.0), HIDDEN, EMBED)
    with pytest.raises(ValueError, match="prefix_embeds"):
        objectives(tiny_llama(), KnowledgeBatch(), "joint")


def test_sample_readout_positions_picks_distinct_valid_positions() -> None:
    valid = torch.tensor([[1, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool()
    rows, positions = sample_readout_positions(valid, 2, torch.Generator().manual_seed(0))
    assert rows.tolist().count(0) == 2 and rows.tolist().count(1) == 1 and 2 not in rows.tolist()
    assert all(valid[r, p] for r, p in zip(rows.tolist(), positions.tolist()))
    row0 = positions[rows == 0].tolist()
    assert len(set(row0)) == 2
    assert positions[rows == 1].tolist() == [1]


def test_sample_readout_positions_limits_the_sequences() -> None:
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[5] = False  # a row without positions is never among the chosen ones
    for seed in range(5):
        rows, positions = sample_readout_positions(
            valid, 2, torch.Generator().manual_seed(seed), max_sequences=3
        )
        assert len(set(rows.tolist())) == 3 and 5 not in rows.tolist()
        assert len(rows) == 6 and all(
            valid[r, p] for r, p in zip(rows.tolist(), positions.tolist())
        )
    rows, _ = sample_readout_positions(valid, 1, torch.Generator().manual_seed(0), max_sequences=9)
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4]
