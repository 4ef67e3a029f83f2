"""Deployed accuracy of the frameworks people use, against cqtf, measured on the emulated device.

    .venv/bin/python benchmarks/compare_frameworks.py [--quick] [--board mps2-an386] [--out results]

For each data set (digits, MNIST-1D) the zoo architecture made for it is trained by
  - float training + torch.ao post-training static quantization (PyTorch's x86 defaults),
  - float training + torch.ao quantization-aware training (eager mode, x86 default QAT config),
  - cqtf, training with the device's exact arithmetic,
each with the same budget (40 float epochs, then 20 quantized ones) and the same initial network. Each
model is deployed on each device profile: PyTorch's own int8 conversion for the int8 device; for the
fixed-point devices, which PyTorch does not model, its trained float weights converted by cqtf's
calibrate-and-export (cqtf.compare.to_profile). The integers are packed for cqtf's firmware, which
runs every test sample on the emulated board. Rows: the accuracy the
framework shows at training time, the deployed (device) accuracy, the gap, the share of samples whose
device prediction differs from the training-time prediction, and whether the device equals cqtf's host
simulation bit for bit (it must, for every row: the firmware is the same).
Writes OUT/comparison.json, OUT/comparison.md and OUT/comparison.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cqtf import reference
from cqtf.compare.deploy import deploy_and_validate
from cqtf.compare.framework_model import FrameworkModel
from cqtf.compare.to_profile import deploy_float_params
from cqtf.compare.torch_ao import train_torch_ao_ptq, train_torch_ao_qat
from cqtf.data import load_dataset
from cqtf.pipeline import ModelDir, evaluation_split, train_stage
from cqtf.train.model import ZOO_DATASETS

DATASETS = {"digits": "digits_cnn", "mnist1d": "mnist1d_cnn"}
# Device arithmetic the rows are deployed on: TFLM-compatible int8 (double rounding), 8-bit Q formats with a
# 16-bit saturating accumulator, the CQTF authors' block-32 accumulation, and a plain floor shift.
PROFILES = ["int8", "fixed8-acc16", "fixed8-blk32", "fixed8-floor"]
assert all(ZOO_DATASETS[m] == d for d, m in DATASETS.items())


def _cqtf(dataset: str, model: str, profile: str, epochs: tuple[int, int], workdir: Path) -> FrameworkModel:
    model_dir = ModelDir(workdir / f"cqtf-{dataset}-{profile}")
    summary = train_stage(dataset, model, profile, model_dir, epochs)
    int_model = model_dir.load_model()
    x_test, _ = evaluation_split(int_model, dataset)
    predictions = reference.predict(reference.run(int_model, x_test))
    return FrameworkModel(f"cqtf ({profile})", summary["host_accuracy"], predictions, int_model, None)


def _on_profile(framework: FrameworkModel, dataset: str, profile: str) -> FrameworkModel:
    """The framework's model for a device of `profile`: its own int8 conversion, else converted by cqtf."""
    if profile == "int8":
        return framework
    int_model = deploy_float_params(framework.float_params, framework.int_model.name, dataset, profile)
    return FrameworkModel(framework.framework, framework.training_accuracy, framework.predictions, int_model,
                          framework.framework_int8_accuracy, framework.float_params)


def _row(dataset: str, profile: str, framework: FrameworkModel, board: str, workdir: Path, seconds: float) -> dict:
    x_test, y_test = evaluation_split(framework.int_model, dataset)
    result = deploy_and_validate(framework.int_model, x_test, y_test, board, workdir)
    deployed = result.device_accuracy
    return {
        "dataset": dataset, "model": framework.int_model.name, "profile": profile, "framework": framework.framework,
        "training_accuracy": framework.training_accuracy, "deployed_accuracy": deployed,
        "gap": framework.training_accuracy - deployed,
        "prediction_changed_share": float((result.device_predictions != framework.predictions).mean()),
        "framework_int8_host_accuracy": framework.framework_int8_accuracy,
        "device_equals_host_simulation": int(result.mismatched.sum()) == 0,
        "samples": result.samples, "board": board, "train_seconds": round(seconds, 1),
    }


def _markdown(rows: list[dict], board: str) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [f"# Deployed accuracy: frameworks vs cqtf (emulated {board})", "",
             "Training-time accuracy is what each framework shows while training (float for PTQ, the "
             "fake-quantized network for QAT, the exact device simulation for cqtf); deployed is measured on "
             "the emulated device, every test sample. Gap = training - deployed, in points.", "",
             "| data set | device profile | framework | training % | deployed % | gap (points) | predictions changed % "
             "| framework's own int8 on host % | device = host sim |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['profile']} | {r['framework']} | {pct(r['training_accuracy'])} | "
                     f"{pct(r['deployed_accuracy'])} | {100 * r['gap']:+.2f} | {pct(r['prediction_changed_share'])} | "
                     f"{pct(r['framework_int8_host_accuracy'])} | {'yes' if r['device_equals_host_simulation'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['dataset']}\n{r['framework']}\n{r['profile']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4.5))
    ax.bar(x - 0.2, [100 * r["training_accuracy"] for r in rows], 0.4, label="at training time")
    ax.bar(x + 0.2, [100 * r["deployed_accuracy"] for r in rows], 0.4, label="deployed (emulated device)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("accuracy %")
    ax.set_ylim(min(100 * min(r["deployed_accuracy"] for r in rows) - 5, 90), 100)
    ax.legend(loc="lower right")
    ax.set_title("Training-time vs deployed accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="mps2-an386")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="short training (4 + 2 epochs), for a smoke run")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--profiles", nargs="+", default=PROFILES)
    args = parser.parse_args(argv)
    float_epochs, quant_epochs = (4, 2) if args.quick else (40, 20)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cqtf-compare-") as tmp:
        workdir = Path(tmp)
        for dataset in args.datasets:
            model = DATASETS[dataset]
            data = load_dataset(dataset)
            others = []
            for trainer in (lambda: train_torch_ao_ptq(data, model, float_epochs),
                            lambda: train_torch_ao_qat(data, model, float_epochs, quant_epochs)):
                started = time.perf_counter()
                others.append((trainer(), time.perf_counter() - started))
            for profile in args.profiles:
                candidates = [(_on_profile(f, dataset, profile), s) for f, s in others]
                started = time.perf_counter()
                candidates.append((_cqtf(dataset, model, profile, (float_epochs, quant_epochs), workdir),
                                   time.perf_counter() - started))
                for i, (framework, seconds) in enumerate(candidates):
                    row = _row(dataset, profile, framework, args.board, workdir / f"{dataset}-{profile}-{i}", seconds)
                    rows.append(row)
                    print(f"{dataset:8s} {profile:13s} {row['framework']:22s} training {row['training_accuracy']:.4f} "
                          f"deployed {row['deployed_accuracy']:.4f} gap {row['gap']:+.4f}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"board": args.board, "epochs": [float_epochs, quant_epochs], "quick": args.quick,
            "profiles": args.profiles}
    (args.out / "comparison.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "comparison.md").write_text(_markdown(rows, args.board))
    _plot(rows, args.out / "comparison.png")
    print(f"wrote {args.out / 'comparison.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
