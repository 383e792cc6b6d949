"""Fixtures of the report tests: pages built from the stored tables of tests/data/report/, and the small and
degenerate studies derived from them (issue 25): what a study the schema accepts leaves in the tables."""

from __future__ import annotations

import pandas as pd
import pytest

from ggufbench.llamacpp.task_output import parse_multiple_choice
from ggufbench.report.tables import add_kv_deltas
from tests.support import DATA
from tests.support.report_pages import build_report, config_for, stored_tables

# Every table the page reads (write_report adds the ones a run did not make as empty frames, without columns).
TABLES = ("perplexity", "kld", "bench", "builds", "tune", "server", "chunks", "tasks", "kv_cost",
          "kv_cost_positions")
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def cpu_page(tmp_path_factory):
    """The CPU demo's page as if no VRAM budget were configured (the tables were made before the demo had any)."""
    out = tmp_path_factory.mktemp("cpu")
    return build_report("cpu-demo", out, config_for("cpu-demo", vram_budgets_gib=[])).read_text(encoding="utf-8"), out


def full_tables(run: str) -> dict[str, pd.DataFrame]:
    """A stored run's tables as write_report hands them to the page: every table present, empty if not made."""
    t = stored_tables(run)
    return {name: t.get(name, pd.DataFrame()) for name in TABLES}


def keep(tables: dict[str, pd.DataFrame], **where) -> dict[str, pd.DataFrame]:
    """The rows of every table whose column (a key of where) passes where[column](values); tables without that
    column are kept whole. keep(t, quant=lambda q: q == "F16"): a study of the baseline quant alone. The PPL table's
    KV deltas are made again from the rows kept, as aggregate would make them."""
    out = {}
    for name, df in tables.items():
        for col, test in where.items():
            if col in df.columns and not df.empty:
                df = df[test(df[col])]
        out[name] = add_kv_deltas(df) if name == "perplexity" else df
    return out


def no_table(tables: dict[str, pd.DataFrame], *names: str, columns: bool = False) -> dict[str, pd.DataFrame]:
    """tables with names measuring nothing: empty frames without columns (what aggregate writes for a stage that
    never ran), or with their columns (columns=True: a stage whose rows were all filtered away)."""
    return {n: ((df.iloc[0:0] if columns else pd.DataFrame()) if n in names else df) for n, df in tables.items()}


def without(config: dict, *sections: str, quants: list[str] | None = None) -> dict:
    """The config with sections (perplexity, kld) left out and the model's quants cut to `quants`."""
    config = {k: v for k, v in config.items() if k not in sections}
    if quants is not None:
        model = dict(config["models"][MODEL])
        model["quants"] = {q: v for q, v in model["quants"].items() if q in quants}
        config["models"] = {**config["models"], MODEL: model}
    return config


def two_models(tables: dict[str, pd.DataFrame], config: dict) -> tuple[dict, dict]:
    """A second model ("other": the same quants' PPL and speed rows) that has no KLD rows."""
    out = dict(tables)
    for name in ("perplexity", "bench"):
        df = tables[name]
        out[name] = pd.concat([df, df.assign(model="other")], ignore_index=True)
    config = {**config, "models": {**config["models"], "other": {**config["models"][MODEL], "title": "Other"}}}
    return out, config


def _nothing_fits(bench: pd.DataFrame) -> pd.DataFrame:
    nan = float("nan")
    return bench.assign(status="does not fit", reason="cudaMalloc failed: out of memory", median_ts=nan, min_ts=nan,
                        max_ts=nan, vram_free_before_mib=16384.0)


def _no_vram(bench: pd.DataFrame) -> pd.DataFrame:
    return bench.assign(vram_available=False, vram_reason=None, vram_peak_delta_mib=float("nan"))


