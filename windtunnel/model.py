"""The µP MiniCPM decoder (docs/method.md §3): RMSNorm pre-norm, RoPE, SwiGLU, grouped-query attention,
no biases, tied embeddings, with every µP operation of the paper's Table 7 and an SP switch.

µP with width multiplier m = d_model / d_base (Table 7):
  embedding output × scale_emb · residual branches × scale_depth / sqrt(n_layers) ·
  init std of 2-D weights = init_std / sqrt(m) · LR of hidden 2-D weights = lr / m · logits × 1/m.
SP (`parametrization: sp`) is the same model at the base width (m = 1) and differs only in how it scales
with width (microsoft/mup's convention): it keeps scale_emb, scale_depth / sqrt(n_layers) and the init std
init_std / sqrt(m) (∝ 1/sqrt(fan_in), the usual SP initialisation), but its logits are not × 1/m and every
tensor trains at the base LR.
`smear_keys` (the CPU ladders only, a deviation from MiniCPM) mixes each key with the previous position's key.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from windtunnel.config import ModelSpec

__all__ = ["MiniCPM", "count_params", "linear_cross_entropy", "param_groups"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, scale: float = 1.0):
        """Normed x × weight × scale: a constant scale multiplies the d-sized weight, not every state."""
        return F.rms_norm(x, (x.shape[-1],), self.weight if scale == 1.0 else self.weight * scale, self.eps)


def rope_tables(seq_len: int, d_head: int, theta: float, device=None):
    """cos and sin of the rotary angles, each [seq_len, d_head / 2]."""
    inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, device=device, dtype=torch.float32) / d_head)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (first half, second half) of each head: x is [batch, heads, seq, d_head]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.n_heads, self.n_kv, self.d_head = spec.n_heads, spec.n_kv_heads, spec.d_head
        self.wqkv = nn.Linear(spec.d_model, (spec.n_heads + 2 * spec.n_kv_heads) * spec.d_head, bias=False)
        self.wo = nn.Linear(spec.n_heads * spec.d_head, spec.d_model, bias=False)
        # smeared keys: per key head, the logit of the own key's share (0: half own, half the previous position's)
        self.smear = nn.Parameter(torch.zeros(spec.n_kv_heads)) if spec.smear_keys else None

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).split([self.n_heads * self.d_head, self.n_kv * self.d_head,
                                      self.n_kv * self.d_head], dim=-1)
        k = k.view(b, t, self.n_kv, self.d_head)
        if self.smear is not None:  # before RoPE: the previous token's key content at this position's angle
            previous = F.pad(k[:, :-1], (0, 0, 0, 0, 1, 0))
            k = previous + torch.sigmoid(self.smear).to(k.dtype)[:, None] * (k - previous)
        q = apply_rope(q.view(b, t, self.n_heads, self.d_head).transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        v = v.view(b, t, self.n_kv, self.d_head).transpose(1, 2)
        # plain 1/sqrt(d_head) softmax scale: MiniCPM does not use µP's 1/d_head (Table 7)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.w13 = nn.Linear(spec.d_model, 2 * spec.d_ff, bias=False)  # gate and up in one matmul
        self.w2 = nn.Linear(spec.d_ff, spec.d_model, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(spec.d_model, spec.norm_eps), RMSNorm(spec.d_model, spec.norm_eps)
        self.attn, self.mlp = Attention(spec), SwiGLU(spec)
        self.branch_scale = spec.scale_depth / math.sqrt(spec.n_layers)  # Table 7 (also SP: not a width rule)

    def forward(self, x, cos, sin):
        x = x.add(self.attn(self.attn_norm(x), cos, sin), alpha=self.branch_scale)   # one kernel: x + s·branch
        return x.add(self.mlp(self.mlp_norm(x)), alpha=self.branch_scale)


class MiniCPM(nn.Module):
    """Decoder-only LM; `forward(idx)` returns logits [batch, seq, vocab] in fp32."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layers))
        self.norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.emb_scale = spec.scale_emb  # Table 7 (also SP: not a width rule)
        self.logit_scale = 1.0 / spec.width_mult  # µP: logits × 1/m; SP: width_mult is 1
        self.checkpoint_blocks = False  # activation checkpointing: each block recomputed in the backward pass
        self.reset_parameters()

    def reset_parameters(self):
        """Hidden 2-D weights: std init_std / sqrt(m) (Table 7; also SP's ∝ 1/sqrt(fan_in)). The embedding
        keeps init_std: its fan-in is the vocabulary, not the width, so µP leaves it width-independent
        (Tensor Programs V, Table 3) — scaling it too makes the residual stream shrink as 1/sqrt(m)."""
        hidden_std = self.spec.init_std / math.sqrt(self.spec.d_model / self.spec.d_base)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, mean=0.0, std=self.spec.init_std if name == "embed.weight" else hidden_std)

    def hidden(self, idx):
        """The final states [batch, seq, d_model], normed and × 1/m: the LM head's input."""
        # computed per call, not cached: a cache filled at step 1 makes torch.compile build a second graph
        cos, sin = rope_tables(idx.shape[1], self.spec.d_head, self.spec.rope_theta, idx.device)
        x = _Embedding.apply(self.embed.weight, idx) * self.emb_scale
        for block in self.blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():  # only the block's input is kept for backward
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        return self.norm(x, scale=self.logit_scale)

    def forward(self, idx):
        return F.linear(self.hidden(idx), self.embed.weight).float()  # tied LM head

    def loss(self, windows):
        """Mean next-token cross-entropy (nats) of token windows [rows, seq_len + 1], for training."""
        return linear_cross_entropy(self.hidden(windows[:, :-1]).flatten(0, 1), self.embed.weight,
                                    windows[:, 1:].flatten())


