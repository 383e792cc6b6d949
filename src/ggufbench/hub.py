"""Hugging Face Hub: pick a quant's files in a GGUF repo and download them, checked against the hub's sha256.

Quant names are matched as whole tokens of the file name or of a quant subfolder, so Q4_K_M never matches
UD-Q4_K_M and Q4_K_XL never matches UD-Q4_K_XL; split files (-00001-of-00003) are taken together.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from .build import sha256_file
from .errors import ConfigError, ToolFailed

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
# a quant token: starts after a separator, never right after "UD-" unless the asked name has it itself
_QUANT = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q\d[A-Z0-9_]*|MXFP4(?:_MOE)?|F16|BF16|F32))(?=[-.]|$)",
                    re.IGNORECASE)


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


def download_quant(repo: str, dest: Path, quant: str | None = None, filename: str | None = None,
                   revision: str = "main") -> tuple[list[Path], dict]:
    """Download one quant's file(s) into dest; verify each against the hub's LFS sha256."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    info = api.model_info(repo, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings or []}
    if filename:
        if filename not in siblings:
            raise ConfigError(f"{repo}@{revision} has no file {filename!r}")
        wanted = [filename]
    else:
        wanted = select_quant_files(list(siblings), quant or "", repo)
    paths = []
    for name in wanted:
        local = Path(hf_hub_download(repo, name, revision=info.sha, local_dir=dest))
        lfs = siblings[name].lfs
        expected = lfs.sha256 if lfs else None
        if expected:
            got = sha256_file(local)
            if got != expected:
                local.unlink(missing_ok=True)
                raise ToolFailed(f"{repo}/{name}@{info.sha}: sha256 {got} does not match the hub's {expected}; "
                                 "the file was removed, rerun to download it again")
        paths.append(local)
    origin = {"kind": "hub", "repo": repo, "revision": revision, "commit": info.sha, "files": wanted}
    return paths, origin
