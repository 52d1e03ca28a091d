"""The demo-model tool's idempotency and refusal logic (the real 1-minute build is run by demo.sh)."""

import pytest

from tools.fetch_demo_model import PACKAGE, REQUIRED, is_complete, main
from utils.common.datafiles import DataError
from utils.model.loader import write_run_info


def _fake_model_dir(path, source=PACKAGE):
    path.mkdir()
    for name in REQUIRED:
        (path / name).write_text("{}")
    write_run_info(path, {"source": source})
    return path


def test_complete_dir_is_left_alone(tmp_path, capsys):
    out = _fake_model_dir(tmp_path / "m")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(output_dir=str(out)) == str(out)
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_foreign_nonempty_dir_is_refused(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a complete demo model"):
        main(output_dir=str(out))
    assert (out / "notes.txt").read_text() == "mine"


def test_completeness_needs_every_file_and_the_source(tmp_path):
    out = _fake_model_dir(tmp_path / "m")
    assert is_complete(out)
    (out / "model.safetensors").unlink()
    assert not is_complete(out)
    assert not is_complete(_fake_model_dir(tmp_path / "other", source="elsewhere"))
