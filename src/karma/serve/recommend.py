"""One-off recommendations from the shell (`karma recommend`) and their plain-text table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from karma.serve.artifact import ServingModel


def recommend(
    model: ServingModel,
    history: Sequence[str | int],
    query: str | None = None,
    k: int = 10,
    exclude_seen: bool = True,
) -> list[dict[str, Any]]:
    """Ranked rows {rank, item_id, title, score} for one user given item ids or titles."""
    indices = model.resolve_items(history)
    (recs,) = model.search([indices], [query], k=k, exclude_seen=exclude_seen)
    described = model.describe(recs.item_indices.tolist())
    return [
        {"rank": r + 1, "score": float(s), **d}
        for r, (s, d) in enumerate(zip(recs.scores, described))
    ]


def format_table(rows: list[dict[str, Any]], title_width: int = 60) -> str:
    """rank | score | item_id | title, aligned, titles cut to `title_width` characters."""
    id_width = max([7, *(len(str(r["item_id"])) for r in rows)])
    lines = [f"{'rank':>4}  {'score':>7}  {'item_id':<{id_width}}  title"]
    for row in rows:
        title = str(row["title"])
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        lines.append(
            f"{row['rank']:>4}  {row['score']:>7.4f}  {row['item_id']!s:<{id_width}}  {title}"
        )
    return "\n".join(lines)
