"""The package's two command lines, `python -m ggufbench.synth` and `python -m ggufbench.lockfile`, as a user runs
them (the shims src/ggufbench/synth.py and lockfile.py; what they run is tested in tests/unit/sources/)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("module", "flags"), [("ggufbench.synth", ["--preset", "--vocab", "--dtype"]),
                                               ("ggufbench.lockfile", ["refresh"])])
def test_help_names_the_options(module, flags):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(f in out.stdout for f in flags), out.stdout


def test_a_bad_option_fails_with_usage():
    cmd = [sys.executable, "-m", "ggufbench.synth", "--out", "x.gguf", "--no-such-flag"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unrecognized arguments: --no-such-flag" in out.stderr
