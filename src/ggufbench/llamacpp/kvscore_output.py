"""ggufbench-kvscore, the KV-cost scorer built beside llama.cpp's tools (llamacpp/kvscore/, build.py): its command
line, its run, and its output parsed into typed records.

The scorer decodes the same tokens with a reference (model, KV types) and one or more cells (KV types of the same
weights, or a second GGUF of the same vocabulary) in lockstep, batch by batch, and prints JSON lines on stdout: a
`header`, one `chunk` row of sums per chunk x cell x view, one `hist` row per cell x view (fixed log-spaced
histograms of per-token KLD and |dp|), and an `end` row with its peak resident memory. The sums are those
llama-perplexity keeps in KL-divergence mode, so every mean and ± it prints follows from them (measure/kv_cost.py);
views: `second_half` (the tokens llama-perplexity scores) and `bin` (every position, binned by position).

A run that did not finish prints no `end` row, and a run whose statistics came out NaN or inf counts them
(`nonfinite`): both are failures here, never numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..core.errors import ToolFailed
from .run import ToolRun, last_lines, run_tool

SCORER = "ggufbench-kvscore"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ScorerCall:
    """One scorer run. Cells and the reference are `[M:]K[-V]`: model M's (index into models; 0 when left out) KV
    cache types, as ggufbench names them (`q8_0` is K and V q8_0, `q8_0-q4_0` K q8_0 and V q4_0)."""

    models: tuple[str, ...]
    text: str
    ctx: int
    cells: tuple[str, ...]
    ref: str = "f16"
    chunks: int | None = None      # None: every chunk the text holds
    batch: int | None = None       # tokens per decode (batch = ubatch); None: min(512, ctx)
    threads: int | None = None
    n_gpu_layers: int | None = None
    flash_attn: str = "auto"       # on | off | auto (a llama.cpp before the flash-attention enum: auto is off)
    bins: tuple[int, ...] = (0,)   # position bin edges of the all-positions view

    def command(self, tool: str | Path) -> list[str]:
        cmd = [str(tool)]
        for m in self.models:
            cmd += ["-m", str(m)]
        cmd += ["-f", str(self.text), "-c", str(self.ctx), "--ref", self.ref, "-fa", self.flash_attn,
                "--bins", ",".join(str(b) for b in self.bins)]
        for c in self.cells:
            cmd += ["--cell", c]
        for flag, value in (("--chunks", self.chunks), ("-b", self.batch), ("-t", self.threads),
                            ("-ngl", self.n_gpu_layers)):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd


@dataclass(frozen=True)
class Cell:
    model: int
    kv: str
    type_k: str
    type_v: str


@dataclass(frozen=True)
class ChunkRow:
    """One chunk's sums for one cell and view: view `second_half` (positions ctx/2 .. ctx-2) or `bin` (positions
    lo .. hi-1). Each position p scores the token at p+1."""

    chunk: int
    cell: int
    view: str
    bin: int | None
    lo: int
    hi: int
    count: int
    same_top: int
    nonfinite: int
    sum_nll: float
    sum_nll2: float
    sum_nll_base: float
    sum_nll_base2: float
    sum_nll_nll_base: float
    sum_kld: float
    sum_kld2: float
    sum_dp: float
    sum_dp2: float
    sum_dp4: float
    max_kld: float
    max_abs_dp: float


@dataclass(frozen=True)
class Histogram:
    """Counts on a log10 grid: `per_decade` bins a decade over [10^lo, 10^hi); `counts` {bin index: count}; values
    below 10^lo (a KLD of 0 or below, |dp| of 0) and above 10^hi counted apart."""

    lo: int
    hi: int
    per_decade: int
    below: int
    above: int
    counts: dict[int, int]

    @property
    def total(self) -> int:
        return self.below + self.above + sum(self.counts.values())


@dataclass(frozen=True)
class HistRow:
    """One cell's histograms over a whole run for one view: KLD, and dp apart by sign (|dp| in each)."""

    cell: int
    view: str
    bin: int | None
    lo: int
    hi: int
    kld: Histogram
    dp_pos: Histogram
    dp_neg: Histogram


