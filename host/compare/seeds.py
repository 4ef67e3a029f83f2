"""The comparison over several seeds: one table per seed (benchmarks/compare_frameworks.py --seed N),
summarized per data set, profile and framework.

One seed's test set tells frameworks apart only by a few samples where all deploy about losslessly
(1 digits test sample is 0.28 points), and a new initial network moves every framework by as much. So
each framework's deployed accuracy is given as the mean over seeds with its spread, cqtf's paired
difference to each other framework (same seed: same initial network and data order), and in how many
seeds cqtf was the best or tied with it.
"""
from __future__ import annotations

import statistics

from cqtf.compare.table import best_rows, framework_id, framework_label

CQTF = "cqtf"


def _by_key(tables: list[dict]) -> dict[tuple[str, str, str], dict[int, dict]]:
    """(dataset, profile, framework id) -> {seed: row}; raises ValueError on a seed given twice or
    tables of different boards or budgets (their rows do not compare)."""
    out: dict[tuple[str, str, str], dict[int, dict]] = {}
    seen = set()
    first = tables[0]["meta"]
    for table in tables:
        meta = table["meta"]
        seed = meta.get("seed", 0)
        if seed in seen:
            raise ValueError(f"two tables of seed {seed}")
        seen.add(seed)
        for key in ("board", "epochs", "quick"):
            if meta.get(key) != first.get(key):
                raise ValueError(f"the tables differ in {key}: {first.get(key)!r} and {meta.get(key)!r}")
        for row in table["rows"]:
            out.setdefault((row["dataset"], row["profile"], framework_id(row)), {})[seed] = row
    return out


def summarize(tables: list[dict]) -> dict:
    """Per (dataset, profile, framework): seeds, mean/sd/min/max deployed accuracy, mean and largest gap,
    device = host simulation in every seed; per (dataset, profile): cqtf's paired difference to each other
    framework over the seeds both have, and the seeds where cqtf was the best of all (ties count)."""
    rows_by_key = _by_key(tables)
    summary = []
    for (dataset, profile, fid), by_seed in rows_by_key.items():
        deployed = [r["deployed_accuracy"] for r in by_seed.values()]
        gaps = [r["gap"] for r in by_seed.values()]
        summary.append({
            "dataset": dataset, "profile": profile, "framework_id": fid,
            "framework": next(iter(by_seed.values()))["framework"], "seeds": sorted(by_seed),
            "deployed_mean": statistics.fmean(deployed),
            "deployed_sd": statistics.stdev(deployed) if len(deployed) > 1 else 0.0,
            "deployed_min": min(deployed), "deployed_max": max(deployed),
            "gap_mean": statistics.fmean(gaps), "gap_largest": max(gaps, key=abs),
            "device_equals_host_simulation": all(r["device_equals_host_simulation"] for r in by_seed.values()),
        })
    return {"rows": summary, "cqtf_vs": _paired(rows_by_key)}


def _paired(rows_by_key) -> list[dict]:
    out = []
    for (dataset, profile, fid), cqtf in rows_by_key.items():
        if fid != CQTF:
            continue
        others = {f: by_seed for (d, p, f), by_seed in rows_by_key.items() if (d, p) == (dataset, profile) and f != CQTF}
        best_seeds = [s for s in cqtf if all(cqtf[s]["deployed_accuracy"] >= o[s]["deployed_accuracy"]
                                             for o in others.values() if s in o)]
        for other, by_seed in others.items():
            common = sorted(set(cqtf) & set(by_seed))
            diffs = [cqtf[s]["deployed_accuracy"] - by_seed[s]["deployed_accuracy"] for s in common]
            out.append({
                "dataset": dataset, "profile": profile, "other": other, "seeds": common,
                "difference_mean": statistics.fmean(diffs) if diffs else None,
                "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
            })
        out.append({"dataset": dataset, "profile": profile, "other": "all", "seeds": sorted(cqtf),
                    "cqtf_best_seeds": best_seeds})
    return out


def best_by_mean(summary_rows: list[dict]) -> set[int]:
    """Indices of the rows with the highest mean deployed accuracy of their (dataset, profile); ties all."""
    return best_rows(summary_rows, "deployed_mean")


def markdown(summary: dict, meta: dict) -> str:
    rows = summary["rows"]
    marks = best_by_mean(rows)
    seeds = sorted({s for r in rows for s in r["seeds"]})
    lines = [f"# Deployed accuracy over {len(seeds)} seeds (emulated {meta.get('board', '?')})", "",
             f"Seeds {', '.join(map(str, seeds))}: each one a new initial network and data order, the same for "
             "every framework of that seed (benchmarks/compare_frameworks.py --seed N; seed 0 is "
             "results/comparison.md). Every figure is measured on the emulated device, every test sample. "
             "**Bold**: the highest mean of its data set and profile.", "",
             "| data set | device profile | framework | seeds | deployed % mean | sd | min | max | mean gap (points) "
             "| device = host sim |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows):
        mean = f"{100 * r['deployed_mean']:.2f}"
        lines.append(f"| {r['dataset']} | {r['profile']} | {r['framework']} | {len(r['seeds'])} | "
                     f"{f'**{mean}**' if i in marks else mean} | {100 * r['deployed_sd']:.2f} | "
                     f"{100 * r['deployed_min']:.2f} | {100 * r['deployed_max']:.2f} | {100 * r['gap_mean']:+.2f} | "
                     f"{'yes' if r['device_equals_host_simulation'] else 'NO'} |")
    lines += ["", "## cqtf against each framework, seed by seed", "",
              "Mean of cqtf's deployed accuracy minus the other's over the seeds both ran (points); wins / ties / "
              "losses of cqtf; and the seeds where cqtf was the best of all frameworks (ties count).", "",
              "| data set | device profile | against | mean difference (points) | wins / ties / losses |",
              "|---|---|---|---:|---|"]
    for p in summary["cqtf_vs"]:
        if p["other"] == "all":
            lines.append(f"| {p['dataset']} | {p['profile']} | all | best in {len(p['cqtf_best_seeds'])} of "
                         f"{len(p['seeds'])} seeds | {', '.join(map(str, p['cqtf_best_seeds'])) or 'none'} |")
        elif p["difference_mean"] is not None:
            lines.append(f"| {p['dataset']} | {p['profile']} | {framework_label(p['other'])} | {100 * p['difference_mean']:+.2f} | "
                         f"{p['wins']} / {p['ties']} / {p['losses']} |")
    return "\n".join(lines) + "\n"
