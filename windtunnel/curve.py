"""The loss-curve law: a run's held-out loss at every step from its size N and its LR schedule, L(N, η(·), s).

Three candidate forms (bench/curves.py chooses among them on schedules the fit never saw):
- "lra", the LR-annealing law of Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing"):
  L = L0 + A·S1^−α − C·S2, S1 = Σ η_i·B_i the forward area, S2 = Σ m_i·B_i the annealing area with momentum,
  m_i = λ_i·m_{i−1} + (η_{i−1} − η_i), λ_i = exp(−B_i/τ): τ is the momentum's memory in tokens (fitted; the paper's
  λ = 0.999 per step is τ = 1000 steps);
- "mpl", the multi-power law of Luo et al. 2025 ("A Multi-Power Law for Loss Curve Prediction Across Learning Rate
  Schedules"): L = L0 + A·S1^−α − B·Σ_k (η_{k−1} − η_k)·G(η_k^−γ·S_k(s)), G(x) = 1 − (C·x + 1)^−β,
  S_k(s) = Σ_{k ≤ i ≤ s} η_i·B_i the area from the k-th step's drop to s;
- "lra_nd", the LR-annealing law with Kaplan et al.'s N–D interaction in place of L0(N) + A(N)·S1^−α:
  L = L0 + (P·(N/N_ref)^−p + Q·S1^−q)^r − C(N)·S2 (see _LRAKaplan).
Areas are counted in relative LR × tokens (η_i: the LR over the run's peak LR; B_i: the tokens of step i), so runs of
different batch sizes share one law, and tokens in units of the ladder's median run, which keeps every parameter
near 1. Changes of the LR during the warm-up are not annealing (both papers start the sums after it).
Sizes: L0, A and the annealing scale (C of "lra", B of "mpl") are each a power law in N, k·(N/N_ref)^e (N_ref: the
ladder's geometric mean), so a size outside the ladder is predicted.
Peak LR: A and the annealing scale are also each a power law in the peak LR over the ladder's, (η_peak/η_ref)^κ. In
absolute LR × tokens the papers' laws tie κ to the schedule's exponents (A·(η_peak·S1)^−α: κ = −α), which makes a
run at half the LR look like one with half the tokens: on the micro LR sweep (µP, 2M tokens) that predicted +7–14%
at LR 0.01 from runs at 0.02, where the loss was +1.4%. A free κ is identified only when the fit holds two peak LRs;
with one it stays 0 (another LR is predicted as the fitted one).

The 95% band (predict) is relative, Student-t with one degree of freedom less than the fitted runs, and covers five
things: the law's uncertainty (its refits on runs resampled whole: a stable run and its decay branches together),
a new run's own offset (the spread of the fitted runs' mean residuals: seeds and data order), the scatter of one
evaluation about its run's offset, after the LR has fallen the error of a decay the fit did not see (its decays
held out by length in turn: _decay_backtest) and, beyond the ladder, a misspecification term of
predict.MISSPEC_FLOOR (~1%) per e-fold beyond the fitted N or tokens (what the scaling law's intervals take from
public ladders; on the micro ladder the curve law fitted on micro-24k…142k erred +1.7% and +2.7% at the end of
micro-221k's two stable runs, 0.4 e-folds beyond). It does not cover a schedule shape, a peak LR or a batch schedule
unlike every fitted one: the held-out curves of bench/curves.py measure those.

Only numpy and scipy; bad input raises CurveError naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, signal, stats

from windtunnel.errors import WindtunnelError
from windtunnel.predict import MISSPEC_FLOOR

__all__ = ["Curve", "CurveFit", "CurveError", "FORMS", "fit_curves", "schedule_curve", "warmup_end"]

LEVEL = 0.95          # the band's coverage
HUBER = 0.01          # relative residual beyond which a point's weight falls (robust to a stray evaluation)
DECAY_FOLDS = 4       # bins of decayed curves by length in the decay backtest


class CurveError(WindtunnelError):
    """Curves a fit or a prediction cannot use."""


@dataclass(frozen=True, eq=False)
class Curve:
    """One run: its LR and batch at every optimizer step, and its held-out loss at the evaluated steps."""

    n: float                  # parameters, in the convention of the fit (the ladder's N_total)
    lr: np.ndarray            # the LR of updates 1..S (entry i: the (i+1)-th update)
    batch: np.ndarray         # the tokens of each of those updates
    steps: np.ndarray         # evaluated steps: updates done at each evaluation (1..S), rising
    loss: np.ndarray | None = None  # held-out loss at `steps` (bits per byte); None for a curve to predict
    group: str = ""           # the bootstrap unit: a stable run and its decay branches share one

    def __post_init__(self):
        lr, batch, steps = (np.asarray(a, float) for a in (self.lr, self.batch, self.steps))
        if lr.ndim != 1 or lr.shape != batch.shape or lr.size == 0:
            raise CurveError(f"curve: lr and batch must be equal-length 1-D arrays (got {lr.shape}, {batch.shape})")
        if not (np.all(np.isfinite(lr)) and np.all(lr >= 0) and np.all(batch > 0)):
            raise CurveError("curve: every LR must be finite and >= 0, every batch > 0")
        if steps.size and (np.any(np.diff(steps) <= 0) or steps[0] < 1 or steps[-1] > lr.size):
            raise CurveError(f"curve: evaluated steps must rise within 1..{lr.size}")
        if self.loss is not None and (len(self.loss) != steps.size or not np.all(np.isfinite(self.loss))):
            raise CurveError("curve: one finite loss per evaluated step")
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "batch", batch)
        object.__setattr__(self, "steps", steps.astype(int))

    @property
    def tokens(self) -> np.ndarray:
        """Tokens seen at each evaluation."""
        return np.cumsum(self.batch)[self.steps - 1]

    @property
    def warmup_tokens(self) -> float:
        """Tokens seen when the LR first reaches its maximum."""
        return float(np.sum(self.batch[:warmup_end(self.lr)]))


def warmup_end(lr: np.ndarray) -> int:
    """The index of the first step at the run's largest LR: the warm-up's last step (0 without one)."""
    return int(np.argmax(lr >= lr.max() * (1 - 1e-9)))


def schedule_curve(lr_at, *, n: float, total_steps: int, batch_tokens: int, every: int = 1,
                   batch=None) -> Curve:
    """The curve to predict of a planned run: `lr_at` is a step → LR function (schedules.make_schedule's), evaluated
    every `every` steps and at the last; `batch` the tokens of each step (a batch warm-up), else batch_tokens."""
    lr = np.array([lr_at(s) for s in range(total_steps)], float)
    batch = np.full(total_steps, float(batch_tokens)) if batch is None else np.asarray(batch, float)
    steps = np.unique(np.r_[np.arange(every, total_steps + 1, every), total_steps])
    return Curve(n=n, lr=lr, batch=batch, steps=steps)


# ---------------------------------------------------------------- the forms


@dataclass(frozen=True)
class _Scale:
    """The units fixed by the fitted ladder: peak LR / lr, tokens / tokens, N / n."""

    lr: float
    tokens: float
    n: float

    @classmethod
    def of(cls, curves: list[Curve]) -> _Scale:
        return cls(lr=max(float(c.lr.max()) for c in curves),
                   tokens=float(np.median([np.sum(c.batch) for c in curves])),
                   n=float(np.exp(np.mean(np.log([c.n for c in curves])))))


def _areas(curve: Curve, scale: _Scale) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """η over the run's peak and B in the scale's tokens of every step, the cumulative forward area, and the warm-up's
    last index."""
    eta, b = curve.lr / curve.lr.max(), curve.batch / scale.tokens
    return eta, b, np.cumsum(eta * b), warmup_end(curve.lr)


def _drops(eta: np.ndarray, warm: int) -> np.ndarray:
    """η_{i−1} − η_i of every step after the warm-up (0 before and at its end)."""
    d = np.zeros_like(eta)
    d[warm + 1:] = eta[warm:-1] - eta[warm + 1:]
    return d


def _power(theta, i: int, x: np.ndarray) -> np.ndarray:
    """k·x^e with log k = theta[i], e = theta[i + 1]: a coefficient as a power law in N / N_ref."""
    return np.exp(theta[i] + theta[i + 1] * np.log(x))


class _Annealing:
    """S2(τ) at every evaluated step of a fit's curves, for one τ per call: the momentum m of the LR drops d,
    m_i = λ·m_(i−1) + d_i with λ = exp(−B/τ), summed as Σ m·B. A fit asks for it ~10⁴ times, so the curves whose batch
    stays put from their first drop on (all but a batch warm-up that outlasts the LR's warm-up) are filtered together,
    one row each, from that drop; the others run by run of equal batch (λ is constant there)."""

    def __init__(self, parts: list[dict]):
        self.size = sum(p["at"].size for p in parts)
        rows: dict[float, list] = {}  # batch → [(drops from the first, output positions, columns)]
        self.loose: list[tuple[int, dict]] = []
        offset = 0
        for p in parts:
            d, b, at = p["d"], p["b"], p["at"]
            nonzero = np.flatnonzero(d)
            if nonzero.size and np.all(b[nonzero[0]:] == b[nonzero[0]]):
                first, later = nonzero[0], at >= nonzero[0]
                row = (d[first:], offset + np.flatnonzero(later), at[later] - first)
                rows.setdefault(float(b[first]), []).append(row)
            elif nonzero.size:
                self.loose.append((offset, p))
            offset += at.size
        self.groups = []
        for b, group in rows.items():
            drops = np.zeros((len(group), max(g[0].size for g in group)))
            for i, (seg, _, _) in enumerate(group):
                drops[i, :seg.size] = seg
            self.groups.append((b, drops, np.concatenate([g[1] for g in group]),
                                np.concatenate([np.full(g[2].size, i) for i, g in enumerate(group)]),
                                np.concatenate([g[2] for g in group])))

    def __call__(self, tau: float) -> np.ndarray:
        out = np.zeros(self.size)
        for b, drops, where, row, col in self.groups:
            lam = np.exp(-b / tau)
            out[where] = b * np.cumsum(signal.lfilter([1.0], [1.0, -lam], drops, axis=1), axis=1)[row, col]
        for offset, part in self.loose:
            out[offset:offset + part["at"].size] = _runs_of_equal_batch(part, tau)
        return out


def _runs_of_equal_batch(part: dict, tau: float) -> np.ndarray:
    """S2 of one curve whose batch changes after its first drop: filtered per run of equal batch, carrying m."""
    d, b = part["d"], part["b"]
    m = np.empty_like(d)
    cuts = np.r_[0, np.flatnonzero(np.diff(b)) + 1, b.size]
    carry = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        lam = np.exp(-b[lo] / tau)
        m[lo:hi], _ = signal.lfilter([1.0], [1.0, -lam], d[lo:hi], zi=[lam * carry])
        carry = m[hi - 1]
    return np.cumsum(m * b)[part["at"]]


class _LRA:
    """Tissue et al. 2024: L0(N) + A(N)·S1^−α − C(N)·S2(τ)."""

    names = ("log_L0", "L0_exp", "log_A", "A_exp", "log_alpha", "log_C", "C_exp", "log_tau", "A_lr", "C_lr")
    lower = (-5, -2, -10, -3, np.log(0.02), -15, -3, np.log(1e-5), -3, -3)
    upper = (5, 2, 10, 3, np.log(3.0), 10, 3, np.log(10.0), 3, 3)

    def prepare(self, curves: list[Curve], scale: _Scale) -> dict:
        parts = []
        for c in curves:
            eta, b, s1, warm = _areas(c, scale)
            parts.append({"x": np.full(c.steps.size, c.n / scale.n), "s1": s1[c.steps - 1], "d": _drops(eta, warm),
                          "b": b, "at": c.steps - 1, "peak": np.full(c.steps.size, c.lr.max() / scale.lr)})
        return {"s2": _Annealing(parts), **{k: np.concatenate([p[k] for p in parts]) for k in ("x", "s1", "peak")}}

    def predict(self, theta, data) -> np.ndarray:
        x, tau, peak = data["x"], np.exp(theta[7]), data["peak"]
        s2 = data["s2"](tau)
        return (_power(theta, 0, x) + _power(theta, 2, x) * peak ** theta[8] * data["s1"] ** -np.exp(theta[4])
                - _power(theta, 5, x) * peak ** theta[9] * s2)

    def start(self, data, loss) -> list[np.ndarray]:
        low = np.log(0.8 * loss.min())
        return [np.array([low, -0.05, np.log(0.3 * loss.mean()), -0.1, np.log(a), np.log(c), 0.0, np.log(t), 0.0, 0.0])
                for a in (0.3, 0.6) for c, t in ((0.5, 0.05), (2.0, 0.01))]


class _LRAKaplan(_LRA):
    """Tissue et al.'s annealing with Kaplan et al.'s N–D interaction for the rest:
    L0 + (P·(N/N_ref)^−p + Q·S1^−q)^r − C(N)·S2(τ). Early in a run the S1 term dominates, so sizes differ little; late,
    the N term: the gap between sizes widens with tokens, which L0(N) + A(N)·S1^−α can only mimic with an A growing
    with N that explodes when a larger size's early curve is extrapolated."""

    names = ("log_L0", "log_P", "p", "log_Q", "log_q", "log_r", "log_C", "C_exp", "log_tau", "A_lr", "C_lr")
    lower = (-5, -10, 0, -10, np.log(0.02), np.log(0.05), -15, -3, np.log(1e-5), -3, -3)
    upper = (5, 10, 3, 10, np.log(3.0), np.log(3.0), 10, 3, np.log(10.0), 3, 3)

    def predict(self, theta, data) -> np.ndarray:
        x, tau, peak = data["x"], np.exp(theta[8]), data["peak"]
        s2 = data["s2"](tau)
        inner = (np.exp(theta[1]) * x ** -theta[2]
                 + np.exp(theta[3]) * peak ** theta[9] * data["s1"] ** -np.exp(theta[4]))
        return np.exp(theta[0]) + inner ** np.exp(theta[5]) - _power(theta, 6, x) * peak ** theta[10] * s2

    def start(self, data, loss) -> list[np.ndarray]:
        low = np.log(0.6 * loss.min())
        return [np.array([low, np.log(0.3), 0.3, np.log(0.3), np.log(q), np.log(r), np.log(2.0), 0.0, np.log(0.01), 0.0,
                          0.0]) for q in (0.3, 0.8) for r in (0.3, 1.0)]


class _MPL:
    """Luo et al. 2025: L0(N) + A(N)·S1^−α − B(N)·Σ_k (η_{k−1} − η_k)·(1 − (C·η_k^−γ·S_k(s) + 1)^−β)."""

    names = ("log_L0", "L0_exp", "log_A", "A_exp", "log_alpha", "log_B", "B_exp", "log_C", "log_beta", "log_gamma",
             "A_lr", "B_lr")
    lower = (-5, -2, -10, -3, np.log(0.02), -10, -3, -10, np.log(0.01), np.log(0.01), -3, -3)
    upper = (5, 2, 10, 3, np.log(3.0), 10, 3, 15, np.log(5.0), np.log(3.0), 3, 3)

    def prepare(self, curves: list[Curve], scale: _Scale) -> dict:
        xs, s1s, peaks, rows, ds, etas, areas = [], [], [], [], [], [], []
        offset = 0
        for c in curves:
            eta, b, s1, warm = _areas(c, scale)
            d = _drops(eta, warm)
            k = np.flatnonzero(np.abs(d) > 1e-12)
            for j, s in enumerate(c.steps):
                before = k[k <= s - 1]  # drops at or before the evaluated step's last update
                rows.append(np.full(before.size, offset + j))
                ds.append(d[before])
                etas.append(np.maximum(eta[before], 1e-6))  # a decay to 0: η^−γ stays finite
                areas.append(s1[s - 1] - np.r_[0.0, s1][before])
            xs.append(np.full(c.steps.size, c.n / scale.n))
            peaks.append(np.full(c.steps.size, c.lr.max() / scale.lr))
            s1s.append(s1[c.steps - 1])
            offset += c.steps.size
        cat = np.concatenate
        return {"x": cat(xs), "s1": cat(s1s), "peak": cat(peaks), "rows": cat(rows).astype(int), "d": cat(ds), "eta": cat(etas),
                "area": cat(areas), "n": offset}

    def predict(self, theta, data) -> np.ndarray:
        x, peak = data["x"], data["peak"]
        c, beta, gamma = np.exp(theta[7]), np.exp(theta[8]), np.exp(theta[9])
        g = 1.0 - (c * data["eta"] ** -gamma * data["area"] + 1.0) ** -beta
        ld = np.bincount(data["rows"], weights=data["d"] * g, minlength=data["n"])
        return (_power(theta, 0, x) + _power(theta, 2, x) * peak ** theta[10] * data["s1"] ** -np.exp(theta[4])
                - _power(theta, 5, x) * peak ** theta[11] * ld)

    def start(self, data, loss) -> list[np.ndarray]:
        low = np.log(0.8 * loss.min())
        return [np.array([low, -0.05, np.log(0.3 * loss.mean()), -0.1, np.log(a), np.log(0.3), 0.0, np.log(c),
                          np.log(0.5), np.log(0.5), 0.0, 0.0]) for a in (0.3, 0.6) for c in (1.0, 30.0)]


FORMS = {"lra": _LRA(), "lra_nd": _LRAKaplan(), "mpl": _MPL()}


# ---------------------------------------------------------------- the fit


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve law: its form, parameters, units, the runs' residual spread and the bootstrap's refits."""

    form: str
    theta: dict                 # parameter name → value (log_… are natural logs)
    scale: dict                 # the units: lr, tokens, n (see _Scale)
    sd_run: float               # sd of a run's mean log residual (a new run's own offset)
    sd_point: float             # sd of one evaluation's log residual about its run's mean
    sd_decay: float             # sd of a decay unlike the fitted ones, beyond those two (_decay_backtest)
    groups: int                 # runs resampled whole (the band's degrees of freedom + 1)
    n_range: tuple              # smallest and largest N fitted
    tokens_range: tuple         # the fitted evaluations' fewest and most tokens: before the first, the law is not fitted
    boot: list = field(default_factory=list)   # the bootstrap's parameter vectors

    def predict(self, curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loss at `curve`'s evaluated steps and its 95% band (see the module's docstring for what it covers)."""
        form, scale = FORMS[self.form], _Scale(**self.scale)
        data = form.prepare([curve], scale)
        loss = form.predict(np.array([self.theta[k] for k in form.names]), data)
        if np.any(loss <= 0) or not np.all(np.isfinite(loss)):
            raise CurveError(f"curve law {self.form}: non-positive or infinite loss predicted for N = {curve.n:,.0f}")
        draws = np.log(np.maximum(self.draws(curve), 1e-9))
        sd_law = np.std(draws, axis=0) if len(draws) > 1 else np.zeros_like(loss)
        decayed = curve.lr[curve.steps - 1] < curve.lr.max() * (1 - 1e-9)  # an evaluation after the LR fell
        sd = np.sqrt(sd_law ** 2 + self.sd_run ** 2 + self.sd_point ** 2 + (self.sd_decay * decayed) ** 2
                     + (MISSPEC_FLOOR * self.beyond(curve)) ** 2)
        z = stats.t.ppf(0.5 + LEVEL / 2, df=max(self.groups - 1, 1))
        return loss, loss * np.exp(-z * sd), loss * np.exp(z * sd)

    def draws(self, curve: Curve) -> np.ndarray:
        """The bootstrap refits' losses at `curve`'s evaluated steps: one row a refit (no rows without a bootstrap)."""
        form, scale = FORMS[self.form], _Scale(**self.scale)
        data = form.prepare([curve], scale)
        return np.array([form.predict(np.array(t), data) for t in self.boot]).reshape(len(self.boot), curve.steps.size)

    def beyond(self, curve: Curve) -> np.ndarray:
        """E-folds beyond the fitted ladder at each evaluation: in N or in tokens, whichever is further (0 inside)."""
        n = max(0.0, np.log(curve.n / self.n_range[1]), np.log(self.n_range[0] / curve.n))
        return np.maximum(n, np.log(np.maximum(curve.tokens / self.tokens_range[1], 1.0)))

    def to_dict(self) -> dict:
        return {"form": self.form, "theta": {k: float(v) for k, v in self.theta.items()}, "scale": dict(self.scale),
                "sd_run": self.sd_run, "sd_point": self.sd_point, "sd_decay": self.sd_decay, "groups": self.groups,
                "n_range": [float(v) for v in self.n_range], "tokens_range": [float(v) for v in self.tokens_range],
                "boot": [[float(v) for v in t] for t in self.boot]}

    @classmethod
    def from_dict(cls, d: dict) -> CurveFit:
        return cls(form=d["form"], theta=dict(d["theta"]), scale=dict(d["scale"]), sd_run=float(d["sd_run"]),
                   sd_point=float(d["sd_point"]), sd_decay=float(d["sd_decay"]), groups=int(d["groups"]), n_range=tuple(d["n_range"]),
                   tokens_range=tuple(d["tokens_range"]), boot=[list(t) for t in d.get("boot", [])])


def _fitted_points(curves: list[Curve]) -> list[Curve]:
    """Each curve's evaluations after its warm-up (the law describes the annealing, not the warm-up's transient)."""
    out = []
    for c in curves:
        if c.loss is None:
            raise CurveError("curve fit: every fitted curve needs its loss")
        keep = c.tokens > c.warmup_tokens
        if keep.any():
            out.append(Curve(n=c.n, lr=c.lr, batch=c.batch, steps=c.steps[keep], loss=c.loss[keep], group=c.group))
    return out


def _solve(form, data, loss: np.ndarray, starts: list[np.ndarray]) -> np.ndarray:
    """The least-squares parameters on log residuals (Huber beyond HUBER), best of `starts`; the peak-LR exponents
    stay at their start when every curve has one peak LR (nothing identifies them)."""
    free = np.ones(len(form.names), bool)
    if np.ptp(data["peak"]) < 1e-9:
        free[[form.names.index(k) for k in form.names if k.endswith("_lr")]] = False
    lower, upper = np.array(form.lower, float)[free], np.array(form.upper, float)[free]

    def full(x, theta0):
        theta = theta0.copy()
        theta[free] = x
        return theta

    best, best_theta = None, None
    for theta0 in starts:
        def residuals(x, theta0=theta0):
            return np.log(np.maximum(form.predict(full(x, theta0), data), 1e-9)) - np.log(loss)

        res = optimize.least_squares(residuals, np.clip(theta0[free], lower + 1e-9, upper - 1e-9),
                                     bounds=(lower, upper), loss="huber", f_scale=HUBER, x_scale="jac", max_nfev=400)
        if best is None or res.cost < best.cost:
            best, best_theta = res, full(res.x, theta0)
    return best_theta


def fit_curves(curves: list[Curve], *, form: str = "lra", bootstrap: int = 0, seed: int = 0) -> CurveFit:
    """Fit the curve law `form` (a key of FORMS) to `curves`; `bootstrap` refits on runs resampled by group."""
    if form not in FORMS:
        raise CurveError(f"curve law form={form!r} is not allowed; allowed: {' | '.join(FORMS)}")
    curves = _fitted_points(curves)
    groups = sorted({c.group for c in curves})
    if len(curves) < 2 or len(groups) < 2:
        raise CurveError(f"curve fit needs at least 2 runs in 2 groups after the warm-up (got {len(curves)} runs, "
                         f"{len(groups)} groups)")
    law, scale = FORMS[form], _Scale.of(curves)
    data, loss = law.prepare(curves, scale), np.concatenate([c.loss for c in curves])
    theta = _solve(law, data, loss, law.start(data, loss))
    resid = np.log(law.predict(theta, data)) - np.log(loss)
    sd_run, sd_point = _spread(resid, curves)
    sd_decay = _decay_backtest(law, curves, scale, theta, sd_run, sd_point)
    boot = _bootstrap(law, curves, groups, scale, theta, bootstrap, seed)
    return CurveFit(form=form, theta=dict(zip(law.names, map(float, theta))), scale=vars(scale), sd_run=sd_run,
                    sd_point=sd_point, sd_decay=sd_decay, groups=len(groups), n_range=(min(c.n for c in curves), max(c.n for c in curves)),
                    tokens_range=(min(float(c.tokens[0]) for c in curves), max(float(c.tokens[-1]) for c in curves)),
                    boot=[list(map(float, t)) for t in boot])


def _decay_backtest(law, curves: list[Curve], scale: _Scale, theta, sd_run: float, sd_point: float,
                    folds: int = DECAY_FOLDS) -> float:
    """The error of a decay the fit did not see, beyond a new run's offset and scatter: the decayed curves (their
    LR ends below its peak) fall into `folds` bins by their tokens; each bin is refitted without and predicted, and
    sd² = max(0, mean squared log error − sd_run² − sd_point²). 0 with fewer than two bins."""
    decayed = np.array([c.lr[c.steps[-1] - 1] < c.lr.max() * (1 - 1e-9) for c in curves])
    ends = np.array([np.log(c.tokens[-1]) for c in curves])
    if decayed.sum() < 2 or np.ptp(ends[decayed]) == 0:
        return 0.0
    edges = np.quantile(ends[decayed], np.linspace(0, 1, folds + 1)[1:-1])
    fold = np.where(decayed, np.searchsorted(edges, ends, side="right"), -1)
    errors = []
    for k in sorted(set(fold[decayed])):
        kept = [c for c, f in zip(curves, fold) if f != k]
        out = [c for c, f in zip(curves, fold) if f == k]
        refit = _solve(law, law.prepare(kept, scale), np.concatenate([c.loss for c in kept]), [theta])
        errors.append(np.log(law.predict(refit, law.prepare(out, scale))) - np.log(np.concatenate([c.loss for c in out])))
    return float(np.sqrt(max(0.0, np.mean(np.concatenate(errors) ** 2) - sd_run ** 2 - sd_point ** 2)))


def _spread(resid: np.ndarray, curves: list[Curve]) -> tuple[float, float]:
    """sd of the groups' mean residuals and of each residual about its group's mean."""
    labels = np.concatenate([[c.group] * c.steps.size for c in curves])
    means = {g: resid[labels == g].mean() for g in set(labels)}
    within = resid - np.array([means[g] for g in labels])
    return float(np.std(list(means.values()), ddof=1)), float(np.std(within, ddof=1))


def _bootstrap(law, curves, groups, scale, theta, n: int, seed: int) -> list[np.ndarray]:
    """Refits on the curves of groups drawn with replacement, each started from the full fit."""
    rng = np.random.default_rng(seed)
    by_group = {g: [c for c in curves if c.group == g] for g in groups}
    out = []
    for _ in range(n):
        drawn = [c for g in rng.choice(groups, size=len(groups)) for c in by_group[g]]
        if len({c.n for c in drawn}) < 2:  # one size alone cannot place the N exponents
            continue
        out.append(_solve(law, law.prepare(drawn, scale), np.concatenate([c.loss for c in drawn]), [theta]))
    return out
