"""The popularity recipe: count training clicks (no model to train, no encoder)."""

from __future__ import annotations

from dataclasses import dataclass

from karma.baselines.popularity import COUNTS_FILE, PopularityRetriever
from karma.runs.recipes.fitted import FittedRecipe

KIND = "popularity"


@dataclass
class PopularityConfig:
    """The popularity baseline has no settings."""


class PopularityRecipe(FittedRecipe):
    kind = KIND
    config_type = PopularityConfig
    retriever_type = PopularityRetriever
    saved_file = COUNTS_FILE
    summary_key = "counts"
    ranks_by = "counts"
    serves = "rec"
