"""The token ids llama-perplexity sees, from llama-tokenize on the text exactly as llama-perplexity reads it; and
the check that a corpus is UTF-8 text at all (text_problem), shared with make_corpus."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import GgufbenchError, ToolFailed
from ..core.io import made_here
from .run import run_tool

# What to do about a file that is not UTF-8: iconv converts it (`file -i` names the encoding it was written in).
CONVERT = "convert it to UTF-8, e.g. `iconv -f {enc} -t utf-8 {path} > {path}.utf8`, and use that file"


def text_problem(data: bytes, path: str | Path) -> str | None:
    """Why `data` (the bytes of `path`) is not a text llama.cpp measures as it is, or None: empty, UTF-16, binary
    (NUL bytes), or not UTF-8. llama.cpp reads a corpus as UTF-8 and turns every invalid byte into U+FFFD without
    a word (src/unicode.cpp unicode_cpts_from_utf8), so a Latin-1 file would be measured as another text. The
    message names the file, the byte offset of the first bad byte and what to do."""
    if not data.strip():
        return (f"{path} is empty: a corpus needs text" if not data else
                f"{path} holds only whitespace ({len(data)} bytes): a corpus needs text")
    bad = _first_bad_byte(data)
    if bad is None:
        return None
    offset, reason = bad
    at = f"byte offset {offset} is 0x{data[offset]:02x}, {reason}"
    utf16 = _utf16(data)
    if utf16:
        return (f"{path} is UTF-16 text ({utf16}; {at}), not UTF-8, the encoding llama.cpp reads: "
                + CONVERT.format(enc=utf16.split()[0], path=path))
    nul = data.find(b"\0")
    if nul >= 0:  # a NUL anywhere: binary, as git and grep tell it from text
        first_nul = "" if nul == offset else f"; the first NUL byte is at offset {nul}"
        return (f"{path} is a binary file, not text ({at}{first_nul}; the file starts with {data[:8].hex(' ')}): "
                "a corpus is UTF-8 text: give a text file (decompress or export it first)")
    line = data.count(b"\n", 0, offset) + 1
    return (f"{path} is not UTF-8 text: {at} (line {line}); llama.cpp reads a corpus as UTF-8 and would silently "
            "replace such bytes, measuring another text: " + CONVERT.format(enc="latin1", path=path)
            + " (latin1 is a guess: `file -i` names the encoding; cp1252 for Windows text)")


def _first_bad_byte(data: bytes) -> tuple[int, str] | None:
    """(offset, why) of the first byte that is not UTF-8 text: invalid UTF-8 (Python's reason: 'invalid start
    byte', ...) or a NUL (valid UTF-8, but no text has one), whichever comes first; None for good text."""
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        if nul < 0 or e.start < nul:
            return e.start, e.reason
    return (nul, "a NUL byte") if nul >= 0 else None


def _utf16(data: bytes) -> str | None:
    """'utf-16 (byte-order mark ff fe)', 'utf-16le (no byte-order mark)', ... when `data` reads as UTF-16, else
    None. Without a mark: ASCII in UTF-16 has a NUL in every other byte and (unlike binary data) few in the others."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"utf-16 (byte-order mark {data[:2].hex(' ')})"
    head = data[:4096]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if max(even, odd) * 4 < len(head) or min(even, odd) * 4 > max(even, odd):
        return None
    return "utf-16le (no byte-order mark)" if odd > even else "utf-16be (no byte-order mark)"


def perplexity_text(corpus: Path) -> bytes:
    """The text llama-perplexity tokenizes from `-f corpus`: the file's bytes less one trailing newline (common's
    -f handler drops it); no escape processing (perplexity.cpp sets params.escape = false; measured: a `\\t` in
    the demo corpus stays two characters in its logits file's tokens). A corpus that is not UTF-8 text is refused
    (text_problem) before any tool reads it; one under results/ is removed so that a plain rerun makes it again
    (make_corpus then refuses a bad source by its config key)."""
    corpus = Path(corpus)
    data = corpus.read_bytes()
    problem = text_problem(data, corpus)
    if problem:
        if made_here(corpus):
            corpus.unlink(missing_ok=True)
            raise GgufbenchError(f"{problem}. Removed it; a plain rerun makes it again (rule make_corpus)")
        raise GgufbenchError(problem)
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
