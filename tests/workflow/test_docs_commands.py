"""Every snakemake command the README and docs show runs as written: each is dry-run (`-n` added) from a checkout
of the workflow, so a doc whose command drifts from the workflow (Snakemake 9 reading a target after
`--configfile` as a config file, an option that no longer exists) fails here."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tests.workflow.test_starter_config import starter_files

SETUP: dict[str, list[str]] = {}  # a doc's `cp config/...` lines, run before its commands
DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# options of Snakemake 9 that take several values: whatever follows them up to the next option is theirs
MULTI = {"--configfile", "--configfiles", "--config", "-C", "--forcerun", "-R", "--default-resources",
         "--set-resources", "--until", "-U", "--omit-from", "-O"}


def commands(path: Path) -> list[str]:
    """snakemake commands in a doc: lines of ```bash blocks (continuations joined, comments cut) and inline
    `snakemake ...` code; prose stand-ins with "..." are not commands."""
    text = path.read_text()
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("snakemake "):
                found.append(line)
            elif line.startswith("cp config/"):
                SETUP.setdefault(path.relative_to(REPO).as_posix(), []).append(line)
    for inline in re.findall(r"`(snakemake [^`]+)`", text.replace("\n", " ")):
        found.append(re.sub(r"\s+", " ", inline))
    # --report needs a finished run: tests/workflow/test_demo.py runs the README's --report command on the demo's
    return [c for c in dict.fromkeys(found) if "..." not in c and "--report" not in c]


CASES = [(p.relative_to(REPO).as_posix(), c) for p in DOCS if p.is_file() for c in commands(p)]


def test_the_docs_show_commands():
    assert len(CASES) >= 10, CASES  # the parser still finds them
    assert any("--profile profiles/slurm" in c for _, c in CASES)


@pytest.mark.parametrize(("doc", "cmd"), CASES, ids=[f"{d}:{c[10:60]}" for d, c in CASES])
def test_targets_come_before_options_that_take_several_values(doc, cmd):
    words = shlex.split(cmd)[1:]
    after_multi = False
    for w in words:
        if w.startswith("-"):
            after_multi = w in MULTI
        elif after_multi and not re.search(r"\.(ya?ml|json)$|=|^\w+$", w):
            pytest.fail(f"{doc}: `{cmd}`: {w!r} follows a multi-value option, so Snakemake 9 reads it as one of "
                        f"its values; put targets before it")


@pytest.mark.parametrize(("doc", "cmd"), CASES, ids=[f"{d}:{c[10:60]}" for d, c in CASES])
def test_the_command_dry_runs_as_written(doc, cmd, tmp_path):
    for name in ("Snakefile", "rules", "scripts", "profiles", "envs", "src"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "config", tmp_path / "config")
    starter_files(tmp_path)  # what a user of config/my-model.yaml has: their GGUFs and text at its paths
    for line in SETUP.get(doc, []):
        subprocess.run(shlex.split(line), cwd=tmp_path, check=True)
    argv = [sys.executable, "-m", *shlex.split(cmd), "-n"]
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    tail = (out.stdout + out.stderr)[-3000:]
    assert out.returncode == 0, f"{doc}: `{cmd}` failed:\n{tail}"
    assert "This was a dry-run" in out.stdout or "Nothing to be done" in out.stdout, tail
