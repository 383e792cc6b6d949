"""llamacpp.cli: the command lines of llama-perplexity, llama-bench and llama-server built from settings; the study's
C7 measured and served with the same flags, in each build's spelling, down to the real llama-bench and llama-server."""

from __future__ import annotations

from pathlib import Path

import yaml

from ggufbench.core.config import defaults, validated
from ggufbench.llamacpp.bench_output import parse_bench_jsonl
from ggufbench.llamacpp.cli import bench_cmd, depths, paste_ready, perplexity_args, server_args, setting_args
from ggufbench.llamacpp.features import probe
from ggufbench.llamacpp.run import run_tool
from ggufbench.llamacpp.server import check
from ggufbench.measure.bench_calls import invocations
from ggufbench.sources import synthetic_moe as synth
from tests.support import DATA, REPO
from tests.unit.llamacpp.test_features import features_of

RUN = defaults("run")
CUDA, CPU = {"backend": "CUDA"}, {"backend": "CPU"}  # build records without features: the newest llama.cpp


def test_setting_args():
    assert setting_args({"override_tensor": "exps=CPU"}, True, 99) == ["-ngl", "99", "-ot", "exps=CPU"]
    assert setting_args({"n_cpu_moe": 24}, True, 99) == ["-ngl", "99", "-ncmoe", "24"]
    assert setting_args({"fit_target": 256}, True, 99) == ["-ngl", "99", "-fitt", "256"]
    assert setting_args({}, False, 99) == []  # a CPU build gets no -ngl
    assert setting_args({"n_gpu_layers": 0}, True, 99) == ["-ngl", "0"]


def test_depth_fills_the_served_context():
    bench = {"prompt": [512], "gen": [32], "depth": [0, 4096]}
    assert depths(bench, None) == [0, 4096]
    assert depths(bench, 8192) == [7680]  # llama-bench sizes the context n_prompt + n_gen + n_depth


def test_bench_cmd_of_an_offload_call():
    bench = {**defaults("bench"), "prompt": [512], "gen": [128], "repetitions": 2, "extra_args": ["--no-warmup"]}
    inv = {"n_cpu_moe": 16, "kv": "q8_0-f16", "batch": 2048, "ubatch": 512, "context": None}
    cmd = [str(a) for a in bench_cmd("llama-bench", Path("m.gguf"), bench=bench, inv=inv, threads=[8, 16], build=CUDA,
                                     run=RUN)]
    assert cmd == ["llama-bench", "-m", "m.gguf", "-o", "jsonl", "-p", "512", "-n", "128", "-d", "0", "-r", "2",
                   "-t", "8,16", "-fa", "on", "-ctk", "q8_0", "-ctv", "f16", "-b", "2048", "-ub", "512",
                   "-ngl", "99", "-ncmoe", "16", "--no-warmup"]


def test_perplexity_args_offload_only_on_cuda():
    cpu = perplexity_args("llama-perplexity", Path("m.gguf"), build={"backend": "CPU"}, ctx=512, kv="q8_0", threads=2,
                          run=RUN)
    assert "-ngl" not in cpu and cpu[-4:] == ["-ctk", "q8_0", "-ctv", "q8_0"]
    cuda = perplexity_args("llama-perplexity", Path("m.gguf"), build={"backend": "CUDA"}, ctx=512, kv="f16", threads=8,
                           run=RUN)
    assert cuda[-2:] == ["-ngl", 99]


def test_server_turns_fit_off_unless_the_setting_is_a_fit():
    """llama-server fits by default, which would move what a measured -ncmoe places."""
    ncmoe = server_args("m.gguf", 8192, {"n_cpu_moe": 28, "ubatch": 512}, kv=("q8_0", "q8_0"), threads=8, run=RUN,
                        build=CUDA)
    assert ncmoe == ["-m", "m.gguf", "-c", "8192", "-ngl", "99", "--fit", "off", "-ncmoe", "28", "-fa", "on",
                     "-ctk", "q8_0", "-ctv", "q8_0", "-t", "8", "-ub", "512"]
    fit = server_args("m.gguf", 8192, {"fit_target": 256}, kv=("f16", "f16"), threads=None, run=RUN, build=CUDA)
    assert fit[4:8] == ["--fit", "on", "--fit-target", "256"] and "-ngl" not in fit
    assert server_args("m.gguf", 1024, {}, kv=("f16", "f16"), threads=2, run=RUN, build=CPU)[4:6] == ["--fit", "off"]


def test_paste_ready_quotes_what_a_shell_would_split():
    assert paste_ready("/opt/llama server", ["-ot", "blk\\.(2[8-9])\\.ffn_(up|gate)_exps=CPU"]) == (
        "'/opt/llama server' -ot 'blk\\.(2[8-9])\\.ffn_(up|gate)_exps=CPU'")


# The study's C7 (config/config.yaml: bench.strategies.c7) as each build spells it ------------------------------

NEW_BUILD = {"backend": "CUDA", "build": "cuda", "features": features_of(DATA / "cpu-0.3.36")}
OLD_BUILD = {"backend": "CUDA", "build": "old", "features": features_of(DATA / "cpu-0.3.16")}


def c7_calls() -> list[dict]:
    config = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    return invocations(config["bench"], "c7", config["bench"]["strategies"]["c7"])


def measured_setting(inv: dict) -> dict:
    """The setting a bench record keeps of a call (measure/speed.py: the invocation less its strategy's name)."""
    return {k: v for k, v in inv.items() if k != "strategy"}


