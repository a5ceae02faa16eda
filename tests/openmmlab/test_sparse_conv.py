"""detlight.openmmlab.ops.sparse_conv against dense torch convolutions (values and gradients; no mmcv needed)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from detlight.openmmlab.ops import collect
from detlight.openmmlab.ops import sparse_conv as sc


def _voxels(n: int, shape: tuple[int, ...], batch: int, seed: int) -> Tensor:
    """``n`` distinct random active sites per sample, int32 ``[M, 1 + ndim]`` (batch first), unsorted."""
    g = torch.Generator().manual_seed(seed)
    volume = 1
    for s in shape:
        volume *= s
    rows = []
    for b in range(batch):
        flat = torch.randperm(volume, generator=g)[:n]
        coords = []
        for s in reversed(shape):
            coords.append(flat % s)
            flat = flat // s
        rows.append(torch.stack([torch.full((n,), b)] + coords[::-1], dim=1))
    out = torch.cat(rows)
    return out[torch.randperm(out.shape[0], generator=g)].to(torch.int32)


def _dense(features: Tensor, indices: Tensor, shape: tuple[int, ...], batch: int) -> Tensor:
    """``[B, C, *shape]`` grid with the features at their sites (channels first, as conv3d wants)."""
    grid = features.new_zeros((batch, *shape, features.shape[1]))
    grid = grid.index_put((*indices.long().t(),), features)
    return grid.movedim(-1, 1)


def _at(grid: Tensor, indices: Tensor) -> Tensor:
    """Rows of the channels-first dense grid at ``indices``."""
    return grid.movedim(1, -1)[(*indices.long().t(),)]


def _dense_weight(weight: Tensor) -> Tensor:
    """mmcv's (*kernel, in, out) filter as conv's (out, in, *kernel)."""
    nd = weight.dim() - 2
    return weight.permute(nd + 1, nd, *range(nd))


def _conv(nd: int) -> object:
    return {2: F.conv2d, 3: F.conv3d}[nd]


def _conv_t(nd: int) -> object:
    return {2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]


def _rand(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class _SparseConv(torch.autograd.Function):
    """The pair of ops as mmcv's ``SparseConvFunction`` chains them (forward, then backward for gradients)."""

    @staticmethod
    def forward(ctx, features, weight, pairs, counts, n_out, inverse, subm):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(features, weight, pairs, counts)
        ctx.flags = (inverse, subm)
        return sc.indice_conv_forward(features, weight, pairs, counts, n_out, inverse, subm)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        features, weight, pairs, counts = ctx.saved_tensors
        g_feat, g_w = sc.indice_conv_backward(features, weight, grad, pairs, counts, *ctx.flags)
        return g_feat, g_w, None, None, None, None, None


