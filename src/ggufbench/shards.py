"""Sharded KLD: the whole corpus scored against the baseline in bounded disk (kld.mode: sharded).

The corpus is tokenized once with the baseline model. Its chunks (n_ctx tokens each, as llama-perplexity cuts
them) are split into shards of whole chunks, as many chunks per shard as the exact logits forecast allows under
kld.sharded.disk_budget_gib / parallel. One job per shard writes a text that tokenizes to exactly that shard's
chunks, runs the baseline pass on it (its logits go to local scratch), every quant's KLD pass against them,
deletes the logits, and keeps only what llama-perplexity printed. The shards' statistics are then combined:
everything that is a mean or a sum exactly (up to the digits llama.cpp prints), percentiles as an estimate.

How a shard text is made: the full tokenization is llama-tokenize's of the text exactly as llama-perplexity reads
it (jobs.perplexity_text), each token's piece is walked along that text (byte-level BPE pieces are the text
itself, read as llama.cpp decodes UTF-8), and a shard text is the slice between its tokens' ends. The baseline
pass writes the tokens it used into its logits file's header: those are compared with the full tokenization's,
and the count of tokens that differ is recorded (0 on the models measured; docs/kld-sharded.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError, ToolFailed
from .kld import GIB, logits_file_size, n_chunks_used
from .models import read_kv

# --- shard texts from the tokenizer's pieces -------------------------------------------------------------


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE maps every byte to a printable character; this is the inverse map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


@dataclass
class Vocab:
    model: str                 # tokenizer.ggml.model: gpt2 (byte-level BPE), the one sharding supports
    pieces: list[bytes]        # the text each token id stands for (b"" for control tokens)
    add_bos: bool              # whether llama.cpp adds BOS: taken from the tokenization itself (plan job)
    bos_id: int | None


CONTROL, USER_DEFINED = 3, 4


def read_vocab(gguf_path: str | Path) -> Vocab:
    """Each token's text piece from the GGUF's tokenizer, as llama.cpp's token_to_piece gives it for a
    plain-text corpus (control tokens print nothing). Reads only the metadata (models.read_kv: a 248K-token
    vocabulary in about a second, where GGUFReader takes ten)."""
    kv = read_kv(gguf_path)

    def get(name, default=None):
        return kv[name][0] if name in kv else default

    model = get("tokenizer.ggml.model", b"").decode()
    tokens = [t.decode("utf-8", errors="surrogateescape") for t in get("tokenizer.ggml.tokens") or []]
    if not tokens:
        raise ToolFailed(f"{gguf_path} has no tokenizer.ggml.tokens: sharded KLD needs the model's vocabulary")
    types = get("tokenizer.ggml.token_type") or [1] * len(tokens)
    pieces: list[bytes] = []
    if model == "gpt2":
        dec = _gpt2_byte_decoder()
        for s, ty in zip(tokens, types, strict=True):
            if ty == CONTROL:
                pieces.append(b"")
            elif ty == USER_DEFINED or any(ch not in dec for ch in s):
                pieces.append(s.encode("utf-8", errors="surrogateescape"))
            else:
                pieces.append(bytes(dec[ch] for ch in s))
    else:
        # measured on llama.cpp's own vocab GGUFs (docs/kld-sharded.md): every gpt2 one (Qwen2/3.5, Llama 3,
        # Command-R, DeepSeek, GPT-2, StarCoder, Falcon) re-tokenizes shard texts to the same ids; SentencePiece
        # ones (llama-spm, phi-3, baichuan) do not (~15% of tokens differ: the space prefix it adds)
        raise ConfigError(f"kld.mode: sharded cuts shard texts from the tokenizer's pieces, and {gguf_path} has a "
                          f"'{model}' tokenizer; only gpt2 (byte-level BPE) tokenizers re-tokenize them to the same "
                          "ids: use kld.mode: chunks for this model")
    return Vocab(model, pieces, bool(get("tokenizer.ggml.add_bos_token", False)), get("tokenizer.ggml.bos_token_id"))


REPLACEMENT = "\ufffd".encode()


def tokenizer_view(text: bytes) -> tuple[bytes, list[int]]:
    """The bytes llama.cpp's tokenizer reads for `text`, and for each of them the offset in text of the character
    it starts (-1 for a byte inside a character).
    llama.cpp decodes UTF-8 leniently (unicode_cpts_from_utf8) and reads a byte that starts no sequence as
    U+FFFD (a lone byte >= 0x80 becomes the pieces of U+FFFD)."""
    view, where = bytearray(), []
    i, n = 0, len(text)
    while i < n:
        b = text[i]
        k = 1 if b < 0x80 else 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 0
        if k and (k == 1 or (i + k <= n and all(text[j] & 0xC0 == 0x80 for j in range(i + 1, i + k)))):
            view += text[i:i + k]
            where += [i] + [-1] * (k - 1)   # -1: inside a character
            i += k
        else:
            view += REPLACEMENT
            where += [i] + [-1] * (len(REPLACEMENT) - 1)
            i += 1
    return bytes(view), where


def token_spans(ids: list[int], vocab: Vocab, text: bytes, max_skip: int = 16) -> list[int]:
    """Byte offset in `text` (the corpus as llama-perplexity reads it) where each token's piece ends, found by
    walking the pieces along what the tokenizer read (tokenizer_view); -1 where a token ends inside a character
    (byte-level BPE splits some characters over two tokens: no text can start at the second). A byte the
    tokenizer dropped (measured: a 0x1d control byte between two quotes made no token) is stepped over, up to
    max_skip bytes."""
    view, where = tokenizer_view(text)
    ends, pos = [], 0
    for i, t in enumerate(ids):
        piece = vocab.pieces[t]
        if piece and not view.startswith(piece, pos):
            j = view.find(piece, pos, pos + max_skip + len(piece))
            if j < 0:
                raise ToolFailed(f"token {i} (id {t}, {piece[:20]!r}) is not found in the corpus after "
                                 f"{ends[-1] if ends else 0} bytes: the tokenizer's pieces do not walk the text; use "
                                 "kld.mode: chunks for this model")
            pos = j
        pos += len(piece)
        ends.append(where[pos] if pos < len(view) else len(text))
    return ends


def _first_token(chunk: int, n_ctx: int, add_bos: bool) -> int:
    """The first token a shard starting at `chunk` must reproduce. A model that adds BOS gets one at the start of
    the shard text in place of the chunk's first token, which llama-perplexity replaces with BOS anyway, so that
    token is left out of the text."""
    return chunk * n_ctx + (1 if add_bos and chunk > 0 else 0)


def cuttable(ends: list[int], n_ctx: int, add_bos: bool) -> Callable[[int], bool]:
    """Whether a shard can start at chunk c: the token before it ends on a character boundary."""
    def ok(c: int) -> bool:
        first = _first_token(c, n_ctx, add_bos)
        return first == 0 or (first - 1 < len(ends) and ends[first - 1] >= 0)
    return ok


def shard_bytes(ends: list[int], n_text: int, n_ctx: int, first_chunk: int, end_chunk: int,
                add_bos: bool) -> tuple[int, int]:
    """[start, end) in the corpus text of chunks [first_chunk, end_chunk): from the end of the token before the
    shard's first one (_first_token; cuttable says where that is possible), to the end of up to n_ctx tokens
    past its last chunk (the last chunk's last tokens are tokenized in context, and a 1-chunk shard still has
    the two contexts llama-perplexity wants; --chunks cuts the extra off)."""
    if not cuttable(ends, n_ctx, add_bos)(first_chunk):
        raise ToolFailed(f"chunk {first_chunk} starts inside a character: it cannot start a shard (plan_shards "
                         "picks boundaries where cuttable() holds)")
    first = _first_token(first_chunk, n_ctx, add_bos)
    start = ends[first - 1] if first > 0 else 0
    last = min(len(ends), (end_chunk + 1) * n_ctx)
    end = n_text if last == len(ends) else next((e for e in ends[last - 1::-1] if e >= 0), n_text)
    return start, end


def tokens_differing(expected: list[int], got: list[int], n_ctx: int, add_bos: bool) -> int:
    """Positions where the shard's tokens differ from the full tokenization's (a missing or extra token counts
    as one). With a BOS-adding model each chunk's first token is replaced by BOS before evaluation in both runs,
    so those positions do not count."""
    mismatched = sum(1 for i, (a, b) in enumerate(zip(expected, got, strict=False))
                     if a != b and not (add_bos and i % n_ctx == 0))
    return mismatched + abs(len(expected) - len(got))


# --- the shard plan ------------------------------------------------------------------------------------------


@dataclass
class ShardPlan:
    n_ctx: int
    n_vocab: int
    n_tokens: int
    n_chunk: int                     # chunks scored in all (llama-perplexity's rule, kld.chunks as a limit)
    disk_budget_bytes: int
    parallel: int
    chunks_per_shard: int            # the most chunks whose logits fit budget / parallel
    shards: list[list[int]] = field(default_factory=list)   # [first_chunk, end_chunk) each
    shard_logits_bytes: list[int] = field(default_factory=list)
    unsharded_logits_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


LLAMA_N_BATCH = 2048   # llama-perplexity's default -b: it evaluates n_batch / n_ctx chunks per batch


def plan_shards(n_tokens: int, n_ctx: int, n_vocab: int, chunks: int | None, disk_budget_gib: float,
                parallel: int = 1, n_batch: int = LLAMA_N_BATCH,
                can_start: Callable[[int], bool] = lambda c: True) -> ShardPlan:
    """Shards of whole chunks, each one's logits file (exact size) within disk_budget / parallel.

    A shard's size is a multiple of the chunks llama-perplexity evaluates per batch (n_seq = n_batch / n_ctx)
    where it can be, so every batch holds the same chunks as in an unsharded run: batch composition changes
    llama.cpp's numerics slightly (measured: a Q2_K chunk's PPL 24.7547 in a batch of 4 sequences, 24.7533 in a
    batch of 3), and aligned shards make the per-token values, and so the combined statistics, the unsharded
    run's. A shard starts only at a chunk boundary where can_start holds (see cuttable)."""
    n_chunk = n_chunks_used(n_tokens, n_ctx, chunks)
    if n_chunk < 2:
        raise ToolFailed(f"the corpus has {n_tokens} tokens: {n_chunk} chunk(s) of ctx {n_ctx}; llama-perplexity "
                         f"needs at least 2 (use a longer corpus or a smaller kld.ctx)")
    budget = int(disk_budget_gib * GIB)
    per_shard = budget // parallel
    per_chunk = logits_file_size(n_ctx, n_vocab, 1) - 20
    fit = (per_shard - 20) // per_chunk
    # llama-perplexity refuses a text under two contexts: a shard holds 2 chunks or more (one only when its
    # text can run on into the next chunk, see below)
    if fit < 2:
        raise ConfigError(f"kld.sharded.disk_budget_gib = {disk_budget_gib:g} with parallel = {parallel} leaves "
                          f"{per_shard:,} bytes per shard, but two chunks of ctx {n_ctx} with n_vocab {n_vocab} "
                          f"need {logits_file_size(n_ctx, n_vocab, 2):,} bytes of logits: raise the budget to at "
                          f"least {parallel * logits_file_size(n_ctx, n_vocab, 2) / GIB:.3f} GiB or lower parallel")
    k = min(fit, n_chunk)
    n_seq = max(1, n_batch // n_ctx)
    shards, start = [], 0
    while start < n_chunk:
        if n_chunk - start <= k:
            end = n_chunk
        else:
            # the longest shard that fits, batch-aligned if it can be, ending where the next one can start, and
            # never leaving a last shard of one chunk (no next chunk to make up its two contexts)
            ends = [e for e in range(start + k, start, -1) if e != n_chunk - 1]
            aligned = [e for e in ends if (e - start) % n_seq == 0] if k >= n_seq else []
            end = next((e for e in aligned + ends if can_start(e)), None)
            if end is None:
                raise ToolFailed(f"no chunk boundary in {start + 1}..{start + k} can start a shard (each splits a "
                                 "character between two tokens): raise kld.sharded.disk_budget_gib")
        shards.append([start, end])
        start = end
    return ShardPlan(n_ctx, n_vocab, n_tokens, n_chunk, budget, parallel, k, shards,
                     [logits_file_size(n_ctx, n_vocab, b - a) for a, b in shards],
                     logits_file_size(n_ctx, n_vocab, n_chunk))


def scored_tokens(n_chunk: int, n_ctx: int) -> int:
    """Tokens llama-perplexity scores over n_chunk chunks: the second half of each, less the last."""
    return n_chunk * (n_ctx - 1 - n_ctx // 2)


# --- exact combination of what llama-perplexity prints per shard ---------------------------------------------


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    """llama-perplexity's mean_and_uncertainty."""
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def _sums(mean: float, unc: float, n: int) -> tuple[float, float]:
    """(sum x, sum x^2) over n values from a printed mean and its uncertainty sqrt(var / (n - 1))."""
    var = unc * unc * (n - 1)
    return n * mean, n * (var + mean * mean)


@dataclass
class Sums:
    """The running sums llama-perplexity's kl_divergence keeps (kl_divergence_result), recovered from output."""

    n: int = 0
    nll: float = 0.0
    nll2: float = 0.0
    nll_base: float = 0.0
    nll_base2: float = 0.0
    nll_nll_base: float = 0.0
    kld: float = 0.0
    kld2: float = 0.0
    p_diff: float = 0.0
    p_diff2: float = 0.0
    p_diff4: float = 0.0
    n_same_top: int = 0

    def __add__(self, o: Sums) -> Sums:
        return Sums(**{k: getattr(self, k) + getattr(o, k) for k in self.__dataclass_fields__})


def sums_from_kld(r: dict, n: int) -> Sums:
    """Sums of one KLD run (a KldResult dict) that scored n tokens."""
    mq, sq = math.log(r["ppl_q"]), r["ppl_q_uncertainty"] / r["ppl_q"]
    mb, sb = math.log(r["ppl_base"]), r["ppl_base_uncertainty"] / r["ppl_base"]
    nll, nll2 = _sums(mq, sq, n)
    nb, nb2 = _sums(mb, sb, n)
    # ln-ratio uncertainty^2 = sq^2 + sb^2 - 2 cov, cov = (S_qb/n - mq mb) / (n - 1)
    cov = (sq * sq + sb * sb - r["ln_ppl_ratio_uncertainty"] ** 2) / 2
    nqb = n * (cov * (n - 1) + mq * mb)
    k, k2 = _sums(r["kld_mean"], r["kld_mean_uncertainty"], n)
    rms, rms_unc = r["rms_dp_pct"] / 100, r["rms_dp_pct_uncertainty"] / 100
    mse, mse_unc = rms * rms, 2 * rms * rms_unc
    p2, p4 = _sums(mse, mse_unc, n)
    return Sums(n, nll, nll2, nb, nb2, nqb, k, k2, n * r["dp_mean_pct"] / 100, p2, p4,
                round(r["same_top_p_pct"] / 100 * n))


def stats_from_sums(s: Sums) -> dict:
    """What llama-perplexity prints at the end of a KLD run, from its sums (its own formulas)."""
    n = s.n
    lq, uq = _mean_unc(s.nll, s.nll2, n)
    lb, ub = _mean_unc(s.nll_base, s.nll_base2, n)
    cov = (s.nll_nll_base / n - (s.nll / n) * (s.nll_base / n)) / (n - 1) if n >= 10 else 0.0
    ppl_q, ppl_b = math.exp(lq), math.exp(lb)
    lr_unc = math.sqrt(max(0.0, uq * uq + ub * ub - 2 * cov))
    ratio = math.exp(lq - lb)
    diff_unc = math.sqrt(max(0.0, (ppl_q * uq) ** 2 + (ppl_b * ub) ** 2 - 2 * ppl_q * ppl_b * cov))
    kl, kl_unc = _mean_unc(s.kld, s.kld2, n)
    dp, dp_unc = _mean_unc(s.p_diff, s.p_diff2, n)
    mse, mse_unc = _mean_unc(s.p_diff2, s.p_diff4, n)
    rms = math.sqrt(mse)
    top = s.n_same_top / n
    return {"ppl_q": ppl_q, "ppl_q_uncertainty": ppl_q * uq, "ppl_base": ppl_b, "ppl_base_uncertainty": ppl_b * ub,
            "ppl_cor_pct": 100 * cov / (uq * ub) if uq and ub else math.nan,
            "ln_ppl_ratio": lq - lb, "ln_ppl_ratio_uncertainty": lr_unc,
            "ppl_ratio": ratio, "ppl_ratio_uncertainty": ratio * lr_unc,
            "ppl_diff": ppl_q - ppl_b, "ppl_diff_uncertainty": diff_unc,
            "kld_mean": kl, "kld_mean_uncertainty": kl_unc,
            "dp_mean_pct": 100 * dp, "dp_mean_pct_uncertainty": 100 * dp_unc,
            "rms_dp_pct": 100 * rms, "rms_dp_pct_uncertainty": 100 * (0.5 / rms * mse_unc if rms else 0.0),
            "same_top_p_pct": 100 * top, "same_top_p_pct_uncertainty": 100 * math.sqrt(top * (1 - top) / (n - 1))}


def combine_percentiles(parts: list[tuple[dict, int]]) -> tuple[dict, dict]:
    """Percentiles do not combine exactly. Maximum and minimum do (max of maxima, min of minima); the others
    are estimated as the token-weighted mean of the shards' values. Returns (estimate, per-shard [min, max])."""
    keys = sorted({k for p, _ in parts for k in p})
    est, spread = {}, {}
    for k in keys:
        vals = [(p[k], n) for p, n in parts if k in p]
        spread[k] = [min(v for v, _ in vals), max(v for v, _ in vals)]
        if k == "max":
            est[k] = spread[k][1]
        elif k == "min":
            est[k] = spread[k][0]
        else:
            est[k] = sum(v * n for v, n in vals) / sum(n for _, n in vals)
    return est, spread


def combine_kld(parts: list[tuple[dict, int]]) -> dict:
    """One KldResult-shaped dict (flat percentiles as kld_<p>, dp_<p>_pct) from shards' (result, tokens)."""
    total = Sums()
    for r, n in parts:
        total = total + sums_from_kld(r, n)
    out = stats_from_sums(total)
    kp, ks = combine_percentiles([(r["kld_percentiles"], n) for r, n in parts])
    dpp, dps = combine_percentiles([(r["dp_percentiles_pct"], n) for r, n in parts])
    out.update({f"kld_{k}": v for k, v in kp.items()})
    out.update({f"dp_{k}_pct": v for k, v in dpp.items()})
    out["n_tokens_scored"] = total.n
    out["percentiles_estimated"] = True
    out["percentile_shard_spread"] = {"kld": ks, "dp_pct": dps}
    return out


def combine_ppl(parts: list[tuple[float, float, int]]) -> tuple[float, float]:
    """PPL ± uncertainty over shards from each shard's (PPL, uncertainty, scored tokens): PPL mode prints
    exp(mean nll) and exp(mean nll) * sqrt(var / (n - 1)), so the nll sums come back exactly as for KLD."""
    s = s2 = 0.0
    n = 0
    for ppl, unc, k in parts:
        a, b = _sums(math.log(ppl), unc / ppl, k)
        s, s2, n = s + a, s2 + b, n + k
    m, u = _mean_unc(s, s2, n)
    return math.exp(m), math.exp(m) * u


# --- scratch: a slot per shard alive at once, and a sampler of its size ------------------------------------------


@contextlib.contextmanager
def scratch_slot(root: Path, parallel: int, poll_s: float = 2.0):
    """Hold one of `parallel` slots in root (a file lock each), so at most `parallel` shard jobs keep logits in
    this scratch folder at once, whatever the scheduler starts. Yields the slot number."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(parallel):
            fd = os.open(root / f".ggufbench-kld-slot-{i}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield i
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        time.sleep(poll_s)


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


class FolderSampler:
    """Peak size of a folder, sampled in a background thread while the block runs (and once at its end)."""

    def __init__(self, path: Path, interval_s: float = 0.1):
        self.path, self.interval_s = Path(path), interval_s
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, folder_bytes(self.path))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> FolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
