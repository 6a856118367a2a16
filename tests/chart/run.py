"""Runs every chart test (tests/chart/test_*.py) and ends with one 'N passed, N failed' line.
Usage: .venv/bin/python tests/chart/run.py   (from anywhere; `make chart-test` does this)."""

import pathlib
import sys
import unittest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

suite = unittest.defaultTestLoader.discover(str(HERE), pattern="test_*.py", top_level_dir=str(HERE))
result = unittest.TextTestRunner(verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors)
passed = result.testsRun - failed - len(result.skipped)
# A skipped chart test is a failure: every tool it needs must be there.
failed += len(result.skipped)
print(f"chart: {passed} passed, {failed} failed")
sys.exit(1 if failed or result.testsRun == 0 else 0)
