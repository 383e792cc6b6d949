"""Command lines of llama.cpp's tools, built from the workflow's settings: llama-perplexity's common flags,
llama-bench's offload flags and calls, llama-server's flags for a measured setting. Each takes the build's record,
so the flags are the ones that build's llama.cpp takes (features.py: -fa's form, whether --fit exists, how "no
mmap" is spelled).

A measured setting (measure/bench_calls.py: offload, KV types, -b/-ub, no_mmap, threads) makes both the llama-bench
call that measures it and the llama-server command the report proves, so the command is the measured setting."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..core.config import kv_pair
from .features import (
    features,
    flash_attn_args,
    no_mmap_args,
    require_bench_n_cpu_moe,
    require_cache_types,
    require_fit,
)


def perplexity_args(tool: str | Path, model: Path, *, build: dict, ctx: int, kv: str, threads: int, run: dict) -> list:
    require_cache_types(build, [kv], f"the KV type {kv!r} (perplexity.kv, kld.kv)")
    k, v = kv_pair(kv)
    args = [tool, "-m", model, "-c", ctx, "-t", threads, *flash_attn_args(build, run["flash_attn"]),
            "-ctk", k, "-ctv", v]
    if build.get("backend") == "CUDA":
        args += ["-ngl", run["n_gpu_layers"]]
    return args


def setting_args(setting: dict, gpu_build: bool, default_ngl: int) -> list[str]:
    args: list[str] = []
    ngl = setting.get("n_gpu_layers", default_ngl if gpu_build else None)
    if ngl is not None:
        args += ["-ngl", str(ngl)]
    if "override_tensor" in setting:
        args += ["-ot", str(setting["override_tensor"])]
    if "n_cpu_moe" in setting:
        args += ["-ncmoe", str(setting["n_cpu_moe"])]
    if "fit_target" in setting:
        args += ["-fitt", str(setting["fit_target"])]
    return args


def depths(bench: dict, context: int | None) -> list[int]:
    """-d of a call: at a served context C, the KV cache filled to C − the largest prompt, so that the prompt
    test's context is exactly C (llama-bench sizes it n_prompt + n_gen + n_depth) and generation runs near the
    end of a full context; without one, the bench's own depths."""
    if context is None:
        return list(bench.get("depth") or [0])
    top = max(max(bench.get("prompt") or [0]), max(bench.get("gen") or [0]))
    return [context - top]


def bench_cmd(tool, model, *, bench: dict, inv: dict, threads: list[int], build: dict, run: dict) -> list:
    """The llama-bench call for one invocation (bench jobs) or one probe (the tuner): bench is the bench section
    (prompt, gen, repetitions, depth, extra_args), inv the call's setting; a strategy's own thread counts (inv
    threads) replace the bench's."""
    if "fit_target" in inv:
        require_fit(build, f"bench strategy {inv.get('strategy', '--fit')!r}")
    if "n_cpu_moe" in inv:
        require_bench_n_cpu_moe(build, f"bench strategy {inv.get('strategy', '--n-cpu-moe')!r}")
    require_cache_types(build, [inv.get("kv", "f16")], "bench.kv")
    k, v = kv_pair(inv.get("kv", "f16"))
    cmd = [tool, "-m", model, "-o", "jsonl",
           "-p", ",".join(str(p) for p in bench["prompt"]),
           "-n", ",".join(str(n) for n in bench["gen"]),
           "-d", ",".join(str(d) for d in depths(bench, inv.get("context"))),
           "-r", bench["repetitions"], "-t", ",".join(str(t) for t in inv.get("threads") or threads),
           *flash_attn_args(build, run["flash_attn"], "llama-bench"), "-ctk", k, "-ctv", v]
    if inv.get("batch") is not None:
        cmd += ["-b", inv["batch"]]
    if inv.get("ubatch") is not None:
        cmd += ["-ub", inv["ubatch"]]
    if inv.get("no_mmap"):
        cmd += no_mmap_args(build, f"bench strategy {inv.get('strategy', 'no_mmap')!r}", "llama-bench")
    cmd += setting_args(inv, build.get("backend") == "CUDA", run["n_gpu_layers"])
    cmd += [str(a) for a in bench["extra_args"]]
    return cmd


def server_args(model: str | Path, context: int, setting: dict, *, kv: tuple[str, str], threads: int | None,
                run: dict, build: dict) -> list[str]:
    """llama-server's flags for a measured setting: the same offload (-ngl N of a layer split too), KV types,
    threads, -b/-ub and no-mmap as measured, spelled as this build's llama-server takes them. --fit is on by default
    in llama-server and would move what the setting places, so it is off unless the setting is a fit (then --fit on
    with its margin); a llama.cpp from before --fit gets neither."""
    args = ["-m", str(model), "-c", str(context)]
    fit_off = ["--fit", "off"] if features(build)["fit"] else []
    if build.get("backend") == "CUDA":
        if setting.get("fit_target"):
            require_fit(build, "the server check's --fit setting")
            args += ["--fit", "on", "--fit-target", str(setting["fit_target"])]
        else:
            args += ["-ngl", str(setting.get("n_gpu_layers", run["n_gpu_layers"])), *fit_off]
        if setting.get("n_cpu_moe"):
            args += ["-ncmoe", str(setting["n_cpu_moe"])]
        if setting.get("override_tensor"):
            args += ["-ot", str(setting["override_tensor"])]
    else:
        args += fit_off
    args += [*flash_attn_args(build, run["flash_attn"]), "-ctk", kv[0], "-ctv", kv[1]]
    if threads:  # a whole number: a candidates table with a setting of no threads holds them as floats
        args += ["-t", str(int(threads))]
    if setting.get("batch"):
        args += ["-b", str(setting["batch"])]
    if setting.get("ubatch"):
        args += ["-ub", str(setting["ubatch"])]
    if setting.get("no_mmap"):
        args += no_mmap_args(build, "the server check's no_mmap setting")
    return args


def paste_ready(server_bin: str | Path, args: list[str]) -> str:
    """The command as a user pastes it (llama-server listens on 127.0.0.1:8080 by default)."""
    return shlex.join([str(server_bin), *args])
