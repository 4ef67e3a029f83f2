"""Validation reports: JSON for machines, Markdown and a PNG confusion matrix for people."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cqtf.validate import ValidationResult


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(reference: np.ndarray, predicted: np.ndarray, ref_classes: np.ndarray, pred_classes: np.ndarray) -> dict:
    """The figures of ST's validation for two sets of output tensors (N, K): acc (classes agree),
    rmse, mae, l2r (||ref - pred|| / ||ref||) and cos (cosine similarity), over all elements."""
    ref, pred = reference.astype(np.float64).ravel(), predicted.astype(np.float64).ravel()
    diff = ref - pred
    norms = np.linalg.norm(ref) * np.linalg.norm(pred)
    return {
        "acc": round(float((ref_classes == pred_classes).mean()), 6) if len(ref_classes) else None,
        "rmse": round(float(np.sqrt(np.mean(diff ** 2))), 6) if diff.size else None,
        "mae": round(float(np.mean(np.abs(diff))), 6) if diff.size else None,
        "l2r": round(float(np.linalg.norm(diff) / np.linalg.norm(ref)), 6) if np.linalg.norm(ref) else None,
        "cos": round(float(ref @ pred / norms), 6) if norms else None,
    }


def metric_rows(result: ValidationResult, num_classes: int, output_scale: float, output_zero_point: int) -> dict:
    """device vs labels, host vs labels (softmax of the dequantized outputs against one-hot
    labels) and device vs host (the dequantized outputs themselves)."""
    def real(q):
        return (q.astype(np.float64) - output_zero_point) * output_scale

    one_hot = np.eye(num_classes)[result.labels]
    device, host = real(result.device_outputs), real(result.host_outputs)
    return {
        "device_vs_labels": compare(one_hot, _softmax(device), result.labels, result.device_predictions),
        "host_vs_labels": compare(one_hot, _softmax(host), result.labels, result.host_predictions),
        "device_vs_host": compare(host, device, result.host_predictions, result.device_predictions),
    }


def build_report(result: ValidationResult, *, model_hash: str, dataset: str, model_name: str, profile: str,
                 num_classes: int, float_accuracy: float | None = None,
                 training_host_accuracy: float | None = None, instructions_per_tick: float | None = None,
                 output_scale: float = 1.0, output_zero_point: int = 0) -> dict:
    """The report as a dict; the keys of the checking contract come first."""
    mismatched = int(result.mismatched.sum())
    confusion = confusion_matrix(result.labels, result.device_predictions, num_classes)
    per_class = (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).round(4).tolist()
    mean_ticks = float(result.ticks.mean()) if len(result.ticks) else 0.0
    timed = result.samples if result.samples_timed is None else result.samples_timed
    campaign = result.campaign
    report = {
        "float_accuracy": float_accuracy,
        "host_accuracy": result.host_accuracy,
        "device_accuracy": result.device_accuracy,
        "samples": result.samples,
        "mismatched_samples": mismatched,
        "board": result.device_info.board,
        "model_hash": model_hash,
        "dataset": dataset,
        "model": model_name,
        "profile": profile,
        "training_host_accuracy": training_host_accuracy,
        "bit_exact": mismatched == 0,
        "prediction_disagreements": int((result.device_predictions != result.host_predictions).sum()),
        "throughput_samples_per_s": round(timed / result.seconds, 2) if result.seconds and timed else None,
        "validation_seconds": round(result.seconds, 3),
        "ticks_per_inference": mean_ticks,
        "instructions_per_inference": round(mean_ticks * instructions_per_tick) if instructions_per_tick else None,
        "firmware_version": result.device_info.firmware_version,
        "device_model_hash": result.device_info.model_hash,
        "link_errors": result.link.errors,
        "link_stats": asdict(result.link),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "mismatches": [asdict(m) for m in result.mismatches],
        "metrics": metric_rows(result, num_classes, output_scale, output_zero_point),
        "link_recovery": asdict(result.recovery),
        "campaign": {
            "devices": campaign.devices if campaign else 1,
            "resumed_samples": campaign.resumed_samples if campaign else 0,
            "lost_samples": 0,  # a campaign with samples missing raises instead of reporting
            "shards": [asdict(s) for s in campaign.shards] if campaign else [],
        },
    }
    return report


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _recovery(report: dict) -> str:
    r, c = report["link_recovery"], report["campaign"]
    text = f"{r['retransmits']} retransmits, {r['resets']} device resets, {r['reconnects']} reconnects"
    if c["devices"] > 1:
        text += f"; {c['devices']} devices"
    if c["resumed_samples"]:
        text += f"; {c['resumed_samples']} samples resumed"
    return text


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def render_markdown(report: dict) -> str:
    verdict = "bit-exact: every device output equals the host simulation" if report["bit_exact"] else (
        f"**{report['mismatched_samples']} of {report['samples']} samples differ from the host simulation**")
    lines = [
        f"# cqtf validation: {report['model']} ({report['profile']}) on {report['board']}",
        "",
        f"{verdict}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| float accuracy (float network, same inputs) | {_pct(report['float_accuracy'])} |",
        f"| host accuracy (integer simulation = training) | {_pct(report['host_accuracy'])} |",
        f"| device accuracy | {_pct(report['device_accuracy'])} |",
        f"| samples | {report['samples']} |",
        f"| mismatched samples (any output byte) | {report['mismatched_samples']} |",
        f"| predictions that differ | {report['prediction_disagreements']} |",
        f"| throughput | {report['throughput_samples_per_s']} samples/s |",
        f"| instructions per inference | {report['instructions_per_inference']} |",
        f"| samples where TFLite Micro's interpreter differs from the device (host) | "
        f"{report.get('tflm_mismatched_samples', 'n/a')} ({report.get('tflm_host_mismatched_samples', 'n/a')})"
        + (f" — {report['tflm_note']}" if report.get("tflm_note") else "") + " |",
        f"| firmware flash / RAM (incl. stack) | {report.get('flash_bytes')} / {report.get('ram_bytes')} bytes |",
        f"| link errors | {report['link_errors']} |",
        f"| link recovery | {_recovery(report)} |",
        f"| model hash | `{report['model_hash'][:16]}` |",
        f"| firmware | {report['firmware_version']} |",
        "",
        "| comparison | acc | rmse | mae | l2r | cos |",
        "|---|---|---|---|---|---|",
        *(f"| {name.replace('_vs_', ' vs ')} | " + " | ".join(_num(row[k]) for k in ("acc", "rmse", "mae", "l2r", "cos"))
          + " |" for name, row in report["metrics"].items()),
        "",
        "Per-class device accuracy: " + ", ".join(f"{c}: {a:.3f}" for c, a in enumerate(report["per_class_accuracy"])),
        "",
        "![confusion matrix](confusion.png)",
    ]
    if report["mismatches"]:
        lines += ["", "## First differing layer and element", "",
                  "| sample | layer | kind | element (h, w, c) | device | host | differing elements |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {m['sample']} | {m['layer']} | {m['layer_kind']} | {tuple(m['element'])} | {m['device_value']} "
                  f"| {m['host_value']} | {m['differing_elements']} |" for m in report["mismatches"]]
    if report.get("tflm_mismatches"):
        lines += ["", "## First layer and element where TFLite Micro differs from the host simulation", "",
                  "| sample | layer | kind | element (h, w, c) | TFLM | host | differing elements |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {m['sample']} | {m['layer']} | {m['layer_kind']} | {tuple(m['element'])} | {m['tflm_value']} "
                  f"| {m['host_value']} | {m['differing_elements']} |" for m in report["tflm_mismatches"]]
    return "\n".join(lines) + "\n"


def plot_confusion(matrix: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 2 else "black")
    ax.set_xlabel("device prediction")
    ax.set_ylabel("label")
    ax.set_xticks(range(matrix.shape[0]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "confusion.png.tmp.png"
    plot_confusion(np.array(report["confusion_matrix"]), f"{report['model']} on {report['board']}: device", png)
    os.replace(png, out_dir / "confusion.png")
    write_atomic(out_dir / "report.md", render_markdown(report))
    write_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return out_dir / "report.json"
