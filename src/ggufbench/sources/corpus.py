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

from ..core.errors import ConfigError
from ..core.io import atomic_path
from ..llamacpp.tokenize import text_problem


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
    """The corpus as every pass reads it; refused (nothing written) when it is no text to measure: empty, or with
    NUL bytes (text_problem), so that no measurement starts on it."""
    data = text.encode("utf-8")
    problem = text_problem(data, source)
    if problem:
        raise ConfigError(f"corpora.{name}: {problem}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return CorpusInfo(name=name, kind=kind, source=source, n_bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest())


def python_docs_source() -> str:
    return f"CPython {platform.python_version()} pydoc_data.topics"


def dataset_split_selector(repo: str, config: str, split: str):
    """select(paths) for sources.hub.resolve: the split's parquet files of one dataset configuration.

    Hub datasets keep them as `<config>/<split>-0000k-of-0000n.parquet` (Salesforce/wikitext's layout).
    """

    def select(paths: list[str]) -> list[str]:
        files = sorted(p for p in paths if p.startswith(f"{config}/") and p.endswith(".parquet")
                       and PurePosixPath(p).name.startswith(f"{split}-"))
        if not files:
            configs = sorted({p.split("/", 1)[0] for p in paths if p.endswith(".parquet") and "/" in p})
            raise ValueError(f"{repo}: no {config}/{split}-*.parquet files; parquet configurations there: "
                             f"{configs or 'none'}")
        return files

    return select


def wikitext_raw(rows: list[str]) -> str:
    """The classic wiki.{train,valid,test}.raw text from the Hub's WikiText rows.

    The Hub's rows were made by reading the raw file line by line and keeping each line with its newline,
    except that whitespace-only lines became "" (the dataset script's `row if row.strip() else ""`). In the
    raw files every blank line is " \n" (WikiText lines start with a space), so "" -> " \n" gives the file
    back byte for byte; llama.cpp's perplexity convention (-f wiki.test.raw) scores exactly that text.
    """
    bad = [i for i, r in enumerate(rows) if r and not r.endswith("\n")]
    if bad:
        raise ValueError(f"WikiText rows are lines ending in a newline; rows {bad[:5]} do not: not the expected "
                         "line-per-row layout, refusing to guess the raw text")
    return "".join(r if r else " \n" for r in rows)


def hub_dataset_text(repo: str, config: str, split: str, revision: str = "main", *,
                     lock: str | Path | None = None, cache_dir=None) -> tuple[str, str]:
    """A text dataset's split from the Hub's parquet files (e.g. Salesforce/wikitext wikitext-2-raw-v1 test).

    Fetched through sources/hub.py: pinned to a commit (and to the lock file's when given), every parquet file
    checked against the hub's sha256. WikiText configurations are written as the classic raw file
    (wikitext_raw); other datasets' rows are joined one per line.
    """
    import pyarrow.parquet as pq

    from . import hub, hub_lock

    key = hub_lock.dataset_key(repo, revision, config, split)
    pin = hub_lock.read(lock).get(key) if lock else None
    res = hub.resolve(repo, revision, repo_type="dataset", pin=pin, cache_dir=cache_dir,
                      select=dataset_split_selector(repo, config, split))
    files = hub.fetch(res, cache_dir)
    if lock and not pin:
        hub_lock.put(lock, key, res.lock_entry())
    rows: list[str] = []
    for local in files:
        rows += pq.read_table(local, columns=["text"]).column("text").to_pylist()
    if config.startswith("wikitext-"):
        text = wikitext_raw(rows)
    else:
        text = "".join(r if r.endswith("\n") else r + "\n" for r in rows)
    return text, f"hf://datasets/{repo}@{res.commit}/{config}/{split}"


def make_corpus(name: str, spec: dict, out: Path, lock: str | Path | None = None) -> CorpusInfo:
    kind = next(iter(spec))
    opts = spec[kind] or {}
    if kind == "python_docs":
        return write_corpus(python_docs_text(int(opts.get("max_bytes", 400000))), out, name, kind,
                            python_docs_source())
    if kind == "hub_dataset":
        text, source = hub_dataset_text(opts["repo"], opts["config"], opts["split"], opts.get("revision", "main"),
                                        lock=lock)
        return write_corpus(text, out, name, kind, source)
    if kind == "local":
        path = Path(opts["path"]).expanduser()
        return write_corpus(local_text(name, path), out, name, kind, str(path.resolve()))
    raise ValueError(f"corpora.{name}: unknown kind {kind!r}")


def local_text(name: str, path: Path) -> str:
    """A `local:` corpus's text: the user's file, refused by its config key and name when it is not UTF-8 text
    (Latin-1, UTF-16, binary, empty: text_problem says where and what to do), before any job measures it."""
    key = f"corpora.{name}.local.path"
    if not path.is_file():
        raise ConfigError(f"{key}: {path} is not a file")
    data = path.read_bytes()
    problem = text_problem(data, path)
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return data.decode("utf-8")
