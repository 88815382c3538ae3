"""The query-floor recipe: the query-only ranking of personalized search (nothing to train)."""

from __future__ import annotations

from dataclasses import dataclass

from karma.baselines.query_floor import FLOOR_FILE, QueryFloorRetriever
from karma.runs.recipes.fitted import FittedRecipe

KIND = "query-floor"


@dataclass
class QueryFloorConfig:
    """The query-only floor has no settings."""


class QueryFloorRecipe(FittedRecipe):
    kind = KIND
    config_type = QueryFloorConfig
    retriever_type = QueryFloorRetriever
    saved_file = FLOOR_FILE
    summary_key = "floor"
    ranks_by = "the query"
    serves = "search"
