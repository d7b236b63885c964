"""Parameter counts and FLOPs of a ModelSpec in closed form: pure arithmetic, no torch (docs/method.md §3).

The decoder of windtunnel.model has, per block, two RMSNorm weights (d each), the fused QKV projection
d·(H + 2·KV)·d_head, the output projection H·d_head·d, and the SwiGLU's fused gate/up d·2·d_ff and down
d_ff·d; then one final RMSNorm (d) and the embedding V·d, which the LM head shares (tied: no bias, no second
matrix). No term depends on the parametrization: µP and SP differ in multipliers, not in shapes.
tests/test_counts.py checks every ladder entry against the meta-device count of the real model
(windtunnel.model.count_params), so `sweep --dry-run`, `plan` and `fit` count without importing torch.
"""

from __future__ import annotations

from windtunnel.config import ModelSpec

__all__ = ["n_params", "flops_per_token", "attention_flops_per_token", "counted_flops_per_token", "DEFAULT_FLOPS",
           "H100_FLOPS", "DEFAULT_MFU", "gpu_hours"]

DEFAULT_FLOPS = "full"  # the micro ladder's frontier backtests (bench/flop_count.py, LOG.md 2026-12-06)
# The dense peak of one H100 SXM (datasheet) by the dtype the trainer runs in: bf16 tensor cores, and fp32 without
# TF32 (PyTorch leaves TF32 matmuls off, and the trainer does not turn them on). GPU-hours from it are estimates at a
# stated MFU, not measurements.
H100_FLOPS = {"bf16": 989e12, "fp32": 67e12}
DEFAULT_MFU = 0.4


def gpu_hours(flops: float, *, mfu: float = DEFAULT_MFU, peak: float = H100_FLOPS["bf16"]) -> float:
    """Hours of one device to compute `flops` at `mfu` of `peak` FLOP/s (an H100's bf16 peak by default)."""
    return flops / (mfu * peak) / 3600


def n_params(spec: ModelSpec, *, embedding: bool = False) -> int:
    """Exact parameter count: non-embedding N by default (the paper's), N_total = N + V·d with embedding=True."""
    d, heads, kv = spec.d_model, spec.n_heads, spec.n_kv_heads
    attention = d * (heads + 2 * kv) * spec.d_head + heads * spec.d_head * d  # wqkv, wo
    mlp = 3 * d * spec.d_ff  # w13 (gate and up), w2
    smear = kv if spec.smear_keys else 0  # one mixing weight per key head
    non_embedding = spec.n_layers * (attention + mlp + 2 * d + smear) + d  # + two norms a block, + the final norm
    return non_embedding + (spec.vocab_size * d if embedding else 0)


def flops_per_token(spec: ModelSpec, *, seq_len: int) -> float:
    """Training FLOPs per token, attention included (what MFU counts): 6·(N + d·V) + 12·L·d·T.

    6·N_total: 2 FLOPs forward and 4 backward per weight per token, the tied LM head (d·V) included. 12·L·d·T: the
    attention scores and values (PaLM appendix B; causal masking not subtracted), which the paper's C = 6·N·D leaves
    out. This is the "full" FLOP count (counted_flops_per_token).
    """
    return 6.0 * n_params(spec, embedding=True) + attention_flops_per_token(spec, seq_len=seq_len)


def attention_flops_per_token(spec: ModelSpec, *, seq_len: int) -> float:
    """12·L·d·T: forward and backward of QKᵀ and AV per token at context T (not in the paper's C = 6·N·D)."""
    return 12.0 * spec.n_layers * spec.d_model * seq_len


def counted_flops_per_token(spec: ModelSpec, *, seq_len: int, count: str, n_kind: str = "total") -> float:
    """Training FLOPs per token in a FLOP count of windtunnel.fit.FLOP_COUNTS: "6nd" 6·N (N of `n_kind`, the
    law's), "full" the trainer's (flops_per_token)."""
    if count == "full":
        return flops_per_token(spec, seq_len=seq_len)
    return 6.0 * n_params(spec, embedding=n_kind == "total")

