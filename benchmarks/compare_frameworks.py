"""Deployed accuracy of the frameworks people use, against cqtf, measured on the emulated device.

    .venv/bin/python benchmarks/compare_frameworks.py [--quick] [--board mps2-an386] [--out results]
        [--datasets digits mnist1d] [--profiles ...] [--frameworks ptq torch-ao-qat tf-qat brevitas cqtf]
        [--seed N] [--merge] [--resume] [--reuse-cqtf DIR] [--render-only]

For each data set (digits, MNIST-1D) the zoo architecture made for it is trained by
  - float training + torch.ao post-training static quantization (PyTorch's x86 defaults),
  - float training + torch.ao quantization-aware training (eager mode, x86 default QAT config),
  - TensorFlow Model Optimization QAT, converted to a full-int8 .tflite (extra `.[tf]`),
  - Brevitas int8 QAT (extra `.[brevitas]`),
  - cqtf, training with the device's exact arithmetic,
each with the same budget (40 float epochs, then 20 quantized ones) and the same initial network. Each
model is deployed on each device profile: the framework's own int8 conversion for the int8 device; for the
fixed-point devices, which those frameworks do not model, its trained float weights converted by cqtf's
calibrate-and-export (cqtf.compare.to_profile). The integers are packed for cqtf's firmware, which
runs every test sample on the emulated board. Rows: the accuracy the
framework shows at training time, the deployed (device) accuracy, the gap, the share of samples whose
device prediction differs from the training-time prediction, and whether the device equals cqtf's host
simulation bit for bit (it must, for every row: the firmware is the same).
On int8 the tflite-micro interpreter also runs each model's .tflite (TF-MOT's own; cqtf's export of the
deployed integers for the others): its accuracy and the samples where it differs from the device.

--frameworks picks what runs (default: every framework whose package imports; each one skipped is named
on stderr). --merge replaces, in an existing OUT/comparison.json, the rows of the same data set, profile
and framework and keeps the others (`--frameworks cqtf --merge` reruns cqtf alone); it refuses a table
of another board or training budget. Rows are appended to OUT/comparison.progress.jsonl as they are
measured; --resume continues an interrupted run from it (same settings), skipping the rows it holds.
Writes OUT/comparison.json, OUT/comparison.md and OUT/comparison.png (whole files, replaced at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cqtf import reference
from cqtf.compare.deploy import deploy_and_validate
from cqtf.compare.framework_model import FrameworkModel
from cqtf.compare.table import FRAMEWORK_IDS, FRAMEWORKS, framework_id, markdown, merge_meta, merge_rows, row_key, \
    select_frameworks, sort_rows
from cqtf.compare.to_profile import deploy_float_params
from cqtf.data import load_dataset
from cqtf.pipeline import ModelDir, evaluation_split, finished_training, train_stage
from cqtf.report import write_atomic
from cqtf.train.model import ZOO_DATASETS

DATASETS = {"digits": "digits_cnn", "mnist1d": "mnist1d_cnn"}
# Device arithmetic the rows are deployed on: TFLM-compatible int8 (double rounding), 8-bit Q formats with a
# 16-bit saturating accumulator, the CQTF authors' block-32 accumulation, a plain floor shift, and 4-bit
# power-of-two weights (shifts instead of multiplies) with 8-bit Q activations.
PROFILES = ["int8", "fixed8-acc16", "fixed8-blk32", "fixed8-floor", "pot4"]
assert all(ZOO_DATASETS[m] == d for d, m in DATASETS.items())
PROGRESS = "comparison.progress.jsonl"


def unavailable_frameworks(candidates) -> dict[str, str]:
    """Framework id -> why its package does not import, for the candidates (only the optional extras can be
    missing; TensorFlow is imported only when tf-qat is a candidate: it takes seconds)."""
    missing = {}
    if "tf-qat" in candidates:
        from cqtf.compare import tf_qat

        missing["tf-qat"] = tf_qat.available()
    if "brevitas" in candidates:
        from cqtf.compare import brevitas_qat

        missing["brevitas"] = brevitas_qat.available()
    return {k: v for k, v in missing.items() if v is not None}


def versions(frameworks: list[str]) -> dict[str, str]:
    import torch

    out = {"torch": torch.__version__}
    if "tf-qat" in frameworks:
        from cqtf.compare import tf_qat

        out["tf-qat"] = tf_qat.version()
    if "brevitas" in frameworks:
        from cqtf.compare import brevitas_qat

        out["brevitas"] = brevitas_qat.version()
    from cqtf import oracle

    out["tflite-micro"] = oracle.version()
    return {k: v for k, v in out.items() if v}


def _trainer(fid: str, model: str, float_epochs: int, quant_epochs: int, seed: int = 0):
    """data -> FrameworkModel for a framework trained once per data set (all but cqtf)."""
    if fid == "ptq":
        from cqtf.compare.torch_ao import train_torch_ao_ptq

        return lambda data: train_torch_ao_ptq(data, model, float_epochs, seed=seed)
    if fid == "torch-ao-qat":
        from cqtf.compare.torch_ao import train_torch_ao_qat

        return lambda data: train_torch_ao_qat(data, model, float_epochs, quant_epochs, seed=seed)
    if fid == "tf-qat":
        from cqtf.compare.tf_qat import train_tf_qat

        return lambda data: train_tf_qat(data, model, float_epochs, quant_epochs, seed=seed)
    if fid == "brevitas":
        from cqtf.compare.brevitas_qat import train_brevitas_qat

        return lambda data: train_brevitas_qat(data, model, float_epochs, quant_epochs, seed=seed)
    raise ValueError(fid)


def _trained_before(reuse: Path | None, dataset: str, model: str, profile: str,
                   epochs: tuple[int, int], seed: int = 0) -> tuple[ModelDir, dict] | None:
    """A cqtf model trained with these settings under REUSE/DATASET/PROFILE (profiles_accuracy.py's --work
    layout), with its train.json; None when there is none or its settings differ."""
    if reuse is None:
        return None
    model_dir = ModelDir(reuse / dataset / profile)
    summary = finished_training(model_dir, dataset, model, profile, epochs, seed=seed)
    return (model_dir, summary) if summary is not None else None


def _cqtf(dataset: str, model: str, profile: str, epochs: tuple[int, int], workdir: Path,
          reuse: Path | None = None, seed: int = 0) -> FrameworkModel:
    found = _trained_before(reuse, dataset, model, profile, epochs, seed)
    if found:
        model_dir, summary = found
        print(f"cqtf {dataset} {profile}: the model trained in {model_dir.root}", file=sys.stderr)
    else:
        model_dir = ModelDir(workdir / f"cqtf-{dataset}-{profile}")
        summary = train_stage(dataset, model, profile, model_dir, epochs, seed=seed)
    int_model = model_dir.load_model()
    x_test, _ = evaluation_split(int_model, dataset)
    predictions = reference.predict(reference.run(int_model, x_test))
    return FrameworkModel(f"cqtf ({profile})", summary["host_accuracy"], predictions, int_model, None)


def _on_profile(framework: FrameworkModel, dataset: str, profile: str) -> FrameworkModel:
    """The framework's model for a device of `profile`: its own int8 conversion, else its float weights
    converted by cqtf's calibrate-and-export. ValueError when the framework gave no float weights."""
    if profile == "int8":
        return framework
    if framework.float_params is None:
        raise ValueError(f"{framework.framework} gave no float weights: it cannot be deployed on {profile}")
    int_model = deploy_float_params(framework.float_params, framework.int_model.name, dataset, profile)
    return FrameworkModel(framework.framework, framework.training_accuracy, framework.predictions, int_model,
                          framework.framework_int8_accuracy, framework.float_params)


