"""Every fit of the wind tunnel: pure functions from arrays/DataFrames to small frozen results.

MiniCPM (arXiv 2404.06395) sections implemented here:
- §5   scaling law L(N, D) = C_N·N^-α + C_D·D^-β + L0, compute-optimal N and D, back-test;
- §3.2 batch-size law bs_opt = k / L^γ from tokens-to-reach-a-loss curves;
- §3.3 learning-rate transfer across widths (µP against SP);
- §4.3 the WSD loss envelope: power law against exponential;
- §4.4 decay dynamics: D1, D2 and curvature of a loss curve.

Only numpy, scipy, pandas and the stdlib are imported (never torch, ray, mlflow or matplotlib).
Bad input raises `FitError` with a one-line message that names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from windtunnel.errors import WindtunnelError

__all__ = [
    "FitError", "validate",
    "ScalingLawFit", "fit_scaling_law", "compute_optimal", "d_over_n", "Backtest",
    "BatchSizeFit", "tokens_to_reach", "fit_batch_size_law", "batch_loss_cost",
    "LRTransferFit", "fit_lr_transfer", "lr_for_target",
    "EnvelopeFit", "fit_envelope",
]



class FitError(WindtunnelError):
    """Input a fit cannot use (too few points, NaN, non-positive sizes, missing columns)."""


# ---------------------------------------------------------------- validation

def validate(frame: pd.DataFrame, columns: Sequence[str], *, what: str, min_rows: int = 1,
             positive: Sequence[str] = (), finite: Sequence[str] | None = None) -> pd.DataFrame:
    """Check `frame` for a fit and return its `columns`, numeric ones as float, index reset.

    `what` names the fit in messages ("scaling-law fit"). `finite` lists the columns that must
    have no NaN/inf (default: every numeric column); `positive` those that must be > 0.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FitError(f"{what}: missing column '{missing[0]}'; columns are: {', '.join(map(str, frame.columns))}")
    out = frame[list(columns)].reset_index(drop=True).copy()
    if len(out) < min_rows:
        raise FitError(f"{what} needs at least {min_rows} points (got {len(out)})")
    numeric = [c for c in columns if c not in ("model", "parametrization")]
    for c in numeric:
        values = pd.to_numeric(out[c], errors="coerce")
        bad = np.flatnonzero(values.isna() & out[c].notna())
        if bad.size:
            raise FitError(f"column '{c}' is not numeric (row {bad[0]}: {out[c].iloc[bad[0]]!r}); give numbers")
        out[c] = values.astype(float)
    for c in numeric if finite is None else finite:
        _check_finite(out[c].to_numpy(), c)
    for c in positive:
        _check_positive(out[c].to_numpy(), c)
    return out


