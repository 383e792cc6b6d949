"""core.job: the Job a rule script makes; a config value it reads must be declared (workflow/deps.py READS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.core.job import Job


def job(tmp_path, **kw) -> Job:
    return Job(rule="kld_base", wildcards={}, threads=2, log=tmp_path / "j.log", out={}, cache=tmp_path, **kw)


def test_a_declared_setting_is_read_and_an_undeclared_one_is_named(tmp_path):
    j = job(tmp_path, settings={"kld.max_logits_gib": 4})
    assert j.setting("kld.max_logits_gib") == 4
    with pytest.raises(ConfigError, match=r"rule kld_base reads 'bench.repetitions' .* READS does not declare it"):
        j.setting("bench.repetitions")


def test_gpu_build_is_the_build_records_backend(tmp_path):
    assert job(tmp_path, build={"backend": "CUDA"}).gpu_build
    assert not job(tmp_path, build={"backend": "CPU"}).gpu_build and not job(tmp_path).gpu_build


def test_note_appends_a_comment_line_to_the_log(tmp_path):
    j = job(tmp_path)
    j.note("forecast 12 bytes")
    j.note("second")
    assert Path(j.log).read_text() == "# forecast 12 bytes\n# second\n"
