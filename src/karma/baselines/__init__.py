"""Baseline retrievers (popularity, SASRec, frozen-LLM embeddings), all dot-product `Retriever`s."""

from karma.baselines.frozen_llm import FrozenEmbeddingRetriever
from karma.baselines.popularity import PopularityRetriever

__all__ = ["FrozenEmbeddingRetriever", "PopularityRetriever"]
