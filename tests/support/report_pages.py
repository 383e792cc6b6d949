"""Build reports/summary.html (and its figures) from the Parquet tables stored in tests/data/report/, exactly as
rules figures and summary_report do, into a directory of the test's choosing."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ggufbench.core.config import validated
from ggufbench.report.figures import FIGURES, make_figures
from ggufbench.report.page import write_report

from . import REPO

DATA = REPO / "tests" / "data" / "report"
TABLES = ("perplexity", "kld", "bench", "builds")

# name -> (tables folder, the config the run was made with)
RUNS = {
    "cpu-demo": (DATA / "cpu-demo", DATA / "cpu-demo" / "config.yaml"),
    "h200-demo": (DATA / "h200-demo", REPO / "tools" / "device" / "demo-cuda.yaml"),
}


def config_for(name: str, **report) -> dict:
    cfg = copy.deepcopy(yaml.safe_load(RUNS[name][1].read_text()))
    cfg.setdefault("report", {}).update(report)
    return validated(cfg)


def table_paths(name: str) -> list[Path]:
    """The run's tables; tune and server where the run made them."""
    extra = [RUNS[name][0] / f"{t}.parquet" for t in ("tune", "server")]
    return [RUNS[name][0] / f"{t}.parquet" for t in TABLES] + [p for p in extra if p.is_file()]


def stored_tables(name: str) -> dict:
    """The run's stored tables, by name, as pandas reads them."""
    import pandas as pd

    return {p.stem: pd.read_parquet(p) for p in table_paths(name)}


def build_report(name: str, out_dir: Path, config: dict | None = None) -> Path:
    """Figures under out_dir/figures/, the page at out_dir/summary.html; returns the page's path."""
    config = config if config is not None else config_for(name)
    folder = RUNS[name][0]
    figures = {key: out_dir / "figures" / f"{key}.png" for key in FIGURES}
    make_figures({t: folder / f"{t}.parquet" for t in TABLES[:3]}, figures)
    html = out_dir / "summary.html"
    write_report(table_paths(name), list(figures.values()), html, config["report"].get("title", name), config)
    return html
