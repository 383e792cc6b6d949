"""The token ids llama-perplexity sees, from llama-tokenize on the text exactly as llama-perplexity reads it."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import ToolFailed
from .run import run_tool


def perplexity_text(corpus: Path) -> bytes:
    """The text llama-perplexity tokenizes from `-f corpus`: the file's bytes less one trailing newline (common's
    -f handler drops it); no escape processing (perplexity.cpp sets params.escape = false; measured: a `\\t` in
    the demo corpus stays two characters in its logits file's tokens)."""
    data = Path(corpus).read_bytes()
    return data[:-1] if data.endswith(b"\n") else data


def tokenize_ids(tokenize_bin: Path, model: Path, corpus: Path, log) -> list[int]:
    """The token ids llama-perplexity will see: same tokenizer, BOS as the model wants, the text as it reads it
    (perplexity_text: llama-tokenize runs with --no-escape on it), special-token text left as text (its
    parse_special is off); vocab-only load."""
    import tempfile

    with tempfile.NamedTemporaryFile(dir=Path(log).parent, prefix=".tokenize-", suffix=".txt") as f:
        f.write(perplexity_text(corpus))
        f.flush()
        r = run_tool([tokenize_bin, "-m", model, "-f", f.name, "--ids", "--log-disable", "--no-parse-special",
                      "--no-escape"], log, separate_stdout=True)
    m = re.search(r"\[([\d,\s]*)\]", r.stdout)
    if not m:
        raise ToolFailed("llama-tokenize printed no [ids] list")
    return [int(x) for x in m.group(1).split(",") if x.strip()]


def count_tokens(tokenize_bin: Path, model: Path, corpus: Path, log) -> int:
    return len(tokenize_ids(tokenize_bin, model, corpus, log))
