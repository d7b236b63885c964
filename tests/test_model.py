"""The µP MiniCPM decoder: exact parameter counts, FLOPs per token, µP operations (the coordinate check of
update sizes against width is tests/test_mupcheck.py)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from windtunnel.config import ModelSpec, load_models
from windtunnel.counts import flops_per_token
from windtunnel.model import MiniCPM, count_params, linear_cross_entropy, param_groups


def tiny(d_model=32, parametrization="mup", **kw) -> ModelSpec:
    return ModelSpec(name="t", d_model=d_model, n_heads=d_model // 16, d_head=16, n_layers=2, vocab_size=256,
                     d_base=32, parametrization=parametrization, **kw)


def test_minicpm_non_embedding_counts_are_exact():
    models = load_models()
    assert count_params(models["minicpm-1.2b"]) == 1_247_442_432
    assert count_params(models["minicpm-2.4b"]) == 2_442_057_984


def test_table8_rows_round_to_the_papers_n():
    models = load_models()
    rows = [m for m in models.values() if m.paper_n is not None]
    assert len(rows) == 7
    for spec in rows:
        assert round(count_params(spec) / 1e9, 3) == spec.paper_n, spec.name


def test_micro_ladder_spans_eight_times_in_n_with_five_widths():
    micro = [m for name, m in load_models().items() if name.startswith("micro-")]
    counts = sorted(count_params(m) for m in micro)
    assert len({m.d_model for m in micro}) >= 5
    assert counts[-1] / counts[0] >= 8
    assert all(m.d_ff == int(2.5 * m.d_model) for m in micro)


def test_count_by_hand_and_with_embedding():
    spec = tiny(d_model=64, n_kv_heads=2)  # 4 query heads, 2 kv heads of 16
    attn = 64 * (4 + 2 * 2) * 16 + 4 * 16 * 64
    mlp = 3 * 64 * 160
    assert count_params(spec) == 2 * (attn + mlp + 2 * 64) + 64
    assert count_params(spec, embedding=True) == count_params(spec) + 256 * 64


def test_flops_per_token_formula():
    spec = tiny()
    n = count_params(spec)
    assert flops_per_token(spec, seq_len=128) == 6 * (n + 32 * 256) + 12 * 2 * 32 * 128


def test_forward_shape_and_gqa():
    model = MiniCPM(tiny(d_model=64, n_kv_heads=1))
    logits = model(torch.randint(0, 256, (3, 10)))
    assert logits.shape == (3, 10, 256) and logits.dtype == torch.float32


def test_chunked_lm_head_loss_matches_cross_entropy_and_its_gradients():
    torch.manual_seed(0)
    h = torch.randn(1001, 24, requires_grad=True)  # 1001 rows: the last chunk is short
    w = torch.randn(300, 24, requires_grad=True)
    targets = torch.randint(0, 300, (1001,))
    ref = F.cross_entropy(h @ w.T, targets)
    ref_h, ref_w = torch.autograd.grad(3 * ref, (h, w))
    loss = linear_cross_entropy(h, w, targets)
    got_h, got_w = torch.autograd.grad(3 * loss, (h, w))  # an outer factor (1/accum) reaches the grads
    tol = 1e-5
    assert abs(loss.item() - ref.item()) < tol * ref.item()
    assert torch.allclose(got_h, ref_h, rtol=tol, atol=tol) and torch.allclose(got_w, ref_w, rtol=tol, atol=tol)


def test_token_lookup_gradient_matches_embedding():
    from windtunnel.model import _Embedding
    weight = torch.randn(50, 8, requires_grad=True)
    idx = torch.randint(0, 50, (4, 30))  # repeated ids: their rows must add up
    grad = torch.randn(4, 30, 8)
    got = torch.autograd.grad(_Embedding.apply(weight, idx), weight, grad)[0]
    want = torch.autograd.grad(F.embedding(idx, weight), weight, grad)[0]
    assert torch.allclose(got, want, atol=1e-6)


def test_training_loss_is_the_logits_cross_entropy():
    model = MiniCPM(tiny())
    windows = torch.randint(0, 256, (4, 17))
    ref = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten())
    assert model.loss(windows).item() == pytest.approx(ref.item(), rel=1e-6)


def test_causal_future_tokens_do_not_change_the_past():
    model = MiniCPM(tiny())
    x = torch.randint(0, 256, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 256
    assert torch.allclose(model(x)[0, :8], model(y)[0, :8], atol=1e-6)


def test_smeared_keys_are_causal_counted_and_trained_like_norm_weights():
    spec = tiny(d_model=64, smear_keys=True)  # 4 heads, 2 layers
    model = MiniCPM(spec)
    assert count_params(spec) == count_params(dataclasses.replace(spec, smear_keys=False)) + 2 * 4
    x = torch.randint(0, 256, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 256
    assert torch.allclose(model(x)[0, :8], model(y)[0, :8], atol=1e-6)
    groups = param_groups(model, weight_decay=0.1)  # a per-head scalar: width-independent LR, no decay
    assert any(p is model.blocks[0].attn.smear for p in groups[2]["params"]) and groups[2]["weight_decay"] == 0.0
    plain = MiniCPM(dataclasses.replace(spec, smear_keys=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("smear")})
    assert not torch.allclose(model(x), plain(x), atol=1e-4)  # at init each key is half the previous one
    with torch.no_grad():
        for block in model.blocks:
            block.attn.smear.fill_(40.0)  # the own key's share → 1: the plain model
    assert torch.allclose(model(x), plain(x), atol=1e-5)


def test_mup_operations_of_table7():
    spec = tiny(d_model=128)  # m = 4
    model = MiniCPM(spec)
    assert model.emb_scale == 12.0 and model.logit_scale == 0.25
    assert model.blocks[0].branch_scale == pytest.approx(1.4 / math.sqrt(2))
    assert model.blocks[0].mlp.w2.weight.std().item() == pytest.approx(0.1 / 2, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(0.1, rel=0.05)  # fan-in = vocab: not width-scaled
    groups = param_groups(model, weight_decay=0.1)
    assert [g["lr_scale"] for g in groups] == [0.25, 1.0, 1.0]  # hidden 2-D, embedding, norms
    assert len(groups[0]["params"]) == 2 * 4  # wqkv, wo, w13, w2 per block
    assert groups[1]["params"] == [model.embed.weight] and groups[2]["weight_decay"] == 0.0


def test_sp_keeps_the_multipliers_and_drops_only_the_width_rules():
    model = MiniCPM(tiny(d_model=128, parametrization="sp"))
    assert model.emb_scale == 12.0 and model.blocks[0].branch_scale == pytest.approx(1.4 / math.sqrt(2))
    assert model.logit_scale == 1.0 and {g["lr_scale"] for g in param_groups(model, weight_decay=0.1)} == {1.0}
    assert model.blocks[0].mlp.w2.weight.std().item() == pytest.approx(0.1 / 2, rel=0.05)  # init ∝ 1/sqrt(fan_in)


def test_sp_and_mup_are_one_model_at_the_base_width():
    x = torch.randint(0, 256, (2, 16))
    out = {}
    for kind in ("mup", "sp"):
        torch.manual_seed(0)
        model = MiniCPM(tiny(d_model=32, parametrization=kind))  # d_base 32: m = 1
        out[kind] = (model(x), [g["lr_scale"] for g in param_groups(model, weight_decay=0.1)])
    assert torch.equal(out["mup"][0], out["sp"][0]) and out["mup"][1] == out["sp"][1]


def test_activation_checkpointing_gives_the_same_loss_and_gradients_and_keeps_less_for_backward():
    """Per-block checkpointing recomputes each block in the backward pass: the numbers agree to 1e-6 and the
    tensors saved for the backward pass (the activation memory it exists to cut) shrink."""
    torch.manual_seed(0)
    model = MiniCPM(dataclasses.replace(tiny(d_model=64), n_layers=4))
    windows = torch.randint(0, model.spec.vocab_size, (4, 65))

    def run(checkpointed: bool):
        model.checkpoint_blocks = checkpointed
        model.zero_grad()
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.loss(windows)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()], sum(saved)

    plain, checkpointed = run(False), run(True)
    assert checkpointed[0] == pytest.approx(plain[0], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(plain[1], checkpointed[1]))
    assert checkpointed[2] < 0.5 * plain[2]
