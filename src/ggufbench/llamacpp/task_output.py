"""llama-perplexity's multiple-choice mode: its output parsed into per-question correctness, and what a build needs
to run the mode.

The mode prints, after a `task\\tacc_norm` header, one line per question, "%d\\t%.8lf": the count of questions
done and the running accuracy in %, then `Final result: X +/- Y` and `Random chance: X +/- Y`. With
--multiple-choice-tasks 0 (the default) the file's order is kept, so line k is question k - 1 of the file, and
question k's correctness is round(acc_k·k/100) − round(acc_{k−1}·(k−1)/100): exact, since 8 decimals of a
percentage leave k·5e-11 of rounding in a count. The recovered counts are checked against the final line.

Like the PPL modes it exits 0 when it fails (a task needing more sequences than -np, a decode failure, a malformed
task): success is exit 0 AND one per-task line per question of the file AND the final line agreeing with them.
Pure functions over the text the tool printed, tested on real captures of 0c1e570 and 4227c9b
(tests/data/cpu-0.3.36/tasks, tests/data/cpu-0.3.16/tasks).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..core.errors import ToolFailed
from .perplexity_output import diagnose as diagnose_perplexity
from .perplexity_output import explain

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)"
_HEADER = re.compile(r"^task\tacc_norm$", re.M)
_TASK_LINE = re.compile(r"^(\d+)\t([-+0-9.naif]+)$", re.M)
_FINAL = re.compile(rf"Final result: {_NUM} \+/- {_NUM}")
_CHANCE = re.compile(rf"Random chance: {_NUM} \+/- {_NUM}")

# The mode's own failure lines (tools/perplexity/perplexity.cpp, multiple_choice_score), most specific first:
# (regex, explanation). The PPL modes' table (perplexity_output) is read after it: a model that does not load.
FAILURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"sequential split is not supported when there are coupled sequences"),
     "this llama.cpp needs a unified KV cache (-kvu) for the task modes, and the run had none "
     "(llama.cpp before late 2025: kv_unified_args decides it from the build's --help)"),
    (re.compile(r"task (\d+) requires a higher -np\|--parallel value \(at least (\d+)\)"),
     "task {0} has {1} answers, more than the sequences llama-perplexity was given (-np): run it with -np {1}"),
    (re.compile(r"task (\d+) does not fit in the context window \(requires (\d+) tokens\)"),
     "task {0} needs {1} tokens, more than the context holds: raise tasks.ctx"),
    (re.compile(r"found (\d+) malformed tasks"), "{0} tasks of the file are malformed (an empty question or answer)"),
    (re.compile(r"found bad task with empty question|found empty answer"),
     "a task of the file has an empty question or answer"),
    (re.compile(r"failed to read task (\d+)"), "the task file ends inside task {0} (truncated or not a task file)"),
    (re.compile(r"failed to read task positions|multiple_choice_score: no tasks"),
     "the task file has no tasks or a truncated offsets table"),
    (re.compile(r"llama_decode\(\) failed|failed to decode the batch"),
     "llama_decode failed (out of memory, or a backend error: see the log above it)"),
]


def diagnose(text: str) -> str | None:
    """The task mode's own failure explained, else one of llama-perplexity's PPL modes; None if none is found."""
    return explain(FAILURES, text) or diagnose_perplexity(text)


@dataclass
class TaskScores:
    """One multiple-choice pass: every question's correctness in the file's order, and the tool's summary."""

    correct: list[int]                   # 1: the model's highest-scoring answer is labelled correct
    n_tasks: int
    n_correct: int
    accuracy_pct: float                  # Final result, as printed
    accuracy_uncertainty_pct: float      # its ±: sqrt(p(1-p)/(n-1)), as llama.cpp computes it
    random_chance_pct: float | None = None
    random_chance_uncertainty_pct: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _fail(text: str, what: str) -> ToolFailed:
    why = diagnose(text)
    return ToolFailed(f"llama-perplexity --multiple-choice {what}: " +
                      (why or "no known error line was found (see the log for the tool's own output)"), text)


def task_lines(text: str) -> list[tuple[int, float]]:
    """The (count done, running accuracy %) lines after the `task\\tacc_norm` header."""
    header = _HEADER.search(text)
    if not header:
        return []
    return [(int(k), float(v)) for k, v in _TASK_LINE.findall(text, header.end())]


