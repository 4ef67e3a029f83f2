"""The framework comparison over several seeds: mean, spread, and cqtf's seed-by-seed difference to each framework.

    .venv/bin/python benchmarks/comparison_seeds.py [--tables results/comparison.json results/comparison_seeds/seed*/comparison.json]
        [--out results]

Each table comes from one run of benchmarks/compare_frameworks.py (--seed N --out results/comparison_seeds/seedN;
seed 0 is results/comparison.json), every figure measured on the emulated device. To add seed 3:

    .venv/bin/python benchmarks/compare_frameworks.py --seed 3 --out results/comparison_seeds/seed3
    .venv/bin/python benchmarks/comparison_seeds.py

Writes OUT/comparison_seeds.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cqtf.compare.seeds import markdown, summarize
from cqtf.report import write_atomic

REPO = Path(__file__).resolve().parent.parent


def _default_tables() -> list[Path]:
    return [REPO / "results" / "comparison.json", *sorted((REPO / "results" / "comparison_seeds").glob("seed*/comparison.json"))]


def _plot(summary: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = summary["rows"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == dataset]
        profiles = list(dict.fromkeys(r["profile"] for r in mine))
        frameworks = list(dict.fromkeys(r["framework_id"] for r in mine))
        width = 0.8 / len(frameworks)
        for j, fid in enumerate(frameworks):
            cells = {r["profile"]: r for r in mine if r["framework_id"] == fid}
            xs = [i + j * width for i, p in enumerate(profiles) if p in cells]
            ax.bar(xs, [100 * cells[p]["deployed_mean"] for p in profiles if p in cells], width,
                   yerr=[100 * cells[p]["deployed_sd"] for p in profiles if p in cells], label=fid, capsize=2)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(profiles))], profiles, rotation=20)
        ax.set_ylim(40, 100)
        ax.set_ylabel("deployed accuracy %, mean ± sd over seeds")
        ax.set_title(dataset)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", type=Path, default=None,
                        help="comparison.json files, one per seed (default: results/comparison.json and "
                             "results/comparison_seeds/seed*/comparison.json)")
    parser.add_argument("--out", type=Path, default=REPO / "results")
    args = parser.parse_args(argv)
    paths = args.tables or _default_tables()
    try:
        tables = [json.loads(p.read_text()) for p in paths]
        summary = summarize(tables)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}: give comparison.json files written by benchmarks/compare_frameworks.py, one per seed",
              file=sys.stderr)
        return 2
    meta = {"board": tables[0]["meta"].get("board"), "epochs": tables[0]["meta"].get("epochs"),
            "tables": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in paths]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "comparison_seeds.json", json.dumps({"meta": meta, **summary}, indent=2) + "\n")
    write_atomic(args.out / "comparison_seeds.md", markdown(summary, meta))
    _plot(summary, args.out / "comparison_seeds.png")
    print(f"wrote {args.out / 'comparison_seeds.md'} from {len(tables)} tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
