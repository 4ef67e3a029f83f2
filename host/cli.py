"""The `cqtf` command: train, pack, build, emulate, validate, or run them all."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from cqtf.errors import CqtfError, MismatchFound
from cqtf.pipeline import DEFAULT_BOARD, ModelDir
from cqtf.profile import PRESETS

PROFILE_NAMES = tuple(PRESETS)

DEFAULT_OUT = "runs/default"


def _progress(phase: str, epoch: int, epochs: int, loss: float) -> None:
    if epoch == epochs or epoch % 10 == 0:
        click.echo(f"  {phase:9s} epoch {epoch:3d}/{epochs}  loss {loss:.4f}", err=True)


def _board_option(f):
    return click.option("--board", default=DEFAULT_BOARD, show_default=True, help="Target board (emulated or real).")(f)


def _model_dir_option(f):
    return click.option("--model-dir", "--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
                        required=True, help="Model directory written by `cqtf train`.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cqtf")
def cli():
    """Train quantized networks with the device's exact arithmetic, deploy them, validate them on the device."""


@cli.command()
@click.option("--dataset", default=None,
              help="'digits', 'mnist1d' or a PATH.npz (default: the data set the zoo model is made for).")
@click.option("--model", "model_name", default=None,
              help="Architecture from the zoo (default: the one made for --dataset; digits_cnn for a PATH.npz).")
@click.option("--profile", default="int8", show_default=True,
              help=f"Device arithmetic profile: {', '.join(PROFILE_NAMES)}.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--epochs", type=(int, int), default=None, help="Float and quantized epochs (defaults: 40 20).")
@click.option("--validation-fraction", type=click.FloatRange(0.0, 0.5, max_open=True), default=None,
              help="Share of the training data held out to choose the network that ships (default 0: choose "
                   "on the training data, which every phase trains on).")
@click.option("--seed", type=int, default=None, help="Initial network, data order and held-out share (default 0).")
def train(dataset, model_name, profile, out, epochs, validation_fraction, seed):
    """Train with the device's integer forward pass; writes OUT/model.npz and OUT/train.json."""
    from cqtf.pipeline import train_stage

    dataset, model_name = _dataset_and_model(dataset, model_name)
    click.echo(f"training {model_name} on {dataset} for profile {profile}", err=True)
    summary = train_stage(dataset, model_name, profile, ModelDir(out), epochs, _progress, validation_fraction, seed)
    click.echo(f"float accuracy {summary['float_accuracy']:.4f}, host (device-exact) accuracy "
               f"{summary['host_accuracy']:.4f}, model {summary['model_hash'][:16]} -> {out}")


@cli.command()
@_model_dir_option
def pack(model_dir):
    """Write the packed C header (MODEL_DIR/cqtf_model.h) from MODEL_DIR/model.npz."""
    from cqtf.pipeline import pack_stage

    click.echo(f"wrote {pack_stage(ModelDir(model_dir))}")


@cli.command()
@_model_dir_option
@_board_option
def build(model_dir, board):
    """Compile the firmware for BOARD with the packed model (PlatformIO, offline)."""
    from cqtf.pipeline import build_stage

    click.echo(f"built {build_stage(ModelDir(model_dir), board)}")


@cli.command()
@_model_dir_option
@_board_option
@click.option("--serial", "serial_spec", default=None, help="tcp:PORT to listen on (default: a free port).")
@click.option("--emulator", type=click.Choice(["qemu", "renode"]), default="qemu", show_default=True,
              help="Renode runs the boards it models (docs/hil.md); it must be installed.")