def correctness(lines: list[tuple[int, float]]) -> list[int]:
    """Each question's 1/0 from the running accuracies; refuses lines that are out of order or do not give whole
    counts (not this mode's output)."""
    out, prev = [], 0
    for k, (done, acc) in enumerate(lines, start=1):
        if done != k:
            raise ToolFailed(f"llama-perplexity --multiple-choice printed task line {done} where line {k} was due "
                             "(lines out of order: was --multiple-choice-tasks set, or two runs' output mixed?)")
        count = acc * k / 100
        n = round(count)
        if not math.isfinite(acc) or abs(count - n) > 1e-4 or n - prev not in (0, 1):
            raise ToolFailed(f"llama-perplexity --multiple-choice task line {k} gives {acc}% of {k} questions, "
                             f"{count:.6f} right after {prev} before: not a running accuracy")
        out.append(n - prev)
        prev = n
    return out


def _check_final(correct: list[int], acc: float, unc: float) -> None:
    n, k = len(correct), sum(correct)
    p = k / n
    sigma = 100 * math.sqrt(p * (1 - p) / (n - 1))
    # llama.cpp computes in single precision and prints 4 decimals: 1e-3 of a percentage point is ample
    if abs(acc - 100 * p) > 1e-3 or abs(unc - sigma) > 1e-3:
        raise ToolFailed(f"llama-perplexity --multiple-choice: its per-task lines give {k} of {n} right "
                         f"({100 * p:.4f} +/- {sigma:.4f}), its final line says {acc} +/- {unc}: the output is not "
                         "one run's")


def parse_multiple_choice(text: str, n_tasks: int) -> TaskScores:
    """The pass's per-question correctness and summary; n_tasks: the task file's count (sources.tasks). A run whose
    per-task lines are fewer or more than the file's questions fails, named (never a score of part of the file)."""
    lines = task_lines(text)
    if not lines:
        raise _fail(text, "scored no question")
    if len(lines) != n_tasks:
        raise _fail(text, f"printed {len(lines)} per-task lines for a file of {n_tasks} tasks")
    correct = correctness(lines)
    final = _FINAL.search(text)
    if not final:
        raise _fail(text, f"scored {n_tasks} tasks but printed no 'Final result: X +/- Y' line")
    acc, unc = float(final.group(1)), float(final.group(2))
    if n_tasks < 2 or not (math.isfinite(acc) and math.isfinite(unc)):
        raise ToolFailed(f"llama-perplexity --multiple-choice: Final result {acc} +/- {unc} over {n_tasks} tasks: "
                         "its uncertainty needs at least 2 tasks")
    _check_final(correct, acc, unc)
    chance = _CHANCE.search(text)
    return TaskScores(correct=correct, n_tasks=n_tasks, n_correct=sum(correct), accuracy_pct=acc,
                      accuracy_uncertainty_pct=unc,
                      random_chance_pct=float(chance.group(1)) if chance else None,
                      random_chance_uncertainty_pct=float(chance.group(2)) if chance else None)


# What a build needs for the task modes ---------------------------------------------------------------------
# 4227c9b's --help: "--kv-unified, -kvu  use single unified KV buffer ... (default: false)": its task modes fail
# without -kvu (fail_mc_no_kvu.txt), and its -c is the whole KV cache. 0c1e570's: "-kvu, --kv-unified, -no-kvu,
# --no-kv-unified ... (default: enabled if number of slots is auto)": its perplexity tool sets kv_unified itself for
# the task modes and sizes the cache -np x -c (read in tools/perplexity/perplexity.cpp of both).
KV_UNIFIED_AUTO = "auto"   # the tool makes the cache unified itself; -c is per sequence
KV_UNIFIED_FLAG = "flag"   # -kvu must be passed; -c is the whole cache


def kv_unified_form(perplexity_help: str) -> str | None:
    """How a build's llama-perplexity takes the unified KV cache, from its --help: "auto", "flag", or None when
    its help has no such option (older than any llama.cpp ggufbench runs)."""
    if re.search(r"-no-kvu|--no-kv-unified", perplexity_help):
        return KV_UNIFIED_AUTO
    if re.search(r"--kv-unified|-kvu\b", perplexity_help):
        return KV_UNIFIED_FLAG
    return None


def kv_unified_args(form: str | None) -> list[str]:
    """-kvu for a build whose task modes need it passed (the "flag" form); nothing where the tool sets it."""
    return ["-kvu"] if form == KV_UNIFIED_FLAG else []


def context_arg(form: str | None, ctx: int, parallel: int) -> int:
    """-c for `parallel` sequences of `ctx` tokens each (what -c means in current llama.cpp): 0c1e570 multiplies -c
    by the sequences itself, 4227c9b takes -c as the whole cache."""
    return ctx if form == KV_UNIFIED_AUTO else ctx * parallel
