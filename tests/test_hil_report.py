"""The HIL report is rewritten after every validation, so a run stopped midway keeps its rows."""
import json

from hil_tests.conftest import HilConfig


def _config(report):
    return HilConfig(targets=["mps2-an386"], combos=[], port=None, flash=True, upload_port=None, model_dir=None,
                     epochs=(4, 2), report=report, baud=115200)


def test_each_recorded_row_is_on_disk_at_once_and_the_end_marks_the_report_complete(tmp_path):
    hil = _config(tmp_path / "out" / "hil.json")
    hil.record({"target": "mps2-an386", "model": "digits_cnn", "mismatched_samples": 0})
    first = json.loads(hil.report.read_text())
    assert first["results"] == hil.rows and first["complete"] is False
    hil.record({"target": "mps2-an385", "model": "digits_cnn", "mismatched_samples": 2})
    assert [r["target"] for r in json.loads(hil.report.read_text())["results"]] == ["mps2-an386", "mps2-an385"]
    hil.write_report(complete=True)
    assert json.loads(hil.report.read_text())["complete"] is True
    assert not list(tmp_path.glob("out/*.tmp"))


def test_without_a_report_path_rows_stay_in_memory(tmp_path):
    hil = _config(None)
    hil.record({"target": "mps2-an386"})
    assert hil.rows == [{"target": "mps2-an386"}] and not list(tmp_path.iterdir())
