"""PlatformIO without its registry: provision a core dir so that `pio run` works offline.

PlatformIO 6.2 normally downloads two things from its registry, which this project does not use:
  - `tool-scons`, the SCons it runs builds with. We install the `scons` package of this Python
    (pinned in pyproject.toml) as that package: a copy of SCons, a `scons.py` entry point, a
    package.json, and a `.piopm` whose spec names owner `platformio` (PlatformIO accepts a core
    package only from that owner).
  - the toolchain. Our dev-platform (firmware/platform) asks for `toolchain-gccarmnoneeabi`; we
    make it a folder of symlinks to the system's arm-none-eabi-* (Debian: gcc-arm-none-eabi).
The environment returned by prepare() also turns off the upgrade check and telemetry, which
otherwise try the network (about 61 s each time they time out).

Usage: env = {**os.environ, **prepare(core_dir)}; subprocess.run([... "pio", "run"], env=env).
By hand: eval "$(python -m cqtf.pio_offline)"   (prints export lines for the default core dir).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cqtf.errors import ToolchainError

TOOLCHAIN_PACKAGE = "toolchain-gccarmnoneeabi"
SCONS_PACKAGE = "tool-scons"
# PlatformIO 6.2.0's requirement for tool-scons (platformio.dependencies.get_core_dependencies).
SCONS_REQUIREMENT = "~4.41101.0"

_STAMP = ".cqtf-provisioned"


def repo_root() -> Path:
    """The checkout holding platformio.ini (this package is installed in editable mode)."""
    candidates = []
    if os.environ.get("CQTF_REPO"):
        candidates.append(Path(os.environ["CQTF_REPO"]))
    candidates.append(Path(__file__).resolve().parent.parent)
    cwd = Path.cwd().resolve()
    candidates.extend([cwd, *cwd.parents])
    for path in candidates:
        if (path / "platformio.ini").is_file() and (path / "firmware").is_dir():
            return path
    raise ToolchainError(
        "cannot find the cqtf checkout (platformio.ini)",
        "install cqtf in editable mode (pip install -e .) or set CQTF_REPO to the checkout",
    )


def default_core_dir() -> Path:
    """PLATFORMIO_CORE_DIR inside the checkout's ignored build area."""
    return repo_root() / ".cqtf-build" / "pio-core"


def pio_env(core_dir: Path) -> dict[str, str]:
    """The variables to run pio with (no provisioning)."""
    return {
        "PLATFORMIO_CORE_DIR": str(Path(core_dir).resolve()),
        "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
        "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
    }


def prepare(core_dir: Path) -> dict[str, str]:
    """Provision core_dir/packages/{tool-scons,toolchain-gccarmnoneeabi}; return pio's env vars.

    Idempotent and cheap when already provisioned (a few stat calls and one `gcc -dumpversion`).
    Raises ToolchainError when arm-none-eabi-gcc, newlib or SCons is missing.
    """
    core_dir = Path(core_dir).resolve()
    packages = core_dir / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    _provision_toolchain(packages)
    _provision_scons(packages)
    return pio_env(core_dir)


# --- tool-scons ---------------------------------------------------------------------------------


def _scons_source() -> tuple[Path, str]:
    try:
        import SCons  # noqa: PLC0415  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise ToolchainError(
            "SCons is not installed in this Python", "pip install scons==4.11.1"
        ) from exc
    return Path(SCons.__file__).resolve().parent, str(SCons.__version__)


def _scons_pkg_version(version: str) -> str:
    """SCons 4.11.1 -> PlatformIO's tool-scons version 4.41101.0."""
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in version.split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    return f"4.{major}{minor:02d}{patch:02d}.0"