def test_c7_measured_as_the_study_ran_it():
    """-ncmoe 24 -b 4096 -ub 4096 -ctk q8_0 -ctv q8_0 -fa on, no mmap, 20 threads: in llama-bench's words for each
    version (0c1e570: -lm none; 4227c9b: -mmp 0, and its -fa 1)."""
    bench = {**defaults("bench"), "prompt": [512], "gen": [128], "threads": [6, 8]}
    inv = c7_calls()[0]
    cmd = [str(a) for a in bench_cmd("llama-bench", Path("m.gguf"), bench=bench, inv=inv, threads=[6, 8],
                                     build=NEW_BUILD, run=RUN)]
    assert cmd[cmd.index("-t"):] == ["-t", "20", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0", "-b", "4096",
                                     "-ub", "4096", "-lm", "none", "-ngl", "99", "-ncmoe", "24"]
    assert cmd[cmd.index("-d") + 1] == "7680"  # the served context 8192 less the prompt
    old = {**OLD_BUILD, "features": {**OLD_BUILD["features"], "bench_n_cpu_moe": True}}
    cmd = [str(a) for a in bench_cmd("llama-bench", Path("m.gguf"), bench=bench, inv=inv, threads=[6], build=old,
                                     run=RUN)]
    assert cmd[cmd.index("-t"):] == ["-t", "20", "-fa", "1", "-ctk", "q8_0", "-ctv", "q8_0", "-b", "4096",
                                     "-ub", "4096", "-mmp", "0", "-ngl", "99", "-ncmoe", "24"]


def test_the_proven_command_is_the_measured_setting():
    """The server check starts the setting a bench row measured: every flag of the llama-bench call that concerns
    the model and its context (offload, KV types, -fa, threads, -b/-ub, no mmap) reaches llama-server, in its own
    spelling."""
    setting = measured_setting(c7_calls()[0])
    args = server_args("m.gguf", setting["context"], setting, kv=("q8_0", "q8_0"), threads=20, run=RUN,
                       build=NEW_BUILD)
    assert args == ["-m", "m.gguf", "-c", "8192", "-ngl", "99", "--fit", "off", "-ncmoe", "24", "-fa", "on",
                    "-ctk", "q8_0", "-ctv", "q8_0", "-t", "20", "-b", "4096", "-ub", "4096", "-lm", "none"]
    old = server_args("m.gguf", 8192, setting, kv=("q8_0", "q8_0"), threads=20, run=RUN, build=OLD_BUILD)
    assert old[-1] == "--no-mmap" and "--fit" not in old and old[old.index("-fa"):][:2] == ["-fa", "-ctk"]
    layers = server_args("m.gguf", 8192, {"n_gpu_layers": 28}, kv=("f16", "f16"), threads=16, run=RUN,
                         build=NEW_BUILD)
    assert layers[4:8] == ["-ngl", "28", "--fit", "off"]  # a layer split: -ngl N, and llama-server must not refit
    # threads as a candidates table holds them beside a candidate of none (NaN): a float, -t a whole number
    assert server_args("m.gguf", 1024, {}, kv=("f16", "f16"), threads=20.0, run=RUN, build=NEW_BUILD)[-2:] == [
        "-t", "20"]


def test_c7s_flags_reach_the_real_llama_bench_and_llama_server(llama_bin, llama_src, tmp_path):
    """On the real CPU build (0c1e570) and a synthetic model: llama-bench reports the C7 call's -b/-ub, KV types,
    threads and load mode as asked (-b/-ub 64 here: the tiny model's context), and llama-server started with the
    same setting's command (which it would refuse with an argument it does not know) answers: llamacpp.server.check,
    the proof the report's command rests on."""
    model = tmp_path / "tiny.gguf"  # heads of 32: a q8_0 KV cache needs whole blocks of 32 (16 fails the context)
    synth.write_synthetic_moe(model, llama_src / "models" / "ggml-vocab-qwen2.gguf", n_layer=1, head_dim=32, seed=1)
    build = {"backend": "CPU", "build": "cpu", "features": probe(llama_bin)}
    bench = {**defaults("bench"), "prompt": [32], "gen": [4], "repetitions": 1}
    inv = {**c7_calls()[0], "context": None, "threads": [1], "batch": 64, "ubatch": 64}
    run = run_tool(bench_cmd(llama_bin / "llama-bench", model, bench=bench, inv=inv, threads=[2], build=build,
                             run=RUN), tmp_path / "bench.log", separate_stdout=True)
    rows = parse_bench_jsonl(run.stdout)
    assert {(r["n_batch"], r["n_ubatch"], r["type_k"], r["n_threads"], r["load_mode"]) for r in rows} == {
        (64, 64, "q8_0", 1, "none")}
    setting = measured_setting(inv)
    args = server_args(model, 256, setting, kv=("q8_0", "q8_0"), threads=1, run=RUN, build=build)
    assert args[-2:] == ["-lm", "none"]
    proof = check(llama_bin / "llama-server", args, tmp_path / "server.log", prompt="Hello", n_predict=4,
                  timeout_s=120)
    started_as = (tmp_path / "server.log").read_text().splitlines()[0]
    assert proof["predicted_n"] == 4 and proof["cmd"][1:len(args) + 1] == [str(a) for a in args]
    assert started_as.startswith("$ ") and " -t 1 -b 64 -ub 64 -lm none " in started_as  # llama-server took them
