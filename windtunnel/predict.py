"""Predictions beyond the ladder (MiniCPM §5): intervals calibrated for extrapolation, the form and N convention
averaged in, and guardrails in N, D and compute.

    ladder = fit_ladder(N, D, loss, groups=groups)          # N: an array, or {"total": ..., "non_embedding": ...}
    ladder.predict(1.4e6, 9.2e6)   # [{"n", "d", "loss", "low", "high", "extrapolation": {"n", "d", "c"}, ...}]

A law fitted on a ladder is wrong in ways its own residuals cannot show: the further a run lies beyond the ladder,
the more the form's curvature matters. The 95% prediction interval of a run at (N, D) therefore pools, over every
candidate law (form × N convention) that its backtests do not clearly reject:
1) the law's bootstrap over whole stable runs (`fit.ScalingLawFit.predict_interval`),
2) a new run's own seed offset (and drift, measured only over the ladder's D),
3) a misspecification term: log-normal with sd = s·ρ, ρ = max(0, log n, log d, log c) the run's distance beyond
   the ladder in e-folds of N, D and C = 6·N·D, and s per e-fold measured by the candidate's own directional
   backtests (hold out the largest N, the largest D and the largest C, from several origins), bounded below by
   MISSPEC_FLOOR, learned from public ladders (bench/public_ladders.py). A ladder's short backtests see little of
   how its law bends far beyond it, so the floor carries most of the term (tests/test_predict.py). Linear in ρ,
   as the public ladders' errors grow: Porian et al.'s tuned law errs 4.5, 3.9, 3.4, 3.3% per e-fold at 0.7, 1.4,
   2.1, 2.8 e-folds of compute, OLMo's 0.6–1% at 0.9 and 0.6% at 5.3 (the 13B); a term growing as ρ·(ρ + W), the
   error of a power law fitted to a bending truth, shrank per unit of growth 2–3× over the same distances.
Beyond LIMITS in any direction — how far the calibration was checked — a prediction is refused with the reason,
and so is a run with fewer tokens than parameters (D < N), where no power law holds (the fit leaves such rows out).
Only numpy, scipy and pandas are imported.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from windtunnel.fit import FORMS, FitError, ScalingLawFit, fit_scaling_law

__all__ = ["LadderFit", "fit_ladder", "fit_and_backtest", "extrapolation", "directional_backtests", "MISSPEC_FLOOR", "LIMITS",
           "MIN_TOKENS_PER_PARAM", "DIRECTIONS"]

DIRECTIONS = ("n", "d", "c")
HELD_OUT = (0.5, 0.35, 0.2)      # origins: the share of a direction's log-range held out beyond each cut
MIN_TOKENS_PER_PARAM = 1.0       # D < N: the early transient, where no ladder of the literature fits a power law
# Calibrated on the public ladders of bench/data/public_ladders (OLMo's and Porian et al.'s four settings) by
# `python bench/public_ladders.py --calibrate`: each ladder is fitted on all its runs, and
# - MISSPEC_FLOOR is the median over the ladders of the largest s its kept candidates' directional backtests measured
#   (OLMo 0.0066, Porian base/long-cosine 0.0556, tuned/const RefinedWeb 0.0113, with attention FLOPs 0.0096,
#   OpenWebText2 0.0101): a typical ladder's law drifts ~1% per e-fold of extrapolation;
# - LIMITS are, per direction, the median over the ladders of the furthest held-out point of those backtests: how
#   far beyond a ladder the calibration was checked (ratios over the ladder's largest N, D and C = 6·N·D).
MISSPEC_FLOOR = 0.0101
LIMITS = {"n": 15.71, "d": 23.29, "c": 64.0}
DRAWS = 4000                     # predictive draws per candidate


def extrapolation(N, D, extent: dict) -> dict:
    """Ratios of (N, D, C = 6·N·D) over the largest fitted N, D and C (arrays broadcast)."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    return {"n": N / extent["n_max"], "d": D / extent["d_max"], "c": N * D / extent["nd_max"]}


def distance(ratios: dict) -> np.ndarray:
    """ρ: e-folds beyond the ladder in its furthest direction (0 inside it)."""
    return np.maximum.reduce([np.maximum(np.log(ratios[k]), 0.0) for k in DIRECTIONS])


