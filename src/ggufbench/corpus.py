"""Evaluation corpora.

The demo corpus is made at run time from the documentation that ships inside CPython itself
(`pydoc_data.topics`: the language reference and library topics that `help()` shows, PSF licence), so no
text is committed and nothing is downloaded. Its bytes depend on the Python version, so the version and the
sha256 go into the corpus's metadata and from there into every result's provenance.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath


@dataclass
class CorpusInfo:
    name: str
    kind: str
    source: str
    n_bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def python_docs_text(max_bytes: int) -> str:
    """English prose from CPython's bundled help topics, wikitext-like headings, cut at a topic boundary."""
    from pydoc_data import topics  # stdlib; present in every CPython build with pydoc

    parts: list[str] = []
    size = 0
    for key in sorted(topics.topics):
        body = topics.topics[key].strip()
        if not body:
            continue
        block = f" = {key} = \n\n{body}\n\n"
        n = len(block.encode("utf-8"))
        if parts and size + n > max_bytes:
            break
        parts.append(block)
        size += n
    if not parts:
        raise ValueError("python_docs corpus: pydoc_data.topics is empty in this Python build")
    return "".join(parts)


def write_corpus(text: str, path: Path, name: str, kind: str, source: str) -> CorpusInfo:
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return CorpusInfo(name=name, kind=kind, source=source, n_bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest())


def python_docs_source() -> str:
    return f"CPython {platform.python_version()} pydoc_data.topics"


def hub_dataset_text(repo: str, config: str, split: str, revision: str = "main") -> tuple[str, str]:
    """A text dataset's split from the Hub's parquet files (e.g. Salesforce/wikitext wikitext-2-raw-v1 test).

    Rows are lines of the original raw file with their newlines, so joining them restores the text that
    llama.cpp's perplexity convention evaluates (wiki.test.raw).
    """
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    info = api.dataset_info(repo, revision=revision)
    files = sorted(s.rfilename for s in info.siblings or []
                   if s.rfilename.startswith(f"{config}/") and s.rfilename.endswith(".parquet")
                   and PurePosixPath(s.rfilename).name.startswith(f"{split}-"))
    if not files:
        raise ValueError(f"{repo}@{revision}: no {config}/{split}-*.parquet files")
    rows: list[str] = []
    for f in files:
        local = hf_hub_download(repo, f, repo_type="dataset", revision=info.sha)
        rows += pq.read_table(local).column("text").to_pylist()
    return "".join(rows), f"hf://datasets/{repo}@{info.sha}/{config}/{split}"


def make_corpus(name: str, spec: dict, out: Path) -> CorpusInfo:
    kind = next(iter(spec))
    opts = spec[kind] or {}
    if kind == "python_docs":
        return write_corpus(python_docs_text(int(opts.get("max_bytes", 400000))), out, name, kind,
                            python_docs_source())
    if kind == "hub_dataset":
        text, source = hub_dataset_text(opts["repo"], opts["config"], opts["split"], opts.get("revision", "main"))
        return write_corpus(text, out, name, kind, source)
    if kind == "local":
        path = Path(opts["path"]).expanduser()
        if not path.is_file():
            raise ValueError(f"corpora.{name}.local.path: {path} is not a file")
        return write_corpus(path.read_text(encoding="utf-8"), out, name, kind, str(path.resolve()))
    raise ValueError(f"corpora.{name}: unknown kind {kind!r}")
