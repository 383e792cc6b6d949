"""The workflow's own light outputs, checked when the DAG is built (rules/common.smk): the tables under
results/tables, the figures and reports/summary.html.

Snakemake reruns a job whose output is missing only when something downstream needs it to run: a table deleted
or cut short under a report that is up to date, a report cut short, or a result record deleted (or removed as
untrustworthy by the job that read it) under tables that are up to date, gave "Nothing to be done". So before the
DAG is built, each of these files is checked (a table: readable Parquet of its own kind, report/tables.table_problem;
a figure: a whole PNG; the page: ends with </html>; a table's records: all there); a bad one is removed, and so is
what was made from a missing or removed one, so that this very run makes them again (and measures a missing record
again). These files are cheap to make again and are never inputs of a measurement; records, manifests and logits
are checked where they are read instead.
"""

from __future__ import annotations

from pathlib import Path

from ..core import paths
from ..report.tables import table_problem, table_sources

REPORT = Path("reports/summary.html")
FIGURES = Path("reports/figures")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


def _png_problem(path: Path) -> str | None:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or not data.endswith(PNG_END):
        return f"is not a whole PNG ({len(data):,} bytes, cut short or not a PNG)"
    return None


def _page_problem(path: Path) -> str | None:
    tail = path.read_bytes()[-64:].rstrip()
    return None if tail.endswith(b"</html>") else "does not end with </html> (cut short)"


def repair(root: Path | str = ".", tables: tuple[str, ...] = (*paths.TABLES, "server")) -> list[str]:
    """Remove bad or orphaned light outputs under root (the working directory); returns a line per file removed.
    A table whose records (as its metadata names them) are not all there any more is removed too; a record the
    config asks for that was never made is no reason (its job runs, and the tables after it)."""
    root = Path(root)
    notes: list[str] = []

    def remove(path: Path, why: str) -> None:
        path.unlink()
        notes.append(f"{path.relative_to(root)} {why}: removed it; this run makes it again")

    broken = _check_tables(root, tables, remove)
    # what the figures are made from
    quality = set(broken) & {"perplexity", "kld", "bench", "tasks", "kv_cost_positions"}
    for fig in sorted((root / FIGURES).glob("*.png")):
        why = _png_problem(fig) or (f"was made from tables missing now ({', '.join(sorted(quality))})"
                                    if quality else None)
        if why:
            remove(fig, why)
    page = root / REPORT
    if page.is_file():
        why = _page_problem(page) or (f"was made from tables missing now ({', '.join(broken)})" if broken else None)
        if why:
            remove(page, why)
    return notes


def _check_tables(root: Path, tables: tuple[str, ...], remove) -> list[str]:
    """The tables that are missing or were removed (cut short, of another kind, made from records now gone)."""
    broken = []
    for name in tables:
        path = root / paths.table(name)
        why = table_problem(path)
        gone = [r for r in table_sources(path) if not (root / r).exists()] if why is None else []
        if why is None and gone:
            why = f"was made from records missing now ({gone[0]}{f' and {len(gone) - 1} more' if gone[1:] else ''})"
        if why is not None:
            if why != "is missing":
                remove(path, why)
            broken.append(name)
    return broken
