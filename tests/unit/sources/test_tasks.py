"""sources.tasks: llama.cpp's multiple-choice file format (a writer, and a reader whose every length is bounded),
the cloze generator over a corpus, and the registry of task-set kinds (local, hub through the loopback hub,
cloze)."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from dataclasses import replace

import pytest

from ggufbench.core.errors import ConfigError
from ggufbench.sources.corpus import python_docs_text
from ggufbench.sources.tasks import (
    TASK_KINDS,
    ClozeSettings,
    Task,
    TaskFileError,
    decode_tasks,
    encode_tasks,
    make_cloze,
    make_task_set,
    read_tasks,
    sentences,
    write_tasks,
)
from tests.support.hubserver import FakeHub, hf_env

TASKS = [
    Task("The capital of France is", ("Paris.", "Rome.", "Berlin."), (1, 0, 0)),
    Task("Ünïcode question — with a dash", ("yes", "no"), (0, 1), ("mc2 a", "mc2 b"), (1, 1)),
    Task("Q3", tuple(f"answer {i}" for i in range(100)), tuple(int(i == 99) for i in range(100))),
]


def test_the_binary_format_round_trips_and_its_offsets_point_at_each_task(tmp_path):
    info = write_tasks(TASKS, tmp_path / "t.bin")
    data = (tmp_path / "t.bin").read_bytes()
    assert read_tasks(tmp_path / "t.bin") == TASKS
    assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["n_bytes"] == len(data)
    assert (info["n_tasks"], info["max_answers"], info["answers_per_task"]) == (3, 100, {"2": 1, "3": 1, "100": 1})
    assert info["random_chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 100) / 3)
    # the layout llama-perplexity reads: u32 count, u32 offsets, then the first task's question right after
    n, *offsets = struct.unpack("<4I", data[:16])
    assert n == 3 and offsets[0] == 16
    q_len = struct.unpack("<I", data[16:20])[0]
    assert data[20:20 + q_len] == b"The capital of France is"
    # each offset starts a whole task: cut out, it is a one-task file of that task
    for i, (start, end) in enumerate(zip(offsets, [*offsets[1:], len(data)], strict=True)):
        assert decode_tasks(struct.pack("<II", 1, 8) + data[start:end], "one") == [TASKS[i]]
    assert TASKS[0].gold == 0 and TASKS[1].gold == 1 and TASKS[2].gold == 99


def fails_at(data: bytes, offset: int, what: str):
    with pytest.raises(TaskFileError, match=what) as e:
        decode_tasks(data, "bad.bin")
    assert e.value.offset == offset and str(e.value).startswith(f"bad.bin: not a multiple-choice task file at byte "
                                                                f"{offset}: ")


def test_a_truncated_file_is_refused_naming_the_byte_offset():
    data = encode_tasks(TASKS[:2])
    # cut inside the second task's question: its length field says more bytes than are left
    second = struct.unpack("<I", data[8:12])[0]
    fails_at(data[:second + 10], second + 4, "the question of task 1 needs 34 bytes, 6 are left")
    fails_at(data[:2], 0, "the task count needs 4 bytes, 2 are left")
    fails_at(data[:-3], len(data) - 3 - 5, "the 2 labels of mc2 of task 1 needs 8 bytes, 5 are left")


def test_counts_beyond_the_file_or_llama_cpp_limits_are_refused():
    fails_at(struct.pack("<I", 1_000_000) + b"\0" * 40, 0, "cannot fit in 44 bytes")
    fails_at(struct.pack("<I", 0), 0, "the task count is 0")
    body = struct.pack("<I", 1) + b"q" + struct.pack("<I", 101)
    fails_at(struct.pack("<II", 1, 8) + body, 13, "mc1 of task 0 has 101 answers; llama.cpp reads at most 100")


def test_a_wrong_offsets_table_non_utf8_and_unscorable_tasks_are_refused():
    data = bytearray(encode_tasks(TASKS[:2]))
    data[8:12] = struct.pack("<I", 99)
    fails_at(bytes(data), struct.unpack("<I", bytes(encode_tasks(TASKS[:2]))[8:12])[0],
             "the offsets table says task 1 starts at byte 99")
    bad = encode_tasks([Task("x", ("a",), (1,))]).replace(b"x", b"\xff")
    fails_at(bad, 8, "the question of task 0 is not UTF-8")
    fails_at(encode_tasks([Task("q", ("a", "b"), (0, 0))]), 8, "task 0 marks no answer correct")
    fails_at(encode_tasks([Task("q", ("a", ""), (1, 0))]), 8, "task 0 has an empty answer")
    fails_at(encode_tasks([Task("", ("a",), (1,))]), 8, "empty question or no answers")


# --- the cloze generator ---------------------------------------------------------------------------------

SENTENCES = [f"Sentence number {i} of the first document talks about topic {i % 7} at some length." for i in range(40)]
TEXT = (" = First = \n\n" + "\n".join(SENTENCES[:20]) + "\n\n    code_block(x) = 1\n\n" + " ".join(SENTENCES[20:])
        + "\n\n = Second = \n\n" + " ".join(f"Another text, line {i}, says other things about {i}." for i in range(30))
        + "\n")


def test_cloze_questions_continue_their_context_with_distractors_from_the_same_document():
    st = ClozeSettings(questions=1000, choices=4, context_sentences=2, seed=3)
    tasks = make_cloze(TEXT, st)
    assert len(tasks) > 30
    by_doc = [set(SENTENCES), {f"Another text, line {i}, says other things about {i}." for i in range(30)}]
    for t in tasks:
        assert len(t.answers) == 4 and sorted(t.labels) == [0, 0, 0, 1]
        true = t.answers[t.gold]
        doc = next(d for d in by_doc if true in d)
        assert all(a in doc for a in t.answers)  # distractors from the same document
        assert all(abs(len(a) - len(true)) <= st.length_tolerance * len(true) for a in t.answers)
        ctx = [s for s in sentences(TEXT, st) if s.text in t.question]
        nxt = sentences(TEXT, st)[sentences(TEXT, st).index(ctx[-1]) + 1]
        assert nxt.text == true  # the true answer is the sentence right after the context
    # the code block cuts the run: no question has context on both sides of it
    assert not any(SENTENCES[19] in t.question and t.answers[t.gold] == SENTENCES[20] for t in tasks)
    assert {t.gold for t in tasks} == {0, 1, 2, 3}


def test_cloze_is_reproducible_by_seed_and_bounded_by_questions():
    st = ClozeSettings(context_sentences=1, seed=7)
    assert encode_tasks(make_cloze(TEXT, st)) == encode_tasks(make_cloze(TEXT, st))
    assert encode_tasks(make_cloze(TEXT, replace(st, seed=8))) != encode_tasks(make_cloze(TEXT, st))
    assert len(make_cloze(TEXT, replace(st, questions=5))) == 5


def test_cloze_of_the_demo_corpus_gives_about_a_thousand_questions():
    """The demo's corpus (CPython's help topics, 400 kB): the default settings' question count (926 with CPython
    3.11.7, the file of tests/data/cpu-0.3.36/tasks/demo_cloze); its text and so the count move a little with the
    Python version."""
    tasks = make_cloze(python_docs_text(400000), ClozeSettings())
    assert 600 <= len(tasks) <= 1000
    assert all(len(t.answers) == 3 and sum(t.labels) == 1 for t in tasks)


# --- the registry of kinds -----------------------------------------------------------------------------

def test_unknown_kinds_and_two_kinds_are_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks.sets.x: unknown kind 'mmlu'; known: local, hub, cloze"):
        make_task_set("x", {"mmlu": {}}, tmp_path / "t.bin")
    with pytest.raises(ConfigError, match="one kind key"):
        make_task_set("x", {"local": {}, "hub": {}}, tmp_path / "t.bin")
    assert list(TASK_KINDS) == ["local", "hub", "cloze"]


def test_a_local_set_is_copied_checked_and_held_to_its_sha256(tmp_path):
    src = tmp_path / "arc.bin"
    src.write_bytes(encode_tasks(TASKS))
    made = make_task_set("arc", {"local": {"path": str(src)}}, tmp_path / "out" / "tasks.bin")
    assert (tmp_path / "out" / "tasks.bin").read_bytes() == src.read_bytes()
    assert (made.kind, made.source, made.file["n_tasks"]) == ("local", str(src.resolve()), 3)
    with pytest.raises(ConfigError, match=r"tasks.sets.arc.local: .* has sha256 .* the config says 00"):
        make_task_set("arc", {"local": {"path": str(src), "sha256": "00"}}, tmp_path / "out2" / "tasks.bin")
    assert not (tmp_path / "out2" / "tasks.bin").exists()
    src.write_bytes(encode_tasks(TASKS)[:-1])
    with pytest.raises(TaskFileError, match=r"arc.bin: not a multiple-choice task file at byte"):
        make_task_set("arc", {"local": {"path": str(src)}}, tmp_path / "out3" / "tasks.bin")
    with pytest.raises(ConfigError, match="is not a file"):
        make_task_set("arc", {"local": {"path": str(tmp_path / "none.bin")}}, tmp_path / "out4" / "tasks.bin")


def test_a_cloze_set_records_its_settings_and_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    made = make_task_set("cloze", {"cloze": {"corpus": "pydocs", "questions": 10, "context_sentences": 2}},
                         tmp_path / "tasks.bin", corpus=corpus, corpus_record={"name": "pydocs", "sha256": "c0ffee"})
    assert made.file["n_tasks"] == 10 and made.file["sha256"] == hashlib.sha256(
        (tmp_path / "tasks.bin").read_bytes()).hexdigest()
    assert made.settings["corpus_sha256"] == "c0ffee" and made.settings["context_sentences"] == 2
    assert "cloze of corpus pydocs (sha256 c0ffee)" == made.source
    with pytest.raises(ConfigError, match="choices"):
        make_task_set("cloze", {"cloze": {"corpus": "pydocs", "choices": 1}}, tmp_path / "t2.bin", corpus=corpus)
    with pytest.raises(ConfigError, match="gives 0 questions"):
        make_task_set("cloze", {"cloze": {"corpus": "pydocs", "min_chars": 200, "max_chars": 300}},
                      tmp_path / "t3.bin", corpus=corpus)


HUB_DRIVER = r"""
import json, sys
from pathlib import Path
from ggufbench.sources.tasks import make_task_set
a = json.loads(sys.argv[1])
made = make_task_set(a["name"], a["spec"], Path(a["out"]), lock=a["lock"])
print(json.dumps(made.to_dict()))
"""


def test_a_hub_set_is_fetched_pinned_checked_and_locked(tmp_path):
    """ikawrakow/validation-datasets-for-llama.cpp as the study names it, served on loopback: the file is fetched at
    the resolved commit through sources/hub.py (sha256 checked), parsed, and its commit goes into the lock."""
    repo = "ikawrakow/validation-datasets-for-llama.cpp"
    data = encode_tasks(TASKS)
    hub = FakeHub().start()
    try:
        commit = hub.commit(repo, {"arc-easy-validation.bin": data, "mmlu-validation.bin": encode_tasks(TASKS[:1]),
                                   "README.md": b"# validation\n"}, repo_type="dataset")
        args = {"name": "arc-easy", "spec": {"hub": {"repo": repo, "file": "arc-easy-validation.bin"}},
                "out": str(tmp_path / "arc" / "tasks.bin"), "lock": str(tmp_path / "hub.lock.json")}
        run = subprocess.run([sys.executable, "-c", HUB_DRIVER, json.dumps(args)], env=hf_env(hub, tmp_path / "hf"),
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        made = json.loads(run.stdout.strip().splitlines()[-1])
        assert (tmp_path / "arc" / "tasks.bin").read_bytes() == data
        assert made["source"] == f"hf://datasets/{repo}@{commit}/arc-easy-validation.bin"
        assert made["file"]["sha256"] == hashlib.sha256(data).hexdigest() and made["settings"]["commit"] == commit
        lock = json.loads((tmp_path / "hub.lock.json").read_text())["entries"]
        assert lock[f"dataset:{repo}@main file=arc-easy-validation.bin"]["commit"] == commit
        gets = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
        assert gets == [f"/datasets/{repo}/resolve/{commit}/arc-easy-validation.bin"] and hub.unhandled == []
    finally:
        hub.stop()
