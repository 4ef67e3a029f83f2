"""Shared fixtures: a quickly trained digits model, packed, in a session-wide directory."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cqtf.pipeline import ModelDir, pack_stage, train_stage

QUICK_EPOCHS = (6, 3)  # enough for a real, non-trivial model; the full budget is exercised end to end


@pytest.fixture(scope="session")
def native_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("native")


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory) -> ModelDir:
    model_dir = ModelDir(tmp_path_factory.mktemp("model"))
    train_stage("digits", "digits_cnn", "int8", model_dir, QUICK_EPOCHS)
    pack_stage(model_dir)
    return model_dir


def needs(*tools: str):
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (run ./setup.sh)")


@pytest.fixture(scope="session")
def trained_blk32_dir(tmp_path_factory) -> ModelDir:
    """digits_cnn trained briefly for the CQTF block-accumulator profile, packed."""
    model_dir = ModelDir(tmp_path_factory.mktemp("model_blk32"))
    train_stage("digits", "digits_cnn", "fixed8-blk32", model_dir, (4, 2))
    pack_stage(model_dir)
    return model_dir
