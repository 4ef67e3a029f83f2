"""The comparison over seeds (cqtf.compare.seeds): means and spreads, cqtf's paired differences, the
seeds where cqtf was best, and tables that must not be combined."""
import statistics

import pytest

from cqtf.compare.seeds import best_by_mean, markdown, summarize
from test_compare_table import row

META = {"board": "mps2-an386", "epochs": [40, 20], "quick": False}


def table(seed, rows, **meta):
    return {"meta": {**META, "seed": seed, **meta}, "rows": rows}


TABLES = [
    table(0, [row("digits", "int8", "ptq", 0.97), row("digits", "int8", "cqtf", 0.98),
              row("digits", "pot4", "ptq", 0.90, training=0.97), row("digits", "pot4", "cqtf", 0.96)]),
    table(1, [row("digits", "int8", "ptq", 0.99), row("digits", "int8", "cqtf", 0.98),
              row("digits", "pot4", "ptq", 0.92, training=0.98), row("digits", "pot4", "cqtf", 0.95)]),
    {"meta": {**META}, "rows": [row("digits", "int8", "ptq", 0.98), row("digits", "int8", "cqtf", 0.98)]},
]  # the last: a table from before --seed existed, which counts as seed 0


def test_means_spreads_and_gaps_per_framework():
    summary = summarize(TABLES[:2])
    by = {(r["profile"], r["framework_id"]): r for r in summary["rows"]}
    ptq = by[("pot4", "ptq")]
    assert ptq["seeds"] == [0, 1]
    assert ptq["deployed_mean"] == pytest.approx(0.91)
    assert ptq["deployed_sd"] == pytest.approx(statistics.stdev([0.90, 0.92]))
    assert (ptq["deployed_min"], ptq["deployed_max"]) == (0.90, 0.92)
    assert ptq["gap_mean"] == pytest.approx(0.065) and ptq["gap_largest"] == pytest.approx(0.07)
    assert by[("int8", "cqtf")]["deployed_sd"] == 0.0


def test_paired_differences_and_best_seeds():
    paired = {(p["profile"], p["other"]): p for p in summarize(TABLES[:2])["cqtf_vs"]}
    int8 = paired[("int8", "ptq")]
    assert int8["difference_mean"] == pytest.approx(0.0)  # +1 point, then -1
    assert (int8["wins"], int8["ties"], int8["losses"]) == (1, 0, 1)
    assert paired[("int8", "all")]["cqtf_best_seeds"] == [0]
    assert paired[("pot4", "ptq")]["difference_mean"] == pytest.approx(0.045)
    assert paired[("pot4", "all")]["cqtf_best_seeds"] == [0, 1]


def test_best_by_mean_marks_ties():
    rows = summarize([table(0, [row("digits", "int8", "ptq", 0.98), row("digits", "int8", "cqtf", 0.98),
                                row("digits", "pot4", "ptq", 0.9), row("digits", "pot4", "cqtf", 0.95)])])["rows"]
    assert best_by_mean(rows) == {0, 1, 3}


def test_a_seed_twice_or_another_budget_is_refused():
    with pytest.raises(ValueError, match="seed 0"):
        summarize([TABLES[0], TABLES[2]])  # no seed in meta: seed 0
    with pytest.raises(ValueError, match="epochs"):
        summarize([TABLES[0], table(1, TABLES[1]["rows"], epochs=[4, 2])])


def test_markdown_bolds_the_best_mean_and_lists_cqtf_seed_by_seed():
    text = markdown(summarize(TABLES[:2]), META)
    assert "over 2 seeds" in text
    assert "| digits | pot4 | cqtf (pot4) | 2 | **95.50** |" in text
    assert "| digits | pot4 | float + torch.ao PTQ | +4.50 | 2 / 0 / 0 |" in text
    assert "best in 1 of 2 seeds | 0 |" in text
