"""The comparison table's bookkeeping (cqtf.compare.table): framework selection, row merging, best marks,
the where-each-framework-loses summary and the markdown built from them."""
import pytest

from cqtf.compare.table import (FRAMEWORK_IDS, best_rows, framework_id, loss_summary, markdown, merge_meta,
                                merge_rows, select_frameworks)

DATASETS = ["digits", "mnist1d"]
PROFILES = ["int8", "fixed8-acc16", "fixed8-blk32", "fixed8-floor", "pot4"]


def row(dataset, profile, fid, deployed, training=None, label=None, **extra):
    labels = {"ptq": "float + torch.ao PTQ", "torch-ao-qat": "torch.ao QAT", "tf-qat": "TF-MOT QAT",
              "brevitas": "Brevitas QAT", "cqtf": f"cqtf ({profile})"}
    training = deployed if training is None else training
    r = {"dataset": dataset, "profile": profile, "framework": label or labels[fid], "framework_id": fid,
         "training_accuracy": training, "deployed_accuracy": deployed, "gap": training - deployed,
         "prediction_changed_share": 0.0, "framework_int8_host_accuracy": None,
         "device_equals_host_simulation": True}
    r.update(extra)
    return r


# --- framework selection -------------------------------------------------------------------------------

def test_default_selects_every_importable_framework_and_notes_each_skipped_one():
    selected, notes = select_frameworks(None, {"tf-qat": "tensorflow is not installed; pip install -e '.[tf]'"})
    assert selected == ["ptq", "torch-ao-qat", "brevitas", "cqtf"]
    assert len(notes) == 1 and "tf-qat" in notes[0] and ".[tf]" in notes[0]


def test_default_with_everything_installed_runs_all_without_notes():
    assert select_frameworks(None, {}) == (list(FRAMEWORK_IDS), [])


def test_requested_frameworks_run_in_table_order_once():
    selected, notes = select_frameworks(["cqtf", "ptq", "cqtf"], {"brevitas": "missing"})
    assert selected == ["ptq", "cqtf"] and notes == []


def test_requesting_a_missing_or_unknown_framework_is_an_error():
    with pytest.raises(ValueError, match="brevitas"):
        select_frameworks(["brevitas", "cqtf"], {"brevitas": "brevitas is not installed"})
    with pytest.raises(ValueError, match="tensorflow"):
        select_frameworks(["tensorflow"], {})


# --- row merging ---------------------------------------------------------------------------------------

def test_merge_replaces_rows_of_the_same_key_and_keeps_the_others():
    old = [row("digits", "int8", "ptq", 0.97), row("digits", "int8", "cqtf", 0.95),
           row("digits", "pot4", "cqtf", 0.90), row("mnist1d", "int8", "cqtf", 0.93)]
    new = [row("digits", "int8", "cqtf", 0.98), row("digits", "pot4", "cqtf", 0.96)]
    merged = merge_rows(old, new, DATASETS, PROFILES)
    assert len(merged) == 4
    by_key = {(r["dataset"], r["profile"], r["framework_id"]): r["deployed_accuracy"] for r in merged}
    assert by_key == {("digits", "int8", "ptq"): 0.97, ("digits", "int8", "cqtf"): 0.98,
                      ("digits", "pot4", "cqtf"): 0.96, ("mnist1d", "int8", "cqtf"): 0.93}


def test_merge_adds_new_keys_in_table_order():
    old = [row("mnist1d", "int8", "ptq", 0.9), row("digits", "pot4", "ptq", 0.9)]
    new = [row("digits", "int8", "brevitas", 0.9), row("digits", "int8", "ptq", 0.91)]
    merged = merge_rows(old, new, DATASETS, PROFILES)
    assert [(r["dataset"], r["profile"], r["framework_id"]) for r in merged] == [
        ("digits", "int8", "ptq"), ("digits", "int8", "brevitas"), ("digits", "pot4", "ptq"),
        ("mnist1d", "int8", "ptq")]


def test_merge_recognizes_rows_written_before_framework_id():
    old = [row("digits", "int8", "cqtf", 0.95), row("digits", "int8", "torch-ao-qat", 0.97)]
    for r in old:
        del r["framework_id"]
    merged = merge_rows(old, [row("digits", "int8", "cqtf", 0.99)], DATASETS, PROFILES)
    assert sorted(r["deployed_accuracy"] for r in merged) == [0.97, 0.99]
    assert framework_id(old[0]) == "cqtf" and framework_id(old[1]) == "torch-ao-qat"
    with pytest.raises(ValueError):
        framework_id({"framework": "ONNX Runtime"})


