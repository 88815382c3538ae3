"""Baseline retrievers (popularity, SASRec, frozen-LLM embeddings, the query-only floor of
personalized search), all dot-product `Retriever`s."""

from karma.baselines.frozen_llm import FrozenEmbeddingRetriever
from karma.baselines.popularity import PopularityRetriever
from karma.baselines.query_floor import QueryFloorRetriever

__all__ = ["FrozenEmbeddingRetriever", "PopularityRetriever", "QueryFloorRetriever"]