def _provision_scons(packages: Path) -> None:
    src, version = _scons_source()
    pkg_version = _scons_pkg_version(version)
    if pkg_version != SCONS_REQUIREMENT.lstrip("~"):
        raise ToolchainError(
            f"PlatformIO 6.2.0 needs SCons 4.11.1, this Python has SCons {version}",
            "pip install scons==4.11.1",
        )
    dest = packages / SCONS_PACKAGE
    stamp = {"version": pkg_version, "source": str(src)}
    if _stamp_matches(dest, stamp) and (dest / "SCons" / "__init__.py").is_file():
        return

    def fill(tmp: Path) -> None:
        shutil.copytree(src, tmp / "SCons", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (tmp / "scons.py").write_text(
            "# Entry point PlatformIO runs as `python scons.py ...` (SCons copied from PyPI's scons).\n"
            "import os\nimport sys\n\n"
            "sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n\n"
            "from SCons.Script import main  # noqa: E402\n\n"
            'if __name__ == "__main__":\n    main()\n'
        )
        _write_json(
            tmp / "package.json",
            {
                "name": SCONS_PACKAGE,
                "version": pkg_version,
                "description": f"SCons {version} from PyPI, provisioned offline by cqtf",
                "homepage": "https://scons.org",
                "license": "MIT",
            },
        )
        _write_json(
            tmp / ".piopm",
            {
                "type": "tool",
                "name": SCONS_PACKAGE,
                "version": pkg_version,
                "spec": {
                    "owner": "platformio",
                    "id": None,
                    "name": SCONS_PACKAGE,
                    "requirements": SCONS_REQUIREMENT,
                    "uri": None,
                },
            },
        )

    _install_atomically(packages, dest, fill, stamp)


# --- toolchain ----------------------------------------------------------------------------------


def _find_gcc() -> Path:
    gcc = shutil.which("arm-none-eabi-gcc")
    if not gcc:
        raise ToolchainError(
            "arm-none-eabi-gcc not found",
            "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
        )
    return Path(gcc)


def _run_gcc(gcc: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            [str(gcc), *args], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(
            f"{gcc} does not run: {exc}", "reinstall the Debian package gcc-arm-none-eabi"
        ) from exc
    return out.stdout.strip()


def _toolchain_pkg_version(gcc_version: str) -> str:
    """gcc 12.2.1 -> 1.120201.0 (PlatformIO's scheme for toolchain-gccarmnoneeabi)."""
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in gcc_version.split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    return f"1.{major}{minor:02d}{patch:02d}.0"


def _provision_toolchain(packages: Path) -> None:
    gcc = _find_gcc()
    gcc_version = _run_gcc(gcc, "-dumpfullversion")
    bindir = gcc.parent
    tools = sorted(p.name for p in bindir.glob("arm-none-eabi-*"))
    dest = packages / TOOLCHAIN_PACKAGE
    stamp = {
        "version": _toolchain_pkg_version(gcc_version),
        "bindir": str(bindir),
        "tools": tools,
    }
    if _stamp_matches(dest, stamp):
        return
    # Checked only when (re)provisioning: `-print-file-name` echoes the bare name when not found.
    if _run_gcc(gcc, "-print-file-name=nano.specs") == "nano.specs":
        raise ToolchainError(
            "newlib for arm-none-eabi is missing (no nano.specs)",
            "apt-get install libnewlib-arm-none-eabi",
        )

    def fill(tmp: Path) -> None:
        (tmp / "bin").mkdir()
        for name in tools:
            (tmp / "bin" / name).symlink_to(bindir / name)
        _write_json(
            tmp / "package.json",
            {
                "name": TOOLCHAIN_PACKAGE,
                "version": stamp["version"],
                "description": f"System GNU Arm Embedded toolchain {gcc_version} "
                f"(symlinks to {bindir}), provisioned offline by cqtf",
            },
        )

    _install_atomically(packages, dest, fill, stamp)


# --- helpers ------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _stamp_matches(dest: Path, stamp: dict) -> bool:
    try:
        return json.loads((dest / _STAMP).read_text()) == stamp and (dest / "package.json").is_file()
    except (OSError, ValueError):
        return False


def _install_atomically(packages: Path, dest: Path, fill, stamp: dict) -> None:
    """Build the package in a temporary folder, then rename it into place.

    PlatformIO skips folders named `_tmp_installing*`, so a half-built package is never seen;
    when two processes race, the first rename wins and the other discards its copy.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"_tmp_installing-{dest.name}-", dir=packages))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        fill(tmp)
        _write_json(tmp / _STAMP, stamp)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f"_tmp_installing-old-{dest.name}-", dir=packages))
            try:
                dest.rename(old / "pkg")
            except OSError:
                pass  # someone else replaced it meanwhile
            shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(dest)
        except OSError:
            if not _stamp_matches(dest, stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m cqtf.pio_offline [CORE_DIR]`: provision and print shell export lines."""
    import argparse  # noqa: PLC0415  # pylint: disable=import-outside-toplevel
    import shlex  # noqa: PLC0415  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(
        prog="python -m cqtf.pio_offline",
        description="Provision a PlatformIO core dir for offline builds; print export lines.",
    )
    parser.add_argument("core_dir", nargs="?", type=Path, help="default: .cqtf-build/pio-core")
    args = parser.parse_args(argv)
    try:
        env = prepare(args.core_dir or default_core_dir())
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
