"""Does the quant change the answers? Statistics over per-question correctness (results/tables/task_questions
.parquet: one row per cell and question), pure functions without scipy.

- accuracy: k of n right, with a Wilson score interval (95%).
- flips against the baseline cell (the baseline quant with the baseline KV type) over the same questions:
  right -> wrong and wrong -> right counts, the flip rate (either way) with its Wilson interval, and the net
  accuracy change with an exact McNemar test: under "no net change" each discordant question is equally likely
  to go either way, so the smaller count is a binomial(b + c, 1/2) tail, doubled.
- the noise floor: the baseline scored again with another batch size; a cell's flips are beyond the noise when
  its flip rate's Wilson lower bound is above the noise floor's upper bound (a plain, conservative reading).
- flip rate against mean KLD over cells: Spearman's rank correlation with average ranks for ties, and its n.

llama-perplexity prints only right or wrong per question, not the answer picked: a question wrong in both cells
with different wrong answers is no flip here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    rate: float       # k / n (nan when n == 0)
    low: float        # Wilson score interval, 95%
    high: float

    def to_dict(self, prefix: str) -> dict:
        return {f"{prefix}{name}": value for name, value in asdict(self).items()}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n (Wilson 1927); (nan, nan) for n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> Rate:
    low, high = wilson(k, n)
    return Rate(k, n, k / n if n else math.nan, low, high)


def accuracy(correct: list[int]) -> Rate:
    return rate(sum(correct), len(correct))


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ binomial(n, 1/2), exactly (integer sums), as a float."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs: min(1, 2·P(X <= min(b, c))), X ~ Bin(b+c, ½);
    1.0 without discordant pairs."""
    if b + c == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf_half(min(b, c), b + c))


@dataclass(frozen=True)
class Flips:
    n: int                 # questions both cells scored
    right_to_wrong: int    # right in the baseline, wrong in the cell
    wrong_to_right: int
    flip: Rate             # (right_to_wrong + wrong_to_right) / n, Wilson interval
    net_change: float      # accuracy(cell) - accuracy(baseline) = (wrong_to_right - right_to_wrong) / n
    mcnemar_p: float

    def to_dict(self) -> dict:
        return {"n_questions": self.n, "right_to_wrong": self.right_to_wrong, "wrong_to_right": self.wrong_to_right,
                **self.flip.to_dict("flip_"), "net_change": self.net_change, "mcnemar_p": self.mcnemar_p}


def flips(baseline: list[int], cell: list[int]) -> Flips:
    """The cell's answers against the baseline's, question by question (same file, same order)."""
    if len(baseline) != len(cell):
        raise ValueError(f"the baseline scored {len(baseline)} questions and the cell {len(cell)}: not the same task "
                         "file; flips compare the same questions")
    b = sum(1 for x, y in zip(baseline, cell, strict=True) if x and not y)
    c = sum(1 for x, y in zip(baseline, cell, strict=True) if y and not x)
    n = len(cell)
    return Flips(n, b, c, rate(b + c, n), (c - b) / n if n else math.nan, mcnemar_exact(b, c))


def noise_comparison(cell: Flips, noise: Flips) -> dict:
    """A cell's flips against the noise floor's: the excess flip rate, and whether the cell's Wilson interval lies
    wholly above the floor's."""
    return {"noise_flip_rate": noise.flip.rate, "noise_flip_high": noise.flip.high,
            "flip_rate_above_noise": cell.flip.rate - noise.flip.rate,
            "beyond_noise": bool(cell.flip.low > noise.flip.high)}


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            out[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> tuple[float, int]:
    """Spearman's rank correlation (Pearson's on average ranks) over the pairs where both are finite, and its n;
    nan below 3 pairs or when one side is constant."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 3:
        return math.nan, n
    rx, ry = ranks([a for a, _ in pairs]), ranks([b for _, b in pairs])
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan, n
    return sxy / math.sqrt(sxx * syy), n


def questions_for_flip_rate(rate_a: float, rate_b: float, z: float = Z95) -> int | None:
    """Questions needed so that two flip rates' Wilson-like normal intervals just separate: the flip budget note
    (e.g. 2% against 4% needs about 1,000). n with z·(√(a(1−a)/n) + √(b(1−b)/n)) = |a − b|."""
    if rate_a == rate_b:
        return None  # no number of questions tells equal rates apart
    s = math.sqrt(rate_a * (1 - rate_a)) + math.sqrt(rate_b * (1 - rate_b))
    return math.ceil((z * s / abs(rate_a - rate_b)) ** 2)


def cell_flips(cells: dict[tuple, list[int]], baseline: tuple, noise: tuple | None = None) -> list[dict]:
    """Every cell (a key such as (quant, kv)) against the baseline cell: accuracy, flips, McNemar, and against the
    noise floor's flips when `noise` names the noise-floor cell. The baseline's own row has zero flips."""
    if baseline not in cells:
        raise KeyError(f"no baseline cell {baseline} among the scored cells {sorted(cells)}")
    base = cells[baseline]
    floor = flips(base, cells[noise]) if noise is not None and noise in cells else None
    rows = []
    for key, correct in cells.items():
        f = flips(base, correct)
        row = {"cell": key, **accuracy(correct).to_dict("accuracy_"), **f.to_dict()}
        if floor is not None:
            row.update(noise_comparison(f, floor))
        rows.append(row)
    return rows