def _check_finite(values: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        kind = "NaN" if np.isnan(values[bad]).all() else "NaN/inf"
        rows = ", ".join(map(str, bad[:10])) + (", ..." if bad.size > 10 else "")
        raise FitError(f"column '{name}' has {bad.size} {kind} values (rows {rows}); drop or fill those rows")


def _check_positive(values: np.ndarray, name: str) -> None:
    bad = np.flatnonzero(~(values > 0))
    if bad.size:
        raise FitError(f"{name} must be > 0 (row {bad[0]}: {name}={values[bad[0]]:g}); drop that row or fix its units")


def _arrays(what: str, min_rows: int, **columns) -> list[np.ndarray]:
    """Validate equal-length positive arrays given by name; return them as float arrays."""
    lengths = {k: np.size(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise FitError(f"{what}: arrays differ in length ({', '.join(f'{k}={n}' for k, n in lengths.items())}); pass one value per point")
    frame = pd.DataFrame({k: np.ravel(np.asarray(v, dtype=float)) for k, v in columns.items()})
    checked = validate(frame, list(columns), what=what, min_rows=min_rows, positive=list(columns))
    return [checked[c].to_numpy() for c in columns]


def _percentiles(samples: np.ndarray, names: Sequence[str], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile interval of each column of `samples` (rows = bootstrap draws), NaN rows ignored."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high)}


def _bootstrap_interval(samples: np.ndarray | None, preds, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis of `preds`, one value per bootstrap refit in `samples`."""
    if samples is None:
        raise FitError("predict_interval needs bootstrap samples; refit with bootstrap=1000 or more")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(preds(), [tail, 100 - tail], axis=-1)
    return low, high


def _samples_from(data: dict) -> np.ndarray | None:
    return np.asarray(data["samples"], dtype=float) if data.get("samples") else None


def _jsonable(intervals: dict) -> dict:
    return {k: [float(lo), float(hi)] for k, (lo, hi) in intervals.items()}


# ---------------------------------------------------------------- §5 scaling law

class _Form:
    """One functional form of L(N, D): its parameters and how to predict with them (natural units, any batch
    shape of parameter rows), and the pieces the Huber fit needs in centred logs x = log N − m_N, y = log D − m_D."""

    name: str
    params: tuple[str, ...]
    exponents: tuple[int, int]  # indices of the two exponents in θ (kept within EXPONENT_BOUNDS)
    exponent_names: tuple[str, str]  # their names among `params` (of N, of D)

    def predict(self, p, N, D):
        raise NotImplementedError

    def optimal_tokens(self, p, n, g=1.0):
        """The D at which N = n is compute-optimal along C = f(N)·D with f ∝ N^g (∂L/∂log N = g·∂L/∂log D)."""
        raise NotImplementedError

    def optimal_n(self, p, compute, per_token):
        """The compute-optimal N at budget C = f(N)·D, f = per_token (k·N^g, PerToken)."""
        raise NotImplementedError


class _Chinchilla(_Form):
    """L = C_N·N^-α + C_D·D^-β + L0 (Hoffmann et al. 2022; MiniCPM §5): separable, the size gap does not move with D.
    θ = (a, α, b, β, e): log pred = LSE(a − α·x, b − β·y, e); C_N = exp(a + α·m_N), C_D = exp(b + β·m_D), L0 = e^e."""

    name, params, exponents, exponent_names = "chinchilla", ("C_N", "alpha", "C_D", "beta", "L0"), (1, 3), ("alpha", "beta")

    def predict(self, p, N, D):
        c_n, a, c_d, b, l0 = p
        return c_n * N ** -a + c_d * D ** -b + l0

    def optimal_tokens(self, p, n, g=1.0):
        c_n, a, c_d, b, _ = p   # α·C_N·N^-α = g·β·C_D·D^-β
        with np.errstate(all="ignore"):
            return (g * b * c_d * n ** a / (a * c_n)) ** (1 / b)

    def optimal_n(self, p, compute, per_token):
        c_n, a, c_d, b, _ = p   # the same with D = C / (k·N^g), solved for N
        k, g = per_token.k, per_token.b
        with np.errstate(all="ignore"):
            return (a * c_n * compute ** b / (g * b * c_d * k ** b)) ** (1 / (a + g * b))

    def log_pred(self, thetas, x, y, jac: bool = True):
        """log pred (K, n) and its Jacobian in θ (K, n, 5), or None with jac=False (an objective's value only)."""
        a, alpha, b, beta, e = (thetas[:, i : i + 1] for i in range(5))
        t0, t1 = a - alpha * x, b - beta * y
        top = np.maximum(np.maximum(t0, t1), e)                          # log-sum-exp, shifted for range
        s0, s1, s2 = np.exp(t0 - top), np.exp(t1 - top), np.exp(e - top)
        total = s0 + s1 + s2
        if not jac:
            return top + np.log(total), None
        s0, s1, s2 = s0 / total, s1 / total, s2 / total                  # d log pred / d(each term)
        return top + np.log(total), np.stack([s0, -s0 * x, s1, -s1 * y, s2], axis=-1)

    def natural(self, theta, mN, mD):
        a, alpha, b, beta, e = theta
        return np.exp(a + alpha * mN), alpha, np.exp(b + beta * mD), beta, np.exp(e)

    def starts(self, loss):
        """Exponents 0.05–1.5, L0 5–97% of the lowest loss, terms 0.3–100% of the mean loss."""
        exps = [0.05, 0.2, 0.4, 0.7, 1.0, 1.5]
        e = np.log(loss.min() * np.array([0.05, 0.3, 0.6, 0.85, 0.97]))
        ab = np.log(loss.mean() * np.array([0.003, 0.03, 0.1, 0.3, 1.0]))
        return np.stack([g.ravel() for g in np.meshgrid(ab, exps, ab, exps, e, indexing="ij")], axis=1)


class _Kaplan(_Form):
    """L = ((N_c/N)^(α_N/α_D) + D_c/D)^α_D + L0 (Kaplan et al. 2020, eq. 1.5, with a floor): the size gap widens with
    D, as it does on a shared token grid where the large models' short runs are limited by their few steps.
    θ = (c, d, α_N, α_D, e) with c = log N_c − m_N, d = log D_c − m_D: log pred = LSE(α_D·LSE(u, v), e),
    u = (α_N/α_D)(c − x), v = d − y."""

    name, params, exponents, exponent_names = "kaplan", ("N_c", "alpha_N", "D_c", "alpha_D", "L0"), (2, 3), ("alpha_N", "alpha_D")

    def predict(self, p, N, D):
        n_c, a_n, d_c, a_d, l0 = p
        return ((n_c / N) ** (a_n / a_d) + d_c / D) ** a_d + l0

    def optimal_tokens(self, p, n, g=1.0):
        n_c, a_n, d_c, a_d, _ = p   # α_N·(N_c/N)^(α_N/α_D) = g·α_D·D_c/D
        with np.errstate(all="ignore"):
            return g * (a_d / a_n) * d_c * (n / n_c) ** (a_n / a_d)

    def optimal_n(self, p, compute, per_token):
        n_c, a_n, d_c, a_d, _ = p   # the same condition with D = C / (k·N^g), solved for N
        k, g, r = per_token.k, per_token.b, a_n / a_d
        with np.errstate(all="ignore"):
            return (r * n_c ** r * compute / (g * k * d_c)) ** (1 / (g + r))

    @np.errstate(over="ignore", invalid="ignore")
    def log_pred(self, thetas, x, y, jac: bool = True):
        c, d, a_n, a_d, e = (thetas[:, i : i + 1] for i in range(5))
        u, v = (a_n / a_d) * (c - x), d - y
        s = np.logaddexp(u, v)
        t = a_d * s
        lp = np.logaddexp(t, e)
        if not jac:
            return lp, None
        w_t, w_e = np.exp(t - lp), np.exp(e - lp)
        p_u, p_v = np.exp(u - s), np.exp(v - s)
        jac = np.stack([w_t * a_n * p_u, w_t * a_d * p_v, w_t * p_u * (c - x), w_t * (s - p_u * u), w_e], axis=-1)
        return lp, jac

    def natural(self, theta, mN, mD):
        c, d, a_n, a_d, e = theta
        return np.exp(c + mN), a_n, np.exp(d + mD), a_d, np.exp(e)

    def starts(self, loss):
        """N_c and D_c from e^-2 to e^8 times the geometric-mean N and D, exponents 0.05–1, L0 5–97% of the lowest loss."""
        scales, exps = [-2.0, 1.0, 4.0, 8.0], [0.05, 0.2, 0.5, 1.0]
        e = np.log(loss.min() * np.array([0.05, 0.3, 0.6, 0.85, 0.97]))
        return np.stack([g.ravel() for g in np.meshgrid(scales, scales, exps, exps, e, indexing="ij")], axis=1)


FORMS = {form.name: form for form in (_Chinchilla(), _Kaplan())}


@dataclass(frozen=True)
class ScalingLawFit:
    """A fitted L(N, D): `form` "chinchilla" (C_N, alpha, C_D, beta, L0; §5) or "kaplan" (N_c, alpha_N, D_c,
    alpha_D, L0); N = parameters (the caller's convention), D = training tokens. Parameters read as attributes."""

    method: str                      # "huber" (log-residual Huber, L-BFGS-B) or "curve_fit" (least squares on loss)
    values: dict                     # parameter name -> value, in the form's order
    n_points: int
    form: str = "chinchilla"
    n_bootstrap: int = 0             # bootstrap refits behind `intervals` and `samples`
    intervals: dict = field(default_factory=dict)   # name -> (low, high), 95% percentile; empty without bootstrap
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)  # (K, 5) rows in the form's order
    n_groups: int = 0                # independent groups the bootstrap resampled (stable runs); n_points if ungrouped
    group_sd: float = math.nan       # sd of a new group's log-loss offset at log D = drift_center (seed, trajectory)
    group_dof: int = 0               # degrees of freedom of group_sd (groups − parameters that absorb group offsets)
    drift_sd: float = 0.0            # sd of a group's offset slope in log D: seeds drift apart as they train
    drift_center: float = 0.0        # the mean log D the offsets are measured at
    log_d_range: tuple = ()          # (min, max) log D fitted: the drift is measured over it only
    not_identified: dict = field(default_factory=dict)  # parameter -> why the data cannot pin it down

    def __getattr__(self, name):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def _form(self) -> _Form:
        return FORMS[self.form]

    @property
    def _p(self) -> np.ndarray:
        return np.array([self.values[k] for k in self._form.params])

    @property
    def K(self) -> float:
        """Chinchilla: K = (α·C_N / (β·C_D))^(1/(α+β)); N_opt/D_opt = K²·(C/6)^η (§5)."""
        return _K(self.alpha, self.C_N, self.beta, self.C_D)

    @property
    def eta(self) -> float:
        """Chinchilla: η = (β − α)/(α + β) (§5)."""
        return (self.beta - self.alpha) / (self.alpha + self.beta)

    def predict(self, N, D) -> np.ndarray:
        """Predicted loss at N parameters and D tokens (broadcasting)."""
        return self._form.predict(self._p, np.asarray(N, dtype=float), np.asarray(D, dtype=float))

    def predict_interval(self, N, D, *, level: float = 0.95, new_run: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the loss at (N, D) over `predictive_draws` (new_run=True: a prediction interval)
        or over the bootstrap refits alone (new_run=False: the interval of the law itself)."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return _bootstrap_interval(self.samples, lambda: self.predictive_draws(N, D, new_run=new_run), level)

    def predictive_draws(self, N, D, n_draws: int = 4000, *, new_run: bool = True) -> np.ndarray:
        """Draws (last axis) of the loss of a run at (N, D): each bootstrap refit's prediction, its spread around the
        fit widened by sqrt(G/(G−1)) for G groups (a bootstrap of G clusters underestimates the variance by
        (G−1)/G), times a new group's offset — a new stable run has its own seed and trajectory — drawn as
        sd(D) × Student-t(group_dof), sd(D) = hypot(group_sd, drift_sd·(log D − drift_center)) since seeds drift apart
        as they train, the t because the sds are estimated from few groups. The drift is measured over the ladder's
        D only: log D is clipped to the fitted range (windtunnel.predict adds the error of going beyond it)."""
        if self.samples is None:
            raise FitError("predict_interval needs bootstrap samples; refit with bootstrap=1000 or more")
        N, D = np.asarray(N, dtype=float)[..., None], np.asarray(D, dtype=float)[..., None]
        pred = _inflate(self._form.predict(self.samples.T, N, D), self.predict(N, D), self.n_groups)
        if not new_run:
            return pred
        if not (self.group_dof > 0 and math.isfinite(self.group_sd)):
            raise FitError(f"a prediction interval needs the spread between groups; {self.n_groups} groups leave "
                           f"{self.group_dof} degrees of freedom — add sizes or seeds")
        repeats = max(1, n_draws // len(self.samples))   # several offsets per refit: smooth percentiles
        log_d = np.clip(np.log(D), *self.log_d_range) if self.log_d_range else np.log(D)
        sd = np.hypot(self.group_sd, self.drift_sd * (log_d - self.drift_center))  # a new run's, at its D
        offsets = sd * np.random.default_rng(0).standard_t(self.group_dof, repeats * len(self.samples))
        return np.repeat(pred, repeats, axis=-1) * np.exp(offsets)

    def optimal_n(self, compute: float, per_token: PerToken | None = None) -> float:
        """Compute-optimal N at budget C = f(N)·D (closed form of `compute_optimal`; f = 6N by default)."""
        return float(self._form.optimal_n(self._p, compute, per_token or SIX_ND))

    def optimal_tokens(self, n: float, per_token: PerToken | None = None) -> float:
        """The D for which N = n is compute-optimal at C = f(N)·D."""
        return float(self._form.optimal_tokens(self._p, n, (per_token or SIX_ND).b))

    def optimal_tokens_interval(self, n: float, per_token: PerToken | None = None, *,
                                level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of `optimal_tokens(n)` over the bootstrap refits."""
        g = (per_token or SIX_ND).b
        low, high = _bootstrap_interval(self.samples, lambda: self._form.optimal_tokens(self.samples.T, n, g), level)
        return float(low), float(high)

    def to_dict(self, *, samples: bool = False) -> dict:
        """JSON-ready summary (the `fit scaling-law --json` payload, docs/method.md §6): the parameters at the top
        level; samples=True adds the bootstrap refits so `from_dict` can give prediction intervals (fit.json keeps
        them)."""
        out = {"form": self.form, **{k: float(v) for k, v in self.values.items()}}
        if self.form == "chinchilla":
            out.update(K=float(self.K), eta=float(self.eta))
        out.update(n_points=self.n_points, method=self.method, n_bootstrap=self.n_bootstrap,
                   intervals=_jsonable(self.intervals), n_groups=self.n_groups,
                   group_sd=None if math.isnan(self.group_sd) else float(self.group_sd), group_dof=self.group_dof,
                   drift_sd=float(self.drift_sd), drift_center=float(self.drift_center),
                   log_d_range=list(self.log_d_range), not_identified=dict(self.not_identified))
        if samples and self.samples is not None:
            out["samples"] = self.samples.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ScalingLawFit:
        """The inverse of to_dict (e.g. results/scaling_law/fit.json)."""
        form, sd = data.get("form", "chinchilla"), data.get("group_sd")
        return cls(data["method"], {k: float(data[k]) for k in FORMS[form].params}, int(data["n_points"]), form,
                   n_bootstrap=int(data.get("n_bootstrap", 0)), samples=_samples_from(data),
                   intervals={k: tuple(v) for k, v in data.get("intervals", {}).items()},
                   n_groups=int(data.get("n_groups", 0)), group_sd=math.nan if sd is None else float(sd),
                   group_dof=int(data.get("group_dof", 0)), drift_sd=float(data.get("drift_sd", 0.0)),
                   drift_center=float(data.get("drift_center", 0.0)),
                   log_d_range=tuple(data.get("log_d_range", ())), not_identified=dict(data.get("not_identified", {})))


@dataclass(frozen=True)
class PerToken:
    """Training FLOPs per token as a power of the law's N, f(N) = k·N^b, so a budget C buys D = C / f(N) tokens.

    "6nd" is exactly 6·N (k = 6, b = 1), the paper's count. "full" adds attention, 12·L·d·T a token, whose share of the
    total falls with width at a fixed context, so b < 1: k and b are fitted across the ladder's models (`of_ladder`),
    and the compute-optimal allocation minimises L(N, C / f(N)) with them."""

    count: str
    k: float = 6.0
    b: float = 1.0

    def __call__(self, n):
        return self.k * np.asarray(n, dtype=float) ** self.b

    @classmethod
    def of_ladder(cls, count: str, n, per_token) -> PerToken:
        """The least-squares power law of the models' FLOPs per token (`per_token`) against their N (`n`)."""
        if count == "6nd":
            return cls("6nd")
        x, y = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(per_token, dtype=float))
        if np.unique(x).size < 2:
            return cls(count, k=float(np.exp(y[0] - x[0])), b=1.0)
        b, log_k = np.polyfit(x, y, 1)
        return cls(count, k=float(np.exp(log_k)), b=float(b))

    def to_dict(self) -> dict:
        return {"count": self.count, "k": self.k, "b": self.b, "rule": FLOP_COUNTS[self.count]}

    def describe(self) -> str:
        fitted = "" if self.count == "6nd" else f"; across the ladder f(N) = {self.k:.3g}·N^{self.b:.3f} FLOPs a token"
        return f"{self.count}: {FLOP_COUNTS[self.count]}{fitted}"

    @classmethod
    def from_dict(cls, data: dict | None) -> PerToken:
        """fit.json's `flops`; a fit without one counted 6·N·D."""
        return cls(data["count"], k=data["k"], b=data["b"]) if isinstance(data, dict) else SIX_ND


FLOP_COUNTS = {"6nd": "C = 6·N·D, N as the law counts it (attention scores left out, as the paper)",
               "full": "C = D·(6·N_total + 12·L·d·T): every matmul the trainer runs, attention scores included"}
SIX_ND = PerToken("6nd")


def _K(alpha, C_N, beta, C_D):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (alpha * C_N / (beta * C_D)) ** (1 / (alpha + beta))


EXPONENT_BOUNDS = (1e-3, 5.0)  # every exponent: positive (each term falls with N or D), and not absurdly steep
GROUP_PARAMS = 3  # parameters that can absorb a whole group's offset: the two of the N term (across sizes) and L0


def fit_scaling_law(N, D, loss, *, method: str = "huber", form: str = "chinchilla", delta: float = 1e-3,
                    bootstrap: int = 0, seed: int = 0, groups=None) -> ScalingLawFit:
    """Fit L(N, D) to final losses of (N, D) runs: form "chinchilla", C_N·N^-α + C_D·D^-β + L0 (§5), or "kaplan",
    ((N_c/N)^(α_N/α_D) + D_c/D)^α_D + L0.

    method="huber": Huber loss (`delta`) on log(pred) − log(loss), pred written as a log-sum-exp of its terms
    (Hoffmann et al. 2022, Epoch's replication); every point of a grid of starts is scored and the best few are
    refined with L-BFGS-B. method="curve_fit" (chinchilla only): least squares on the loss itself, as the paper
    did, started from the Huber fit.
    groups: one label per point; points with one label share their noise (the decay branches of one stable
    run share its seed and trajectory) and are resampled together. None: every point is its own group.
    bootstrap=K resamples the groups K times, refits from the full-data optimum and stores 95%
    percentile intervals of every parameter (and of K and η for chinchilla).
    """
    if method not in ("huber", "curve_fit"):
        raise FitError(f"method={method!r} is not allowed; use 'huber' or 'curve_fit'")
    if form not in FORMS or (method == "curve_fit" and form != "chinchilla"):
        raise FitError(f"form={form!r} is not allowed with method {method!r}; use one of: "
                       + ", ".join(FORMS if method == "huber" else ["chinchilla"]))
    N, D, loss = _arrays("scaling-law fit", 6, N=N, D=D, loss=loss)
    for name, values in (("N", N), ("D", D)):
        if np.unique(values).size < 2:
            raise FitError(f"scaling-law fit needs at least 2 distinct {name} values (got 1); add runs of other sizes")
    group_ids = _group_ids(groups, len(loss))
    problem = _Problem(N, D, loss, delta, FORMS[form])
    theta = problem.fit_huber(problem.form.starts(loss))
    if method == "curve_fit":
        theta = problem.fit_curve(theta)
    samples = problem.bootstrap(theta, method, bootstrap, seed, group_ids) if bootstrap else None
    names = FORMS[form].params
    values = dict(zip(names, map(float, problem.form.natural(theta, problem.mN, problem.mD))))
    n_groups = int(group_ids.max()) + 1
    intervals = {}
    if samples is not None:
        derived, center, extra = samples, np.array(list(values.values())), ()
        if form == "chinchilla":
            k_eta = lambda p: (_K(p[..., 1], p[..., 0], p[..., 3], p[..., 2]), (p[..., 3] - p[..., 1]) / (p[..., 1] + p[..., 3]))  # noqa: E731
            derived, center = np.column_stack([samples, *k_eta(samples)]), np.concatenate([center, k_eta(center)])
            extra = ("K", "eta")
        positive = np.array([name != "eta" for name in names + extra])   # η = (β − α)/(α + β) may be negative
        intervals = _percentiles(_inflate(derived, center, n_groups, positive=positive), names + extra)
    spread = _group_spread(problem.residuals(theta[None])[0][0], group_ids, np.log(D),
                           5 if n_groups == len(loss) else GROUP_PARAMS)
    return ScalingLawFit(method, values, len(loss), form, n_bootstrap=int(bootstrap), intervals=intervals,
                         samples=samples, n_groups=n_groups, **spread,
                         log_d_range=(float(np.log(D).min()), float(np.log(D).max())),
                         not_identified=_not_identified(values, FORMS[form], loss))


def _group_ids(groups, n: int) -> np.ndarray:
    """Integer ids 0..G-1 of the group labels (any hashable values), or one group per point."""
    if groups is None:
        return np.arange(n)
    labels = pd.Series(np.asarray(groups, dtype=object).ravel())
    if len(labels) != n:
        raise FitError(f"groups has {len(labels)} labels for {n} points; pass one label per point")
    if labels.isna().any():
        raise FitError(f"groups: row {int(np.flatnonzero(labels.isna())[0])} has no group label; label every point")
    return pd.factorize(labels)[0]


def _group_spread(residuals: np.ndarray, group_ids: np.ndarray, log_d: np.ndarray, n_params: int) -> dict:
    """How far a new group (stable run) lands from the law: each group's residuals r = a + b·(log D − mean) give its
    offset a and its drift b; sd(a) over groups, corrected for the `n_params` parameters that absorbed part of it, and
    sd(b), corrected for the one (the D exponent) that absorbed their mean. Each b² is weighted by the spread of its
    group's log D (Σ(log D − its mean)²): a slope read over a short stretch of D — the largest sizes of a compute
    grid, one or two branches apart — says little about drift over e-folds and would otherwise count as much as a
    slope read over the whole ladder (on Porian et al.'s grids the unweighted sd was 1.5–2× the weighted one, driven
    by 2- and 3-point sizes). Ungrouped points have no drift."""
    n_groups = int(group_ids.max()) + 1
    dof = n_groups - n_params
    if dof <= 0:
        return {"group_sd": math.nan, "group_dof": 0, "drift_sd": 0.0, "drift_center": float(log_d.mean())}
    x = log_d - log_d.mean()
    count = np.bincount(group_ids)
    x_mean, r_mean = np.bincount(group_ids, x) / count, np.bincount(group_ids, residuals) / count
    dx = x - x_mean[group_ids]
    sxx = np.bincount(group_ids, dx * dx)
    slope = np.where(sxx > 1e-12, np.bincount(group_ids, dx * (residuals - r_mean[group_ids])) / np.maximum(sxx, 1e-12), 0.0)
    offset = r_mean - slope * x_mean   # each group's residual at log D = its mean over all points
    drifting = sxx > 1e-12
    m = int(drifting.sum())
    drift = float(np.sqrt((sxx * slope ** 2).sum() / sxx.sum() * m / (m - 1))) if m > 1 else 0.0
    return {"group_sd": float(np.sqrt((offset ** 2).sum() / dof)), "group_dof": int(dof), "drift_sd": drift,
            "drift_center": float(log_d.mean())}


def _inflate(values: np.ndarray, center, n_groups: int, *, positive=True) -> np.ndarray:
    """Bootstrap refits pushed away from the fit by sqrt(G/(G−1)): resampling G groups underestimates the variance
    of anything estimated from them by the factor (G−1)/G (CR1's small-sample correction). Positive quantities
    (`positive`: all, or a mask over the last axis) are pushed in log space, so they stay positive."""
    c = math.sqrt(n_groups / (n_groups - 1)) if n_groups > 1 else 1.0
    values, center = np.asarray(values, dtype=float), np.asarray(center, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        logged = center * np.exp(c * np.log(values / center))
    return np.where(positive, logged, center + c * (values - center))


def _not_identified(values: dict, form: _Form, loss: np.ndarray) -> dict:
    """The parameters the fit left at a bound, with the reason (a bound is where the data stopped informing it)."""
    out = {}
    if values["L0"] < 0.01 * loss.min():
        out["L0"] = (f"fitted at its lower bound (≈0 against losses ≥ {loss.min():.3g}): the losses still fall at the "
                     "largest N and D, so the floor is not measured; the exponents are effective ones of this range")
    for name, axis in zip(form.exponent_names, "ND"):
        if not EXPONENT_BOUNDS[0] * 1.01 < values[name] < EXPONENT_BOUNDS[1] * 0.998:
            out[name] = f"at its bound ({values[name]:.3g}; allowed 0..5): the loss does not follow a power law in " \
                        f"{axis} over this range"
    return out


class _Problem:
    """One scaling-law data set and form in centred logs x = log N − mean, y = log D − mean: centring (dividing N
    and D by their geometric means) makes the start grid independent of units; `form.natural` maps θ back."""

    def __init__(self, N, D, loss, delta, form: _Form):
        self.mN, self.mD = np.log(N).mean(), np.log(D).mean()
        self.x, self.y = np.log(N) - self.mN, np.log(D) - self.mD
        self.loss, self.log_loss, self.delta, self.form = loss, np.log(loss), delta, form

    def objective(self, theta, w):
        """Weighted Huber loss of the log residuals (w sums to 1) and its gradient in θ, for L-BFGS-B."""
        r, jac = self.residuals(np.asarray(theta)[None])
        h, dh = _huber(r[0], self.delta)
        return float(w @ h), (w * dh) @ jac[0]

    def lbfgs(self, theta0, w):
        # exponents in [0, 5] keep both terms decreasing; the log-scale constants are free
        bounds = [EXPONENT_BOUNDS if i in self.form.exponents else (None, None) for i in range(5)]
        res = optimize.minimize(self.objective, theta0, args=(w,), jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-12, "gtol": 1e-9, "maxiter": 500})
        return res.x, res.fun

    def fit_huber(self, starts, n_refine: int = 8):
        """Score every start, refine the `n_refine` best together (`refit_batch`), polish the lowest with L-BFGS-B."""
        w = np.full(self.x.size, 1 / self.x.size)
        best = starts[np.argsort(self.batch_objective(starts, w[None]))[:n_refine]]
        refined = self.refit_batch(best, np.tile(w, (len(best), 1)), max_iter=200, polish=False)
        return self.lbfgs(refined[np.argmin(self.batch_objective(refined, w[None]))], w)[0]

    def fit_curve(self, theta0, idx=None):
        """Least squares on the loss (§5, as the paper did) from θ0; parameters kept ≥ 0."""
        idx = slice(None) if idx is None else idx
        x, y, loss = self.x[idx], self.y[idx], self.loss[idx]

        def model(_, c_n, alpha, c_d, beta, l0):
            return c_n * np.exp(-alpha * x) + c_d * np.exp(-beta * y) + l0

        a, alpha, b, beta, e = theta0
        p0 = [np.exp(a), alpha, np.exp(b), beta, np.exp(e)]
        p, _ = optimize.curve_fit(model, None, loss, p0=p0, bounds=(0, [np.inf, 5, np.inf, 5, np.inf]), maxfev=5000)
        c_n, alpha, c_d, beta, l0 = np.maximum(p, 1e-300)   # log of a bound-hugging 0 stays finite
        return np.array([np.log(c_n), alpha, np.log(c_d), beta, np.log(l0)])

    def bootstrap(self, theta, method, n_samples, seed, group_ids):
        """Refit on `n_samples` resamples of whole groups (with replacement) from the full-data θ; rows in
        PARAMS order. A resample left with one distinct N or D cannot identify the law: its row is NaN."""
        rng = np.random.default_rng(seed)
        n_groups = int(group_ids.max()) + 1
        counts = np.stack([np.bincount(row, minlength=n_groups)
                           for row in rng.integers(0, n_groups, (n_samples, n_groups))])
        weights = counts[:, group_ids].astype(float)               # a point counts as often as its group was drawn
        used = weights > 0
        ok = np.array([np.unique(self.x[u]).size > 1 and np.unique(self.y[u]).size > 1 for u in used])
        thetas = np.full((n_samples, 5), np.nan)
        if method == "huber":
            w = weights[ok] / weights[ok].sum(axis=1, keepdims=True)
            # blocks of 256 refits bound memory (Jacobian 256 × n × 5) and stay cache-friendly
            if ok.any():
                thetas[ok] = np.concatenate([self.refit_batch(theta, w[i : i + 256]) for i in range(0, len(w), 256)])
        else:
            for k in np.flatnonzero(ok):
                try:
                    thetas[k] = self.fit_curve(theta, np.repeat(np.arange(self.x.size), weights[k].astype(int)))
                except (RuntimeError, ValueError):   # a resample curve_fit cannot fit stays NaN
                    pass
        return np.column_stack(self.form.natural(thetas.T, self.mN, self.mD))

    def refit_batch(self, theta0, weights, *, max_iter: int = 1000, tol: float = 1e-7, polish: bool = True):
        """Minimise the Huber objective for every row of `weights` at once, started from θ0 (one row, or one per row).

        Levenberg–Marquardt on the IRLS majoriser of the Huber loss (weights ψ(r)/r), steps
        accepted per row only when the true objective falls: the same optimum as L-BFGS-B,
        but one numpy pass serves all K bootstrap refits (scipy's per-call overhead would cost
        ~50 ms per refit, minutes for K = 4000). Rows not converged after `max_iter` finish with L-BFGS-B (polish=False: left as they are).
        """
        theta = np.broadcast_to(np.asarray(theta0, float), (len(weights), 5)).copy()
        f, lam = self.batch_objective(theta, weights), np.full(len(weights), 1e-3)
        active = np.ones(len(weights), bool)
        for _ in range(max_iter):
            if not active.any():
                break
            th, w = theta[active], weights[active]
            r, jac = self.residuals(th)
            omega = w * np.where(np.abs(r) <= self.delta, 1 / self.delta, 1 / np.maximum(np.abs(r), 1e-300))
            jw = jac * omega[..., None]
            hess, grad = jw.transpose(0, 2, 1) @ jac, np.einsum("kni,kn->ki", jw, r)
            diag = hess * np.eye(5)
            damp = lam[active, None, None] * (diag + 1e-9 * diag.max(axis=(1, 2), keepdims=True) * np.eye(5))
            try:
                step = np.linalg.solve(hess + damp, -grad[..., None])[..., 0]
            except np.linalg.LinAlgError:   # a resample that leaves a direction unconstrained (one D, say)
                step = (np.linalg.pinv(hess + damp) @ -grad[..., None])[..., 0]
            trial = th + step
            exps = list(self.form.exponents)
            trial[:, exps] = np.clip(trial[:, exps], *EXPONENT_BOUNDS)        # as in the L-BFGS-B bounds
            f_trial = self.batch_objective(trial, w)
            ok = f_trial <= f[active]
            rows = np.flatnonzero(active)
            # converged: a step too small to matter, or one that no longer lowers the objective (a flat direction:
            # a resample with few distinct sizes leaves the parameter along it undetermined, wherever it stops)
            still = ok & ((np.abs(trial - th).max(axis=1) < tol) | (f[rows] - f_trial <= 1e-12 * f[rows]))
            theta[rows[ok]], f[rows[ok]] = trial[ok], f_trial[ok]
            lam[rows] = np.where(ok, lam[rows] * 0.3, lam[rows] * 10)
            done = still | (lam[rows] > 1e12)
            active[rows[done]] = False
        self.stragglers = int(active.sum())
        for k in np.flatnonzero(active) if polish else ():   # the few rows LM left unconverged
            theta[k] = self.lbfgs(theta[k], weights[k])[0]
        return theta

    def residuals(self, thetas, jac: bool = True):
        """log(pred) − log(loss) for each θ row (K, n) and its Jacobian in θ (K, n, 5)."""
        log_pred, jacobian = self.form.log_pred(thetas, self.x, self.y, jac)
        return log_pred - self.log_loss, jacobian

    def batch_objective(self, thetas, weights):
        """Weighted Huber objective of each θ row with its weight row (or one row for all)."""
        return (weights * _huber(self.residuals(thetas, jac=False)[0], self.delta)[0]).sum(axis=1)


def _huber(r, delta):
    """Huber loss divided by delta (reads like |r| for |r| > delta) and its derivative in r."""
    small = np.abs(r) <= delta
    return (np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta),
            np.where(small, r / delta, np.sign(r)))

def compute_optimal(fit: ScalingLawFit, compute, per_token: PerToken | None = None) -> pd.DataFrame:
    """Compute-optimal N and D for each budget C (FLOPs, C = f(N)·D; f = 6N, the paper's count, by default), closed
    form beside a numeric check.

    Closed form (§5): minimising L(N, C/6N) gives α·C_N·N^-α = β·C_D·D^-β, so
    N_opt = K·(C/6)^(β/(α+β)) and D_opt = (C/6)/N_opt, i.e. N_opt/D_opt = K²·(C/6)^η; with f = k·N^g the
    condition is α·C_N·N^-α = g·β·C_D·D^-β. Numeric: bounded Brent on log N (L is convex in log N).
    docs/method.md §3 notes that the paper's published averages are not mutually consistent, so both are always
    reported.
    """
    per_token = per_token or SIX_ND
    C = np.atleast_1d(np.asarray(compute, dtype=float))
    _check_positive(C, "C")
    n_closed = np.array([fit.optimal_n(c, per_token) for c in C])
    n_numeric = np.array([_numeric_n_opt(fit, c, per_token) for c in C])
    d_closed, d_numeric = C / per_token(n_closed), C / per_token(n_numeric)
    return pd.DataFrame({
        "C": C, "N_opt_closed": n_closed, "D_opt_closed": d_closed, "N_opt_numeric": n_numeric,
        "D_opt_numeric": d_numeric, "ratio_closed": d_closed / n_closed, "ratio_numeric": d_numeric / n_numeric,
        "rel_diff": n_closed / n_numeric - 1,   # relative difference of N_opt (closed vs numeric)
    })


def _numeric_n_opt(fit: ScalingLawFit, c: float, per_token: PerToken) -> float:
    def loss_at(log_n):
        return fit.predict(np.exp(log_n), c / per_token(np.exp(log_n)))
    top = math.log(c / per_token.k) / per_token.b   # where D = C / f(N) falls to one token
    res = optimize.minimize_scalar(loss_at, bounds=(0.0, top), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(res.x))


def d_over_n(fit: ScalingLawFit, compute: float, per_token: PerToken | None = None) -> float:
    """Compute-optimal tokens per parameter D_opt/N_opt at budget `compute` (numeric minimisation)."""
    return float(compute_optimal(fit, compute, per_token)["ratio_numeric"].iloc[0])


@dataclass(frozen=True)
class Backtest:
    """A scaling law fitted on the sizes up to the k-th, scored on the next size's points (§5 extrapolation); made by
    windtunnel.predict.fit_and_backtest."""

    held_out_N: float
    n_sizes: int                 # sizes the law was fitted on (the k smallest)
    n_train: int
    n_test: int
    rel_errors: tuple            # (pred − actual)/actual, one per held-out point, in input order
    mean_abs_rel_err: float
    max_abs_rel_err: float
    mean_rel_err: float          # signed: > 0 when the law predicted higher losses than the size reached
    low: tuple = ()              # 95% prediction interval of each held-out point (a new run, see predict_interval)
    high: tuple = ()
    covered: tuple = ()          # whether each actual loss lies in its interval
    fit: ScalingLawFit | None = field(default=None, repr=False)
    by_candidate: dict = field(default_factory=dict)   # each candidate law's mean |error| (windtunnel.predict)

    @property
    def coverage(self) -> float:
        """Share of the held-out points inside their 95% prediction interval (NaN without intervals)."""
        return float(np.mean(self.covered)) if self.covered else math.nan

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("held_out_N", "n_sizes", "n_train", "n_test", "mean_abs_rel_err",
                                              "max_abs_rel_err", "mean_rel_err")}
        out.update(rel_errors=list(self.rel_errors), low=list(self.low), high=list(self.high),
                   covered=[bool(c) for c in self.covered], coverage=None if not self.covered else self.coverage,
                   fit=None if self.fit is None else self.fit.to_dict(), by_candidate=dict(self.by_candidate))
        return out



# ---------------------------------------------------------------- §3.2 batch-size law

CURVE_COLUMNS = ("model", "N", "batch_tokens", "tokens", "loss")


@dataclass(frozen=True)
class BatchSizeFit:
    """bs_opt = k / L^γ (§3.2, Fig. 2; paper: k = 1.21e9 tokens, γ = 6.24 on C4 loss)."""

    k: float                     # batch tokens at loss 1
    gamma: float
    optima: pd.DataFrame = field(compare=False, repr=False)   # model, N, level, bs_opt, tokens_at_opt, curvature
    n_skipped: int = 0           # parabolas left out: opening downward (n_concave) or vertex outside the batches
    n_concave: int = 0           # parabolas that open downward: no minimum
    n_outside: int = 0           # vertices outside the sampled batch sizes: not extrapolated
    n_bootstrap: int = 0
    intervals: dict = field(default_factory=dict)   # "k", "gamma" -> (low, high), 95% percentile
    reach: pd.DataFrame | None = field(default=None, compare=False, repr=False)  # tokens_to_reach rows (Fig. 1)
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    # bootstrap (k, γ) rows over whole models, widened by sqrt(G/(G−1)) (see `_bootstrap_line`)

    def predict(self, loss) -> np.ndarray:
        """Optimal batch size in tokens at a target loss."""
        return self.k / np.asarray(loss, dtype=float) ** self.gamma

    def predict_interval(self, loss, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of bs_opt at `loss` over the bootstrap lines (k and γ move together)."""
        def preds():
            k, gamma = self.samples.T
            return k / np.asarray(loss, dtype=float)[..., None] ** gamma
        return _bootstrap_interval(self.samples, preds, level)

    def draws(self, loss_interval, *, n_draws: int = 4000, seed: int = 0) -> np.ndarray:
        """bs_opt (tokens) where both the loss and the law are uncertain: log L ~ normal through the loss's 95%
        interval (a lognormal whose 2.5% and 97.5% points are its ends), each draw on one bootstrap (k, γ) row."""
        if self.samples is None:
            raise FitError("batch-size draws need bootstrap samples; refit with bootstrap=1000 or more")
        rows = self.samples[np.isfinite(self.samples).all(axis=1)]
        rng = np.random.default_rng(seed)
        log_lo, log_hi = np.log(np.asarray(loss_interval, dtype=float))
        log_loss = rng.normal((log_lo + log_hi) / 2, (log_hi - log_lo) / (2 * stats.norm.ppf(0.975)), n_draws)
        k, gamma = rows[rng.permutation(np.arange(n_draws) % len(rows))].T   # every row as often, in random order
        return k * np.exp(-gamma * log_loss)

    def curvature_near(self, loss: float) -> float:
        """c2 of log tokens = c0 + c1·log b + c2·(log b)² (natural logs) near `loss`: per model the optimum whose
        level is nearest in log, the median over models (NaN for a fit without curvatures)."""
        if "curvature" not in self.optima:
            return math.nan
        distance = (np.log(self.optima["level"]) - math.log(loss)).abs()
        nearest = self.optima.loc[distance.groupby(self.optima["model"]).idxmin()]
        return float(nearest["curvature"].median())

    def to_dict(self, *, samples: bool = False) -> dict:
        out = {"k": self.k, "gamma": self.gamma, "n_optima": len(self.optima), "n_skipped": self.n_skipped,
               "n_concave": self.n_concave, "n_outside": self.n_outside, "n_bootstrap": self.n_bootstrap,
               "intervals": _jsonable(self.intervals), "optima": self.optima.to_dict(orient="records")}
        if self.reach is not None:
            out["reach"] = self.reach.replace({np.nan: None}).to_dict(orient="records")
        if samples and self.samples is not None:
            out["samples"] = self.samples.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> BatchSizeFit:
        """The inverse of to_dict (e.g. results/batch_size/fit.json)."""
        return cls(float(data["k"]), float(data["gamma"]), pd.DataFrame(data["optima"]), int(data["n_skipped"]),
                   int(data["n_concave"]), int(data["n_outside"]), int(data["n_bootstrap"]),
                   {k: tuple(v) for k, v in data["intervals"].items()}, samples=_samples_from(data))


def tokens_to_reach(curves: pd.DataFrame, levels) -> pd.DataFrame:
    """First tokens at which each curve's running-minimum loss reaches each level (§3.2, Fig. 1).

    Between the two evaluations that bracket a level, log tokens are interpolated linearly in loss.
    A level never reached gets NaN; one already reached at the first evaluation gets that evaluation's tokens.
    One row per (curve, level): model, N, batch_tokens, level, tokens.
    """
    frame = validate(curves, CURVE_COLUMNS, what="tokens-to-reach", positive=("N", "batch_tokens", "tokens"))
    levels = np.asarray(levels, dtype=float).ravel()
    rows = []
    for (model, batch), curve in frame.groupby(["model", "batch_tokens"], sort=True):
        curve = curve.sort_values("tokens")
        reach = _first_crossing(curve["tokens"].to_numpy(), curve["loss"].to_numpy(), levels)
        rows += [(model, curve["N"].iloc[0], batch, lv, t) for lv, t in zip(levels, reach)]
    return pd.DataFrame(rows, columns=["model", "N", "batch_tokens", "level", "tokens"])


def _first_crossing(tokens: np.ndarray, loss: np.ndarray, levels: np.ndarray) -> np.ndarray:
    best = np.minimum.accumulate(loss)                      # running minimum: noise cannot un-reach a level
    i = np.argmax(best[:, None] <= levels[None, :], axis=0)  # first index at or below each level
    reached = best[i] <= levels
    prev = np.maximum(i - 1, 0)
    span = best[prev] - best[i]
    frac = np.where(span > 0, (best[prev] - levels) / np.where(span > 0, span, 1), 1.0)
    log_t = np.log(tokens[prev]) + frac * (np.log(tokens[i]) - np.log(tokens[prev]))
    return np.where(reached, np.exp(log_t), np.nan)


def _default_levels(frame: pd.DataFrame, n_levels: int) -> dict:
    """Per model: n_levels log-spaced losses from just under the highest level every curve starts above,
    down to the median of its curves' lowest losses (a level most curves reach)."""
    out = {}
    for model, group in frame.groupby("model"):
        by_curve = group.sort_values("tokens").groupby("batch_tokens")["loss"]
        top, bottom = by_curve.first().min(), by_curve.min().median()
        out[model] = np.geomspace(top, bottom, n_levels + 1)[1:] if top > bottom else np.array([])
    return out


def fit_batch_size_law(curves: pd.DataFrame, *, levels=None, n_levels: int = 8, bootstrap: int = 0,
                       seed: int = 0) -> BatchSizeFit:
    """Fit bs_opt = k / L^γ (§3.2) from loss curves of several models × batch sizes.

    1) tokens to reach each loss level, per curve (`tokens_to_reach`);
    2) per (model, level) with ≥ 3 batch sizes: parabola of log tokens in log batch size; its vertex
       is the optimal batch size (left out if it opens downward or lies outside the sampled batch sizes,
       never extrapolated: both counted);
    3) a line log bs_opt = log k − γ·log L through the optima of all models.
    `levels=None` gives each model `n_levels` levels (see `_default_levels`). bootstrap=K resamples whole models
    K times for 95% intervals on k and γ (`_bootstrap_line`: a model's optima share its curves).
    """
    frame = validate(curves, CURVE_COLUMNS, what="batch-size law", min_rows=3,
                     positive=("N", "batch_tokens", "tokens", "loss"))
    per_model = _default_levels(frame, n_levels) if levels is None else None
    reach = pd.concat([tokens_to_reach(group, per_model[model] if per_model is not None else levels)
                       for model, group in frame.groupby("model")], ignore_index=True)
    optima, n_concave, n_outside = _batch_optima(reach)
    if optima["level"].nunique() < 2:
        raise FitError(f"batch-size law needs optima at ≥2 loss levels; found {optima['level'].nunique()} — "
                       "add batch sizes around the optimum or more evaluations")
    log_k, gamma = _power_line(optima["level"].to_numpy(), optima["bs_opt"].to_numpy())
    samples = _bootstrap_line(optima, (log_k, gamma), bootstrap, seed) if bootstrap else None
    intervals = _percentiles(samples, ("k", "gamma")) if bootstrap else {}
    return BatchSizeFit(float(np.exp(log_k)), float(gamma), optima, n_concave + n_outside, n_concave, n_outside,
                        int(bootstrap), intervals, reach=reach, samples=samples)


def _batch_optima(reach: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Vertex of the log–log parabola log tokens = c0 + c1·log b + c2·(log b)² per (model, level), with its
    `curvature` c2 (what a batch off the optimum costs: log tokens rise by c2·(log b − log bs_opt)²); counts of
    concave ones and of those outside the sampled batch sizes (left out: the side of the parabola past the last
    batch size is not measured)."""
    rows, n_concave, n_outside = [], 0, 0
    for (model, level), group in reach.dropna(subset=["tokens"]).groupby(["model", "level"]):
        x, y = np.log(group["batch_tokens"].to_numpy()), np.log(group["tokens"].to_numpy())
        if np.unique(x).size < 3:
            continue
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 <= 0:
            n_concave += 1
            continue
        vertex = -c1 / (2 * c2)
        if not x.min() <= vertex <= x.max():   # beyond the sampled batches the parabola is an extrapolation
            n_outside += 1
            continue
        rows.append((model, group["N"].iloc[0], level, np.exp(vertex), np.exp(c0 - c1 * c1 / (4 * c2)), c2))
    optima = pd.DataFrame(rows, columns=["model", "N", "level", "bs_opt", "tokens_at_opt", "curvature"])
    return optima, n_concave, n_outside


def _power_line(level: np.ndarray, bs_opt: np.ndarray) -> tuple[float, float]:
    """Least-squares log bs = log k − γ·log L; returns (log k, γ)."""
    slope, intercept = np.polyfit(np.log(level), np.log(bs_opt), 1)
    return intercept, -slope


def _bootstrap_line(optima: pd.DataFrame, center: tuple[float, float], n_samples: int, seed: int) -> np.ndarray:
    """(k, γ) of the line through each resample of whole models (a cluster bootstrap: one model's optima at its
    several levels come from the same curves, so their errors are shared, and resampling optima one by one treats
    them as independent and is too narrow), pushed away from the fit `center` = (log k, γ) by sqrt(G/(G−1)) as
    `_inflate` does (k in log space, γ linearly: every predicted log bs then moves by the same factor). Each
    resample is a least-squares line weighted by how often its model was drawn; NaN rows where it has one level."""
    rng = np.random.default_rng(seed)
    ids = pd.factorize(optima["model"])[0]
    n_groups = int(ids.max()) + 1
    weight = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), n_samples)[:, ids].astype(float)
    x, y = np.log(optima["level"].to_numpy()), np.log(optima["bs_opt"].to_numpy())
    total = weight.sum(axis=1)
    mx, my = weight @ x / total, weight @ y / total
    sxx, sxy = weight @ (x * x) / total - mx * mx, weight @ (x * y) / total - mx * my
    two_levels = sxx > 1e-12 * max(float(np.var(x)), 1e-300)   # a line needs two distinct levels
    slope = np.where(two_levels, sxy / np.where(two_levels, sxx, 1.0), np.nan)
    samples = np.column_stack([np.exp(my - slope * mx), -slope])
    return _inflate(samples, (math.exp(center[0]), center[1]), n_groups, positive=np.array([True, False]))


def batch_loss_cost(batch, bs_draws: np.ndarray, *, slope: float, curvature: float) -> np.ndarray:
    """Expected relative loss cost of training at `batch` (tokens) when the optimum is uncertain (`bs_draws`).

    A batch Δ = log b − log bs_opt off its optimum needs exp(c2·Δ²) times the tokens to reach a loss (the §3.2
    parabola, `curvature` c2); at a fixed token budget that is a loss higher by s_D·c2·Δ² relatively, s_D =
    −d log L / d log D (`slope`). Its expectation s_D·c2·E[Δ²] is least at b = exp(E[log bs_opt]), the
    geometric mean of the draws."""
    delta = np.log(np.asarray(batch, dtype=float))[..., None] - np.log(bs_draws)
    return slope * curvature * (delta ** 2).mean(axis=-1)


# ---------------------------------------------------------------- §3.3 learning-rate transfer

NOISE_POINTS = 5               # the points nearest each width's minimum whose parabola residuals measure the noise
GOAL_SPREAD, GOAL_WIDTHS = 2.0, 8.0   # §3.3 made testable: µP optima within 2× of each other over ≥ 8× of width


@dataclass(frozen=True)
class LRTransferFit:
    """Optimal learning rate per width and parametrization (§3.3, Fig. 3), the spread of the optima across widths
    and whether the LR transfers under µP (and not under SP)."""

    optima: pd.DataFrame = field(compare=False, repr=False)
    # parametrization, model, [N, width], lr_opt, low, high, loss_opt, curvature (loss per (log10 lr)², NaN at an
    # edge), at_edge, n_points, n_fit, n_censored, lr_diverged
    spread: dict = field(default_factory=dict)   # parametrization -> `_spread`'s dict (ratio, 95% interval, widths)
    interval_method: str = "delta"               # "delta" or "bootstrap" (parametric, pooled noise)
    goal: dict = field(default_factory=dict)     # holds (True, False or None: undecided) and why; see `_goal`

    def best_lr(self, parametrization: str = "mup") -> float:
        """Geometric mean of the per-width optimal learning rates."""
        rows = self.optima[self.optima["parametrization"] == parametrization]
        if rows.empty:
            have = ", ".join(sorted(self.optima["parametrization"].unique()))
            raise FitError(f"no runs with parametrization '{parametrization}'; have: {have}")
        return float(np.exp(np.log(rows["lr_opt"]).mean()))

    def to_dict(self) -> dict:
        best = {p: self.best_lr(p) for p in self.optima["parametrization"].unique()}
        return {"best_lr": best, "spread": self.spread, "goal": self.goal, "interval_method": self.interval_method,
                "optima": self.optima.replace({np.nan: None}).to_dict(orient="records")}


def fit_lr_transfer(frame: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0) -> LRTransferFit:
    """Per (parametrization, model): the optimal lr from a parabola in log10 lr around the grid's minimum (§3.3).

    1) a diverged run (non-finite loss, or `status` "diverged") is censored, not dropped: the optimum lies below
       it, so the smallest diverged lr caps the optimum and its interval;
    2) the loss is asymmetric in log lr (a slow rise below the optimum, a cliff above it) and a parabola through
       the whole grid is pulled off the optimum: only the grid minimum and its two neighbours are fitted;
    3) the interval's noise is pooled over the widths of a parametrization from parabolas through the
       NOISE_POINTS points nearest each minimum: their residuals hold the noise and the curve's departure from a
       parabola; the interval is also stretched by the asymmetry's pull on the vertex (see `_lr_optimum`);
    4) a convex curve whose lowest point is x has its minimum between x's neighbours: the interval is clipped there;
    5) a minimum at an end of the finite grid is flagged `at_edge`: lr_opt is the best sampled lr and low/high
       the bracket a convex curve implies (above the next lr in, below the smallest diverged lr); the open side
       of a bracket is NaN.
    95% interval: bootstrap=0 the delta method (t quantile, pooled dof); bootstrap=K redraws the three losses K
    times with the pooled noise. `parametrization` defaults to "mup"; `N`/`width` columns are kept.
    """
    extra = [c for c in ("N", "width") if c in frame.columns]
    frame = frame.assign(parametrization=frame.get("parametrization", "mup"))
    if "status" in frame:
        frame = frame.assign(loss=frame["loss"].where(frame["status"] != "diverged", np.inf))
    data = validate(frame, ["parametrization", "model", "lr", "loss", *extra], what="LR transfer", min_rows=3,
                    positive=["lr"], finite=["lr", *extra])
    rng = np.random.default_rng(seed)
    rows = []
    for _, part in data.groupby("parametrization", sort=False):
        groups = [group for _, group in part.groupby("model", sort=False)]
        curves = [_lr_curve(group) for group in groups]
        wide = [_wide_parabola(x, y) for x, y, _ in curves]
        noise = _pooled_noise(wide)
        rows += [{"parametrization": g["parametrization"].iloc[0], "model": g["model"].iloc[0],
                  **{c: g[c].iloc[0] for c in extra}, **_lr_optimum(*curve, noise, w[2], bootstrap, rng),
                  "n_points": int(curve[0].size), "n_censored": int((~np.isfinite(g["loss"])).sum()),
                  "lr_diverged": curve[2] if np.isfinite(curve[2]) else np.nan}
                 for g, curve, w in zip(groups, curves, wide)]
    optima = pd.DataFrame(rows)
    spread = {p: _spread(g, rng) for p, g in optima.groupby("parametrization")}
    if "width" in data:
        for p, part in data.groupby("parametrization"):
            spread[p]["regret"] = _transfer_regret(part)
    return LRTransferFit(optima, spread, "bootstrap" if bootstrap else "delta", _goal(spread))


def _lr_curve(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
    """One width's finished runs as (log10 lr, loss) sorted by lr (repeats at one lr averaged), and the smallest
    diverged lr (inf when none diverged)."""
    finite = np.isfinite(group["loss"])
    if not finite.any():
        raise FitError(f"LR transfer: every run of model '{group['model'].iloc[0]}' "
                       f"({group['parametrization'].iloc[0]}) diverged; add smaller learning rates")
    mean = group[finite].groupby("lr")["loss"].mean()
    cap = group.loc[~finite, "lr"].min() if (~finite).any() else np.inf
    return np.log10(mean.index.to_numpy()), mean.to_numpy(), float(cap)


def _wide_parabola(x, y) -> tuple[float, int, float]:
    """(RSS, dof, vertex) of the parabola through the NOISE_POINTS points nearest a width's minimum (vertex NaN
    when it opens downward; all zero/NaN with fewer than 4 points)."""
    if x.size < 4:
        return 0.0, 0, math.nan
    lo = int(np.clip(np.argmin(y) - NOISE_POINTS // 2, 0, max(x.size - NOISE_POINTS, 0)))
    xs, ys = x[lo : lo + NOISE_POINTS], y[lo : lo + NOISE_POINTS]
    coef = np.polyfit(xs, ys, 2)
    resid = ys - np.polyval(coef, xs)
    return float(resid @ resid), xs.size - 3, -coef[1] / (2 * coef[0]) if coef[0] > 0 else math.nan


def _pooled_noise(wide) -> tuple[float, int]:
    """(s², dof) of the wide parabolas pooled over the widths (their final losses share the evaluation's noise)."""
    rss, dof = sum(w[0] for w in wide), sum(w[1] for w in wide)
    return (rss / dof if dof else math.nan), dof


def _lr_optimum(x, y, cap: float, noise, wide_vertex: float, n_boot: int, rng) -> dict:
    """The vertex of the parabola through the grid minimum and its neighbours, capped at the smallest diverged
    lr; at an end of the grid, the best sampled lr and the bracket around it.

    An asymmetric curve pulls a parabola's vertex towards its gentler side, the more the wider the window: the
    wide parabola's vertex lies beyond the local one, and the interval is extended by their distance on the
    other side (the local vertex is pulled too, by about as much again as the wide one's extra)."""
    i, log_cap = int(np.argmin(y)), math.log10(cap) if np.isfinite(cap) else math.inf
    if not 0 < i < x.size - 1:
        low = x[i - 1] if i > 0 else math.nan                  # a convex curve falling to the top end: optimum above
        high = min(x[i + 1] if i < x.size - 1 else math.inf, log_cap)   # ... rising from the low end: below
        return {"lr_opt": 10 ** min(x[i], log_cap), "low": 10 ** low, "loss_opt": float(y[i]), "at_edge": True,
                "high": 10 ** high if high < math.inf else math.nan, "curvature": math.nan, "n_fit": 0}
    xs, ys = x[i - 1 : i + 2], y[i - 1 : i + 2]
    coef = np.polyfit(xs, ys, 2)                              # through 3 points; convex as the middle is lowest
    vertex = -coef[1] / (2 * coef[0])
    low, high = _vertex_interval(xs, coef, noise, n_boot, rng)
    pull = vertex - wide_vertex if np.isfinite(wide_vertex) else 0.0
    low, high = np.clip([low + min(pull, 0), high + max(pull, 0)], xs[0], xs[-1])  # convex: between the neighbours
    return {"lr_opt": 10 ** min(vertex, log_cap), "low": 10 ** min(low, log_cap), "high": 10 ** min(high, log_cap),
            "loss_opt": float(np.polyval(coef, vertex)), "curvature": float(coef[0]), "at_edge": False, "n_fit": 3}


def _vertex_interval(xs, coef, noise, n_boot: int, rng) -> tuple[float, float]:
    """95% interval on the vertex −b/(2a) in log10 lr with the pooled noise (s², dof): delta method with a t
    quantile, or a parametric bootstrap whose σ is drawn from its scaled-inverse-χ² (the same heavier tails)."""
    s2, dof = noise
    if dof < 1:
        return math.nan, math.nan
    if n_boot:
        sigma = np.sqrt(s2 * dof / rng.chisquare(dof, n_boot))
        ys = np.polyval(coef, xs) + rng.standard_normal((n_boot, xs.size)) * sigma[:, None]
        c = np.polyfit(xs, ys.T, 2)
        best_end = np.where(ys[:, 0] < ys[:, -1], xs[0], xs[-1])   # a draw that bends the wrong way: its better end
        vertex = np.where(c[0] > 0, -c[1] / (2 * np.where(c[0] > 0, c[0], 1)), best_end)
        return tuple(np.percentile(vertex, [2.5, 97.5]))
    a, b, _ = coef
    design = np.vander(xs, 3)
    cov = np.linalg.inv(design.T @ design) * s2
    grad = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])          # d vertex / d(a, b, c)
    half = stats.t.ppf(0.975, dof) * math.sqrt(grad @ cov @ grad)
    vertex = -b / (2 * a)
    return vertex - half, vertex + half