def emulate(model_dir, board, serial_spec, emulator):
    """Start an emulated board running MODEL_DIR's firmware; stays up until Ctrl-C."""
    import time

    from cqtf.pipeline import build_stage

    port = _tcp_port(serial_spec)
    if emulator == "renode":
        from cqtf.renode import emulate as start_emulator, platform_for, require_renode

        require_renode()  # both checked before the build
        platform_for(board)
    else:
        from cqtf.emulator import emulate as start_emulator
    elf = build_stage(ModelDir(model_dir), board)
    with start_emulator(board, elf, port=port) as device:
        click.echo(f"{board} running {elf} on {emulator}; serial at {device.url}  (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            while device.is_running():
                time.sleep(0.5)


def _tcp_port(spec: str | None) -> int | None:
    if spec is None:
        return None
    if not spec.startswith("tcp:") or not spec[4:].isdigit():
        raise click.BadParameter(f"'{spec}' is not tcp:PORT", param_hint="--serial")
    return int(spec[4:])


@cli.command()
@click.option("--port", "urls", required=True, multiple=True,
              help="Serial device path or URL (socket://host:port, rfc2217://host:port, a pty); "
                   "repeat it for several boards, which share the samples.")
@_model_dir_option
@click.option("--data", default=None, help="'digits', 'mnist1d' or PATH.npz (default: the data set the model was trained on).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default: the model directory).")
@click.option("--baud", default=115200, show_default=True)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds of silence before a request is re-sent.")
@click.option("--retries", default=3, show_default=True, help="Re-sends of one request before giving up.")
@click.option("--window", type=click.IntRange(1, 64), default=None,
              help="Requests in flight (default: as many as the device's receive buffer holds).")
@click.option("--reset", type=click.Choice(["dtr", "rts"]), default=None,
              help="Pulse this line after opening a real port, to restart the board.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT/progress.jsonl.")
def validate(urls, model_dir, data, out, baud, timeout, retries, window, reset, resume):
    """Validate running devices (real or emulated) against MODEL_DIR's model, sample by sample."""
    from cqtf.jobs import validate_on_port

    report = validate_on_port(list(urls), ModelDir(model_dir), data, out or model_dir, baud=baud, timeout=timeout,
                              retries=retries, window=window, reset=reset, resume=resume)
    _finish(report, out or model_dir)


@cli.command()
def ports():
    """List the serial ports of this machine (boards on USB first), for `validate --port`."""
    from cqtf.link.transport import list_ports

    found = list_ports()
    for p in found:
        click.echo("  ".join(x for x in (p["device"], p["usb"], p["description"], p["serial_number"]) if x))
    if not found:
        click.echo("no serial ports found (an emulated board: `cqtf emulate`, then --port socket://...)", err=True)


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--dataset", default=None, help="'digits', 'mnist1d' or a PATH.npz (default: the model's own).")
@click.option("--model", "model_name", default=None,
              help="Architecture from the zoo (default: the one made for --dataset; digits_cnn for a PATH.npz).")
@click.option("--profile", default="int8", show_default=True, help=f"One of: {', '.join(PROFILE_NAMES)}.")
@_board_option
@click.option("--epochs", type=(int, int), default=None, help="Float and quantized epochs (defaults: 40 20).")
@click.option("--jobs", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Emulator instances that share the test set.")
@click.option("--validation-fraction", type=click.FloatRange(0.0, 0.5, max_open=True), default=None,
              help="Share of the training data held out to choose the network that ships (default 0: choose "
                   "on the training data, which every phase trains on).")
@click.option("--seed", type=int, default=None, help="Initial network, data order and held-out share (default 0).")
def run(out, dataset, model_name, profile, board, epochs, jobs, validation_fraction, seed):
    """Train, pack, build, boot the emulated board, validate every test sample, report."""
    from cqtf.jobs import run_all

    dataset, model_name = _dataset_and_model(dataset, model_name)
    report = run_all(out, dataset, model_name, profile, board, epochs, _progress,
                     jobs=jobs, validation_fraction=validation_fraction, seed=seed)
    _finish(report, out)


def _dataset_and_model(dataset: str | None, model_name: str | None) -> tuple[str, str]:
    """Whichever of the two is missing follows the other: a zoo model's own data set, a data set's zoo
    model (the first made for it: digits_cnn, mnist1d_cnn); neither given: digits_cnn on digits."""
    from cqtf.train.model import ZOO_DATASETS

    if model_name is None:
        model_name = next((m for m, d in ZOO_DATASETS.items() if d == dataset), "digits_cnn")
    return dataset or ZOO_DATASETS.get(model_name, "digits"), model_name


def _finish(report: dict, out: Path) -> None:
    click.echo(summary_text(report))
    click.echo(f"report: {out / 'report.json'}, {out / 'report.md'}")
    if report["mismatched_samples"]:
        raise MismatchFound(f"{report['mismatched_samples']} of {report['samples']} samples differ between device "
                            f"and host simulation", f"see {out / 'report.md'} for the first differing layer and element")
    if report.get("tflm_mismatched_samples"):
        raise MismatchFound(f"{report['tflm_mismatched_samples']} of {report['samples']} samples differ between "
                            "the device and TFLite Micro's interpreter", f"see {out / 'report.md'}")


def summary_text(report: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    return "\n".join([
        f"model {report['model']} ({report['profile']}) on {report['board']}, hash {report['model_hash'][:16]}",
        f"  float accuracy   {pct(report['float_accuracy'])}",
        f"  host accuracy    {pct(report['host_accuracy'])}   (integer simulation used in training)",
        f"  device accuracy  {pct(report['device_accuracy'])}",
        f"  samples {report['samples']}, mismatched {report['mismatched_samples']}, link errors {report['link_errors']}",
        f"  throughput {report['throughput_samples_per_s']} samples/s, "
        f"{report['instructions_per_inference']} instructions per inference",
        f"  tflite-micro interpreter: {_tflm_line(report)}",
    ])


def _tflm_line(report: dict) -> str:
    if report.get("tflm_mismatched_samples") is None:
        return f"not compared ({report.get('tflm_note')})"
    return f"mismatched {report['tflm_mismatched_samples']} (vs device), {report['tflm_host_mismatched_samples']} (vs host)"


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except CqtfError as e:
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"  hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
