"""Math of each architecture against naive references on small inputs."""

import math

import pytest
import torch

from ttslens.sae.base import ARCHITECTURES, SAEConfig, make_sae
from ttslens.sae.kron import mand


def _make(arch, d=12, F=48, k=4, seed=0, **kw):
    torch.manual_seed(seed)
    m = make_sae(SAEConfig(arch=arch, d_in=d, d_sae=F, k=k, **kw))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    return m


def _grads(model, x, dead, plain, monkeypatch):
    monkeypatch.setenv("TTSLENS_PLAIN_TORCH", "1" if plain else "0")
    model.zero_grad()
    out = model(x, dead_F=dead)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fast_path_matches_plain_torch(arch, monkeypatch):
    """The sparse kernels give the same loss and gradients as dense autograd."""
    model = _make(arch)
    x = torch.randn(64, 12)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    loss_fast, g_fast = _grads(model, x, dead, False, monkeypatch)
    loss_ref, g_ref = _grads(model, x, dead, True, monkeypatch)
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-5, atol=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_selection_recomputes_the_chosen_values_in_fp32():
    """Under bf16_selection the dense product is bf16 (it only chooses); the chosen values and their gradients
    are exactly those of the fp32 path at the same indices."""
    from ttslens.sae.sparse_ops import bf16_selection, dense_preacts, gather_preacts

    torch.manual_seed(0)
    x, W, b = torch.randn(96, 64), torch.randn(256, 64) / 8, torch.randn(256) / 10
    idx = torch.randint(0, 256, (96, 8))

    def run(select):
        xs, Ws, bs = (t.clone().requires_grad_() for t in (x, W, b))
        with bf16_selection(select):
            pre = dense_preacts(xs, Ws, bs)
            vals = gather_preacts(xs, Ws, bs, pre, idx)
        vals.pow(2).sum().backward()
        return pre, vals.detach(), [t.grad for t in (xs, Ws, bs)]

    pre16, v16, g16 = run(True)
    pre32, v32, g32 = run(False)
    assert pre16.dtype == torch.bfloat16 and pre32.dtype == torch.float32
    torch.testing.assert_close(v16, v32, rtol=1e-6, atol=1e-6)
    assert not torch.equal(v16, pre16.float().gather(1, idx))  # not the bf16-rounded values
    for a, c in zip(g16, g32, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_bf16_selection_changes_the_step_only_at_near_ties(arch, monkeypatch):
    """A whole step under bf16_selection: the loss is the fp32 step's up to choices at near-ties (well under 1%)."""
    from ttslens.sae.sparse_ops import bf16_selection

    model = _make(arch, d=64, F=256, k=8)
    x = torch.randn(128, 64)
    dead = torch.zeros(256, dtype=torch.bool)
    dead[::3] = True
    loss32, _ = _grads(model, x, dead, False, monkeypatch)
    with bf16_selection():
        loss16, _ = _grads(model, x, dead, False, monkeypatch)
    assert abs(float(loss16) / float(loss32) - 1) < 5e-3


def test_topk_matches_naive():
    model = _make("topk")
    x = torch.randn(20, 12)
    pre = (x - model.b_dec) @ model.W_enc.T + model.b_enc
    ref = torch.zeros_like(pre)
    for b in range(20):
        top = pre[b].argsort(descending=True)[:4]
        ref[b, top] = pre[b, top].relu()
    torch.testing.assert_close(model.encode(x), ref)
    torch.testing.assert_close(model.reconstruct(x), ref @ model.W_dec + model.b_dec)


def test_batchtopk_training_selects_batch_top_nk():
    model = _make("batchtopk", k=3)
    x = torch.randn(10, 12) * torch.linspace(0.1, 3, 10)[:, None]  # very unequal token norms
    out = model(x)
    pre = model.preacts(x).relu()
    keep = torch.zeros_like(pre, dtype=torch.bool).view(-1)
    keep[pre.view(-1).topk(30).indices] = True
    ref = pre * keep.view_as(pre)
    got = torch.zeros_like(pre).index_put((out.rows, out.idx), out.vals.detach(), accumulate=True)
    torch.testing.assert_close(got, ref)
    counts = (got > 0).sum(1)
    assert counts.sum() == 30 and counts.max() > 3  # per-token L0 varies, mean is k


def test_batchtopk_threshold_inference_is_per_token():
    model = _make("batchtopk", k=4)
    model.train()
    for _ in range(50):
        model(torch.randn(128, 12))
    theta = float(model.threshold[0])
    assert torch.all(model.threshold == theta)
    assert theta > 0 and int(model.threshold_updates) == 50
    model.eval()
    x = torch.randn(7, 12)
    z = model.encode(x)
    pre = model.preacts(x)
    torch.testing.assert_close(z, torch.where(pre > theta, pre, torch.zeros(())))
    torch.testing.assert_close(model.encode(x[:1]), z[:1])  # no dependence on the batch


def test_hierarchical_loss_matches_k_reconstructions():
    model = _make("hierarchical", k=6)
    x = torch.randn(9, 12)
    out = model(x)
    vals, idx = out.vals, out.idx
    assert torch.all(vals[:, :-1] >= vals[:, 1:])  # sorted descending
    denom = (x - x.mean(0)).pow(2).sum()
    levels = []
    for j in range(1, 7):
        recon = model.b_dec + torch.stack([vals[b, :j] @ model.W_dec[idx[b, :j]] for b in range(9)])
        levels.append((x - recon).pow(2).sum() / denom)
    torch.testing.assert_close(out.terms["hierarchical"], torch.stack(levels).mean())
    torch.testing.assert_close(out.recon, recon)  # the full-K level comes out of the same pass
    with torch.no_grad():  # the evaluation path (the loss alone, no gradients formed) gives the same value
        torch.testing.assert_close(model(x).terms["hierarchical"], out.terms["hierarchical"].detach())
    # inference at any k <= K is the prefix of the sorted top-K
    z2 = model.encode(x, k=2)
    assert torch.all((z2 > 0).sum(1) <= 2)
    with pytest.raises(ValueError, match="serves k in 1..6"):
        model.encode(x, k=7)


def test_hierarchical_backward_is_chunked(monkeypatch):
    """Chunk boundaries do not change the loss or gradients."""
    import ttslens.sae.hierarchical as H

    model = _make("hierarchical", k=5)
    x = torch.randn(40, 12)
    _, g_one = _grads(model, x, None, False, monkeypatch)
    monkeypatch.setattr(H, "CHUNK_FLOATS", 5 * 12 * 3)  # 3 rows per chunk
    _, g_many = _grads(model, x, None, False, monkeypatch)
    for n in g_one:
        torch.testing.assert_close(g_one[n], g_many[n])


def test_mand_definition():
    u = torch.tensor([[0.5, -1.0]])
    v = torch.tensor([[2.0, 0.0, 8.0]])
    ref = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(mand(u, v), ref)


@pytest.mark.parametrize("m, n", [(2, 4), (3, 5)])
def test_kron_pruned_topk_equals_full_search(m, n):
    model = _make("kron", d=10, F=m * n * 16, k=5, kron_m=m, kron_n=n)
    with torch.no_grad():
        model.b_uv.normal_()  # heads with no positive u or v as well
    x = torch.randn(30, 10)
    pre = model.preacts(x)  # dense mAND over all F latents
    vals, idx = model.encode_sparse(x)
    ref_vals = pre.topk(5, dim=1).values
    torch.testing.assert_close(vals.sort(1, descending=True).values, ref_vals)
    torch.testing.assert_close(pre.gather(1, idx), vals)
    # the flat layout is (head, i, j)
    u, v = model.uv(x)
    g, i, j = 3, 1, 2
    f = (g * m + i) * n + j
    torch.testing.assert_close(pre[:, f], mand(u[:, g], v[:, g])[:, i, j])


def test_kron_rejects_bad_shape():
    with pytest.raises(ValueError, match="divisible by kron_m"):
        make_sae(SAEConfig(arch="kron", d_in=8, d_sae=30, k=2))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fold_scale_preserves_latents(arch):
    model = _make(arch)
    model.eval()
    if arch == "batchtopk":
        model.threshold.fill_(0.05)
    x = torch.randn(16, 12)
    s = 3.7
    z_scaled = model.encode(s * x)
    recon_scaled = model.reconstruct(s * x)
    model.fold_scale(s)
    torch.testing.assert_close(model.encode(x), z_scaled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.reconstruct(x), recon_scaled / s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(arch="nope"), "unknown SAE architecture"),
        (dict(arch="topk", k=0), "k must be in 1..d_sae"),
        (dict(arch="batchtopk", k=100), "k must be in 1..d_sae"),
    ],
)
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SAEConfig(d_in=8, d_sae=16, **kw)


