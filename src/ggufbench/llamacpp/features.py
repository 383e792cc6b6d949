"""What one llama.cpp build can do, and the oldest llama.cpp the workflow runs on.

Two checks, at two times:
- before compiling, `check_source` reads the source tree for what the workflow cannot run without (the floor);
  a tree below it is refused by name, with the first thing it lacks, before minutes of compiling;
- after compiling, `probe` reads the tools' own --help (the build record keeps it as `features`): the form of
  -fa, whether --fit exists, how "load the model without mmap" is spelled, the KV cache and quantize types. Jobs
  check what their config asks for against it (`require_*`) before running, so a build that lacks something says so
  by name instead of failing in a parser.

A record without `features` (made before this existed) means the newest behaviour.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..core.config import kv_pair
from ..core.errors import ConfigError
from .task_output import kv_unified_form

# The floor, read from the source: (files, text that one of them must hold, what the workflow needs it for). All of it
# is in llama.cpp from b6089 (2025-08-04: --n-cpu-moe came last); the oldest release tested is 4227c9b (2025-08-14, the
# llama.cpp of llama-cpp-python 0.3.16).
FLOOR = (
    ("tools/perplexity/perplexity.cpp", "kl_divergence", "llama-perplexity's KL divergence (kld:)"),
    ("tools/llama-bench/llama-bench.cpp", '"--n-depth"', "llama-bench -d (bench.contexts, a filled KV cache)"),
    ("tools/llama-bench/llama-bench.cpp", '"jsonl"', "llama-bench -o jsonl (the speed records)"),
    ("common/arg.cpp", '"--override-tensor"', "-ot (the exps=CPU offload)"),
    ("common/arg.cpp", '"--n-cpu-moe"', "--n-cpu-moe (the MoE offload)"),
    ("tools/server/*.cpp", '"/health"', "llama-server's /health (the server check)"),
)
MINIMUM = "llama.cpp b6089 (2025-08-04, where --n-cpu-moe arrived) or newer"
OPTIONAL_TOOLS = {"llama-fit-params": "tools/fit-params"}  # built when the source has them

NEWEST = {"flash_attn": "on|off|auto", "bench_flash_attn": "on|off|auto", "fit": True, "bench_n_cpu_moe": True,
          "no_mmap": "load_mode", "bench_no_mmap": "load_mode"}

# "Load the model without mmap" as each llama.cpp spells it (the form a build has is read from its --help): the common
# tools' flag (llama-server, llama-perplexity), llama-bench's, and the llama-bench -o jsonl field that reports it.
# 4227c9b (0.3.16): --no-mmap, llama-bench -mmp 0, "use_mmap": false; 0c1e570 (0.3.36): load modes replaced the
# mmap switch, -lm none in every tool (llama-model-loader: mmap only for auto, mmap, mmap+mlock), "load_mode": "none".
NO_MMAP_ARGS = {"no-mmap": ["--no-mmap"], "load_mode": ["-lm", "none"]}
BENCH_NO_MMAP_ARGS = {"mmp": ["-mmp", "0"], "load_mode": ["-lm", "none"]}


def check_source(src: Path, what: str) -> None:
    """Refuse a llama.cpp tree older than the floor, naming what it lacks (before any compiling)."""
    for rel, marker, need in FLOOR:
        if not any(marker in f.read_text(errors="replace") for f in sorted(src.glob(rel)) if f.is_file()):
            raise ConfigError(f"{what}: this llama.cpp is too old for ggufbench: it lacks {need} ({rel} has no "
                              f"{marker}). ggufbench needs {MINIMUM}: point the build at a newer source "
                              "(for a pypi_sdist, a newer llama-cpp-python version)")


def optional_tools(src: Path) -> list[str]:
    return [t for t, rel in OPTIONAL_TOOLS.items() if (src / rel).is_dir()]


def _help(tool: Path) -> str:
    try:
        p = subprocess.run([str(tool), "--help"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout + p.stderr


def parse_features(perplexity_help: str, bench_help: str, quantize_help: str) -> dict:
    """The build's features from its tools' --help (kept in tests/data as captured from each version)."""
    ppl_fa = re.search(r"-fa,\s*--flash-attn\s+\[?([a-z|]+)", perplexity_help)
    bench_fa = re.search(r"-fa,\s*--flash-attn\s+<([a-z0-9|]+)>", bench_help)
    kv = re.search(r"--cache-type-k TYPE.*?allowed values:\s*([a-z0-9_, ]+)", perplexity_help, re.S)
    quants = re.findall(r"^\s+\d+\s+or\s+(\S+)\s+:", quantize_help, re.M)
    return {**_no_mmap_forms(perplexity_help, bench_help),
        # "on|off|auto": -fa takes a value; "flag": a bare -fa turns it on (llama.cpp before about b6300)
        "flash_attn": ppl_fa.group(1) if ppl_fa and "|" in ppl_fa.group(1) else "flag",
        "bench_flash_attn": bench_fa.group(1) if bench_fa else "0|1",
        "fit": bool(re.search(r"-fit,\s*--fit\b", perplexity_help)),
        "bench_n_cpu_moe": "--n-cpu-moe" in bench_help,  # llama-bench got -ncmoe after the other tools
        # the task modes' unified KV cache: "flag" (4227c9b: pass -kvu; -c is the whole cache) or "auto" (0c1e570:
        # the tool sets it; -c per sequence); a record without it has the tool's --help read by the task job
        "kv_unified": kv_unified_form(perplexity_help),
        "cache_types": [t.strip() for t in kv.group(1).split(",") if t.strip()] if kv else None,
        "quantize_types": quants or None,
    }


def _no_mmap_forms(common_help: str, bench_help: str) -> dict:
    """How the common tools and llama-bench spell "no mmap" (NO_MMAP_ARGS, BENCH_NO_MMAP_ARGS); None: not at all."""
    common = ("no-mmap" if re.search(r"--no-mmap\b", common_help)
              else "load_mode" if re.search(r"-lm,\s*--load-mode\b", common_help) else None)
    bench = ("mmp" if re.search(r"-mmp,\s*--mmap\b", bench_help)
             else "load_mode" if re.search(r"-lm,\s*--load-mode\b", bench_help) else None)
    return {"no_mmap": common, "bench_no_mmap": bench}


def probe(bin_dir: Path) -> dict:
    return parse_features(_help(bin_dir / "llama-perplexity"), _help(bin_dir / "llama-bench"),
                          _help(bin_dir / "llama-quantize"))


def features(build: dict) -> dict:
    """What the build's record says it can do; what it does not say, the newest behaviour. A record probed before
    ggufbench read the no-mmap forms: a llama.cpp without --fit predates llama.cpp's load modes (-lm), so it has
    --no-mmap and llama-bench's -mmp (4227c9b); one with --fit is taken to have the load modes (0c1e570)."""
    found = build.get("features") or {}
    if found and "no_mmap" not in found and found.get("fit") is False:
        found = {"no_mmap": "no-mmap", "bench_no_mmap": "mmp", **found}
    return {**NEWEST, **found}


