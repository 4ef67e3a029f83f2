"""The comparison table's bookkeeping, free of training and devices (benchmarks/compare_frameworks.py):
which frameworks run, how new rows merge into an earlier table, the markdown, the best marks and the
"where each framework loses" summary. Every function here is pure (rows are plain dicts from the JSON).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FrameworkSpec:
    id: str  # the --frameworks name
    label: str  # the table's name; cqtf's rows add the profile: "cqtf (int8)"
    extra: str | None  # the pyproject extra that installs it (None: a core dependency)


FRAMEWORKS: tuple[FrameworkSpec, ...] = (
    FrameworkSpec("ptq", "float + torch.ao PTQ", None),
    FrameworkSpec("torch-ao-qat", "torch.ao QAT", None),
    FrameworkSpec("tf-qat", "TF-MOT QAT", "tf"),
    FrameworkSpec("brevitas", "Brevitas QAT", "brevitas"),
    FrameworkSpec("cqtf", "cqtf", None),
)
FRAMEWORK_IDS = tuple(f.id for f in FRAMEWORKS)
_BY_LABEL = {f.label: f.id for f in FRAMEWORKS}


def select_frameworks(requested: list[str] | None, unavailable: dict[str, str]) -> tuple[list[str], list[str]]:
    """(frameworks to run in table order, notes for stderr).

    requested None: every framework whose package imports; each one skipped gets a note saying why.
    requested names: exactly those (table order, duplicates dropped); an unknown name or one whose
    package does not import is a ValueError (the user asked for it: silently skipping would hide it).
    `unavailable` maps a framework id to why it cannot run (its available() message)."""
    if requested is None:
        selected = [f for f in FRAMEWORK_IDS if f not in unavailable]
        notes = [f"skipping {f}: {unavailable[f]}" for f in FRAMEWORK_IDS if f in unavailable]
        if not selected:
            raise ValueError("no framework can run: " + "; ".join(notes))
        return selected, notes
    unknown = [f for f in requested if f not in FRAMEWORK_IDS]
    if unknown:
        raise ValueError(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORK_IDS)}")
    missing = [f"{f}: {unavailable[f]}" for f in FRAMEWORK_IDS if f in requested and f in unavailable]
    if missing:
        raise ValueError("requested but not installed: " + "; ".join(missing))
    return [f for f in FRAMEWORK_IDS if f in requested], []


def framework_id(row: dict) -> str:
    """The row's --frameworks name; rows written before framework_id existed are recognized by their label."""
    if row.get("framework_id"):
        return row["framework_id"]
    label = row["framework"]
    if label in _BY_LABEL:
        return _BY_LABEL[label]
    if label.startswith("cqtf"):
        return "cqtf"
    raise ValueError(f"row of unknown framework '{label}'")


def row_key(row: dict) -> tuple[str, str, str]:
    return row["dataset"], row["profile"], framework_id(row)


def _order(known: list[str]) -> Callable[[str], tuple[int, str]]:
    index = {v: i for i, v in enumerate(known)}
    return lambda v: (index.get(v, len(index)), v)


def sort_rows(rows: list[dict], datasets: list[str], profiles: list[str]) -> list[dict]:
    """Rows by data set, then profile, then framework, each in the given (table) order; unknown ones last."""
    d, p, f = _order(datasets), _order(profiles), _order(list(FRAMEWORK_IDS))
    return sorted(rows, key=lambda r: (d(r["dataset"]), p(r["profile"]), f(framework_id(r))))


def merge_rows(old: list[dict], new: list[dict], datasets: list[str], profiles: list[str]) -> list[dict]:
    """`old` with every row of the same (data set, profile, framework) as a row of `new` replaced by it,
    the other old rows kept, new keys added; sorted into table order. Two new rows with one key: ValueError."""
    new_keys = [row_key(r) for r in new]
    if len(set(new_keys)) != len(new_keys):
        raise ValueError("new rows repeat a (data set, profile, framework)")
    replaced = set(new_keys)
    kept = [r for r in old if row_key(r) not in replaced]
    return sort_rows(kept + list(new), datasets, profiles)


def merge_meta(old: dict, new: dict) -> dict:
    """The merged table's meta: the lists united, the versions updated. Raises ValueError when the two runs
    cannot share a table (another board, training budget or seed): their rows would not be comparable."""
    old, new = {"seed": 0, **old}, {"seed": 0, **new}  # tables from before --seed: seed 0
    for key in ("board", "epochs", "quick", "seed"):
        if key in old and old[key] != new[key]:
            raise ValueError(f"the existing table has {key} {old[key]!r}, this run {new[key]!r}: rows would not "
                             f"be comparable; run with the same settings or write elsewhere (--out)")
    merged = dict(old)
    merged.update({k: v for k, v in new.items() if k not in ("datasets", "profiles", "frameworks", "versions")})
    for key in ("datasets", "profiles", "frameworks"):
        merged[key] = list(dict.fromkeys(list(old.get(key, [])) + list(new.get(key, []))))
    merged["versions"] = {**old.get("versions", {}), **new.get("versions", {})}
    return merged