def _extent(N, D) -> dict:
    return {"n_max": float(N.max()), "d_max": float(D.max()), "nd_max": float((N * D).max())}


def directional_backtests(N, D, loss, *, groups=None, form: str = "chinchilla", axis_n=None) -> list[dict]:
    """Hold out the largest N, the largest D and the largest C from each origin in HELD_OUT; fit the rest (no
    bootstrap) and predict the held-out points. `axis_n`: the N the cuts are made in (default N), so that candidates
    in other conventions of N share their origins. One dict per distinct split: direction, held-out share,
    n_train, noise (the train fit's new-run sd), log errors log(pred/actual) and each point's ρ."""
    axis_n = N if axis_n is None else axis_n
    groups = np.arange(N.size) if groups is None else np.asarray(groups)
    axes = {"n": np.log(axis_n), "d": np.log(D), "c": np.log(axis_n * D)}
    out, seen = [], set()
    for direction in DIRECTIONS:
        x = axes[direction]
        for share in HELD_OUT:
            train = x <= x.max() - share * (x.max() - x.min()) + 1e-12
            key = train.tobytes()
            if key in seen or train.all() or not _fittable(N[train], D[train]):
                continue
            seen.add(key)
            law = fit_scaling_law(N[train], D[train], loss[train], form=form, groups=groups[train])
            test = ~train
            ratios = extrapolation(axis_n[test], D[test], _extent(axis_n[train], D[train]))
            out.append({"direction": direction, "held_out": share, "n_train": int(train.sum()),
                        "noise": _noise(law), "errors": np.log(law.predict(N[test], D[test]) / loss[test]),
                        "rho": distance(ratios), "ratios": ratios})
    return out


def _fittable(N, D) -> bool:
    """A power law with a floor needs three distinct values along each axis to be pinned down (two leave its
    exponent, coefficient and floor free): a backtest trained on fewer measures only that freedom."""
    return N.size >= 6 and np.unique(N).size >= 3 and np.unique(D).size >= 3


def _noise(law: ScalingLawFit) -> float:
    """sd of a new run's log offset at the ladder's centre (0 when the groups leave no degrees of freedom)."""
    return float(law.group_sd) if law.group_dof > 0 and math.isfinite(law.group_sd) else 0.0


def misspecification_sd(backtests: list[dict]) -> float:
    """s per e-fold: Σ over origins of (mean squared log error − the noise²) over Σ of mean ρ², ≥ 0. The law's own
    parameter uncertainty is not subtracted (no bootstrap per origin), so s errs wide."""
    excess = sum(np.mean(np.square(b["errors"])) - b["noise"] ** 2 for b in backtests)
    spread = sum(np.mean(np.square(b["rho"])) for b in backtests)
    return float(math.sqrt(max(excess, 0.0) / spread)) if spread > 0 else math.nan


def _rejected(scores: dict) -> dict:
    """Candidates clearly worse than the best: their per-origin mean squared log error exceeds the best's by more
    than 2 standard errors of the paired differences (needs ≥ 3 shared origins; else nothing is rejected)."""
    best = min(scores, key=lambda k: np.mean(scores[k]))
    out = {}
    for name, s in scores.items():
        diff = np.asarray(s) - np.asarray(scores[best])
        if name != best and diff.size >= 3 and diff.mean() > 2 * diff.std(ddof=1) / math.sqrt(diff.size):
            out[name] = (f"backtest mean squared log error {np.mean(s):.2e} against {np.mean(scores[best]):.2e} "
                         f"of {best} over {diff.size} origins")
    return out


@dataclass(frozen=True)
class Candidate:
    """One law that may predict: a form in one convention of N, with its own misspecification sd."""

    form: str
    n_kind: str
    law: ScalingLawFit = field(repr=False)
    own_sd: float                    # s measured by its directional backtests (NaN: none possible)
    backtests: list = field(default_factory=list, repr=False)   # directional backtest summaries
    rejected: str = ""               # why the backtests reject it ("" when kept)

    @property
    def name(self) -> str:
        return f"{self.form}/{self.n_kind}"

    def to_dict(self) -> dict:
        return {"form": self.form, "n_kind": self.n_kind, "law": self.law.to_dict(samples=True),
                "own_sd": None if math.isnan(self.own_sd) else self.own_sd, "rejected": self.rejected,
                "backtests": self.backtests}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(data["form"], data["n_kind"], ScalingLawFit.from_dict(data["law"]),
                   math.nan if data["own_sd"] is None else float(data["own_sd"]), data["backtests"], data["rejected"])


