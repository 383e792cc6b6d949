"""measure.tasks: the task-set job and the multiple-choice job, run with a stand-in llama-perplexity that prints real
captured output of each version (tests/data/cpu-*/tasks), and once with the real llama-perplexity of the demo's
build on a tiny synthetic model: what a record holds, the flags each build gets, and that a pass that scored
nothing, or a task file changed after its set was made, fails by name and writes no record."""

from __future__ import annotations

import sys

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.core.io import read_json, write_json
from ggufbench.measure.tasks import task_job, task_set_job
from ggufbench.sources.manifest import write_manifest
from ggufbench.sources.tasks import ClozeSettings, Task, make_cloze, write_tasks
from tests.support import DATA
from tests.support.hubserver import tiny_gguf
from tests.support.jobs import make_job
from tests.support.models import sha

OLD, NEW = DATA / "cpu-0.3.16", DATA / "cpu-0.3.36"
RUN = {"n_gpu_layers": 99, "flash_attn": "on"}
SCORING = {"ctx": 512, "batch": None, "ubatch": None}
F16 = [1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0]


def stand_in(path, capture, help_text=None):
    """An executable printing a real capture; with --help, a real --help capture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    show_help = f"open({str(help_text)!r}).read()" if help_text else "''"
    path.write_text(f"#!{sys.executable}\nimport sys\n"
                    f"if '--help' in sys.argv: sys.stdout.write({show_help}); sys.exit(0)\n"
                    f"sys.stdout.write(open({str(capture)!r}, encoding='utf-8').read())\n")
    path.chmod(0o755)
    return path


def build_record(tmp_path, features=None):
    build = tmp_path / "build.json"
    rec = {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"}
    if features is not None:
        rec["features"] = features
    write_json(build, rec)
    return build


def quant(tmp_path, name="F16"):
    gguf = tmp_path / name / f"smol-{name}.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(tiny_gguf(f"smol-{name}"))
    manifest = tmp_path / name / "manifest.json"
    write_manifest(manifest, "smol", name, [gguf], {"kind": "quantize"})
    return manifest


def task_set(tmp_path, n=20, answers=4):
    """A local task set of n questions (as the captures' file: 20 of 4 answers) made by task_set_job."""
    src = tmp_path / "src.bin"
    write_tasks([Task(f"question {i}", tuple(f"answer {j}" for j in range(answers)),
                      tuple(int(j == i % answers) for j in range(answers))) for i in range(n)], src)
    out = {"tasks": tmp_path / "set" / "tasks.bin", "record": tmp_path / "set" / "tasks.json"}
    rec = task_set_job(make_job(out=out, log=tmp_path / "set.log"), name="cap", spec={"local": {"path": str(src)}})
    return out["tasks"], out["record"], rec


def score(tmp_path, tool, build, **kw):
    tasks, record, _ = task_set(tmp_path)
    out = tmp_path / "score.json"
    job = make_job(tool=tool, build_json=build, run=RUN, out=out, log=tmp_path / "score.log")
    rec = task_job(job, manifest=quant(tmp_path), tasks=tasks, task_record=record, kv=kw.pop("kv", "f16"),
                   scoring=kw.pop("scoring", SCORING), **kw)
    return rec, out


def test_a_pass_on_0c1e570_records_every_questions_correctness(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", NEW / "tasks/mc_f16.txt")
    rec, out = score(tmp_path, tool, build_record(tmp_path, {"kv_unified": "auto"}), kv="q8_0")
    assert read_json(out) == rec and rec["stage"] == "tasks"
    r = rec["result"]
    assert r["correct"] == F16 and (r["n_tasks"], r["n_correct"], r["accuracy"]) == (20, 10, 0.5)
    assert r["accuracy_pct"] == 50.0 and r["random_chance"] == 0.25
    p = rec["params"]
    assert (p["task_set"], p["kv"], p["type_k"], p["ctx"], p["parallel"], p["variant"]) == (
        "cap", "q8_0", "q8_0", 512, 4, "main")
    cmd = rec["tool"]["cmd"]
    assert cmd[cmd.index("-bf") + 1].endswith("set/tasks.bin") and "--multiple-choice" in cmd
    assert cmd[cmd.index("--multiple-choice-tasks") + 1] == "0" and cmd[cmd.index("-np") + 1] == "4"
    assert cmd[cmd.index("-c") + 1] == "512" and "-kvu" not in cmd and "-b" not in cmd
    prov = rec["provenance"]
    assert (prov["task_set"], prov["task_set_kind"], prov["quant"]) == ("cap", "local", "F16")
    assert prov["task_set_sha256"] == read_json(tmp_path / "set/tasks.json")["result"]["file"]["sha256"]
    assert prov["file_sha256"] == sha(tmp_path / "F16/manifest.json")


def test_4227c9b_gets_kvu_and_the_whole_cache_as_c_read_from_its_help(tmp_path):
    """A build record without the kv_unified feature: the tool's --help says which form it takes."""
    tool = stand_in(tmp_path / "bin/llama-perplexity", OLD / "tasks/mc_f16_kvu.txt", OLD / "help_llama-perplexity.txt")
    rec, _ = score(tmp_path, tool, build_record(tmp_path))
    cmd = rec["tool"]["cmd"]
    assert "-kvu" in cmd and cmd[cmd.index("-c") + 1] == "2048" and rec["params"]["kv_unified"] == "flag"
    assert rec["result"]["correct"] == F16
    assert "--kv-unified, -kvu" in (tmp_path / "score.log").read_text()  # the help it read is in the job's log


def test_a_pass_that_scored_nothing_fails_named_and_writes_no_record(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", OLD / "tasks/fail_mc_no_kvu.txt")
    with pytest.raises(ToolFailed, match=r"needs a unified KV cache \(-kvu\)"):
        score(tmp_path, tool, build_record(tmp_path, {"kv_unified": "auto"}))
    assert not (tmp_path / "score.json").exists()


def test_a_file_of_another_count_than_the_run_printed_fails_named(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", NEW / "tasks/mc_f16.txt")
    tasks, record, _ = task_set(tmp_path, n=21)
    job = make_job(tool=tool, build_json=build_record(tmp_path, {"kv_unified": "auto"}), run=RUN,
                   out=tmp_path / "s.json", log=tmp_path / "s.log")
    with pytest.raises(ToolFailed, match="printed 20 per-task lines for a file of 21 tasks"):
        task_job(job, manifest=quant(tmp_path), tasks=tasks, task_record=record, kv="f16", scoring=SCORING)


def test_a_task_file_changed_after_its_set_was_made_is_refused(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", NEW / "tasks/mc_f16.txt")
    tasks, record, _ = task_set(tmp_path)
    write_tasks([Task("other", ("a", "b"), (1, 0))] * 20, tasks)
    job = make_job(tool=tool, build_json=build_record(tmp_path, {"kv_unified": "auto"}), run=RUN,
                   out=tmp_path / "s.json", log=tmp_path / "s.log")
    with pytest.raises(ToolFailed, match=r"tasks.bin has sha256 .* its task set's record says"):
        task_job(job, manifest=quant(tmp_path), tasks=tasks, task_record=record, kv="f16", scoring=SCORING)


def test_more_answers_than_four_ask_for_more_sequences(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", NEW / "tasks/mc_f16.txt")
    src = tmp_path / "five.bin"
    write_tasks([Task(f"q{i}", ("a", "b", "c", "d", "e"), (1, 0, 0, 0, 0)) for i in range(20)], src)
    out = {"tasks": tmp_path / "t.bin", "record": tmp_path / "t.json"}
    task_set_job(make_job(out=out, log=tmp_path / "set.log"), name="five", spec={"local": {"path": str(src)}})
    job = make_job(tool=tool, build_json=build_record(tmp_path, {"kv_unified": "flag"}), run=RUN,
                   out=tmp_path / "s.json", log=tmp_path / "s.log")
    rec = task_job(job, manifest=quant(tmp_path), tasks=out["tasks"], task_record=out["record"], kv="f16",
                   scoring=SCORING)
    cmd = rec["tool"]["cmd"]
    assert cmd[cmd.index("-np") + 1] == "5" and cmd[cmd.index("-c") + 1] == str(512 * 5)


def test_the_noise_floor_variant_scores_with_other_batch_sizes(tmp_path):
    tool = stand_in(tmp_path / "bin/llama-perplexity", NEW / "tasks/mc_f16.txt")
    rec, _ = score(tmp_path, tool, build_record(tmp_path, {"kv_unified": "auto"}),
                   variant={"batch": 512, "ubatch": 64})
    cmd = rec["tool"]["cmd"]
    assert (cmd[cmd.index("-b") + 1], cmd[cmd.index("-ub") + 1]) == ("512", "64")
    assert (rec["params"]["variant"], rec["params"]["batch"], rec["params"]["ubatch"]) == ("noise_floor", 512, 64)
    with pytest.raises(ConfigError, match="tasks.noise_floor: the variant has the main pass's batch sizes"):
        score(tmp_path / "again", tool, build_record(tmp_path, {"kv_unified": "auto"}),
              scoring={"ctx": 512, "batch": 512, "ubatch": 64}, variant={"batch": 512, "ubatch": 64})


@pytest.fixture(scope="module")
def tiny_model(llama_src, tmp_path_factory):
    """ggufbench.synth's tiny model (random weights: its answers are noise, its pass is real and fast)."""
    from ggufbench.sources import synthetic_moe as synth

    folder = tmp_path_factory.mktemp("tiny")
    synth.write_synthetic_moe(folder / "tiny.gguf", llama_src / "models" / "ggml-vocab-qwen2.gguf",
                              params=synth.PRESETS["tiny"], seed=0)
    write_manifest(folder / "manifest.json", "tiny", "F16", [folder / "tiny.gguf"], {"kind": "synthetic"})
    return folder / "manifest.json"


def test_a_real_multiple_choice_pass_of_a_cloze_set(llama_bin, tiny_model, tmp_path):
    """The real llama-perplexity (the demo's build, 0c1e570) on a cloze set made by the generator: every question
    gets a line, and the per-question correctness agrees with the tool's own final line (the parser checks it)."""
    text = " = Doc = \n\n" + " ".join(f"The {w} number {i} is a sentence of about the same length as the rest."
                                       for i, w in enumerate(["first", "second", "third", "fourth", "fifth"] * 6))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text + "\n")
    write_json(tmp_path / "corpus.json", {"name": "toy", "sha256": "c0ffee", "source": "test"})
    out = {"tasks": tmp_path / "set/tasks.bin", "record": tmp_path / "set/tasks.json"}
    made = task_set_job(make_job(out=out, log=tmp_path / "set.log"), name="toy",
                        spec={"cloze": {"corpus": "toy", "questions": 12, "context_sentences": 2}}, corpus=corpus,
                        corpus_record=tmp_path / "corpus.json")
    assert made["result"]["file"]["n_tasks"] == 12
    assert len(make_cloze(text, ClozeSettings(questions=12, context_sentences=2))) == 12
    build = build_record(tmp_path)  # no features: the form is read from the real --help
    job = make_job(tool=llama_bin / "llama-perplexity", build_json=build, run={"flash_attn": "off"},
                   out=tmp_path / "s.json", log=tmp_path / "s.log", threads=2)
    rec = task_job(job, manifest=tiny_model, tasks=out["tasks"], task_record=out["record"], kv="f16",
                   scoring={"ctx": 256, "batch": None, "ubatch": None})
    r = rec["result"]
    assert len(r["correct"]) == 12 and set(r["correct"]) <= {0, 1}
    assert r["accuracy_pct"] == pytest.approx(100 * sum(r["correct"]) / 12, abs=1e-3)
    assert rec["params"]["kv_unified"] == "auto" and "-kvu" not in rec["tool"]["cmd"]
