"""llamacpp.cli: the command lines of llama-perplexity, llama-bench and llama-server built from settings."""

from __future__ import annotations

from pathlib import Path

from ggufbench.core.config import defaults
from ggufbench.llamacpp.cli import bench_cmd, depths, paste_ready, perplexity_args, server_args, setting_args

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
