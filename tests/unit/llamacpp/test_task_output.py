"""llamacpp.task_output: llama-perplexity --multiple-choice output of two real llama.cpp versions (0c1e570 and
4227c9b, tests/data/cpu-*/tasks/README.md says how each was made) read into per-question correctness, checked
against the final line; the runs that scored nothing (4227c9b without -kvu, a task with more answers than -np)
fail by name; and what a build needs, read from its --help."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.task_output import (
    KV_UNIFIED_AUTO,
    KV_UNIFIED_FLAG,
    context_arg,
    correctness,
    kv_unified_args,
    kv_unified_form,
    parse_multiple_choice,
    task_lines,
)
from tests.support import DATA

OLD, NEW = DATA / "cpu-0.3.16", DATA / "cpu-0.3.36"
# SmolLM2-135M F16 on the 20 cloze questions of cap20.bin, as both versions scored them
F16 = [1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0]


def read(path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("capture", [NEW / "tasks/mc_f16.txt", OLD / "tasks/mc_f16_kvu.txt"], ids=["0.3.36", "0.3.16"])
def test_both_versions_give_the_same_questions_right(capture):
    r = parse_multiple_choice(read(capture), 20)
    assert r.correct == F16
    assert (r.n_tasks, r.n_correct, r.accuracy_pct, r.accuracy_uncertainty_pct) == (20, 10, 50.0, 11.4708)
    assert (r.random_chance_pct, r.random_chance_uncertainty_pct) == (25.0, 9.934)


def test_a_quant_flips_questions_and_the_two_builds_kernels_differ():
    new = parse_multiple_choice(read(NEW / "tasks/mc_q2_k.txt"), 20)
    old = parse_multiple_choice(read(OLD / "tasks/mc_q2_k_kvu.txt"), 20)
    assert [i for i in range(20) if new.correct[i] != F16[i]] == [17]       # task 18 as llama.cpp counts
    assert [i for i in range(20) if old.correct[i] != F16[i]] == [17, 18]
    assert (new.accuracy_pct, old.accuracy_pct) == (45.0, 40.0)


def test_the_older_build_without_kvu_scores_nothing_and_says_why():
    with pytest.raises(ToolFailed, match=r"scored no question: this llama.cpp needs a unified KV cache \(-kvu\)"):
        parse_multiple_choice(read(OLD / "tasks/fail_mc_no_kvu.txt"), 20)


def test_a_task_with_more_answers_than_sequences_is_named():
    with pytest.raises(ToolFailed, match=r"task 0 has 5 answers, more than the sequences .* run it with -np 5"):
        parse_multiple_choice(read(NEW / "tasks/fail_mc_np.txt"), 4)


@pytest.mark.parametrize("n", [19, 21, 1000])
def test_a_run_whose_task_lines_are_not_the_files_count_fails_named(n):
    with pytest.raises(ToolFailed, match=rf"printed 20 per-task lines for a file of {n} tasks"):
        parse_multiple_choice(read(NEW / "tasks/mc_f16.txt"), n)


def test_a_final_line_that_disagrees_with_the_task_lines_is_refused():
    text = read(NEW / "tasks/mc_f16.txt").replace("Final result: 50.0000", "Final result: 55.0000")
    with pytest.raises(ToolFailed, match=r"per-task lines give 10 of 20 right .* final line says 55.0"):
        parse_multiple_choice(text, 20)
    whole = read(NEW / "tasks/mc_f16.txt")
    cut = whole[:whole.index("Final result")]  # every task line, no final line
    with pytest.raises(ToolFailed, match="printed no 'Final result"):
        parse_multiple_choice(cut, 20)


def test_correctness_is_the_difference_of_rounded_running_counts():
    lines = task_lines(read(NEW / "tasks/mc_f16.txt"))
    assert lines[:3] == [(1, 100.0), (2, 50.0), (3, 33.33333333)]
    assert correctness(lines) == F16
    # 1000 questions: 8 decimals of a percentage still give whole counts
    acc = [(k, round(100 * (k // 3) / k, 8)) for k in range(1, 1001)]
    assert sum(correctness(acc)) == 333
    with pytest.raises(ToolFailed, match="task line 3 where line 2 was due"):
        correctness([(1, 100.0), (3, 66.66666667)])
    with pytest.raises(ToolFailed, match="not a running accuracy"):
        correctness([(1, 100.0), (2, 75.0)])


def test_which_builds_need_kvu_is_read_from_their_help():
    old = kv_unified_form(read(OLD / "help_llama-perplexity.txt"))
    new = kv_unified_form(read(NEW / "help_llama-perplexity.txt"))
    assert (old, new) == (KV_UNIFIED_FLAG, KV_UNIFIED_AUTO)
    assert (kv_unified_args(old), kv_unified_args(new)) == (["-kvu"], [])
    assert kv_unified_form("usage: llama-perplexity [options]") is None
    # 4227c9b's -c is the whole cache (n_ctx 512 for -c 512 in mc_f16_kvu.txt), 0c1e570's is per sequence
    assert "llama_context: n_ctx         = 512" in read(OLD / "tasks/mc_f16_kvu.txt")
    assert (context_arg(old, 512, 4), context_arg(new, 512, 4)) == (2048, 512)