def study(case: str, run: str = "cpu-demo") -> tuple[dict[str, pd.DataFrame], dict]:
    """(tables, config) of a small or degenerate study the schema accepts, made from a stored run."""
    t, cfg = full_tables(run), config_for(run)
    base, f16 = (lambda q: q == "F16"), (lambda kv: kv == "f16")
    cases = {
        # "how good is my one GGUF?": one quant, PPL only (no kld:)
        "one quant, PPL only": lambda: (no_table(keep(t, quant=base), "kld", "chunks"),
                                        without(cfg, "kld", quants=["F16"])),
        # one quant with kld: its KLD rows are its own other KV types only
        "one quant, KLD of its KV types": lambda: (keep(t, quant=base), without(cfg, quants=["F16"])),
        # one quant, one KV type, kld: the baseline pass and nothing to measure against it
        "one quant, one KV type": lambda: (no_table(keep(t, quant=base, kv=f16), "kld"),
                                           without(cfg, quants=["F16"])),
        "PPL only": lambda: (no_table(t, "kld", "chunks"), without(cfg, "kld")),
        "speed only": lambda: (no_table(t, "perplexity", "kld", "chunks"), without(cfg, "perplexity", "kld")),
        "no bench results": lambda: (no_table(t, "bench", "server", "tune"), cfg),
        "KLD only of the baseline's KV types": lambda: ({**t, "kld": t["kld"][t["kld"]["quant"] == "F16"]}, cfg),
        "two models, one without KLD": lambda: two_models(t, cfg),
        "one ctx": lambda: (keep(t, ctx=lambda c: c == 512), cfg),
        "one KV type": lambda: (keep(t, kv=f16), cfg),
        "no f16 KV": lambda: (no_table(keep(t, kv=lambda kv: kv != "f16"), "kld", "server"), without(cfg, "kld")),
        "nothing fits": lambda: ({**no_table(t, "server"), "bench": _nothing_fits(t["bench"])}, cfg),
        "no VRAM": lambda: ({**t, "bench": _no_vram(t["bench"])}, cfg),
        "KLD without PPL": lambda: (no_table(t, "perplexity"), cfg),
        "nothing at all": lambda: (no_table(t, *TABLES), without(cfg, "perplexity", "kld")),
        "tables with columns, no rows": lambda: (no_table(t, *TABLES, columns=True), cfg),
    }
    return cases[case]()


# The demo's cloze set answered by every quant (tests/data/cpu-0.3.36/tasks/README.md: 926 questions) and the demo run's
# KLD rows of the same cells (ctx 512, 8 chunks): what the tasks table is made from.
DEMO_TASKS = DATA / "cpu-0.3.36" / "tasks" / "demo_cloze"
DEMO_SIZES = {"F16": 270_885_952, "Q8_0": 144_811_072, "Q4_K_M": 105_454_144, "Q2_K": 88_201_792}
DEMO_KLD = {("F16", "q8_0"): (0.000285, 0.000011), ("Q8_0", "f16"): (0.004162, 0.000088),
            ("Q4_K_M", "f16"): (0.061093, 0.001473), ("Q2_K", "f16"): (0.428934, 0.0083)}


def demo_task_records() -> list[dict]:
    """The records task_job writes, one per capture (the noise floor: the F16 rerun with -b 512 -ub 64)."""
    records = []
    for f in sorted(DEMO_TASKS.glob("mc_*.txt")):
        quant, rest = f.stem.removeprefix("mc_").rsplit("_kv-", 1)
        kv, noise = rest.split("_b512")[0], "_b512" in rest
        scores = parse_multiple_choice(f.read_text(encoding="utf-8"), 926)
        records.append({
            "stage": "tasks",
            "provenance": {"model": MODEL, "quant": quant, "file": f"{MODEL}-{quant}.gguf", "file_sha256": quant,
                           "file_size_bytes": DEMO_SIZES[quant], "build": "cpu", "build_key": "k",
                           "backend": "CPU", "task_set": "cloze", "task_set_kind": "cloze",
                           "task_set_source": "cloze of corpus pydocs (sha256 2e3f74c9...)",
                           "task_set_sha256": "e6502d36"},
            "params": {"task_set": "cloze", "kv": kv, "ctx": 512, "batch": 512 if noise else None,
                       "ubatch": 64 if noise else None, "variant": "noise_floor" if noise else "main",
                       "parallel": 4, "kv_unified": "auto", "threads": 16},
            "result": {**scores.to_dict(), "accuracy": scores.n_correct / 926, "random_chance": 1 / 3},
            "tool": {"cmd": ["llama-perplexity"], "wall_seconds": 90.0}})
    return records


def demo_kld_table() -> pd.DataFrame:
    return pd.DataFrame([{"build": "cpu", "model": MODEL, "quant": q, "kv": kv, "kld_mean": m,
                          "kld_mean_uncertainty": u} for (q, kv), (m, u) in DEMO_KLD.items()])


@pytest.fixture(scope="module")
def demo_tasks() -> pd.DataFrame:
    from ggufbench.report.tables import task_rows

    return task_rows(demo_task_records(), {MODEL: ["F16", "f16"]}, demo_kld_table())
