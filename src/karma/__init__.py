"""karma: knowledge-action regularized LLM retrieval for personalized search and recommendation."""

from __future__ import annotations

__version__ = "0.1.0"

from karma.errors import ConfigError, DataError, KarmaError

__all__ = ["ConfigError", "DataError", "KarmaError", "__version__"]
