"""What the hardware-in-the-loop suite runs over: targets, zoo models, profiles.

Everything is read from cqtf's registries at run time, so that a board, a model or a profile added
to cqtf is tested without touching this suite:
  targets   the board environments of platformio.ini; emulated = also in cqtf.emulator.BOARDS (QEMU)
  models    cqtf.train.model.ZOO
  profiles  the presets of cqtf.profile when that module exists (else int8), restricted to the
            profiles the packer declares it can pack (else int8)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from cqtf.pipeline import DEFAULT_BOARD

DEFAULT_MODEL = "digits_cnn"
DEFAULT_PROFILE = "int8"
# Names under which a registry may publish its entries (tolerant of how the modules grow).
_REGISTRY_NAMES = ("PRESETS", "PROFILES", "presets", "profiles", "available_profiles")
_PACKER_NAMES = ("FIRMWARE_PROFILES", "SUPPORTED_PROFILES", "PACKABLE_PROFILES", "supported_profiles")


@dataclass(frozen=True)
class Combo:
    """One cell of the matrix: a model of the zoo trained for a profile, run on a target."""

    target: str
    model: str
    profile: str

    @property
    def id(self) -> str:
        return f"{self.target}-{self.model}-{self.profile}"


def board_envs() -> list[str]:
    from cqtf.firmware_build import boards

    return boards()


def emulated_targets() -> list[str]:
    """Board environments that QEMU can run, in platformio.ini order."""
    from cqtf.emulator import BOARDS

    return [env for env in board_envs() if env in BOARDS]


def is_emulated(target: str) -> bool:
    from cqtf.emulator import BOARDS

    return target in BOARDS


def zoo_models() -> list[str]:
    from cqtf.train.model import ZOO

    return list(ZOO)


def _names(registry) -> list[str] | None:
    if callable(registry):
        registry = registry()
    if isinstance(registry, dict):
        return list(registry)
    if isinstance(registry, (list, tuple, set, frozenset)):
        return [getattr(entry, "name", entry) for entry in registry]
    return None


def _first_registry(module_names: tuple[str, ...], attributes: tuple[str, ...]) -> list[str] | None:
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in attributes:
            names = _names(getattr(module, attribute, None))
            if names:
                return [str(n) for n in names]
    return None


def registered_profiles() -> list[str]:
    return _first_registry(("cqtf.profile", "cqtf.profiles"), _REGISTRY_NAMES) or [DEFAULT_PROFILE]


def packable_profiles() -> list[str]:
    return _first_registry(("cqtf.pack", "cqtf.pack.header", "cqtf.profile"), _PACKER_NAMES) or [DEFAULT_PROFILE]


def profiles() -> tuple[list[str], list[str]]:
    """(profiles to test, registered profiles the packer cannot pack yet)."""
    packable = set(packable_profiles())
    registered = registered_profiles()
    return [p for p in registered if p in packable], [p for p in registered if p not in packable]


def dataset_for(model: str) -> str:
    """The data set a zoo model is trained on: declared by the zoo when it says so, else by its name."""
    from cqtf.train import model as zoo

    for attribute in ("ZOO_DATASETS", "DATASETS", "MODEL_DATASETS"):
        table = getattr(zoo, attribute, None)
        if isinstance(table, dict) and model in table:
            return str(table[model])
    builder = zoo.ZOO.get(model)
    for attribute in ("dataset", "default_dataset"):
        if isinstance(getattr(builder, attribute, None), str):
            return getattr(builder, attribute)
    return "mnist1d" if "mnist1d" in model else "digits"


def matrix(targets: list[str], full: bool) -> list[Combo]:
    """Every model x profile on every target when `full`, else the default model and profile only."""
    if not full:
        return [Combo(t, DEFAULT_MODEL, DEFAULT_PROFILE) for t in targets]
    tested, _ = profiles()
    return [Combo(t, m, p) for t in targets for m in zoo_models() for p in tested]


def default_targets() -> list[str]:
    return [DEFAULT_BOARD]