def _spread(optima: pd.DataFrame, rng, n_draws: int = 4000) -> dict:
    """Max/min of the optimal lr across widths, with a 95% interval from a parametric bootstrap: each draw takes
    every width's log10 optimum from its interval — a split normal whose halves match its two sides (a side capped
    by a diverged lr is shorter), uniform over the bracket of an optimum at the grid's edge.

    Max/min of noisy optima is biased upward, and the draws, centred on the noisy optima, add the bias again: the
    percentile interval never reaches 1 when the optima are equal, the basic (reflected) one, r̂²/q, corrects the
    bias but undercovers when the spread is comparable to the noise. The interval is their union, which covered in
    every regime simulated (LOG.md): conservative both for µP's "< 2×" and for SP's "clearly more".
    An optimum with an open side cannot be drawn: it is left out, of the ratio too (n_open), unless fewer than two
    are bounded (then the ratio is over all widths and there is no interval)."""
    lr = optima["lr_opt"].to_numpy(float)
    bounded = np.isfinite(optima["low"].to_numpy(float)) & np.isfinite(optima["high"].to_numpy(float))
    draws = _optimum_draws(optima, rng, n_draws)
    interval, used = None, bounded if bounded.sum() >= 2 else np.ones(lr.size, bool)
    estimate = lr[used].max() / lr[used].min()
    if bounded.sum() >= 2:
        q_lo, q_hi = np.percentile(10 ** (draws[:, bounded].max(axis=1) - draws[:, bounded].min(axis=1)), [2.5, 97.5])
        basic = max(estimate ** 2 / q_hi, 1.0), max(estimate ** 2 / q_lo, 1.0)   # max/min is at least 1
        interval = [float(min(q_lo, basic[0])), float(max(q_hi, basic[1]))]
    width = optima["width"].to_numpy(float)[used] if "width" in optima else np.array([])
    return {"ratio": float(estimate), "interval": interval,
            "std_log10": float(np.log10(lr[used]).std()),
            "n_models": int(lr.size), "n_open": int((~bounded).sum()),
            "widths": [float(width.min()), float(width.max())] if width.size else None,
            "width_ratio": float(width.max() / width.min()) if width.size else None}


