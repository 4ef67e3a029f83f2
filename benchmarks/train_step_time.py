"""Training step time (forward + backward + optimizer): float, torch.ao fake-quant QAT, cqtf per profile.

    .venv/bin/python benchmarks/train_step_time.py [--repeats N] [--models digits_cnn mnist1d_cnn]

Same model and batch (32) for all; measurements interleaved round robin (the machine is shared and
noisy), median per variant, in thread CPU time (time.thread_time: a descheduled step does not
count). Writes results/train_step_time.{json,md} (and .png with matplotlib).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F

from cqtf.compare.plain import plain_layers
from cqtf.compare.torch_ao import ENGINE, _fuse_pairs, _Network
from cqtf.pipeline import dataset_for_profile
from cqtf.profile import FIRMWARE_PROFILES, TRAINING, get_profile
from cqtf.train.model import build_model
from cqtf.train.trainer import _calibrate

REPO = Path(__file__).resolve().parent.parent
BATCH = 32
SEED = 0  # every variant starts from the same initial network in every run (a narrow accumulator's cost
# depends on how many outputs may saturate, which depends on the weights)


def _float_step(model_name):
    data = dataset_for_profile(model_dataset(model_name), "int8")
    torch.manual_seed(SEED)
    model = build_model(model_name, data.input_shape, data.num_classes, data.input_quant)
    x, y = torch.from_numpy(data.x_train[:BATCH]), torch.from_numpy(data.y_train[:BATCH])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return _stepper(model, opt, x, y)


def _qat_step(model_name):
    data = dataset_for_profile(model_dataset(model_name), "int8")
    torch.manual_seed(SEED)
    zoo = build_model(model_name, data.input_shape, data.num_classes, data.input_quant)
    net = _Network(plain_layers(zoo))
    net.train()
    net = tq.fuse_modules_qat(net, _fuse_pairs(net))
    net.qconfig = tq.get_default_qat_qconfig(ENGINE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(net, inplace=True)
    x = torch.from_numpy(data.input_quant.dequantize(data.x_train[:BATCH])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(data.y_train[:BATCH])
    return _stepper(net, torch.optim.Adam(net.parameters(), lr=1e-4), x, y)


def _cqtf_step(model_name, profile):
    data = dataset_for_profile(model_dataset(model_name), profile)
    torch.manual_seed(SEED)
    model = build_model(model_name, data.input_shape, data.num_classes, data.input_quant, get_profile(profile))
    _calibrate(model, data)
    model.set_quantized(True)
    x, y = torch.from_numpy(data.x_train[:BATCH]), torch.from_numpy(data.y_train[:BATCH])
    if TRAINING.get(profile) == "wageubn":
        from cqtf.train.wageubn import Wageubn

        wage = Wageubn(model)
        return _stepper(model, wage.optimizer(model.parameters()), x, y, wage.after_backward)
    return _stepper(model, torch.optim.Adam(model.parameters(), lr=1e-5), x, y)


def _stepper(model, opt, x, y, after_backward=None):
    def step():
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if after_backward:
            after_backward()
        opt.step()
    return step


def model_dataset(model_name):
    return {"digits_cnn": "digits", "mnist1d_cnn": "mnist1d"}[model_name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "mnist1d_cnn"])
    parser.add_argument("--profiles", nargs="+", default=list(FIRMWARE_PROFILES))
    parser.add_argument("--out", type=Path, default=REPO / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model_name in args.models:
        variants = {"float": _float_step(model_name), "torch.ao QAT": _qat_step(model_name)}
        variants.update({p: _cqtf_step(model_name, p) for p in args.profiles})
        times = {k: [] for k in variants}
        for step in variants.values():
            step()  # warm-up
        for _ in range(args.repeats):  # round robin
            for name, step in variants.items():
                t = time.thread_time()
                step()
                times[name].append(time.thread_time() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, m in med.items():
            rows.append({"model": model_name, "variant": name, "median_ms": round(1e3 * m, 3),
                         "vs_float": round(m / med["float"], 3), "vs_torch_ao_qat": round(m / med["torch.ao QAT"], 3)})
            print(f"{model_name:12s} {name:14s} {1e3 * m:8.2f} ms  x{m / med['float']:.2f} float"
                  f"  x{m / med['torch.ao QAT']:.2f} QAT", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step_time.json").write_text(json.dumps(
        {"batch": BATCH, "repeats": args.repeats, "threads": 1, "rows": rows}, indent=2) + "\n")
    lines = [f"# Training step time (batch {BATCH}, median of {args.repeats} interleaved repeats, 1 thread, thread CPU time)", "",
             "| model | variant | ms / step | / float | / torch.ao QAT |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['median_ms']} | {r['vs_float']} | {r['vs_torch_ao_qat']} |"
              for r in rows]
    lines += ["", "Shared, noisy machine: ratios matter more than absolute times.",
              "Generated by benchmarks/train_step_time.py.", ""]
    (args.out / "train_step_time.md").write_text("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(args.models), figsize=(6 * len(args.models), 4), squeeze=False)
    for ax, model_name in zip(axes[0], args.models):
        sub = [r for r in rows if r["model"] == model_name]
        ax.bar([r["variant"] for r in sub], [r["vs_float"] for r in sub])
        ax.axhline(2.0, color="r", ls="--", lw=1)
        ax.set_title(f"{model_name}: step time / float")
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(args.out / "train_step_time.png", dpi=100)


if __name__ == "__main__":
    main()
