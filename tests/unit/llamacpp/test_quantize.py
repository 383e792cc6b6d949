"""llamacpp.quantize: llama-quantize into a temporary name, renamed onto dest only when it wrote a GGUF.

The failure cases use stand-in tools (a program that writes nothing, one that writes junk); the success
case runs the real llama-quantize (llama_bin) on the synthetic tiny MoE (sources/synthetic_moe.py, ~25 MB F16,
mostly its vocabulary's embeddings)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.llamacpp.gguf import gguf_metadata
from ggufbench.llamacpp.quantize import quantize
from ggufbench.sources import synthetic_moe as synth
from tests.support.hubserver import tiny_gguf


def stand_in(tmp_path: Path, body: str) -> Path:
    """A program run as llama-quantize: argv is [--allow-requantize, *extra, src, tmp, qtype, threads]."""
    tool = tmp_path / "llama-quantize"
    tool.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "f16.gguf"
    path.write_bytes(tiny_gguf("f16"))
    return path


def test_exit_0_without_a_file_is_a_failure(tmp_path, src):
    tool = stand_in(tmp_path, "print('main: quantize time = 0 ms')")
    dest = tmp_path / "q" / "m-Q8_0.gguf"
    with pytest.raises(ToolFailed, match="exited 0 but wrote no .m-Q8_0.gguf.partial"):
        quantize(tool, src, dest, "Q8_0", threads=2)
    assert list(dest.parent.iterdir()) == []


def test_junk_output_never_replaces_the_old_file(tmp_path, src):
    tool = stand_in(tmp_path, "open(args[-3], 'w').write('not a gguf')")
    dest = tmp_path / "m-Q4_K_M.gguf"
    dest.write_bytes(b"GGUF old quant")
    with pytest.raises(ToolFailed, match="is not a GGUF file"):
        quantize(tool, src, dest, "Q4_K_M", threads=1)
    assert dest.read_bytes() == b"GGUF old quant"
    assert not (tmp_path / ".m-Q4_K_M.gguf.partial").exists()


def test_command_line_order(tmp_path, src):
    tool = stand_in(tmp_path, "import shutil\nprint(' '.join(args))\nshutil.copyfile(args[-4], args[-3])")
    dest = tmp_path / "m-Q6_K.gguf"
    log = tmp_path / "quantize.log"
    quantize(tool, src, dest, "Q6_K", threads=3, log=log, extra=["--pure"])
    assert dest.read_bytes() == src.read_bytes()
    assert f"--allow-requantize --pure {src} {tmp_path / '.m-Q6_K.gguf.partial'} Q6_K 3\n" in log.read_text()


def test_real_llama_quantize(llama_bin, llama_src, tmp_path):
    f16 = tmp_path / "tiny-F16.gguf"
    synth.write_synthetic_moe(f16, llama_src / "models" / "ggml-vocab-qwen2.gguf", n_layer=1, seed=1)
    dest = tmp_path / "q" / "tiny-Q8_0.gguf"
    quantize(llama_bin / "llama-quantize", f16, dest, "Q8_0", threads=2, log=tmp_path / "q.log")
    assert gguf_metadata(dest)["file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert gguf_metadata(dest)["n_tensors"] == gguf_metadata(f16)["n_tensors"]
    assert dest.stat().st_size < f16.stat().st_size
    # refused before running where the build's record lists its types (features.py), else by llama-quantize
    with pytest.raises((ConfigError, ToolFailed), match="llama-quantize exited with status|'Q9_X' is not a type"):
        quantize(llama_bin / "llama-quantize", f16, tmp_path / "bad.gguf", "Q9_X", threads=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q", "q.log", "tiny-F16.gguf"]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (mounting needs root: skipped without it), unmounted afterwards."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}): needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.faults
def test_a_disk_that_fills_up_during_quantize_is_named(llama_bin, llama_src, tmp_path, small_disk, capture):
    """The issue's case: a full disk read only "iostream error" (llama.cpp's own words, as captured in
    tests/data/cpu-0.3.36/fail_quantize_disk_full.txt from the demo's F16 into a 20 MiB tmpfs). Here a real
    llama-quantize writes a Q8_0 larger than a 4 MiB disk."""
    assert "failed to quantize: basic_ios::clear: iostream error" in capture("fail_quantize_disk_full.txt")
    f16 = tmp_path / "tiny-F16.gguf"
    synth.write_synthetic_moe(f16, llama_src / "models" / "ggml-vocab-qwen2.gguf", n_layer=1, seed=1)
    dest = small_disk / "tiny-Q8_0.gguf"
    with pytest.raises(ToolFailed, match=r"could not write .*tiny-Q8_0.gguf: the disk is full \(\d+ bytes free after "
                                         r"[\d,]+ bytes of it were written"):
        quantize(llama_bin / "llama-quantize", f16, dest, "Q8_0", threads=2, log=tmp_path / "q.log")
    assert list(small_disk.iterdir()) == []  # the half-written file is gone
