"""The README's first commands on an unsupported Python: `make` refuses a Python older than 3.11 at once, naming
the version and what to run instead, before it creates a venv or installs anything."""

from __future__ import annotations

import glob
import shutil
import subprocess

import pytest

from tests.support import REPO


def python_3_10() -> str | None:
    """A Python 3.10 that runs (a pyenv shim of a version not selected does not)."""
    for exe in [shutil.which("python3.10"), *sorted(glob.glob("/root/.pyenv/versions/3.10.*/bin/python3"))]:
        if exe and subprocess.run([exe, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 10))"],
                                  capture_output=True).returncode == 0:
            return exe
    return None


OLD = python_3_10()


@pytest.mark.skipif(OLD is None, reason="no Python 3.10 on this machine to try the refusal with")
def test_make_refuses_python_3_10_before_installing(tmp_path):
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-C", str(REPO), "install", f"PYTHON={OLD}", f"VENV={venv}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ggufbench needs Python 3.11 or newer" in out.stderr and "is 3.10." in out.stderr, out.stderr
    assert not venv.exists()