class _Embedding(torch.autograd.Function):
    """The token lookup, with a backward that torch.compile cannot rewrite (see `embedding_backward`)."""

    @staticmethod
    def forward(ctx, weight, idx):
        ctx.save_for_backward(idx)
        ctx.vocab_size = weight.shape[0]
        return F.embedding(idx, weight)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        return embedding_backward(grad, idx, ctx.vocab_size), None


@torch.library.custom_op("windtunnel::embedding_backward", mutates_args=())
def embedding_backward(grad: torch.Tensor, idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Gradient rows summed per token id by ATen's index_add_. An opaque op, because inductor turns
    embedding's backward into a scatter of atomic adds: 0.7 ms against 0.1 ms a micro-142k step on CPU."""
    rows = grad.reshape(-1, grad.shape[-1])
    return rows.new_zeros(vocab_size, rows.shape[1]).index_add_(0, idx.flatten(), rows)


@embedding_backward.register_fake
def _(grad, idx, vocab_size):
    return grad.new_empty(vocab_size, grad.shape[-1])


LOSS_CHUNKS = 8  # row chunks of the LM head: 512 of 4096 rows keeps a 1024-vocab chunk (2 MB) in cache


def linear_cross_entropy(h, weight, targets):
    """Mean cross-entropy of the logits h @ weight.T (h [n, d], weight [vocab, d]) against targets [n].

    The logits are made, used and dropped a chunk of rows at a time, and their gradient (softmax −
    one-hot) is taken in the same pass, so the [n, vocab] logits are never stored for the backward
    nor exponentiated twice. Measured on 2 CPU cores: a compiled micro step 10–25% faster than
    F.cross_entropy on full logits (bench/train_throughput.py, LOG.md). Only for training: the
    forward always pays for the gradient.
    """
    return _LinearCrossEntropy.apply(h, weight, targets, -(-h.shape[0] // LOSS_CHUNKS))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, rows):
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        total = h.new_zeros((), dtype=torch.float32)
        for start in range(0, h.shape[0], rows):
            hc, tc = h[start:start + rows], targets[start:start + rows, None]
            logits = (hc @ weight.T).float()  # fp32 softmax under bf16 autocast too
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            total = total + (lse - logits.gather(1, tc)).sum()
            grad = torch.exp(logits - lse).scatter_add_(1, tc, torch.full_like(lse, -1.0))  # softmax − one-hot
            grad_h[start:start + rows] = grad.to(h.dtype) @ weight
            grad_w += (grad.T.to(h.dtype) @ hc).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n = h.shape[0]
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return grad_h * scale, grad_w * scale, None, None


def param_groups(model: MiniCPM, *, weight_decay: float) -> list[dict]:
    """AdamW groups with an `lr_scale`: µP hidden 2-D weights get 1/m, the embedding and norms 1 (Table 7).

    Weight decay applies to 2-D weights only; the trainer sets each group's lr = schedule(step) · lr_scale.
    """
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("embed")]
    groups = [
        {"params": hidden, "lr_scale": 1.0 / model.spec.width_mult, "weight_decay": weight_decay},
        {"params": [model.embed.weight], "lr_scale": 1.0, "weight_decay": weight_decay},
        {"params": [p for p in model.parameters() if p.dim() < 2], "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def count_params(spec: ModelSpec, *, embedding: bool = False) -> int:
    """Exact parameter count, built on the meta device (no memory); non-embedding unless embedding=True.
    The reference windtunnel.counts.n_params is checked against; code that must not import torch uses that."""
    total, embed = _counts(spec)
    return total if embedding else total - embed


@functools.cache
def _counts(spec: ModelSpec) -> tuple[int, int]:
    """(all parameters, the embedding's) of a meta-device model: built once per shape (minicpm-1.2b: 0.8 s)."""
    with torch.device("meta"):
        model = MiniCPM(spec)
    return sum(p.numel() for p in model.parameters()), model.embed.weight.numel()
