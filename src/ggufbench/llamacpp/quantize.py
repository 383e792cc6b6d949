"""llama-quantize: one GGUF to another type, never leaving a half-written file under the destination's name."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.errors import ToolFailed
from ..core.io import atomic_path, read_json
from .features import require_quantize_type
from .gguf import check_gguf
from .run import run_tool


def quantize(quantize_bin: Path, src: Path, dest: Path, qtype: str, *, threads: int,
             log: str | Path | None = None, extra: list[str] | None = None) -> None:
    """llama-quantize src -> dest as qtype; a half-written file never takes dest's name. The type is checked
    first against the types that build's llama-quantize lists (its build.json, beside bin/)."""
    record = Path(quantize_bin).parent.parent / "build.json"
    if record.is_file():
        require_quantize_type(read_json(record), qtype, f"the quant type {qtype!r} (models.*.quants.*.quantize)")
    with atomic_path(dest) as tmp:
        try:
            run_tool([quantize_bin, "--allow-requantize", *(extra or []), src, tmp, qtype, threads], log)
        except ToolFailed as e:
            raise _write_failure(e, tmp, dest) from e
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ToolFailed(f"llama-quantize exited 0 but wrote no {tmp.name}")
        check_gguf(tmp)


FULL_BYTES = 64 << 20  # a filesystem with less than this free after a failed write is taken to be full


def _write_failure(e: ToolFailed, tmp: Path, dest: Path) -> ToolFailed:
    """A disk that filled up while llama-quantize wrote says only "basic_ios::clear: iostream error": name the
    cause (and what was written), measured while the half-written file is still there."""
    if "iostream error" not in e.output:
        return e
    written = tmp.stat().st_size if tmp.exists() else 0
    free = shutil.disk_usage(tmp.parent).free
    if free >= FULL_BYTES:
        return ToolFailed(f"llama-quantize failed writing {dest} (iostream error after {written:,} bytes) with "
                          f"{free:,} bytes free: a write error on that disk; see the log", e.output, e.returncode)
    return ToolFailed(f"llama-quantize could not write {dest}: the disk is full ({free:,} bytes free after "
                      f"{written:,} bytes of it were written; llama.cpp says only 'iostream error'). Free space on "
                      f"{dest.parent} and rerun; the half-written file is removed", e.output, e.returncode)
