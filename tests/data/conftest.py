"""Small fixture files the data tests write themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

ATOMIC_ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "i1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "i2\tAlien\t1979\tHorror Sci-Fi\n"
    "i3\tLaura\t1944\tFilm-Noir Mystery\n"
    "i4\tUnused\t2000\tDrama\n"
)
# u1: i1@10, i2@20, i3@20 (tie: file order i3 before i2), i1@40; u2: three clicks; u3: two.
ATOMIC_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\ti1\t5\t10\n"
    "u2\ti2\t3\t5\n"
    "u1\ti3\t4\t20\n"
    "u1\ti2\t4\t20.0\n"
    "u2\ti3\t3\t6\n"
    "u1\ti1\t2\t40\n"
    "u2\ti1\t3\t7\n"
    "u3\ti1\t3\t1\n"
    "u3\ti2\t3\t2\n"
)


@pytest.fixture
def atomic_dir(tmp_path: Path) -> Path:
    """A RecBole atomic dataset `toy` (CRLF line ends, as in the ml-1m files)."""
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "toy.item").write_bytes(ATOMIC_ITEMS.replace("\n", "\r\n").encode())
    (folder / "toy.inter").write_text(ATOMIC_INTER, encoding="utf-8")
    return folder