@dataclass(frozen=True)
class LadderFit:
    """The candidate laws of one ladder, the extent they were fitted over, and the calibration of their intervals."""

    candidates: tuple
    extent: dict                     # n_kind -> {"n_max", "d_max", "nd_max"}
    primary: str                     # the convention of N the extrapolation ratios are stated in
    floor: float = MISSPEC_FLOOR
    limits: dict = field(default_factory=lambda: dict(LIMITS))
    n_dropped: int = 0               # rows left out of the fit: fewer tokens than parameters

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.rejected]

    @property
    def best(self) -> Candidate:
        """The kept candidate whose directional backtests erred least."""
        return min(self.kept, key=lambda c: np.mean([np.mean(np.square(b["errors"])) for b in c.backtests])
                   if c.backtests else math.inf)

    @property
    def own_sd(self) -> float:
        """The largest s the kept candidates' backtests measured."""
        sds = [c.own_sd for c in self.kept if not math.isnan(c.own_sd)]
        return max(sds) if sds else math.nan

    def misspec_sd(self, candidate: Candidate) -> float:
        return max(self.floor, 0.0 if math.isnan(candidate.own_sd) else candidate.own_sd)

    def predict(self, N, D, *, level: float = 0.95) -> list[dict]:
        """One dict per point: the model-averaged loss and its `level` prediction interval, the extrapolation ratios
        over the ladder, and `loss: None` with a `reason` where a guardrail refuses. N: an array in the `primary`
        convention, or a mapping convention → array."""
        Ns = N if isinstance(N, dict) else {self.primary: N}
        if self.primary not in Ns:
            raise FitError(f"predict: give N in the '{self.primary}' convention (conventions: {', '.join(self.extent)})")
        Ns = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in Ns.items()}
        D = np.broadcast_to(np.asarray(D, dtype=float), Ns[self.primary].shape)
        ratios = extrapolation(Ns[self.primary], D, self.extent[self.primary])
        rho = distance(ratios)
        usable = [c for c in self.kept if c.n_kind in Ns]
        out = []
        for i in range(D.size):
            point = {"n": float(Ns[self.primary][i]), "d": float(D[i]),
                     "extrapolation": {k: float(ratios[k][i]) for k in DIRECTIONS}}
            reason = self._refusal(point, usable)
            if reason:
                out.append({**point, "loss": None, "low": None, "high": None, "reason": reason})
                continue
            draws, centres = [], []
            for c in usable:
                n = Ns[c.n_kind][i]
                law_draws = _law_draws(c.law, n, D[i])
                z = np.random.default_rng(i + 1).standard_normal(law_draws.size)
                draws.append(law_draws * np.exp(self.misspec_sd(c) * rho[i] * z))
                centres.append(math.log(c.law.predict(n, D[i])))
            tail = 100 * (1 - level) / 2
            low, high = np.nanpercentile(np.concatenate(draws), [tail, 100 - tail])
            out.append({**point, "loss": float(np.exp(np.mean(centres))), "low": float(low), "high": float(high),
                        "candidates": [c.name for c in usable], "distance": float(rho[i])})
        return out

    def _refusal(self, point: dict, usable: list) -> str:
        if not usable:
            return "no candidate law in the given convention of N"
        law = usable[0].law
        if law.samples is None or law.group_dof <= 0:
            return (f"no prediction interval: the fit has {'no bootstrap' if law.samples is None else ''}"
                    f"{' and ' if law.samples is None and law.group_dof <= 0 else ''}"
                    f"{f'{law.n_groups} stable runs, too few for the spread between them' if law.group_dof <= 0 else ''}")
        if point["d"] < MIN_TOKENS_PER_PARAM * point["n"]:
            return (f"D = {point['d']:.3g} tokens is fewer than N = {point['n']:.3g} parameters: the early transient, "
                    "where no power law holds")
        over = [f"{k.upper()} {point['extrapolation'][k]:.3g}× the ladder's largest (limit {self.limits[k]:.3g}×)"
                for k in DIRECTIONS if point["extrapolation"][k] > self.limits[k]]
        if over:
            return "beyond the calibrated extrapolation: " + "; ".join(over)
        return ""

    def to_dict(self) -> dict:
        return {"primary": self.primary, "extent": self.extent, "floor": self.floor, "limits": self.limits,
                "n_dropped": self.n_dropped, "own_sd": None if math.isnan(self.own_sd) else self.own_sd,
                "best": self.best.name, "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, data: dict) -> LadderFit:
        return cls(tuple(Candidate.from_dict(c) for c in data["candidates"]), data["extent"], data["primary"],
                   float(data["floor"]), {k: float(v) for k, v in data["limits"].items()}, int(data["n_dropped"]))


def _law_draws(law: ScalingLawFit, n: float, d: float) -> np.ndarray:
    """Draws of a new run's loss under one law: its bootstrap refits with a new run's offset (see predict_interval)."""
    return law.predictive_draws(n, d, DRAWS)


def fit_ladder(N, D, loss, *, groups=None, forms=tuple(FORMS), bootstrap: int = 1000, seed: int = 0,
               floor: float | None = None, limits: dict | None = None) -> LadderFit:
    """Every candidate law (form × convention of N) with its directional backtests and bootstrap; see the module.
    N: an array (convention "given") or a mapping convention → array, the first being the primary one."""
    Ns = dict(N) if isinstance(N, dict) else {"given": N}
    Ns = {k: np.asarray(v, dtype=float).ravel() for k, v in Ns.items()}
    D, loss = np.asarray(D, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
    primary = next(iter(Ns))
    if D.size < 6:
        raise FitError(f"scaling-law fit needs at least 6 points (got {D.size})")
    keep = D >= MIN_TOKENS_PER_PARAM * Ns[primary]
    if keep.sum() < 6:
        raise FitError(f"scaling-law fit: {keep.sum()} of {keep.size} runs have at least as many tokens as "
                       "parameters; a law needs 6 or more")
    Ns, D, loss = {k: v[keep] for k, v in Ns.items()}, D[keep], loss[keep]
    groups = None if groups is None else np.asarray(groups, dtype=object).ravel()[keep]
    candidates, scores = [], {}
    for kind, n in Ns.items():
        for form in forms:
            tests = directional_backtests(n, D, loss, groups=groups, form=form, axis_n=Ns[primary])
            law = fit_scaling_law(n, D, loss, form=form, bootstrap=bootstrap, seed=seed, groups=groups)
            candidates.append(Candidate(form, kind, law, misspecification_sd(tests) if tests else math.nan,
                                        [_summary(t) for t in tests]))
            scores[candidates[-1].name] = [np.mean(t["errors"] ** 2) for t in tests]
    rejected = _rejected(scores) if all(len(s) == len(next(iter(scores.values()))) > 0 for s in scores.values()) else {}
    candidates = tuple(Candidate(c.form, c.n_kind, c.law, c.own_sd, c.backtests, rejected.get(c.name, ""))
                       for c in candidates)
    return LadderFit(candidates, {k: _extent(v, D) for k, v in Ns.items()}, primary,
                     MISSPEC_FLOOR if floor is None else float(floor), dict(LIMITS if limits is None else limits),
                     int((~keep).sum()))


def _summary(test: dict) -> dict:
    """A directional backtest as JSON: its origin, noise, and each held-out point's log error and distance."""
    return {"direction": test["direction"], "held_out": test["held_out"], "n_train": test["n_train"],
            "noise": test["noise"], "errors": test["errors"].tolist(), "rho": test["rho"].tolist(),
            "reach": {k: float(v.max()) for k, v in test["ratios"].items()}}


MAX_ORIGINS = 4   # rolling backtests: at most this many origins, the largest sizes (a table of 142 sizes gets 4 fits)
BACKTEST_BOOTSTRAP = 300   # resamples behind a backtest's intervals: a check of coverage, not a number a plan uses


def fit_and_backtest(N, D, loss, *, groups=None, bootstrap: int = 1000, seed: int = 0,
                     min_sizes: int = 3) -> tuple[LadderFit, list]:
    """`fit_ladder`, and the ladder's rolling backtests with the intervals it would have given: for the last
    MAX_ORIGINS k ≥ min_sizes, fit the k smallest sizes (every candidate, calibrated as `fit_ladder`) and predict
    every point of size k+1 with its 95% prediction interval (guardrails off: this tests the interval; runs with
    D < N are out of the law's domain, in the fit and among the held-out points). One fit.Backtest per k, none with
    ≤ min_sizes sizes; its `fit` is the best candidate's law, `by_candidate` each candidate's mean |error| there.
    The origins run in worker processes, one core each, while this one fits the whole ladder. Every process keeps
    BLAS to one thread: the fits' arrays are small, and several processes each spinning a core-wide BLAS pool made
    a 49-point, 9-size fit 5–8× slower on 2 cores (LOG.md, 2026-12-06 night)."""
    from threadpoolctl import threadpool_limits

    origins = _origins(N, D, loss, groups=groups, bootstrap=bootstrap, seed=seed, min_sizes=min_sizes,
                       max_origins=MAX_ORIGINS)
    with threadpool_limits(1):
        if not origins or (os.cpu_count() or 1) < 2:
            return (fit_ladder(N, D, loss, groups=groups, bootstrap=bootstrap, seed=seed),
                    [_backtest(o) for o in origins])
        with ProcessPoolExecutor(min(len(origins), os.cpu_count() or 1), initializer=_one_blas_thread) as pool:
            pending = [pool.submit(_backtest, o) for o in origins]
            ladder = fit_ladder(N, D, loss, groups=groups, bootstrap=bootstrap, seed=seed)
            return ladder, [p.result() for p in pending]


def _one_blas_thread() -> None:
    """A backtest worker's BLAS on one thread, for the life of the worker (see fit_and_backtest)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _origins(N, D, loss, *, groups, bootstrap: int, seed: int, min_sizes: int, max_origins: int) -> list[tuple]:
    """The rolling backtests' origins, each the arguments of `_backtest` (none when there are ≤ min_sizes sizes)."""
    Ns = dict(N) if isinstance(N, dict) else {"given": N}
    Ns = {k: np.asarray(v, dtype=float).ravel() for k, v in Ns.items()}
    D, loss = np.asarray(D, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
    primary = next(iter(Ns))
    groups = np.arange(D.size) if groups is None else np.asarray(groups, dtype=object).ravel()
    keep = D >= MIN_TOKENS_PER_PARAM * Ns[primary]   # the law's domain: neither fitted nor predicted below it
    Ns, D, loss, groups = {k: v[keep] for k, v in Ns.items()}, D[keep], loss[keep], groups[keep]
    sizes = np.unique(Ns[primary])
    return [(k, Ns, D, loss, groups, sizes, primary, bootstrap, seed)
            for k in range(max(min_sizes, sizes.size - max_origins), sizes.size)]


def _backtest(origin: tuple):
    """One origin of the rolling backtests: fit the k smallest sizes, predict size k+1."""
    from windtunnel.fit import Backtest

    k, Ns, D, loss, groups, sizes, primary, bootstrap, seed = origin
    train, test = Ns[primary] <= sizes[k - 1], Ns[primary] == sizes[k]
    ladder = fit_ladder({c: v[train] for c, v in Ns.items()}, D[train], loss[train], groups=groups[train],
                        bootstrap=min(bootstrap, BACKTEST_BOOTSTRAP), seed=seed,
                        limits={d: math.inf for d in DIRECTIONS})
    held = {c: v[test] for c, v in Ns.items()}
    preds = ladder.predict(held, D[test])
    if any(p["loss"] is None for p in preds):   # no bootstrap, or too few stable runs: errors only
        preds = []
    point = np.array([p["loss"] for p in preds], dtype=float) if preds else \
        np.exp(np.mean([np.log(c.law.predict(held[c.n_kind], D[test])) for c in ladder.kept], axis=0))
    rel = point / loss[test] - 1
    low, high = (tuple(float(p[b]) for p in preds) for b in ("low", "high"))
    covered = tuple(bool(lo <= y <= hi) for lo, hi, y in zip(low, high, loss[test]))
    by_candidate = {c.name: float(np.mean(np.abs(c.law.predict(held[c.n_kind], D[test]) / loss[test] - 1)))
                    for c in ladder.candidates}
    return Backtest(float(sizes[k]), k, int(train.sum()), int(test.sum()), tuple(map(float, rel)),
                    float(np.abs(rel).mean()), float(np.abs(rel).max()), float(rel.mean()), low, high, covered,
                    ladder.best.law, by_candidate)
