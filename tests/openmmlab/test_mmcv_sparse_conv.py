"""mmcv.ops' sparse modules and mmdet3d's SparseEncoder / SECOND on CPU, served by detlight.openmmlab.ops.sparse_conv.

Run with the OpenMMLab venv: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

pytestmark = pytest.mark.openmmlab

pytest.importorskip("mmcv")
pytest.importorskip("mmdet3d")

import detlight.openmmlab  # noqa: E402

detlight.openmmlab.install_ops()

from mmcv.cnn import build_conv_layer, build_norm_layer  # noqa: E402
from mmcv.ops import (  # noqa: E402
    SparseConv3d,
    SparseConvTensor,
    SparseInverseConv3d,
    SparseMaxPool3d,
    SparseSequential,
    SubMConv3d,
)

# mmcv's tests/test_ops/test_spconv.py (v1.7.2): four voxels of a KITTI-sized grid, two samples.
MMCV_VOXEL_FEATURES = [[6.56126, 0.9648336, -1.7339306, 0.315], [6.8162713, -2.480431, -1.3616394, 0.36],
                       [11.643568, -4.744306, -1.3580885, 0.16], [23.482342, 6.5036807, 0.5806964, 0.35]]
MMCV_COORDINATES = [[0, 12, 819, 131], [0, 16, 750, 136], [1, 16, 705, 232], [1, 35, 930, 469]]
MMCV_SPATIAL_SHAPE = [41, 1600, 1408]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed CPU the OpenMP waits of many small ops dominate otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ext_is_detlight() -> bool:
    import mmcv._ext as ext

    return bool(getattr(ext, "__detlight_ops__", False))


def _make_block(in_channels: int, out_channels: int, kernel_size: int, indice_key: str, conv_type: str,
                order: tuple[str, ...], stride: int = 1, padding: int = 0) -> SparseSequential:
    """The block mmcv's test builds (conv / BN1d(eps 1e-3, momentum 0.01) / ReLU in the given order)."""
    layers: list[nn.Module] = []
    for name in order:
        if name == "conv":
            extra = {} if conv_type == "SparseInverseConv3d" else {"stride": stride, "padding": padding}
            layers.append(build_conv_layer(dict(type=conv_type, indice_key=indice_key), in_channels, out_channels,
                                           kernel_size, bias=False, **extra))
        elif name == "norm":
            layers.append(build_norm_layer(dict(type="BN1d", eps=1e-3, momentum=0.01), out_channels)[1])
        else:
            layers.append(nn.ReLU(inplace=True))
    return SparseSequential(*layers)


def _voxels(n: int, shape: tuple[int, int, int], batch: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    volume = shape[0] * shape[1] * shape[2]
    rows = []
    for b in range(batch):
        flat = torch.randperm(volume, generator=g)[:n]
        z, y, x = flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]
        rows.append(torch.stack([torch.full((n,), b), z, y, x], dim=1))
    return torch.cat(rows).to(torch.int32)


def _dense(features: Tensor, indices: Tensor, shape: tuple[int, ...], batch: int) -> Tensor:
    grid = features.new_zeros((batch, *shape, features.shape[1]))
    return grid.index_put((*indices.long().t(),), features).movedim(-1, 1)


def _at(grid: Tensor, indices: Tensor) -> Tensor:
    return grid.movedim(1, -1)[(*indices.long().t(),)]


def _w(weight: Tensor) -> Tensor:
    return weight.permute(4, 3, 0, 1, 2)


def test_provider_serves_the_sparse_names() -> None:
    assert _ext_is_detlight()
    import mmcv._ext as ext

    assert ext.indice_conv_forward.__module__ == "detlight.openmmlab.ops.sparse_conv"
    assert not getattr(ext.get_indice_pairs_3d_forward, "detlight_missing_op", False)


def test_mmcv_make_sparse_convmodule_case() -> None:
    feats = torch.tensor(MMCV_VOXEL_FEATURES)
    coords = torch.tensor(MMCV_COORDINATES, dtype=torch.int32)
    block0 = _make_block(4, 16, 3, "test0", "SubMConv3d", ("conv", "norm", "act"))
    assert isinstance(block0[0], SubMConv3d) and block0[0].in_channels == 4 and block0[0].out_channels == 16
    assert isinstance(block0[1], nn.BatchNorm1d) and block0[1].eps == 0.001 and block0[1].momentum == 0.01
    assert isinstance(block0[2], nn.ReLU)
    out = block0(SparseConvTensor(feats, coords, MMCV_SPATIAL_SHAPE, 2))
    assert out.features.shape == (4, 16)
    # The four voxels have no neighbours: each SubMConv output is its own features times the centre weight.
    conv_only = block0[0](SparseConvTensor(feats, coords, MMCV_SPATIAL_SHAPE, 2))
    torch.testing.assert_close(conv_only.features, feats @ block0[0].weight[1, 1, 1])
    assert conv_only.indices is coords

    block1 = _make_block(4, 16, 3, "test1", "SparseInverseConv3d", ("norm", "act", "conv"))
    assert isinstance(block1[0], nn.BatchNorm1d) and isinstance(block1[1], nn.ReLU)
    assert isinstance(block1[2], SparseInverseConv3d)