def _rulebook_reference(indices: Tensor, out_shape: tuple[int, ...], ksize: tuple[int, ...],
                        stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                        ) -> set[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """Brute-force (kernel offset, input site, output site) triples of a regular convolution."""
    triples = set()
    for row in indices.tolist():
        b, site = row[0], row[1:]
        for k_flat, k in enumerate(itertools.product(*[range(s) for s in ksize])):
            num = [site[d] + padding[d] - k[d] * dilation[d] for d in range(len(site))]
            if any(v % stride[d] for d, v in enumerate(num)):
                continue
            out = tuple(v // stride[d] for d, v in enumerate(num))
            if all(0 <= out[d] < out_shape[d] for d in range(len(out))):
                triples.add((k_flat, (b, *site), (b, *out)))
    return triples


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def test_family_registers_mmcv_names() -> None:
    table = collect()
    names = {"get_indice_pairs_2d_forward", "get_indice_pairs_3d_forward", "get_indice_pairs_4d_forward",
             "get_indice_pairs_2d_backward", "get_indice_pairs_3d_backward", "indice_conv_forward",
             "indice_conv_backward", "fused_indice_conv_forward", "indice_maxpool_forward",
             "indice_maxpool_backward"}
    assert names <= set(table)
    assert {table[n].family for n in names} == {"sparse_conv"}
    assert table["get_indice_pairs_3d_forward"].fn.__name__ == "get_indice_pairs_3d_forward"


@pytest.mark.parametrize(("ksize", "stride", "padding", "dilation"), [
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((3, 1, 1), (2, 1, 1), (0, 0, 0), (1, 1, 1)),  # SECOND's conv_out
    ((2, 3, 3), (1, 2, 2), (0, 1, 0), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2)),
])
def test_sparse_conv3d_matches_dense(ksize: tuple[int, int, int], stride: tuple[int, int, int],
                                     padding: tuple[int, int, int], dilation: tuple[int, int, int]) -> None:
    shape, batch, c_in, c_out = (7, 9, 8), 2, 3, 5
    idx = _voxels(40, shape, batch, seed=1)
    out_shape = tuple(_out_size(n, k, s, p, d) for n, k, s, p, d in zip(shape, ksize, stride, padding, dilation))
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(idx, batch, list(out_shape), list(shape), list(ksize),
                                                           list(stride), list(padding), list(dilation), [0, 0, 0],
                                                           0, 0)
    # Output sites: exactly where the dense conv of the occupancy grid is non-zero, sorted by (batch, z, y, x).
    occ = _dense(torch.ones(idx.shape[0], 1, dtype=torch.float64), idx, shape, batch)
    reach = F.conv3d(occ, torch.ones(1, 1, *ksize, dtype=torch.float64), stride=stride, padding=padding,
                     dilation=dilation)[:, 0]
    expected_sites = torch.nonzero(reach > 0).to(torch.int32)
    assert torch.equal(outids, expected_sites)
    assert outids.dtype == pairs.dtype == counts.dtype == torch.int32
    assert pairs.shape == (len(list(itertools.product(*[range(k) for k in ksize]))), 2, idx.shape[0])

    feats = _rand(idx.shape[0], c_in, seed=2).requires_grad_()
    weight = _rand(*ksize, c_in, c_out, seed=3).requires_grad_()
    out = _SparseConv.apply(feats, weight, pairs, counts, outids.shape[0], 0, 0)
    dense_out = F.conv3d(_dense(feats, idx, shape, batch), _dense_weight(weight), stride=stride, padding=padding,
                         dilation=dilation)
    ref = _at(dense_out, outids)
    torch.testing.assert_close(out, ref)
    upstream = _rand(*out.shape, seed=4)
    g_sparse = torch.autograd.grad((out * upstream).sum(), (feats, weight))
    g_dense = torch.autograd.grad((ref * upstream).sum(), (feats, weight))
    torch.testing.assert_close(g_sparse[0], g_dense[0])
    torch.testing.assert_close(g_sparse[1], g_dense[1])


def test_rulebook_layout_matches_brute_force() -> None:
    shape, batch = (5, 6, 4), 2
    idx = _voxels(12, shape, batch, seed=5)
    ksize, stride, padding, dilation = (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)
    out_shape = tuple(_out_size(n, 3, 2, 1, 1) for n in shape)
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(idx, batch, list(out_shape), list(shape), list(ksize),
                                                           list(stride), list(padding), list(dilation), [0, 0, 0],
                                                           0, 0)
    got = set()
    for k in range(pairs.shape[0]):
        n = int(counts[k])
        assert (pairs[k, :, n:] == -1).all()  # unused slots stay -1
        ins = pairs[k, 0, :n]
        assert torch.equal(ins, torch.sort(ins).values)  # inputs ascending within an offset
        for i, o in zip(ins.tolist(), pairs[k, 1, :n].tolist()):
            got.add((k, tuple(idx[i].tolist()), tuple(outids[o].tolist())))
    assert got == _rulebook_reference(idx, out_shape, ksize, stride, padding, dilation)


@pytest.mark.parametrize(("ksize", "dilation", "module_padding"), [(3, 1, 1), (3, 1, 0), (5, 1, 2), (3, 2, 0)])
def test_submanifold_conv3d_matches_dense(ksize: int, dilation: int, module_padding: int) -> None:
    shape, batch, c_in, c_out = (6, 7, 8), 2, 4, 3
    idx = _voxels(50, shape, batch, seed=6)
    # mmcv's kernel ignores the module's stride/padding for SubMConv: stride 1, padding k // 2 (not scaled by the
    # dilation, so a dilated SubMConv is off-centre: in = out - k // 2 + k_i * dilation).
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(idx, batch, list(shape), list(shape), [ksize] * 3,
                                                           [2] * 3, [module_padding] * 3, [dilation] * 3,
                                                           [0] * 3, 1, 0)
    assert outids is idx
    if dilation == 1:
        assert int(counts[(ksize ** 3) // 2]) == idx.shape[0]  # the centre offset pairs every site with itself
    feats = _rand(idx.shape[0], c_in, seed=7).requires_grad_()
    weight = _rand(ksize, ksize, ksize, c_in, c_out, seed=8).requires_grad_()
    out = _SparseConv.apply(feats, weight, pairs, counts, idx.shape[0], 0, 1)
    before, after = ksize // 2, (ksize - 1) * dilation - ksize // 2
    grid = F.pad(_dense(feats, idx, shape, batch), (before, after) * 3)
    ref = _at(F.conv3d(grid, _dense_weight(weight), dilation=dilation), idx)
    torch.testing.assert_close(out, ref)
    upstream = _rand(*out.shape, seed=9)
    for a, b in zip(torch.autograd.grad((out * upstream).sum(), (feats, weight)),
                    torch.autograd.grad((ref * upstream).sum(), (feats, weight))):
        torch.testing.assert_close(a, b)


def test_inverse_conv3d_is_the_transposed_conv_back_onto_the_input_sites() -> None:
    shape, batch, c_in, c_mid = (8, 7, 9), 1, 3, 4
    idx = _voxels(60, shape, batch, seed=10)
    ksize, stride, padding = 3, 2, 1
    out_shape = [_out_size(n, ksize, stride, padding, 1) for n in shape]
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(idx, batch, out_shape, list(shape), [ksize] * 3,
                                                           [stride] * 3, [padding] * 3, [1] * 3, [0] * 3, 0, 0)
    down = _rand(outids.shape[0], c_mid, seed=11).requires_grad_()
    weight = _rand(ksize, ksize, ksize, c_mid, c_in, seed=12).requires_grad_()
    # SparseInverseConv3d reuses the paired conv's rulebook with inverse=1 and outputs at its input sites.
    up = _SparseConv.apply(down, weight, pairs, counts, idx.shape[0], 1, 0)
    out_pad = [n - ((o - 1) * stride - 2 * padding + ksize) for n, o in zip(shape, out_shape)]
    dense = F.conv_transpose3d(_dense(down, outids, tuple(out_shape), batch), weight.permute(3, 4, 0, 1, 2),
                               stride=stride, padding=padding, output_padding=out_pad)
    ref = _at(dense, idx)
    torch.testing.assert_close(up, ref)
    upstream = _rand(*up.shape, seed=13)
    for a, b in zip(torch.autograd.grad((up * upstream).sum(), (down, weight)),
                    torch.autograd.grad((ref * upstream).sum(), (down, weight))):
        torch.testing.assert_close(a, b)


def test_transposed_sparse_conv2d_matches_dense() -> None:
    shape, batch, c_in, c_out = (5, 6), 2, 2, 3
    idx = _voxels(9, shape, batch, seed=14)
    ksize, stride, padding = 3, 2, 1
    out_shape = [(n - 1) * stride - 2 * padding + ksize for n in shape]
    outids, pairs, counts = sc.get_indice_pairs_2d_forward(idx, batch, out_shape, list(shape), [ksize] * 2,
                                                           [stride] * 2, [padding] * 2, [1] * 2, [0] * 2, 0, 1)
    dense_w = torch.ones(1, 1, ksize, ksize, dtype=torch.float64)
    occ = _dense(torch.ones(idx.shape[0], 1, dtype=torch.float64), idx, shape, batch)
    reach = F.conv_transpose2d(occ, dense_w, stride=stride, padding=padding)[:, 0]
    assert torch.equal(outids, torch.nonzero(reach > 0).to(torch.int32))
    feats = _rand(idx.shape[0], c_in, seed=15).requires_grad_()
    weight = _rand(ksize, ksize, c_in, c_out, seed=16).requires_grad_()
    out = _SparseConv.apply(feats, weight, pairs, counts, outids.shape[0], 0, 0)
    ref = _at(F.conv_transpose2d(_dense(feats, idx, shape, batch), weight.permute(2, 3, 0, 1), stride=stride,
                                 padding=padding), outids)
    torch.testing.assert_close(out, ref)
    upstream = _rand(*out.shape, seed=17)
    for a, b in zip(torch.autograd.grad((out * upstream).sum(), (feats, weight)),
                    torch.autograd.grad((ref * upstream).sum(), (feats, weight))):
        torch.testing.assert_close(a, b)


def test_sparse_maxpool3d_matches_dense_max_pool_from_zero() -> None:
    shape, batch, c = (6, 6, 7), 2, 4
    idx = _voxels(45, shape, batch, seed=18)
    ksize, stride, padding = 3, 2, 1
    out_shape = [_out_size(n, ksize, stride, padding, 1) for n in shape]
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(idx, batch, out_shape, list(shape), [ksize] * 3,
                                                           [stride] * 3, [padding] * 3, [1] * 3, [0] * 3, 0, 0)
    feats = _rand(idx.shape[0], c, seed=19).requires_grad_()
    out = sc.indice_maxpool_forward(feats.detach(), pairs, counts, outids.shape[0])
    inactive = _dense(torch.ones(idx.shape[0], 1, dtype=torch.float64), idx, shape, batch) == 0
    grid = _dense(feats, idx, shape, batch).masked_fill(inactive, float("-inf"))
    ref = _at(F.max_pool3d(grid, ksize, stride, padding), outids).clamp(min=0)
    torch.testing.assert_close(out, ref)
    assert (out == 0).any() and (out > 0).any()  # both regimes of the zero start are exercised
    upstream = _rand(*out.shape, seed=20)
    grad = sc.indice_maxpool_backward(feats.detach(), out, upstream, pairs, counts)
    (ref_grad,) = torch.autograd.grad((ref * upstream).sum(), (feats,))
    torch.testing.assert_close(grad, ref_grad)


def test_fused_forward_adds_bias_and_4d_rulebook_matches_brute_force() -> None:
    shape, batch = (4, 3, 4, 3), 1
    idx = _voxels(10, shape, batch, seed=21)
    out_shape = tuple(_out_size(n, 2, 2, 0, 1) for n in shape)
    outids, pairs, counts = sc.get_indice_pairs_4d_forward(idx, batch, list(out_shape), list(shape), [2] * 4,
                                                           [2] * 4, [0] * 4, [1] * 4, [0] * 4, 0, 0)
    got = {(k, tuple(idx[i].tolist()), tuple(outids[o].tolist()))
           for k in range(pairs.shape[0]) for i, o in zip(*pairs[k, :, :int(counts[k])].tolist())}
    assert got == _rulebook_reference(idx, out_shape, (2,) * 4, (2,) * 4, (0,) * 4, (1,) * 4)
    feats, weight, bias = _rand(idx.shape[0], 3, seed=22), _rand(2, 2, 2, 2, 3, 2, seed=23), _rand(2, seed=24)
    plain = sc.indice_conv_forward(feats, weight, pairs, counts, outids.shape[0], 0, 0)
    fused = sc.fused_indice_conv_forward(feats, weight, bias, pairs, counts, outids.shape[0], 0, 0)
    torch.testing.assert_close(fused, plain + bias)


def test_backward_rulebook_variant_equals_forward_and_empty_input() -> None:
    shape = (5, 5, 5)
    idx = _voxels(20, shape, 1, seed=25)
    args = ([3, 3, 3], [5, 5, 5], [3, 3, 3], [2, 2, 2], [1, 1, 1], [1, 1, 1], [0, 0, 0], 0, 0)
    fwd = sc.get_indice_pairs_3d_forward(idx, 1, *args)
    bwd = sc.get_indice_pairs_3d_backward(idx, torch.full((125,), -1, dtype=torch.int32), 1, *args)
    assert all(torch.equal(a, b) for a, b in zip(fwd, bwd))
    empty = torch.zeros(0, 4, dtype=torch.int32)
    outids, pairs, counts = sc.get_indice_pairs_3d_forward(empty, 1, *args)
    assert outids.shape == (0, 4) and pairs.shape == (27, 2, 0) and int(counts.sum()) == 0
    out = sc.indice_conv_forward(torch.zeros(0, 2), torch.zeros(3, 3, 3, 2, 4), pairs, counts, 0, 0, 0)
    assert out.shape == (0, 4)


def test_bad_geometry_and_channels_raise_clear_errors() -> None:
    from detlight.exceptions import DetLightError

    assert issubclass(sc.SparseConvInputError, DetLightError) and issubclass(sc.SparseConvInputError, ValueError)
    idx = _voxels(5, (4, 4, 4), 1, seed=26)
    with pytest.raises(sc.SparseConvInputError, match=r"indices must be \[N, 4\]"):
        sc.get_indice_pairs_3d_forward(idx[:, :3], 1, [4] * 3, [4] * 3, [3] * 3, [1] * 3, [1] * 3, [1] * 3,
                                       [0] * 3, 0, 0)
    with pytest.raises(sc.SparseConvInputError, match="kernel_size"):
        sc.get_indice_pairs_3d_forward(idx, 1, [4] * 3, [4] * 3, [3, 3], [1] * 3, [1] * 3, [1] * 3, [0] * 3, 0, 0)
    _, pairs, counts = sc.get_indice_pairs_3d_forward(idx, 1, [4] * 3, [4] * 3, [3] * 3, [1] * 3, [1] * 3,
                                                      [1] * 3, [0] * 3, 1, 0)
    with pytest.raises(sc.SparseConvInputError, match="features have 2 channels, filters expect 3"):
        sc.indice_conv_forward(torch.zeros(5, 2), torch.zeros(3, 3, 3, 3, 4), pairs, counts, 5, 0, 1)
    with pytest.raises(sc.SparseConvInputError, match="8 kernel positions, the rulebook 27"):
        sc.indice_conv_forward(torch.zeros(5, 2), torch.zeros(2, 2, 2, 2, 4), pairs, counts, 5, 1, 0)


def test_backend_choice_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from detlight.openmmlab import spconv_compat

    monkeypatch.delenv(spconv_compat.ENV_VAR, raising=False)
    monkeypatch.setattr(spconv_compat, "_spconv_installed", lambda: False)
    assert spconv_compat.sparse_conv_backend() == "torch"
    with pytest.raises(spconv_compat.SparseBackendError, match="spconv is not installed"):
        spconv_compat.sparse_conv_backend("spconv")
    monkeypatch.setattr(spconv_compat, "_spconv_installed", lambda: True)
    monkeypatch.setattr(spconv_compat, "_spconv_has_cuda", lambda: False)  # spconv's CPU build, or no GPU
    assert spconv_compat.sparse_conv_backend() == "torch"
    monkeypatch.setattr(spconv_compat, "_spconv_has_cuda", lambda: True)
    assert spconv_compat.sparse_conv_backend() == "spconv"
    monkeypatch.setenv(spconv_compat.ENV_VAR, "torch")
    assert spconv_compat.sparse_conv_backend() == "torch"
    monkeypatch.setenv(spconv_compat.ENV_VAR, "cuda")
    with pytest.raises(spconv_compat.SparseBackendError, match=r"DETLIGHT_SPARSE_CONV='cuda'.*auto, torch or spconv"):
        spconv_compat.sparse_conv_backend()
