"""Sparse convolution (``mmcv.ops.SparseConv3d`` / ``SubMConv3d`` / ``SparseInverseConv3d`` / ``SparseMaxPool3d``).

Replaces the spconv 1.x kernels that mmcv-full compiles into ``mmcv._ext`` (``get_indice_pairs_{2,3,4}d_forward``,
``get_indice_pairs_{2,3}d_backward``, ``indice_conv_forward`` / ``_backward``, ``fused_indice_conv_forward``,
``indice_maxpool_forward`` / ``_backward``) with vectorised torch, so mmcv's sparse modules and mmdet3d's
``SparseEncoder`` (SECOND, CenterPoint, PartA2's middle encoders) run and train on CPU without a compiled extension.

How it computes:

- **Rulebook** (``get_indice_pairs_*``): every (active input, kernel offset) candidate is generated at once as an
  ``[N, K]`` table of output coordinates; a coordinate is linearised to one integer key ``batch * volume + row-major
  offset`` (int32 when every key fits). Regular and transposed convolutions deduplicate the keys with ``torch.unique`` (sorted), submanifold
  convolutions look the keys up among the input keys with ``torch.searchsorted`` (a sorted table instead of the
  dense ``batch * volume`` grid the CUDA kernel allocates; SECOND's grid would need ~370 MB per sample).
- **Convolution**: gather - GEMM - scatter-add per kernel offset (one ``index_select``, one ``mm`` and one
  ``index_add_`` for each of the <= 27 offsets; there is no loop over voxels). Backward does the same with the
  transposed weights and returns the weight gradient in mmcv's ``(*kernel, in, out)`` layout.
- **Max pooling**: one ``scatter_reduce(amax)`` over all pairs; backward routes the gradient to every input equal to
  its output (mmcv's rule: ties all receive it).

Semantics follow mmcv-full's CUDA launcher (the build users train with):

- submanifold convolutions ignore the module's stride and padding (stride 1, padding ``kernel // 2``, not scaled by
  the dilation, so a dilated one is off-centre as in mmcv) and return the input ``indices`` tensor itself;
- output indices of a regular / transposed convolution are ordered by ``(batch, z, y, x)`` ascending (the CUDA
  kernel's ``unique`` order; mmcv's CPU functor in spconv 1.x used first-appearance order instead);
- ``indice_pairs`` is ``int32 [K, 2, N]`` filled with -1, row ``k`` holding ``indice_pair_num[k]`` (input, output)
  pairs with inputs ascending (deterministic; the CUDA kernel writes them in atomic order);
- max pooling starts from zeros, so an output never goes below 0 (as mmcv's kernel).

Limits: the rulebook is rebuilt on every call that mmcv makes (layers sharing an ``indice_key`` reuse it, as in mmcv);
the ``*_backward`` rulebook variants ignore the scratch ``grid`` they are given (it only saved an allocation in the
CUDA build). On CUDA tensors the same code runs, correct but slower than spconv's kernels. Duplicate input
coordinates are invalid input, as in mmcv. Measurements and the backend table: docs/sparse-conv.md.

Choice: this torch path is the default because it needs no extra dependency, serves mmcv's own names (so every
OpenMMLab config using ``SubMConv3d`` etc. works unchanged) and trains on CPU, which spconv 2.x's CPU build does not
(its backward calls ``torch.cuda.current_stream()``). When spconv 2.x with CUDA is installed, mmdet3d uses it for
its sparse layers and this module is not involved; :mod:`detlight.openmmlab.spconv_compat` documents and applies that
run-time choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from detlight.exceptions import DetLightError
from detlight.openmmlab.ops import ext_op

__all__ = [
    "SparseConvInputError",
    "fused_indice_conv_forward",
    "get_indice_pairs",
    "get_indice_pairs_2d_backward",
    "get_indice_pairs_2d_forward",
    "get_indice_pairs_3d_backward",
    "get_indice_pairs_3d_forward",
    "get_indice_pairs_4d_forward",
    "indice_conv_backward",
    "indice_conv_forward",
    "indice_maxpool_backward",
    "indice_maxpool_forward",
]


class SparseConvInputError(DetLightError, ValueError):
    """Indices, geometry or channels that do not fit together (the message names the value and what fits)."""


def _check_geometry(indices: Tensor, ndim: int, **dims: Sequence[int]) -> None:
    if indices.dim() != 2 or indices.shape[1] != ndim + 1:
        raise SparseConvInputError(f"sparse conv indices must be [N, {ndim + 1}] (batch, {ndim} coordinates), "
                         f"got shape {tuple(indices.shape)}")
    for key, value in dims.items():
        if len(value) != ndim:
            raise SparseConvInputError(f"sparse conv `{key}` must have {ndim} entries (one per spatial dim), got {list(value)}")
    if any(int(k) <= 0 for k in dims["kernel_size"]):
        raise SparseConvInputError(f"sparse conv kernel_size must be positive, got {list(dims['kernel_size'])}")


def _kernel_offsets(kernel_size: Sequence[int], device: torch.device) -> Tensor:
    """``[K, ndim]`` kernel positions in row-major order (the flattened index is mmcv's weight index)."""
    axes = [torch.arange(int(k), device=device) for k in kernel_size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))