def _optimum_draws(optima: pd.DataFrame, rng, n_draws: int) -> np.ndarray:
    """log10 lr draws (n_draws × widths): each width's optimum from a split normal whose halves match the two sides
    of its 95% interval, or uniform over the bracket of an optimum at the grid's edge (NaN for an open side)."""
    center, low, high = (np.log10(optima[c].to_numpy(float)) for c in ("lr_opt", "low", "high"))
    z = rng.standard_normal((n_draws, center.size))
    split = center + z * np.where(z > 0, high - center, center - low) / stats.norm.ppf(0.975)
    return np.where(optima["at_edge"].to_numpy(bool), rng.uniform(0, 1, z.shape) * (high - low) + low, split)


def lr_for_target(optima: pd.DataFrame, *, n_draws: int = 4000, seed: int = 0) -> dict:
    """The LR for a width outside the ladder from its bounded optima (one parametrization), §3.3.

    value: the geometric mean of the optima. interval95: the 2.5–97.5% points of the geometric mean over draws of
    every width's optimum from its interval (`_optimum_draws`), widened to the range of the optima when that is
    larger — the target's width lies outside the ladder, so its optimum is as likely as any width's to sit at an
    end of their spread. cost_at_ends: the relative loss of training at `value` when the optimum is at either end,
    curvature·Δlog10(lr)² / loss_opt from each width's parabola, the median over widths (None without curvatures).
    """
    rng = np.random.default_rng(seed)
    value = float(10 ** np.log10(optima["lr_opt"]).mean())
    mean_draws = 10 ** _optimum_draws(optima, rng, n_draws).mean(axis=1)
    low, high = np.nanpercentile(mean_draws, [2.5, 97.5])
    interval = [float(min(low, optima["lr_opt"].min())), float(max(high, optima["lr_opt"].max()))]
    rel_curvature = (optima["curvature"] / optima["loss_opt"]) if "curvature" in optima else pd.Series(dtype=float)
    per_decade2 = float(rel_curvature.median()) if rel_curvature.notna().all() and len(rel_curvature) else math.nan
    cost = [per_decade2 * math.log10(end / value) ** 2 for end in interval]
    return {"value": value, "interval95": interval, "n_widths": int(len(optima)),
            "cost_at_ends": cost if math.isfinite(per_decade2) else None}


