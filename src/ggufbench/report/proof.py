"""What a server check proves (rule server_check): the candidates that fit a VRAM budget at a served context, in
the order the recommendation picks them (recommend.ranked), from this build's and model's own records; the job
that starts them is measure/server_check.py."""

from __future__ import annotations

from ..core.records import Now
from . import recommend
from .tables import record_tables


def plain(v):
    """A table value as JSON writes it: numpy scalars as Python numbers, NaN as None."""
    if isinstance(v, dict | list | str) or v is None:
        return v
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def candidates(records: dict[str, list], config: dict, *, model: str, build: str, context: int,
               budget_gib: float, now: Now | None = None) -> dict:
    """{ranked: the candidates that fit, in pick order, as plain dicts; n_candidates: how many there were;
    baseline: the model's baseline quant}. now: what each record must have measured (core.records)."""
    c = recommend.candidates(record_tables(records, now), config, model, build, context)
    ranked = recommend.ranked(c, budget_gib) if not c.empty else []
    return {"ranked": [{k: plain(v) for k, v in r.items()} for r in ranked], "n_candidates": len(c),
            "baseline": recommend.baseline(config, model)}
