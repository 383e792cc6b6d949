"""Which files of a hub repository are one quant: quant labels matched as whole tokens, every shard of a split GGUF."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..core.errors import ConfigError, ToolFailed

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
# a quant token: starts after a separator, never right after "UD-" unless the asked name has it itself
_QUANT = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q\d[A-Z0-9_]*|MXFP4(?:_MOE)?|F16|BF16|F32))(?=[-.]|$)",
                    re.IGNORECASE)


# --- quant selection ---------------------------------------------------------------------------------

def quant_of(path: str) -> str | None:
    """The quant label of one repo path: subfolder name for files inside quant folders, else the file's."""
    p = PurePosixPath(path)
    name = _SHARD.sub(".gguf", p.name)
    if not name.lower().endswith(".gguf") or "mmproj" in name.lower():
        return None
    for part in (p.parent.name, name[: -len(".gguf")]):
        if not part:
            continue
        found = _QUANT.findall(part)
        if found:
            return found[-1].upper()
    return None


def select_quant_files(paths: list[str], quant: str, repo: str = "") -> list[str]:
    """Exactly the files of `quant`; raise ConfigError listing the quants the repo has otherwise."""
    by_quant: dict[str, list[str]] = {}
    for p in paths:
        q = quant_of(p)
        if q:
            by_quant.setdefault(q, []).append(p)
    files = by_quant.get(quant.upper())
    if not files:
        raise ConfigError(f"quant {quant!r} not found in {repo or 'the repo'}; it has: "
                          f"{', '.join(sorted(by_quant)) or 'no GGUF files'}")
    # several groups under one label (e.g. two model variants) is ambiguous: name the file instead
    stems = {_SHARD.sub("", PurePosixPath(f).name) for f in files}
    if len(stems) > 1:
        raise ConfigError(f"quant {quant!r} is ambiguous in {repo or 'the repo'}: {sorted(files)}; "
                          "give `file:` instead of `quant:`")
    shards = [m for f in files if (m := _SHARD.search(f))]
    if shards:
        total = int(shards[0].group(2))
        if len(files) != total:
            raise ToolFailed(f"{quant!r} in {repo or 'the repo'}: {len(files)} of {total} shards listed: "
                             f"{sorted(files)}")
    return sorted(files)


def select_file(paths: list[str], filename: str, repo: str = "") -> list[str]:
    """An explicit file; the first shard of a split GGUF brings the others."""
    if filename not in paths:
        near = sorted(p for p in paths if PurePosixPath(p).name == PurePosixPath(filename).name)
        hint = f"; did you mean {near}?" if near else f"; its GGUF files: {sorted(p for p in paths if quant_of(p))}"
        raise ConfigError(f"{repo or 'the repo'} has no file {filename!r}{hint}")
    m = _SHARD.search(filename)
    if not m:
        return [filename]
    stem = filename[: m.start()]
    wanted = [f"{stem}-{i:05d}-of-{m.group(2)}.gguf" for i in range(1, int(m.group(2)) + 1)]
    missing = [w for w in wanted if w not in paths]
    if missing:
        raise ToolFailed(f"{filename!r} in {repo or 'the repo'}: shards missing from the listing: {missing}")
    return wanted
