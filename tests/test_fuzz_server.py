"""The firmware's receive path survives damaged and hostile frames (a short run of the fuzzer in
tests/fuzz/; results/fuzz_frames.json holds the figures of the long one)."""
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import fuzz_frames  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_fuzzed_frames_neither_crash_nor_hang_the_server(trained_dir, tmp_path):
    exe = fuzz_frames.build(trained_dir.root, tmp_path)
    stats = fuzz_frames.run(exe, trained_dir.load_model(), frames=30_000, seed=1, time_limit=120)
    # every kind of outcome was reached, so the run exercised the paths it claims to
    assert stats["frames"] >= 30_000
    for outcome in ("answered", "rejected", "overflow", "malformed", "error_replies", "inferences"):
        assert stats[outcome] > 0, (outcome, stats)


def _broken_server(tmp_path, original: str, mutated: str):
    source = (fuzz_frames.FIRMWARE_SRC / "server.c").read_text()
    assert original in source  # the mutation must still apply to today's server
    broken = tmp_path / "server_broken.c"
    broken.write_text(source.replace('#include "server.h"', '#include "server.h"\n#include "engine.h"', 1)
                      .replace(original, mutated))
    return broken


@pytest.mark.parametrize("original, mutated, caught", [
    ("resp->crc[0] = (uint8_t)(crc & 0xFFu);", "resp->crc[0] = (uint8_t)((crc ^ 1u) & 0xFFu);", "bad CRC"),
    ("return resp->spans[0].len + body->len + 2u;", "return resp->spans[0].len + body->len + 1u;", "longer than"),
    ("body->len = size;", "body->len = size - (size > 1u);", "wrong length"),
])
def test_the_harness_catches_a_broken_response(trained_dir, tmp_path, monkeypatch, original, mutated, caught):
    """A server whose responses are corrupt, or whose length is off by one, must make the fuzzer fail."""
    broken = _broken_server(tmp_path, original, mutated)
    monkeypatch.setattr(fuzz_frames, "SOURCES", [broken if s.name == "server.c" else s for s in fuzz_frames.SOURCES])
    exe = fuzz_frames.build(trained_dir.root, tmp_path)
    with pytest.raises(AssertionError, match=caught):
        fuzz_frames.run(exe, trained_dir.load_model(), frames=2_000, seed=2, time_limit=60)
