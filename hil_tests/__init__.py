"""Hardware-in-the-loop tests: `pytest hil_tests --target BOARD` or `--port URL` (see conftest.py, docs/hil.md)."""