def _linearise(batch: Tensor, coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Key ``batch * prod(shape) + row-major(coords)`` in ``coords``' dtype; ``coords`` [..., ndim]."""
    key = batch.to(coords.dtype)
    for axis in range(coords.shape[-1]):
        key = key * shape[axis] + coords[..., axis]
    return key


def _delinearise(keys: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`_linearise`: ``[M, 1 + ndim]`` int32 (batch first)."""
    cols = []
    rest = keys
    for axis in range(len(shape) - 1, -1, -1):
        cols.append(rest % shape[axis])
        rest = torch.div(rest, shape[axis], rounding_mode="floor")
    cols.append(rest)
    return torch.stack(cols[::-1], dim=1).to(torch.int32)


def _pairs_from_table(out_index: Tensor, num_in: int) -> tuple[Tensor, Tensor]:
    """``[N, K]`` table of output rows (-1: no pair) to mmcv's ``indice_pairs [K, 2, N]`` and ``indice_num [K]``."""
    table = out_index.t()
    valid = table >= 0
    counts = valid.sum(dim=1)
    slot = valid.cumsum(dim=1) - 1
    k_idx, j_idx = valid.nonzero(as_tuple=True)
    pairs = torch.full((table.shape[0], 2, num_in), -1, dtype=torch.int32, device=out_index.device)
    s = slot[k_idx, j_idx]
    pairs[k_idx, 0, s] = j_idx.to(torch.int32)
    pairs[k_idx, 1, s] = table[k_idx, j_idx].to(torch.int32)
    return pairs, counts.to(torch.int32)


def get_indice_pairs(indices: Tensor, batch_size: int, out_shape: Sequence[int], spatial_shape: Sequence[int],
                     kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], out_padding: Sequence[int], subm: int | bool, transpose: int | bool,
                     ) -> list[Tensor]:
    """Build the rulebook of one sparse convolution (any number of spatial dims).

    Args:
        indices: ``[N, 1 + ndim]`` integer (batch, coordinates) of the active input sites.
        batch_size: number of samples (keys are ``batch * volume + offset``).
        out_shape: output spatial shape (mmcv computes it from the conv geometry).
        spatial_shape: input spatial shape.
        kernel_size, stride, padding, dilation, out_padding: per-dim conv geometry (``out_padding`` only shapes
            ``out_shape``, which the caller already applied).
        subm: submanifold convolution: outputs are the inputs (stride 1, padding ``kernel // 2``).
        transpose: transposed convolution (``out = in * stride - padding + k * dilation``).

    Returns:
        ``[out_indices int32 [M, 1 + ndim], indice_pairs int32 [K, 2, N], indice_pair_num int32 [K]]``.
    """
    ndim = len(spatial_shape)
    _check_geometry(indices, ndim, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                    out_shape=out_shape)
    device = indices.device
    subm, transpose = bool(subm), bool(transpose)
    ksize, dil = [int(k) for k in kernel_size], [int(d) for d in dilation]
    if subm:
        strd, pad, out_shape = [1] * ndim, [k // 2 for k in ksize], spatial_shape
    else:
        strd, pad = [int(v) for v in stride], [int(v) for v in padding]
    oshape = [int(v) for v in out_shape]
    n_in = indices.shape[0]
    n_batch = max(int(batch_size), int(indices[:, 0].max()) + 1 if n_in else 1)
    # int32 keys when every valid key fits (SECOND's 41 x 1600 x 1408 grid: up to 23 samples); int32 math is faster.
    dtype = torch.int32 if n_batch * math.prod(oshape) < 2**31 else torch.int64
    idx = indices.to(dtype)
    offsets = _kernel_offsets(ksize, device).to(dtype)  # [K, ndim]
    if not transpose and all(v == 1 for v in strd):
        # out = in + (pad - k * dilation): per offset one shift of the key; bounds checked per dim.
        shift = torch.tensor(pad, dtype=dtype, device=device) - offsets * torch.tensor(dil, dtype=dtype, device=device)
        ok = torch.ones((n_in, offsets.shape[0]), dtype=torch.bool, device=device)
        for axis in range(ndim):
            moved = idx[:, 1 + axis, None] + shift[None, :, axis]
            ok &= (moved >= 0) & (moved < oshape[axis])
        in_keys = _linearise(idx[:, 0], idx[:, 1:], oshape)
        keys = in_keys[:, None] + _linearise(torch.zeros_like(shift[:, 0]), shift, oshape)[None, :]
    else:
        coords = idx[:, None, 1:]  # [N, 1, ndim]
        strd_t, pad_t = torch.tensor(strd, dtype=dtype, device=device), torch.tensor(pad, dtype=dtype, device=device)
        dil_t, shape_t = torch.tensor(dil, dtype=dtype, device=device), torch.tensor(oshape, dtype=dtype, device=device)
        if transpose:
            out = coords * strd_t - pad_t + offsets * dil_t
            ok = ((out >= 0) & (out < shape_t)).all(dim=-1)
        else:
            num = coords + pad_t - offsets * dil_t
            out = torch.div(num, strd_t, rounding_mode="floor")
            ok = ((num % strd_t == 0) & (out >= 0) & (out < shape_t)).all(dim=-1)
        keys = _linearise(idx[:, :1], out, oshape)  # [N, K]
        in_keys = None

    if subm:
        assert in_keys is not None
        sorted_keys, order = torch.sort(in_keys, stable=True)
        keys = torch.where(ok, keys, -1)  # never a key of an input
        pos = (torch.searchsorted(sorted_keys, keys, right=True) - 1).clamp_(min=0)  # last duplicate wins, as the grid
        out_index = torch.where(sorted_keys[pos] == keys, order[pos], -1)
        pairs, counts = _pairs_from_table(out_index, n_in)
        return [indices, pairs, counts]

    uniq, inverse = torch.unique(keys[ok], sorted=True, return_inverse=True)
    out_index = torch.full(keys.shape, -1, dtype=torch.int64, device=device)
    out_index[ok] = inverse
    pairs, counts = _pairs_from_table(out_index, n_in)
    return [_delinearise(uniq, oshape), pairs, counts]


def _forward_rulebook(ndim: int) -> Callable[..., list[Tensor]]:
    def op(indices: Tensor, batch_size: int, out_shape: Sequence[int], spatial_shape: Sequence[int],
           kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           out_padding: Sequence[int], subm: int, transpose: int) -> list[Tensor]:
        if len(spatial_shape) != ndim:
            raise SparseConvInputError(f"get_indice_pairs_{ndim}d_forward: spatial_shape must have {ndim} dims, "
                             f"got {list(spatial_shape)}")
        return get_indice_pairs(indices, batch_size, out_shape, spatial_shape, kernel_size, stride, padding,
                                dilation, out_padding, subm, transpose)

    op.__name__ = op.__qualname__ = f"get_indice_pairs_{ndim}d_forward"
    op.__doc__ = f"``mmcv._ext.get_indice_pairs_{ndim}d_forward``: the rulebook of a {ndim}-d sparse convolution."
    return ext_op(how="torch")(op)


def _backward_rulebook(ndim: int) -> Callable[..., list[Tensor]]:
    def op(indices: Tensor, grid: Tensor, batch_size: int, out_shape: Sequence[int], spatial_shape: Sequence[int],
           kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           out_padding: Sequence[int], subm: int, transpose: int) -> list[Tensor]:
        if len(spatial_shape) != ndim:
            raise SparseConvInputError(f"get_indice_pairs_{ndim}d_backward: spatial_shape must have {ndim} dims, "
                             f"got {list(spatial_shape)}")
        return get_indice_pairs(indices, batch_size, out_shape, spatial_shape, kernel_size, stride, padding,
                                dilation, out_padding, subm, transpose)

    op.__name__ = op.__qualname__ = f"get_indice_pairs_{ndim}d_backward"
    op.__doc__ = (f"``mmcv._ext.get_indice_pairs_{ndim}d_backward``: as the forward variant; the scratch ``grid`` "
                  "(a preallocated hash table in the CUDA build) is not needed and left untouched.")
    return ext_op(how="torch")(op)


get_indice_pairs_2d_forward = _forward_rulebook(2)
get_indice_pairs_3d_forward = _forward_rulebook(3)
get_indice_pairs_4d_forward = _forward_rulebook(4)
get_indice_pairs_2d_backward = _backward_rulebook(2)
get_indice_pairs_3d_backward = _backward_rulebook(3)


def _rows(indice_pairs: Tensor, k: int, n: int, side: int) -> Tensor:
    return indice_pairs[k, side, :n].to(device=indice_pairs.device, dtype=torch.int64)


def _identity_offset(indice_pairs: Tensor, counts: list[int], n_in: int, n_out: int) -> int:
    """The kernel offset whose pairs are ``(i, i)`` for every site (a submanifold conv's centre), or -1."""
    if n_in != n_out or n_in == 0:
        return -1
    k = max(range(len(counts)), key=counts.__getitem__)  # the fullest offset, as mmcv's kernel picks it
    if counts[k] != n_in:
        return -1
    return k if torch.equal(indice_pairs[k, 0, :n_in], indice_pairs[k, 1, :n_in]) else -1


def _flat_filters(filters: Tensor, features: Tensor, indice_pairs: Tensor) -> Tensor:
    if filters.dim() < 3:
        raise SparseConvInputError(f"sparse conv filters must be (*kernel, in, out), got shape {tuple(filters.shape)}")
    c_in, c_out = filters.shape[-2], filters.shape[-1]
    if features.shape[-1] != c_in:
        raise SparseConvInputError(f"sparse conv features have {features.shape[-1]} channels, filters expect {c_in}")
    flat = filters.reshape(-1, c_in, c_out)
    if flat.shape[0] != indice_pairs.shape[0]:
        raise SparseConvInputError(f"sparse conv filters have {flat.shape[0]} kernel positions, the rulebook "
                         f"{indice_pairs.shape[0]} (an inverse conv must use the kernel size of its paired conv)")
    return flat


@ext_op(how="torch")
def indice_conv_forward(features: Tensor, filters: Tensor, indice_pairs: Tensor, indice_pair_num: Tensor,
                        num_activate_out: int, inverse: int = 0, subm: int = 0) -> Tensor:
    """``mmcv._ext.indice_conv_forward``: gather - GEMM - scatter-add per kernel offset.

    Args:
        features: ``[N_in, C_in]``.
        filters: ``(*kernel, C_in, C_out)``.
        indice_pairs: ``[K, 2, L]`` rulebook; row 0 inputs, row 1 outputs (swapped when ``inverse``).
        indice_pair_num: ``[K]`` pair counts.
        num_activate_out: number of output rows.
        inverse: the rulebook belongs to the paired (downsampling) conv; gather from row 1, scatter to row 0.
        subm: submanifold: an offset pairing every site with itself is one plain GEMM (no gather / scatter).
    """
    weight = _flat_filters(filters, features, indice_pairs)
    counts = indice_pair_num.tolist()
    same = _identity_offset(indice_pairs, counts, features.shape[0], int(num_activate_out)) if subm else -1
    if same >= 0:
        out = features @ weight[same]
    else:
        out = features.new_zeros((int(num_activate_out), weight.shape[-1]))
    src, dst = (1, 0) if inverse else (0, 1)
    for k, n in enumerate(counts):
        if n <= 0 or k == same:
            continue
        rows_in = _rows(indice_pairs, k, n, src)
        rows_out = _rows(indice_pairs, k, n, dst)
        out.index_add_(0, rows_out, features.index_select(0, rows_in) @ weight[k])
    return out


@ext_op(how="torch")
def indice_conv_backward(features: Tensor, filters: Tensor, out_bp: Tensor, indice_pairs: Tensor,
                         indice_pair_num: Tensor, inverse: int = 0, subm: int = 0) -> list[Tensor]:
    """``mmcv._ext.indice_conv_backward``: ``[grad features, grad filters (*kernel, C_in, C_out)]``."""
    weight = _flat_filters(filters, features, indice_pairs)
    grad_w = torch.zeros_like(weight)
    counts = indice_pair_num.tolist()
    same = _identity_offset(indice_pairs, counts, features.shape[0], out_bp.shape[0]) if subm else -1
    if same >= 0:
        grad_in = out_bp @ weight[same].t()
        grad_w[same] = features.t() @ out_bp
    else:
        grad_in = torch.zeros_like(features)
    src, dst = (1, 0) if inverse else (0, 1)
    for k, n in enumerate(counts):
        if n <= 0 or k == same:
            continue
        rows_in = _rows(indice_pairs, k, n, src)
        rows_out = _rows(indice_pairs, k, n, dst)
        g_out = out_bp.index_select(0, rows_out)
        grad_w[k] = features.index_select(0, rows_in).t() @ g_out
        grad_in.index_add_(0, rows_in, g_out @ weight[k].t())
    return [grad_in, grad_w.view(filters.shape)]


@ext_op(how="torch")
def fused_indice_conv_forward(features: Tensor, filters: Tensor, bias: Tensor, indice_pairs: Tensor,
                              indice_pair_num: Tensor, num_activate_out: int, inverse: int = 0,
                              subm: int = 0) -> Tensor:
    """``mmcv._ext.fused_indice_conv_forward``: the convolution plus ``bias`` (mmcv's ``fused_bn`` path)."""
    return indice_conv_forward(features, filters, indice_pairs, indice_pair_num, num_activate_out, inverse,
                               subm) + bias


def _all_pairs(indice_pairs: Tensor, indice_pair_num: Tensor) -> tuple[Tensor, Tensor]:
    """Every (input, output) pair of the rulebook, flattened (kernel offset major)."""
    counts = indice_pair_num.to(device=indice_pairs.device, dtype=torch.int64)
    used = torch.arange(indice_pairs.shape[2], device=indice_pairs.device)[None] < counts[:, None]
    return indice_pairs[:, 0][used].to(torch.int64), indice_pairs[:, 1][used].to(torch.int64)


@ext_op(how="torch")
def indice_maxpool_forward(features: Tensor, indice_pairs: Tensor, indice_pair_num: Tensor,
                           num_activate_out: int) -> Tensor:
    """``mmcv._ext.indice_maxpool_forward``: per-channel max over each output's inputs, starting from 0."""
    rows_in, rows_out = _all_pairs(indice_pairs, indice_pair_num)
    out = features.new_zeros((int(num_activate_out), features.shape[1]))
    src = features.index_select(0, rows_in)
    return out.scatter_reduce_(0, rows_out[:, None].expand_as(src), src, reduce="amax", include_self=True)


@ext_op(how="torch")
def indice_maxpool_backward(features: Tensor, out_features: Tensor, out_bp: Tensor, indice_pairs: Tensor,
                            indice_pair_num: Tensor) -> Tensor:
    """``mmcv._ext.indice_maxpool_backward``: the output gradient goes to every input equal to the output."""
    rows_in, rows_out = _all_pairs(indice_pairs, indice_pair_num)
    is_max = features.index_select(0, rows_in) == out_features.index_select(0, rows_out)
    grad = out_bp.index_select(0, rows_out) * is_max
    return torch.zeros_like(features).index_add_(0, rows_in, grad)