def best_per_pair(rows: list[dict], value: str = "deployed_accuracy") -> dict[tuple[str, str], float]:
    """The largest `value` of each (data set, profile)."""
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["dataset"], r["profile"])
        best[key] = max(best.get(key, float("-inf")), r[value])
    return best


def best_rows(rows: list[dict], value: str = "deployed_accuracy") -> set[int]:
    """Indices of the rows with the largest `value` of their (data set, profile); ties all count."""
    best = best_per_pair(rows, value)
    return {i for i, r in enumerate(rows) if r[value] == best[(r["dataset"], r["profile"])]}


def loss_summary(rows: list[dict]) -> list[dict]:
    """Where each framework loses, per data set: the profile where its deployed accuracy is furthest below
    the best framework's on that profile (ties: the first in table order), how far (points), and its own
    training-time to deployed gap there; plus the profile of its largest own gap."""
    best = best_per_pair(rows)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], framework_id(r)), []).append(r)
    out = []
    for (dataset, fid), group in groups.items():
        behind = [(best[(r["dataset"], r["profile"])] - r["deployed_accuracy"], r) for r in group]
        worst_behind, worst = max(behind, key=lambda t: t[0])  # max keeps the first of equal values
        gap_row = max(group, key=lambda r: r["gap"])
        out.append({
            "dataset": dataset, "framework_id": fid, "profiles": len(group),
            "worst_profile": worst["profile"], "behind_best": worst_behind,
            "deployed_accuracy": worst["deployed_accuracy"], "gap": worst["gap"],
            "largest_gap_profile": gap_row["profile"], "largest_gap": gap_row["gap"],
        })
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def framework_label(fid: str) -> str:
    return next(f.label for f in FRAMEWORKS if f.id == fid)


def markdown(rows: list[dict], meta: dict) -> str:
    board = meta.get("board", "?")
    marks = best_rows(rows)
    lines = [f"# Deployed accuracy: frameworks vs cqtf (emulated {board})", "",
             "Training-time accuracy is what each framework shows while training (float for PTQ, the "
             "fake-quantized network for QAT, the exact device simulation for cqtf); deployed is measured on "
             "the emulated device, every test sample. Gap = training - deployed, in points. **Bold**: the best "
             "deployed accuracy of its data set and profile (ties all bold). On int8 the device runs each "
             "framework's own int8 conversion; on the fixed-point profiles its trained float weights, converted by "
             "cqtf's calibrate-and-export (cqtf.compare.to_profile), as a user of that framework would have to. "
             "TFLM: the tflite-micro interpreter on the framework's own .tflite (TF-MOT) or on cqtf's .tflite "
             "export of the deployed integers (the others), int8 only.", ""]
    if meta.get("epochs"):
        lines += [f"Budget: {meta['epochs'][0]} float epochs, then {meta['epochs'][1]} quantized (QAT or "
                  f"device-exact) epochs{' (--quick)' if meta.get('quick') else ''}; same initial network for all.",
                  ""]
    lines += ["| data set | device profile | framework | training % | deployed % | gap (points) | predictions changed % "
              "| framework's own int8 on host % | TFLM % | TFLM ≠ device | device = host sim |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows):
        deployed = _pct(r["deployed_accuracy"])
        if i in marks:
            deployed = f"**{deployed}**"
        tflm_bad = r.get("tflm_mismatched_vs_device")
        tflm_bad = "n/a" if tflm_bad is None else str(tflm_bad)
        framework = r["framework"] + (f" ({r['note']})" if r.get("note") else "")
        lines.append(f"| {r['dataset']} | {r['profile']} | {framework} | {_pct(r['training_accuracy'])} | "
                     f"{deployed} | {100 * r['gap']:+.2f} | {_pct(r['prediction_changed_share'])} | "
                     f"{_pct(r['framework_int8_host_accuracy'])} | {_pct(r.get('tflm_accuracy'))} | {tflm_bad} | "
                     f"{'yes' if r['device_equals_host_simulation'] else 'NO'} |")
    lines += ["", "## Where each framework loses", "",
              "Per data set: the profile where the framework's deployed accuracy is furthest below the best "
              "framework's on that profile, and its own training-to-deployed gap there.", "",
              "| data set | framework | worst profile | deployed % | behind the best (points) | own gap there (points) "
              "| largest own gap (points, profile) |", "|---|---|---|---:|---:|---:|---|"]
    for s in loss_summary(rows):
        if s["behind_best"] <= 0:
            lines.append(f"| {s['dataset']} | {framework_label(s['framework_id'])} | none: the best on every profile | | 0.00 "
                         f"| | {100 * s['largest_gap']:+.2f} ({s['largest_gap_profile']}) |")
            continue
        lines.append(f"| {s['dataset']} | {framework_label(s['framework_id'])} | {s['worst_profile']} | "
                     f"{_pct(s['deployed_accuracy'])} | {100 * s['behind_best']:.2f} | {100 * s['gap']:+.2f} | "
                     f"{100 * s['largest_gap']:+.2f} ({s['largest_gap_profile']}) |")
    if meta.get("versions"):
        lines += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "."]
    return "\n".join(lines) + "\n"