def _transfer_regret(part: pd.DataFrame) -> dict:
    """What transferring costs, straight from the grid (no fit, so it holds however flat the optimum): the grid LR
    with the lowest loss at the narrowest width, used at every width, against that width's best grid loss."""
    table = part[np.isfinite(part["loss"])].pivot_table(index="width", columns="lr", values="loss")
    tuned = float(table.iloc[0].idxmin())
    regret = (table[tuned] / table.min(axis=1) - 1).dropna()
    return {"tuned_at_width": float(table.index[0]), "lr": tuned, "max": float(regret.max()),
            "by_width": {f"{w:g}": float(r) for w, r in regret.items()}}


def _goal(spread: dict) -> dict:
    """§3.3's claim: under µP the spread's 95% upper end stays below GOAL_SPREAD over ≥ GOAL_WIDTHS of width
    (of the widths in its interval); under SP its 95% lower end lies above both GOAL_SPREAD and µP's upper end.
    holds: True, False, or None when µP passes and there is no SP spread to contrast."""
    mup, sp = spread.get("mup", {}), spread.get("sp", {})
    if not mup.get("interval"):
        return {"holds": None, "why": "no µP spread interval: it needs two widths with bounded optima"}
    hi, widths = mup["interval"][1], mup["width_ratio"] or 0.0
    fails = ([] if hi < GOAL_SPREAD else [f"µP optima spread up to {hi:.2f}x (95%), not < {GOAL_SPREAD:g}x"]) + \
        ([] if widths >= GOAL_WIDTHS else [f"µP widths span {widths:.2g}x, not ≥ {GOAL_WIDTHS:g}x"])
    if not sp.get("interval"):
        return {"holds": False if fails else None, "why": "; ".join(fails + ["no SP spread to contrast"])}
    lo = sp["interval"][0]
    if lo <= max(GOAL_SPREAD, hi):
        fails.append(f"SP spread from {lo:.2f}x (95%) is not clearly above µP's {hi:.2f}x and {GOAL_SPREAD:g}x")
    return {"holds": not fails, "why": "; ".join(fails) or (f"µP spread ≤ {hi:.2f}x (95%) over {widths:.2g}x of "
                                                          f"width; SP spread ≥ {lo:.2f}x")}