def test_decoder_gradient_projection():
    model = _make("topk")
    model(torch.randn(8, 12)).loss.backward()
    model.remove_parallel_grads()
    dots = (model.W_dec.grad * model.W_dec).sum(1)
    assert dots.abs().max() < 1e-6
    assert math.isclose(float(model.W_dec.detach().norm(dim=1).mean()), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("case", ["skewed", "few_positive", "ties_and_zeros"])
def test_batchtopk_select_is_exact(case):
    model = _make("batchtopk", d=4, F=300, k=5)
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(64, 300, generator=g)
    if case == "skewed":  # one token holds most of the batch's mass; the sampled cut misses it
        pre[7] = pre[7].abs() * 50
    elif case == "few_positive":  # fewer positive entries than B*k: keep all positives
        pre = -pre.abs()
        pre[::9, ::13] = 1.0
    else:
        pre = torch.randint(-2, 3, (64, 300), generator=g).float()
    rows, cols = model.select(pre)
    assert torch.all(rows[1:] >= rows[:-1])
    pos = pre.clamp_min(0).reshape(-1)
    n = min(64 * 5, int((pos > 0).sum()))
    got = torch.zeros(64 * 300)
    got[rows * 300 + cols] = 1
    assert int(got.sum()) == n and torch.all(pre[rows, cols] > 0)
    # same multiset of values as the exact flat top-n (ties may pick different positions)
    torch.testing.assert_close(pre[rows, cols].sort().values, pos.topk(n).values.sort().values)


@pytest.mark.parametrize("case", ["continuous", "near_ties", "ties", "dense_column", "full_size"])
def test_batchtopk_strided_sample_path_is_exact(case, monkeypatch):
    """Large B*F: the cut comes from a strided sample. The kept set is still the exact flat top B*k
    (torch.topk); with ties at the cut, the first tied entries in row-major order fill it up."""
    import ttslens.sae.batchtopk as BT

    B, F, k = (1024, 1024, 32) if case == "full_size" else (96, 512, 8)  # full size: B*F > 2 * SAMPLE
    if case != "full_size":
        monkeypatch.setattr(BT, "SAMPLE", 4096 if case != "dense_column" else B)
    strides = []
    real_stride = BT.sample_stride
    monkeypatch.setattr(BT, "sample_stride", lambda n, f: strides.append(real_stride(n, f)) or strides[-1])
    g = torch.Generator().manual_seed(2)
    pre = torch.randn(B, F, generator=g)
    if case == "near_ties":  # every value one float32 ulp from its neighbours: 1 + i * 2^-23, shuffled
        pre = 1 + torch.randperm(B * F, generator=g).float().view(B, F) * 2.0**-23
    elif case == "ties":  # a few distinct values: the cut falls inside a large block of equal entries
        pre = torch.randint(-4, 5, (B, F), generator=g).float() / 4
    elif case == "dense_column":  # the unfixed stride (= F) would sample column 0 only, which is large
        pre[:, 0] = 10 + pre[:, 0].abs()
    model = _make("batchtopk", d=4, F=F, k=k)
    rows, cols = model.select(pre)
    assert strides and strides[0] > 1 and math.gcd(strides[0], F) == 1  # the strided path, coprime to F
    assert torch.all(rows[1:] >= rows[:-1])
    n = B * k
    kept = rows * F + cols
    assert kept.numel() == n
    flat = pre.reshape(-1)
    top = flat.topk(n)
    if case == "ties":
        t = top.values.min()
        assert torch.all(flat[kept] >= t) and int((flat > t).sum()) < n
        assert torch.equal(flat[kept].sort().values, top.values.sort().values)  # same multiset as topk
        tied = (flat == t).nonzero().squeeze(1)
        kept_ties = kept[flat[kept] == t].sort().values
        assert torch.equal(kept_ties, tied[: kept_ties.numel()])  # the first ties in row-major order
    else:
        assert torch.equal(kept.sort().values, top.indices.sort().values)