@dataclass
class KvScore:
    """A scorer run: what it scored (header), the sums per chunk x cell x view, the histograms, and its end."""

    n_ctx: int
    n_batch: int
    n_vocab: int
    n_tokens: int
    n_chunk: int
    add_bos: bool
    first: int
    threads: int
    n_gpu_layers: int
    flash_attn: int
    models: list[str]
    ref: Cell
    cells: list[Cell]
    tokens_fnv1a64: str
    logits_host_bytes: int
    rss_loaded_bytes: int
    system_info: str
    seconds: float
    peak_rss_bytes: int
    rss_bytes: int
    kv_state_bytes: list[int]
    rows: list[ChunkRow] = field(default_factory=list)
    hists: list[HistRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def cell_rows(self, cell: int, view: str = "second_half", bin: int | None = None) -> list[ChunkRow]:
        return [r for r in self.rows if r.cell == cell and r.view == view and r.bin == bin]

    def hist(self, cell: int, view: str = "second_half", bin: int | None = None) -> HistRow:
        return next(h for h in self.hists if h.cell == cell and h.view == view and h.bin == bin)

    @property
    def bins(self) -> list[tuple[int, int]]:
        """The position bins, (lo, hi) each, in order."""
        seen = {r.bin: (r.lo, r.hi) for r in self.rows if r.view == "bin"}
        return [seen[b] for b in sorted(seen)]


_ROW_FIELDS = {f.name for f in fields(ChunkRow)}


def _lines(stdout: str) -> list[dict]:
    out = []
    for n, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ToolFailed(f"{SCORER} printed a line that is not JSON (line {n}: {line[:120]!r}): {e}") from e
    return out


def _hist(d: dict) -> Histogram:
    return Histogram(lo=d["lo"], hi=d["hi"], per_decade=d["per_decade"], below=d["below"], above=d["above"],
                     counts={int(i): int(c) for i, c in d["counts"]})


def _error_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if f"{SCORER}: error:" in line:
            return line.split("error:", 1)[1].strip()
    return ""


def parse_kvscore(stdout: str, output: str = "") -> KvScore:
    """The scorer's stdout (JSON lines) as a KvScore; output (its stderr, or everything it printed) names the cause
    when stdout is incomplete. Raises ToolFailed unless the run is complete: a header, every chunk x cell x view
    row, the histograms and the end row, every statistic finite."""
    recs = _lines(stdout)
    by_type: dict[str, list[dict]] = {}
    for r in recs:
        by_type.setdefault(r.get("type", "?"), []).append(r)
    why = _error_line(output)
    if not by_type.get("header"):
        tail = f": {why}" if why else f"; last lines:\n{last_lines(output)}"
        raise ToolFailed(f"{SCORER} printed no header{tail}")
    head = by_type["header"][0]
    if head.get("format") != SCORER or head.get("version") != FORMAT_VERSION:
        raise ToolFailed(f"{SCORER} output format {head.get('format')} v{head.get('version')}, this ggufbench reads "
                         f"v{FORMAT_VERSION}: rebuild llama.cpp (snakemake --forcerun build_llama_cpp)")
    if not by_type.get("end"):
        raise ToolFailed(f"{SCORER} did not finish (no end row after {len(by_type.get('chunk', []))} chunk rows)"
                         + (f": {why}" if why else ": killed, or it crashed; see the log"))
    end = by_type["end"][0]
    rows = [ChunkRow(**{k: v for k, v in r.items() if k in _ROW_FIELDS} | {"bin": r.get("bin")})
            for r in by_type.get("chunk", [])]
    hists = [HistRow(cell=h["cell"], view=h["view"], bin=h.get("bin"), lo=h["lo"], hi=h["hi"], kld=_hist(h["kld"]),
                     dp_pos=_hist(h["dp_pos"]), dp_neg=_hist(h["dp_neg"])) for h in by_type.get("hist", [])]
    score = KvScore(
        n_ctx=head["n_ctx"], n_batch=head["n_batch"], n_vocab=head["n_vocab"], n_tokens=head["n_tokens"],
        n_chunk=head["n_chunk"], add_bos=head["add_bos"], first=head["first"], threads=head["threads"],
        n_gpu_layers=head["n_gpu_layers"], flash_attn=head["flash_attn"], models=head["models"],
        ref=Cell(**head["ref"]), cells=[Cell(**c) for c in head["cells"]], tokens_fnv1a64=head["tokens_fnv1a64"],
        logits_host_bytes=head["logits_host_bytes"], rss_loaded_bytes=head["rss_loaded_bytes"],
        system_info=head["system_info"], seconds=end["seconds"], peak_rss_bytes=end["peak_rss_bytes"],
        rss_bytes=end["rss_bytes"], kv_state_bytes=end["kv_state_bytes"], rows=rows, hists=hists)
    _check_complete(score, len(head["views"]))
    return score


def _check_complete(score: KvScore, n_views: int) -> None:
    want = score.n_chunk * len(score.cells) * n_views
    if len(score.rows) != want:
        raise ToolFailed(f"{SCORER} printed {len(score.rows)} chunk rows, {want} expected ({score.n_chunk} chunks x "
                         f"{len(score.cells)} cells x {n_views} views): its output is incomplete")
    if len(score.hists) != len(score.cells) * n_views:
        raise ToolFailed(f"{SCORER} printed {len(score.hists)} histograms, {len(score.cells) * n_views} expected")
    bad = sum(r.nonfinite for r in score.rows if r.view == "bin")  # the bins hold every position once
    if bad:
        raise ToolFailed(f"{SCORER}: {bad} scored tokens had NaN or inf statistics (a broken quant, a KV type this "
                         "backend cannot run, or overflow): no number is reported from such a run")
    for r in score.rows:
        values = [getattr(r, f) for f in ("sum_nll", "sum_kld", "sum_dp", "sum_dp2", "max_kld")]
        if any(v is None or not math.isfinite(v) for v in values):
            raise ToolFailed(f"{SCORER}: chunk {r.chunk}, cell {r.cell} ({r.view}) has non-finite sums")


def run_kvscore(tool: str | Path, call: ScorerCall, log: str | Path | None = None) -> tuple[ToolRun, KvScore]:
    """Run the scorer (its log, llama.cpp's, to the job's log; its JSON lines kept apart) and parse what it printed."""
    r = run_tool(call.command(tool), log, separate_stdout=True)
    return r, parse_kvscore(r.stdout, r.output)