def test_mmcv_sequential_with_indice_keys_matches_dense_values_and_gradients() -> None:
    torch.manual_seed(0)
    shape, batch = (9, 10, 11), 2
    idx = _voxels(60, shape, batch, seed=1)
    net = SparseSequential(
        SubMConv3d(3, 4, 3, padding=1, indice_key="subm1"),
        SparseConv3d(4, 5, 3, stride=2, padding=1, indice_key="down1"),
        SubMConv3d(5, 5, 3, padding=1, indice_key="subm2"),
        SparseInverseConv3d(5, 2, 3, indice_key="down1"),
    )
    feats = torch.randn(idx.shape[0], 3, requires_grad=True)
    out = net(SparseConvTensor(feats, idx, list(shape), batch))
    assert torch.equal(out.indices, idx) and list(out.spatial_shape) == list(shape)

    sub1, down, sub2, inv = net[0], net[1], net[2], net[3]
    active = _dense(torch.ones(idx.shape[0], 1), idx, shape, batch)
    x = F.conv3d(_dense(feats, idx, shape, batch), _w(sub1.weight), sub1.bias, padding=1) * active
    down_shape = tuple((n + 2 - 3) // 2 + 1 for n in shape)
    down_active = (F.conv3d(active, torch.ones(1, 1, 3, 3, 3), stride=2, padding=1) > 0)
    y = F.conv3d(x, _w(down.weight), down.bias, stride=2, padding=1) * down_active
    y = F.conv3d(y, _w(sub2.weight), sub2.bias, padding=1) * down_active
    out_pad = [n - ((o - 1) * 2 - 2 + 3) for n, o in zip(shape, down_shape)]
    z = F.conv_transpose3d(y, inv.weight.permute(3, 4, 0, 1, 2), inv.bias, stride=2, padding=1,
                           output_padding=out_pad)
    ref = _at(z, idx)
    torch.testing.assert_close(out.features, ref, rtol=1e-4, atol=1e-4)
    upstream = torch.randn_like(ref)
    params = [feats, *net.parameters()]
    for a, b in zip(torch.autograd.grad((out.features * upstream).sum(), params),
                    torch.autograd.grad((ref * upstream).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_mmcv_sparse_maxpool3d_matches_dense() -> None:
    shape, batch = (6, 8, 7), 2
    idx = _voxels(40, shape, batch, seed=2)
    feats = (torch.rand(idx.shape[0], 3) + 0.1).requires_grad_()
    out = SparseMaxPool3d(3, stride=2, padding=1)(SparseConvTensor(feats, idx, list(shape), batch))
    inactive = _dense(torch.ones(idx.shape[0], 1), idx, shape, batch) == 0
    dense = F.max_pool3d(_dense(feats, idx, shape, batch).masked_fill(inactive, float("-inf")), 3, 2, 1)
    ref = _at(dense, out.indices)
    torch.testing.assert_close(out.features, ref)
    (g,) = torch.autograd.grad(out.features.sum(), feats)
    (g_ref,) = torch.autograd.grad(ref.sum(), feats)
    torch.testing.assert_close(g, g_ref)


def _second_encoder(sparse_shape: list[int]) -> nn.Module:
    from mmdet3d.models.builder import build_middle_encoder

    # hv_second_secfpn_kitti.py's middle_encoder, on a smaller grid.
    return build_middle_encoder(dict(type="SparseEncoder", in_channels=4, sparse_shape=sparse_shape,
                                     order=("conv", "norm", "act")))


class _DenseEmulator:
    """Runs a sparse module tree densely: convs as dense convs masked to the active sites, BN/ReLU on active rows."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def run(self, module: nn.Module, grid: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        from mmdet3d.ops import SparseBasicBlock

        if isinstance(module, SparseBasicBlock):  # conv1-bn1-relu-conv2-bn2, + identity, relu (no downsample here)
            identity = grid
            for child in (module.conv1, module.norm1, module.relu, module.conv2, module.norm2):
                grid, active = self.run(child, grid, active)
            return self.run(module.relu, grid + identity, active)
        if isinstance(module, SparseSequential):
            for child in module:
                grid, active = self.run(child, grid, active)
            return grid, active
        if isinstance(module, (SubMConv3d, SparseConv3d)):
            if module.subm:
                grid = F.conv3d(grid, _w(module.weight), module.bias, padding=[k // 2 for k in module.kernel_size])
            else:
                ones = torch.ones(1, 1, *module.kernel_size, dtype=grid.dtype)
                active = F.conv3d(active, ones, stride=module.stride, padding=module.padding) > 0
                active = active.to(grid.dtype)
                grid = F.conv3d(grid, _w(module.weight), module.bias, stride=module.stride, padding=module.padding)
            return grid * active, active
        sites = torch.nonzero(active[:, 0] > 0)
        rows = module(_at(grid, sites))  # BatchNorm1d / ReLU on the active rows, in (batch, z, y, x) order
        return _dense(rows, sites, tuple(grid.shape[2:]), self.batch), active


@pytest.fixture
def float64_sparse_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """mmcv's wrappers admit float32/half only; route float64 to the same ``_ext`` functions for exact comparisons.

    In float32 a ReLU input within rounding of 0 can take opposite sides in the sparse and the dense computation,
    which moves a few gradient entries by O(1); float64 makes that vanishingly unlikely.
    """
    import mmcv._ext as ext
    from mmcv.ops import sparse_ops

    monkeypatch.setattr(sparse_ops, "indice_conv", lambda f, w, p, n, m, inverse=False, subm=False:
                        ext.indice_conv_forward(f, w, p, n, m, int(inverse), int(subm)))
    monkeypatch.setattr(sparse_ops, "indice_conv_backward", lambda f, w, g, p, n, inverse=False, subm=False:
                        ext.indice_conv_backward(f, w, g, p, n, int(inverse), int(subm)))


def _check_encoder_against_dense(enc: nn.Module, in_channels: int, grid_shape: tuple[int, int, int],
                                 voxels: int, out_shape: tuple[int, ...]) -> None:
    enc = enc.double()
    coors = _voxels(voxels, grid_shape, 2, seed=3)
    feats = torch.randn(coors.shape[0], in_channels, dtype=torch.float64, requires_grad=True)
    out = enc(feats, coors, 2)
    assert out.shape == out_shape

    emu = _DenseEmulator(batch=2)
    active = _dense(torch.ones(coors.shape[0], 1, dtype=torch.float64), coors, grid_shape, 2)
    grid, active = emu.run(enc.conv_input, _dense(feats, coors, grid_shape, 2), active)
    for layer in enc.encoder_layers:
        grid, active = emu.run(layer, grid, active)
    grid, _ = emu.run(enc.conv_out, grid, active)
    ref = grid.reshape(out_shape)
    torch.testing.assert_close(out, ref)

    upstream = torch.randn_like(out)
    params = [feats, *enc.parameters()]
    grads = torch.autograd.grad((out * upstream).sum(), params)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params)
    names = ["feats"] + [name for name, _ in enc.named_parameters()]
    for name, g, r in zip(names, grads, ref_grads):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, r, msg=lambda m, n=name: f"{n}: {m}")
    assert all(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.usefixtures("float64_sparse_ops")
def test_second_sparse_encoder_matches_dense_emulation_forward_and_backward() -> None:
    torch.manual_seed(0)
    # hv_second_secfpn_kitti.py's middle_encoder on a 41 x 24 x 16 grid; z: 41 -> 21 -> 11 -> 5 -> 2 (conv_out),
    # times 128 channels; x/y downsampled 8x.
    _check_encoder_against_dense(_second_encoder([41, 24, 16]), 4, (41, 24, 16), 200, (2, 256, 3, 2))


@pytest.mark.usefixtures("float64_sparse_ops")
def test_centerpoint_sparse_encoder_with_basic_blocks_matches_dense_emulation() -> None:
    from mmdet3d.models.builder import build_middle_encoder

    torch.manual_seed(1)
    # centerpoint_01voxel_second_secfpn_nus.py's pts_middle_encoder (SparseBasicBlock stages) on a 41 x 16 x 16 grid.
    enc = build_middle_encoder(dict(
        type="SparseEncoder", in_channels=5, sparse_shape=[41, 16, 16], output_channels=128,
        order=("conv", "norm", "act"), encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, [0, 1, 1]), (0, 0)), block_type="basicblock"))
    _check_encoder_against_dense(enc, 5, (41, 16, 16), 120, (2, 256, 2, 2))


def _hard_voxelize(points: Tensor, voxel_size: list[float], pc_range: list[float], max_points: int,
                   max_voxels: int) -> tuple[Tensor, Tensor, Tensor]:
    """A small torch hard voxelizer standing in for mmcv's Voxelization (a separate op family) in this test."""
    size = torch.tensor(voxel_size)
    low, high = torch.tensor(pc_range[:3]), torch.tensor(pc_range[3:])
    grid = torch.round((high - low) / size).long()
    cell = torch.floor((points[:, :3] - low) / size).long()
    keep = ((cell >= 0) & (cell < grid)).all(dim=1)
    points, cell = points[keep], cell[keep]
    key = (cell[:, 2] * grid[1] + cell[:, 1]) * grid[0] + cell[:, 0]
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((uniq.numel(),), points.shape[0]).scatter_reduce(0, inverse, torch.arange(points.shape[0]),
                                                                        "amin")
    order = torch.argsort(first)[:max_voxels]  # voxels in first-point order, as mmcv's kernel
    slot_of = torch.full((uniq.numel(),), -1)
    slot_of[order] = torch.arange(order.numel())
    voxel = slot_of[inverse]
    sort = torch.argsort(voxel * points.shape[0] + torch.arange(points.shape[0]))
    voxel_sorted = voxel[sort]
    start = torch.searchsorted(voxel_sorted, voxel_sorted, right=False)
    rank = torch.arange(sort.numel()) - start
    ok = (voxel_sorted >= 0) & (rank < max_points)
    voxels = points.new_zeros((order.numel(), max_points, points.shape[1]))
    voxels[voxel_sorted[ok], rank[ok]] = points[sort[ok]]
    num_points = torch.zeros(order.numel(), dtype=torch.int32).index_add_(
        0, voxel_sorted[ok], torch.ones(int(ok.sum()), dtype=torch.int32))
    c = cell[sort[ok]]
    coors = torch.zeros((order.numel(), 3), dtype=torch.int32)
    coors[voxel_sorted[ok]] = torch.stack([c[:, 2], c[:, 1], c[:, 0]], dim=1).to(torch.int32)
    return voxels, coors, num_points


class _Voxelizer(nn.Module):
    def __init__(self, voxel_size: list[float], pc_range: list[float], max_points: int, max_voxels: int) -> None:
        super().__init__()
        self.args = (voxel_size, pc_range, max_points, max_voxels)

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _hard_voxelize(points, *self.args)


def test_second_voxelnet_train_step_on_cpu() -> None:
    import mmdet3d
    from mmcv import Config
    from mmdet3d.core.bbox import LiDARInstance3DBoxes
    from mmdet3d.models import build_model

    base = f"{mmdet3d.__path__[0]}/.mim/configs/_base_/models/hv_second_secfpn_kitti.py"
    cfg = Config.fromfile(base).model
    # hv_second_secfpn_kitti.py with a 12.8 m x 12.8 m range (the full KITTI BEV is too big for a unit test).
    pc_range = [0, -6.4, -3, 12.8, 6.4, 1]
    cfg.voxel_layer.point_cloud_range = pc_range
    cfg.middle_encoder.sparse_shape = [41, 256, 256]
    for r in cfg.bbox_head.anchor_generator.ranges:
        r[0], r[1], r[3], r[4] = pc_range[0], pc_range[1], pc_range[3], pc_range[4]
    model = build_model(copy.deepcopy(cfg))
    model.train()
    vl = cfg.voxel_layer
    model.voxel_layer = _Voxelizer(vl.voxel_size, pc_range, vl.max_num_points, 16000)

    g = torch.Generator().manual_seed(0)
    points = []
    for _ in range(2):
        xyz = torch.rand(3000, 3, generator=g) * torch.tensor([12.8, 12.8, 3.0]) + torch.tensor([0.0, -6.4, -2.5])
        points.append(torch.cat([xyz, torch.rand(3000, 1, generator=g)], dim=1))
    boxes = [LiDARInstance3DBoxes(torch.tensor([[6.0, 0.5, -1.6, 3.9, 1.6, 1.56, 0.3]]))] * 2
    labels = [torch.tensor([2])] * 2
    metas = [dict(box_type_3d=LiDARInstance3DBoxes)] * 2
    voxels, coors, num_points = model.voxel_layer(points[0])
    assert voxels.shape[1:] == (5, 4) and int(num_points.min()) >= 1 and int(num_points.max()) <= 5
    assert coors.shape == (voxels.shape[0], 3) and int(coors[:, 0].max()) < 41  # (z, y, x) order
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = model.forward_train(points=points, img_metas=metas, gt_bboxes_3d=boxes, gt_labels_3d=labels)
    total = sum(v if isinstance(v, Tensor) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    enc_grads = [p.grad for p in model.middle_encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in enc_grads)
    assert sum(float(g.abs().sum()) for g in enc_grads) > 0
    before = model.middle_encoder.conv_input[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.middle_encoder.conv_input[0].weight)