# ---------------------------------------------------------------- §4.3 loss envelope

@dataclass(frozen=True)
class EnvelopeFit:
    """The WSD loss envelope over compute: power law β·C^-α + L0 against exponential α·e^(-β·C) + L0 (§4.3)."""

    power: dict          # alpha, beta, L0 of L = beta·C^-alpha + L0
    exponential: dict    # alpha, beta, L0 of L = alpha·exp(-beta·C) + L0
    rss: dict            # kind -> residual sum of squares
    aic: dict            # kind -> n·log(RSS/n) + 2k, k = 3
    better: str          # kind with the lower AIC
    n_points: int

    def predict(self, kind: str, C) -> np.ndarray:
        if kind not in ("power", "exponential"):
            raise FitError(f"kind={kind!r} is not allowed; use 'power' or 'exponential'")
        C = np.asarray(C, dtype=float)
        p = getattr(self, kind)
        if kind == "power":
            return p["beta"] * C ** -p["alpha"] + p["L0"]
        return p["alpha"] * np.exp(-p["beta"] * C) + p["L0"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EnvelopeFit:
        """The inverse of to_dict."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def fit_envelope(C, loss) -> EnvelopeFit:
    """Fit both envelope forms by least squares (C scaled by its maximum for conditioning) and compare AIC."""
    C, loss = _arrays("envelope fit", 4, C=C, loss=loss)
    scale = C.max()
    c = C / scale
    power = _best_curve_fit(lambda c, b, a, l0: b * c ** -a + l0, c, loss,
                            [[loss.max() - loss.min(), a, 0.9 * loss.min()] for a in (0.1, 0.3, 0.7, 1.5)])
    expo = _best_curve_fit(lambda c, a, b, l0: a * np.exp(-b * c) + l0, c, loss,
                           [[loss.max() - loss.min(), b, 0.9 * loss.min()] for b in (0.3, 1.0, 3.0, 10.0, 30.0)])
    (b, a, l0), rss_p = power
    (ea, eb, el0), rss_e = expo
    rss = {"power": rss_p, "exponential": rss_e}
    aic = {k: C.size * math.log(max(v, 1e-300) / C.size) + 2 * 3 for k, v in rss.items()}
    return EnvelopeFit(
        power={"alpha": float(a), "beta": float(b * scale ** a), "L0": float(l0)},   # b·(C/s)^-a = b·s^a·C^-a
        exponential={"alpha": float(ea), "beta": float(eb / scale), "L0": float(el0)},
        rss=rss, aic=aic, better=min(aic, key=aic.get), n_points=int(C.size))


def _best_curve_fit(model, x, y, starts) -> tuple[np.ndarray, float]:
    """curve_fit from each start (all parameters ≥ 0); keep the lowest RSS."""
    best = (None, np.inf)
    for p0 in starts:
        try:
            p, _ = optimize.curve_fit(model, x, y, p0=p0, bounds=(0, np.inf), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rss = float(((model(x, *p) - y) ** 2).sum())
        best = min(best, (p, rss), key=lambda t: t[1])
    if best[0] is None:
        raise FitError("envelope fit did not converge from any start; check that loss falls with C")
    return best