def test_merge_refuses_duplicate_new_rows():
    with pytest.raises(ValueError):
        merge_rows([], [row("digits", "int8", "cqtf", 0.9), row("digits", "int8", "cqtf", 0.8)], DATASETS, PROFILES)


def test_merge_meta_unites_lists_and_refuses_another_budget_or_board():
    old = {"board": "mps2-an386", "epochs": [40, 20], "quick": False, "datasets": ["digits", "mnist1d"],
           "profiles": ["int8", "pot4"], "frameworks": ["ptq", "cqtf"], "versions": {"torch": "2.13.0", "brevitas": "0.13.4"}}
    new = {"board": "mps2-an386", "epochs": [40, 20], "quick": False, "datasets": ["digits"],
           "profiles": ["fixed8-floor"], "frameworks": ["cqtf"], "versions": {"torch": "2.13.0+cpu"}}
    merged = merge_meta(old, new)
    assert merged["datasets"] == ["digits", "mnist1d"]
    assert merged["profiles"] == ["int8", "pot4", "fixed8-floor"]
    assert merged["frameworks"] == ["ptq", "cqtf"]
    assert merged["versions"] == {"torch": "2.13.0+cpu", "brevitas": "0.13.4"}
    with pytest.raises(ValueError, match="epochs"):
        merge_meta(old, {**new, "epochs": [4, 2], "quick": True})
    with pytest.raises(ValueError, match="board"):
        merge_meta(old, {**new, "board": "mps2-an500"})
    # a table from before --seed is seed 0: seed 0 merges into it, another seed does not
    assert merge_meta(old, {**new, "seed": 0})["seed"] == 0
    with pytest.raises(ValueError, match="seed"):
        merge_meta(old, {**new, "seed": 1})
    with pytest.raises(ValueError, match="seed"):  # and a seed-1 table refuses a run from before --seed
        merge_meta({**old, "seed": 1}, new)


# --- best marks and the summary ------------------------------------------------------------------------

def _table():
    return [
        row("digits", "int8", "ptq", 0.97, 0.975), row("digits", "int8", "cqtf", 0.97),
        row("digits", "fixed8-blk32", "ptq", 0.55, 0.975), row("digits", "fixed8-blk32", "cqtf", 0.96),
        row("digits", "pot4", "ptq", 0.90, 0.975), row("digits", "pot4", "cqtf", 0.94),
        row("mnist1d", "int8", "ptq", 0.93), row("mnist1d", "int8", "cqtf", 0.90),
    ]


def test_best_rows_marks_the_best_per_data_set_and_profile_with_ties():
    assert best_rows(_table()) == {0, 1, 3, 5, 6}


def test_loss_summary_names_the_worst_profile_against_the_best_framework():
    summary = {(s["dataset"], s["framework_id"]): s for s in loss_summary(_table())}
    ptq = summary[("digits", "ptq")]
    assert ptq["worst_profile"] == "fixed8-blk32"
    assert ptq["behind_best"] == pytest.approx(0.41)
    assert ptq["gap"] == pytest.approx(0.425)
    assert ptq["largest_gap_profile"] == "fixed8-blk32"
    cqtf = summary[("digits", "cqtf")]
    assert cqtf["behind_best"] == 0.0 and cqtf["worst_profile"] == "int8"  # never behind: first profile
    assert summary[("mnist1d", "cqtf")]["behind_best"] == pytest.approx(0.03)
    assert summary[("mnist1d", "ptq")]["behind_best"] == 0.0
    assert len(summary) == 4


def test_markdown_bolds_the_best_and_holds_the_summary():
    text = markdown(_table(), {"board": "mps2-an386", "epochs": [40, 20], "quick": False})
    table_lines = [line for line in text.splitlines() if line.startswith("| digits | fixed8-blk32")]
    assert any("**96.00**" in line and "cqtf" in line for line in table_lines)
    assert any("| 55.00 |" in line for line in table_lines)
    assert "## Where each framework loses" in text
    assert "| digits | float + torch.ao PTQ | fixed8-blk32 | 55.00 | 41.00 | +42.50 |" in text
    assert "| digits | cqtf | none: the best on every profile |" in text
    assert "| mnist1d | cqtf | int8 | 90.00 | 3.00 |" in text