def _tflm(framework: FrameworkModel, x_test: np.ndarray, y_test: np.ndarray, device_outputs: np.ndarray) -> dict:
    """The tflite-micro interpreter on the int8 model's .tflite: the framework's own (TF-MOT), else cqtf's
    export of the deployed integers. Accuracy and samples whose output differs from the device's."""
    from cqtf import oracle

    if oracle.available() is not None:
        return {"tflm_note": oracle.available()}
    model_bytes = getattr(framework, "tflite", None)
    source = "framework's .tflite"
    if model_bytes is None:
        from cqtf.tflite_export import ExportError, export_tflite

        source = "cqtf export"
        try:
            model_bytes = export_tflite(framework.int_model)
        except ExportError as e:
            return {"tflm_note": f"no .tflite: {e}"}
    outputs = oracle.run_tflm(model_bytes, x_test)
    return {"tflite_source": source,
            "tflm_accuracy": float((reference.predict(outputs) == y_test).mean()),
            "tflm_mismatched_vs_device": int(np.any(outputs != device_outputs, axis=1).sum())}


WEIGHTS = {"own": "the framework's own int8 conversion", "float": "its float weights, cqtf calibrate+export",
           "cqtf": "cqtf device-exact training"}


def _row(dataset: str, profile: str, fid: str, framework: FrameworkModel, board: str, workdir: Path,
         seconds: float, epochs: tuple[int, int]) -> dict:
    x_test, y_test = evaluation_split(framework.int_model, dataset)
    result = deploy_and_validate(framework.int_model, x_test, y_test, board, workdir)
    deployed = result.device_accuracy
    row = {
        "dataset": dataset, "model": framework.int_model.name, "profile": profile, "framework": framework.framework,
        "framework_id": fid,
        "deployed_weights": WEIGHTS["cqtf" if fid == "cqtf" else "own" if profile == "int8" else "float"],
        "training_accuracy": framework.training_accuracy, "deployed_accuracy": deployed,
        "gap": framework.training_accuracy - deployed,
        "prediction_changed_share": float((result.device_predictions != framework.predictions).mean()),
        "framework_int8_host_accuracy": framework.framework_int8_accuracy,
        "device_equals_host_simulation": int(result.mismatched.sum()) == 0,
        "samples": result.samples, "board": board, "train_seconds": round(seconds, 1), "epochs": list(epochs),
    }
    if profile == "int8":
        row.update(_tflm(framework, x_test, y_test, result.device_outputs))
    return row


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(13, 3.8 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        sub = [r for r in rows if r["dataset"] == dataset]
        profiles = list(dict.fromkeys(r["profile"] for r in sub))
        fids = [f for f in FRAMEWORK_IDS if any(framework_id(r) == f for r in sub)]
        width = 0.8 / max(len(fids), 1)
        for j, fid in enumerate(fids):
            xs, deployed, training = [], [], []
            for i, profile in enumerate(profiles):
                match = [r for r in sub if r["profile"] == profile and framework_id(r) == fid]
                if match:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    deployed.append(100 * match[0]["deployed_accuracy"])
                    training.append(100 * match[0]["training_accuracy"])
            label = next((f.label for f in FRAMEWORKS if f.id == fid), fid)
            ax.bar(xs, deployed, width, label=label)
            ax.scatter(xs, training, marker="_", s=120, color="black", zorder=3,
                       label="at training time" if j == 0 else None)
        ax.set_xticks(range(len(profiles)), profiles)
        low = min(100 * min(r["deployed_accuracy"] for r in sub) - 5, 85)
        ax.set_ylim(max(low, 0), 100)
        ax.set_ylabel("deployed accuracy %")
        ax.set_title(f"{dataset}: accuracy on the emulated device (bars) and at training time (ticks)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load_table(path: Path) -> dict:
    try:
        table = json.loads(path.read_text())
        table["rows"], table["meta"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"error: cannot read the table {path}: {e}")
    return table


def _load_progress(path: Path, meta: dict) -> list[dict]:
    """Rows of an interrupted run with the same settings (the file's first line is its meta)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or "meta" not in lines[0]:
        raise SystemExit(f"error: {path} is not a progress file of this benchmark")
    old = lines[0]["meta"]
    for key in ("board", "epochs", "quick"):
        if old.get(key) != meta[key]:
            raise SystemExit(f"error: {path} was written with {key} {old.get(key)!r}, this run has {meta[key]!r}")
    return [line["row"] for line in lines[1:] if "row" in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="mps2-an386")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="short training (4 + 2 epochs), for a smoke run")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--profiles", nargs="+", default=PROFILES)
    parser.add_argument("--frameworks", nargs="+", default=None, metavar="NAME",
                        help=f"of {', '.join(FRAMEWORK_IDS)} (default: every one whose package imports)")
    parser.add_argument("--merge", action="store_true",
                        help="replace the rows of the same data set/profile/framework in OUT/comparison.json, "
                             "keep the others")
    parser.add_argument("--seed", type=int, default=0,
                        help="the initial network and data order of every framework (benchmarks/comparison_seeds.py "
                             "summarizes tables of several seeds)")
    parser.add_argument("--resume", action="store_true", help=f"continue from OUT/{PROGRESS}")
    parser.add_argument("--reuse-cqtf", type=Path, default=None, metavar="DIR",
                        help="take cqtf models trained with the same budget from DIR/DATASET/PROFILE (the --work "
                             "directory of profiles_accuracy.py) instead of training them again")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite OUT/comparison.md and .png from OUT/comparison.json")
    args = parser.parse_args(argv)
    if args.render_only:
        table = _load_table(args.out / "comparison.json")
        write_atomic(args.out / "comparison.md", markdown(table["rows"], table["meta"]))
        _plot(table["rows"], args.out / "comparison.png")
        print(f"wrote {args.out / 'comparison.md'}", file=sys.stderr)
        return 0
    try:
        frameworks, notes = select_frameworks(args.frameworks,
                                             unavailable_frameworks(args.frameworks or FRAMEWORK_IDS))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    float_epochs, quant_epochs = (4, 2) if args.quick else (40, 20)
    epochs = (float_epochs, quant_epochs)
    meta = {"board": args.board, "epochs": list(epochs), "quick": args.quick, "seed": args.seed,
            "datasets": args.datasets, "profiles": args.profiles, "frameworks": frameworks,
            "versions": versions(frameworks)}
    table_path, progress_path = args.out / "comparison.json", args.out / PROGRESS
    if args.merge and table_path.exists():  # refuse an incompatible table now, not after an hour of training
        try:
            merge_meta(_load_table(table_path)["meta"], meta)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if progress_path.exists() and not args.resume:  # an interrupted run's rows: kept aside, not overwritten
        kept = progress_path.with_name(progress_path.name + ".old")
        os.replace(progress_path, kept)
        print(f"an earlier run's progress moved to {kept} (--resume continues such a run)", file=sys.stderr)
    rows = _load_progress(progress_path, meta) if args.resume else []
    done = {row_key(r) for r in rows}
    if rows:
        print(f"resuming: {len(rows)} rows from {progress_path}", file=sys.stderr)
    with open(progress_path, "a" if args.resume else "w") as progress:
        if not rows:
            progress.write(json.dumps({"meta": meta}) + "\n")

        def record(row: dict) -> None:
            rows.append(row)
            progress.write(json.dumps({"row": row}) + "\n")
            progress.flush()
            print(f"{row['dataset']:8s} {row['profile']:13s} {row['framework']:22s} training "
                  f"{row['training_accuracy']:.4f} deployed {row['deployed_accuracy']:.4f} gap {row['gap']:+.4f}"
                  + (f" tflm {row['tflm_accuracy']:.4f} tflm!=device {row['tflm_mismatched_vs_device']}"
                     if "tflm_accuracy" in row else ""), file=sys.stderr, flush=True)

        with tempfile.TemporaryDirectory(prefix="cqtf-compare-") as tmp:
            workdir = Path(tmp)
            for dataset in args.datasets:
                model = DATASETS[dataset]
                data = None
                for fid in frameworks:
                    todo = [p for p in args.profiles if (dataset, p, fid) not in done]
                    if not todo:
                        continue
                    if fid == "cqtf":
                        for profile in todo:
                            started = time.perf_counter()
                            framework = _cqtf(dataset, model, profile, epochs, workdir, args.reuse_cqtf, args.seed)
                            record(_row(dataset, profile, fid, framework, args.board,
                                        workdir / f"{dataset}-{profile}-{fid}", time.perf_counter() - started,
                                        epochs))
                        continue
                    data = data or load_dataset(dataset)
                    started = time.perf_counter()
                    trained = _trainer(fid, model, float_epochs, quant_epochs, args.seed)(data)
                    seconds = time.perf_counter() - started
                    for profile in todo:
                        record(_row(dataset, profile, fid, _on_profile(trained, dataset, profile), args.board,
                                    workdir / f"{dataset}-{profile}-{fid}", seconds, epochs))
    rows = sort_rows(rows, args.datasets, args.profiles)
    if args.merge and table_path.exists():
        old = _load_table(table_path)
        meta = merge_meta(old["meta"], meta)
        rows = merge_rows(old["rows"], rows, meta["datasets"], meta["profiles"])
        print(f"merged into {table_path}: {len(rows)} rows", file=sys.stderr)
    write_atomic(table_path, json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    write_atomic(args.out / "comparison.md", markdown(rows, meta))
    _plot(rows, args.out / "comparison.png")
    progress_path.unlink(missing_ok=True)
    print(f"wrote {args.out / 'comparison.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
