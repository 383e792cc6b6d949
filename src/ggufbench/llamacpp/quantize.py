"""llama-quantize: one GGUF to another type, never leaving a half-written file under the destination's name."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ToolFailed
from ..core.io import atomic_path, read_json
from .features import require_quantize_type
from .gguf import check_gguf
from .run import run_tool


def quantize(quantize_bin: Path, src: Path, dest: Path, qtype: str, threads: int,
             log: str | Path | None = None, extra: list[str] | None = None) -> None:
    """llama-quantize src -> dest as qtype; a half-written file never takes dest's name. The type is checked
    first against the types that build's llama-quantize lists (its build.json, beside bin/)."""
    record = Path(quantize_bin).parent.parent / "build.json"
    if record.is_file():
        require_quantize_type(read_json(record), qtype, f"the quant type {qtype!r} (models.*.quants.*.quantize)")
    with atomic_path(dest) as tmp:
        run_tool([quantize_bin, "--allow-requantize", *(extra or []), src, tmp, qtype, threads], log)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ToolFailed(f"llama-quantize exited 0 but wrote no {tmp.name}")
        check_gguf(tmp)