def _who(build: dict) -> str:
    commit = (build.get("commit") or "unknown")[:12]
    return f"build {build.get('build', '?')} (llama.cpp {commit})"


def flash_attn_args(build: dict, value: str, tool: str = "common") -> list[str]:
    """-fa as this build's tool takes it: `-fa on` on current llama.cpp, a bare `-fa` (or nothing for off) on
    builds before -fa took a value, `-fa 1`/`-fa 0` in such a build's llama-bench."""
    f = features(build)
    form = f["bench_flash_attn"] if tool == "llama-bench" else f["flash_attn"]
    value = str(value)
    if "|" in form and value in form.split("|"):
        return ["-fa", value]
    if value == "auto" or value not in ("on", "off"):
        allowed = "on or off" if form in ("flag", "0|1") else form.replace("|", ", ")
        raise ConfigError(f"run.flash_attn: {value!r}, but {_who(build)} has no -fa {value} (its -fa takes "
                          f"{allowed}): set run.flash_attn to one of those, or use a newer llama.cpp")
    if form == "0|1":
        return ["-fa", "1" if value == "on" else "0"]
    return ["-fa"] if value == "on" else []


def require_cache_types(build: dict, kvs: list[str], key: str) -> None:
    """Every KV cache type asked for (K and V) is one the build's llama.cpp accepts."""
    allowed = features(build).get("cache_types")
    if not allowed:
        return
    for kv in kvs:
        for t in kv_pair(kv):
            if t not in allowed:
                raise ConfigError(f"{key}: KV cache type {t!r} is not one {_who(build)} accepts "
                                  f"({', '.join(allowed)}): drop it, or use a newer llama.cpp")


def require_quantize_type(build: dict, qtype: str, key: str) -> None:
    allowed = features(build).get("quantize_types")
    if allowed and qtype not in allowed and qtype.upper() not in allowed:
        raise ConfigError(f"{key}: {qtype!r} is not a type {_who(build)}'s llama-quantize makes "
                          f"({', '.join(allowed)}): pick one of those, or use a newer llama.cpp")


def require_fit(build: dict, key: str) -> None:
    if not features(build)["fit"]:
        raise ConfigError(f"{key}: a --fit setting, but {_who(build)} has no --fit (llama.cpp added it in "
                          "December 2025): drop the fit strategies for this build, or use a newer llama.cpp")


def require_bench_n_cpu_moe(build: dict, key: str) -> None:
    if not features(build)["bench_n_cpu_moe"]:
        raise ConfigError(f"{key}: an --n-cpu-moe setting, but {_who(build)}'s llama-bench has no -ncmoe (the "
                          "other tools have it): write it as an -ot override_tensor, or use a newer llama.cpp")


def no_mmap_args(build: dict, key: str, tool: str = "common") -> list[str]:
    """The flags that load the model without mmap in this build's tool (llama-bench, or the common tools such as
    llama-server): --no-mmap / -mmp 0 before llama.cpp's load modes, -lm none since. key: the config key asking."""
    form = features(build)["bench_no_mmap" if tool == "llama-bench" else "no_mmap"]
    args = (BENCH_NO_MMAP_ARGS if tool == "llama-bench" else NO_MMAP_ARGS).get(form)
    if args is None:
        name = "llama-bench" if tool == "llama-bench" else "llama-server"
        raise ConfigError(f"{key}: no_mmap, but {_who(build)}'s {name} has no way to load a model without mmap that "
                          "ggufbench knows (its --help has neither --no-mmap, -mmp nor --load-mode): drop no_mmap for "
                          "this build, or use a newer llama.cpp")
    return list(args)


def ran_without_mmap(fields) -> bool:
    """Whether a llama-bench row (its -o jsonl fields, or a table row of them) loaded the model without mmap:
    use_mmap false (4227c9b) or load_mode "none" (0c1e570). A row with neither field (or NaN: a table that mixes
    versions) did not say so."""
    use_mmap = fields.get("use_mmap")
    said = use_mmap is not None and not isinstance(use_mmap, str) and use_mmap == use_mmap  # NaN != NaN
    return bool(said and not use_mmap) or fields.get("load_mode") == "none"
