"""Plain NumPy implementations of the standard ONNX ops an SNN graph may contain, applied to one time step.

They are small and literal on purpose: the executable specification that the reference engine runs and
the oracle the Numba kernels are tested against. ``OPS`` is the registry; an op missing from it is not supported
by the runtime. Each takes (inputs, attributes) and returns a list of outputs.

Two numerics (design.md 5a, docs/runtime.md "Numerics"):

* ``OPS``, the float64 reference: sums accumulated in float64 and rounded once to float32, so that any summation
  order (BLAS here, the float64 event scatter) gives the same float32 currents and therefore the same spikes;
* ``FLOAT32_OPS``: Conv, Gemm and MatMul as float32 products added one by one, in float32, in the canonical order
  of the float32 event kernels (from the bias, input channel, then kernel row, then kernel column; for a matrix
  product, k ascending). Skipping a zero input does not change such a sum, so the event kernels equal these ops
  bit for bit: they are the kernels' oracle. Every other op is the float64 one.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import SNNFormatError

_ONNX_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}


def _spatial_pads(attrs: dict, in_spatial: tuple[int, ...], kernel: tuple[int, ...], strides, dilations) -> list[int]:
    """Begin/end pads in ONNX order [b1, b2, ..., e1, e2, ...], resolving auto_pad."""
    n = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * (2 * n)))
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def conv(inputs, attrs):
    """Conv (1-D or 2-D; 1-D is computed as 2-D with height 1), any groups, dilations and pads."""
    x, w, b, strides, pads, dilations, group, one_d = _conv_geometry(inputs, attrs)
    out = conv2d(x, w, b, strides, pads, dilations, group)
    return [out[:, :, 0, :] if one_d else out]


def _conv_geometry(inputs, attrs):
    """(x, w as 2-D, bias or None, strides, pads [t, l, b, r], dilations, group, whether the Conv was 1-D)."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    one_d = x.ndim == 3
    if one_d:
        x, w = x[:, :, None, :], w[:, :, None, :]
    if x.ndim != 4:
        raise SNNFormatError(f"Conv on rank-{x.ndim} input is not supported (1-D and 2-D only)")
    spatial = 1 if one_d else 2
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    kernel = list(w.shape[2:]) if not one_d else [w.shape[3]]
    pads = _spatial_pads(attrs, x.shape[2:] if not one_d else (x.shape[3],), tuple(kernel), strides, dilations)
    if one_d:
        strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    return x, w, b, strides, pads, dilations, int(attrs.get("group", 1)), one_d


def conv2d(x, w, b, strides, pads, dilations, group):
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    og = o // group
    out = np.empty((n, o) + win.shape[2:4], dtype=np.float64)
    w64 = w.astype(np.float64)
    for g in range(group):
        part = np.tensordot(win[:, g * cg:(g + 1) * cg], w64[g * og:(g + 1) * og], axes=([1, 4, 5], [1, 2, 3]))
        out[:, g * og:(g + 1) * og] = part.transpose(0, 3, 1, 2)
    if b is not None:
        out += b.astype(np.float64).reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def conv_float32(inputs, attrs):
    """Conv as ``conv``, with float32 products added one by one from the bias in canonical order (input channel,
    kernel row, kernel column), one tap at a time over every output."""
    x, w, b, strides, pads, dilations, group, one_d = _conv_geometry(inputs, attrs)
    n_out, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    og = n_out // group
    bias = np.zeros(n_out, np.float32) if b is None else b.astype(np.float32)
    acc = np.broadcast_to(bias.reshape(1, -1, 1, 1), (x.shape[0], n_out, ho, wo)).copy()
    w = w.astype(np.float32)
    for g in range(group):
        for ci in range(cg):
            for ky in range(kh):
                for kx in range(kw):
                    tap = xp[:, g * cg + ci, ky * dh:ky * dh + sh * (ho - 1) + 1:sh, kx * dw:kx * dw + sw * (wo - 1) + 1:sw]
                    acc[:, g * og:(g + 1) * og] += tap[:, None] * w[g * og:(g + 1) * og, ci, ky, kx].reshape(1, -1, 1, 1)
    return [acc[:, :, 0, :] if one_d else acc]


def _sum_k_float32(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """acc + a @ b in float32, the products of each k added one by one, k ascending."""
    for k in range(a.shape[-1]):
        acc = acc + a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return acc


def _gemm_operands(inputs, attrs, a_dtype):
    """A (in ``a_dtype``) and B (float32) of a Gemm, transposed as its attributes say, and C or None."""
    a, b = inputs[0].astype(a_dtype), inputs[1].astype(np.float32)
    a, b = (a.T if attrs.get("transA", 0) else a), (b.T if attrs.get("transB", 0) else b)
    return a, b, inputs[2] if len(inputs) > 2 and inputs[2] is not None else None


def gemm_float32(inputs, attrs):
    """Gemm as ``gemm``, in float32: from beta * C (rounded to float32), alpha * B rounded once, k ascending."""
    a, b, c = _gemm_operands(inputs, attrs, np.float32)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    if c is not None:
        acc = acc + (np.float32(attrs.get("beta", 1.0)) * c).astype(np.float32)
    return [_sum_k_float32(a, np.float32(attrs.get("alpha", 1.0)) * b, acc)]


def matmul_float32(inputs, attrs):
    """MatMul as ``matmul``, in float32, k ascending."""
    a, b = inputs[0], inputs[1]
    if not np.issubdtype(np.result_type(a, b), np.floating) or a.ndim < 2 or b.ndim < 2:
        return matmul(inputs, attrs)
    a, b = a.astype(np.float32), b.astype(np.float32)
    return [_sum_k_float32(a, b, np.zeros(np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])), np.float32))]


def gemm(inputs, attrs):
    a, b, c = _gemm_operands(inputs, attrs, np.float64)
    y = a @ (np.float32(attrs.get("alpha", 1.0)) * b).astype(np.float64)
    if c is not None:
        y = y + (np.float32(attrs.get("beta", 1.0)) * c).astype(np.float64)
    return [y.astype(np.float32)]


def matmul(inputs, attrs):
    a, b = inputs[0], inputs[1]
    if not np.issubdtype(np.result_type(a, b), np.floating):
        return [np.matmul(a, b)]
    return [np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)]


def pool_geometry(attrs: dict, x_shape: tuple) -> tuple[list[int], list[int], list[int], np.ndarray]:
    """kernel, strides, pads [t, l, b, r] and the per-output-position divisor of a 2-D AveragePool.

    Windows are clipped to the input; the divisor counts the positions inside the input, or also those in
    the explicit pads with count_include_pad (never the extra ceil_mode overhang), as onnxruntime does.
    """
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * len(kernel)))
    pads = _spatial_pads(attrs, x_shape[2:], tuple(kernel), strides, [1] * len(kernel))
    if len(kernel) == 1:
        kernel, strides, pads = [1] + kernel, [1] + strides, [0, pads[0], 0, pads[1]]
    h, w = (1, x_shape[2]) if len(x_shape) == 3 else x_shape[2:]
    ceil_mode, include_pad = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    ho = pool_output_size(h, kernel[0], strides[0], pads[0], pads[2], ceil_mode)
    wo = pool_output_size(w, kernel[1], strides[1], pads[1], pads[3], ceil_mode)
    divisor = np.empty((ho, wo), np.float32)
    for i in range(ho):
        y0 = i * strides[0] - pads[0]
        rows = (min(y0 + kernel[0], h + pads[2]) - max(y0, -pads[0])) if include_pad else (min(y0 + kernel[0], h) - max(y0, 0))
        for j in range(wo):
            x0 = j * strides[1] - pads[1]
            cols = (min(x0 + kernel[1], w + pads[3]) - max(x0, -pads[1])) if include_pad else (min(x0 + kernel[1], w) - max(x0, 0))
            divisor[i, j] = rows * cols
    return kernel, strides, pads, divisor


def average_pool(inputs, attrs):
    """AveragePool (1-D or 2-D) with ceil_mode and count_include_pad as ONNX defines them."""
    x = inputs[0]
    kernel, strides, pads, divisor = pool_geometry(attrs, x.shape)
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    h, w = x4.shape[2:]
    out = np.empty(x4.shape[:2] + divisor.shape, dtype=np.float32)
    for i in range(divisor.shape[0]):
        y0 = i * strides[0] - pads[0]
        for j in range(divisor.shape[1]):
            x0 = j * strides[1] - pads[1]
            window = x4[:, :, max(y0, 0):min(y0 + kernel[0], h), max(x0, 0):min(x0 + kernel[1], w)]
            out[:, :, i, j] = window.sum(axis=(2, 3), dtype=np.float64) / np.float64(divisor[i, j])
    return [out[:, :, 0, :] if x.ndim == 3 else out]


def pool_output_size(size: int, k: int, s: int, pad_begin: int, pad_end: int, ceil_mode: bool) -> int:
    span = size + pad_begin + pad_end - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pad_begin:  # the last window must start inside input or begin pad
        out -= 1
    return out


def max_pool_geometry(attrs: dict, x_shape: tuple) -> tuple[list[int], list[int], list[int], list[int], tuple[int, int]]:
    """kernel, strides, pads [t, l, b, r], dilations and output size of a 1-D or 2-D MaxPool (as 2-D)."""
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = _spatial_pads(attrs, x_shape[2:], tuple(kernel), strides, dilations)
    if n == 1:
        kernel, strides, dilations, pads = [1] + kernel, [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    h, w = (1, x_shape[2]) if len(x_shape) == 3 else x_shape[2:]
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    size = tuple(pool_output_size(d, (k - 1) * dl + 1, st, pb, pe, ceil_mode)
                 for d, k, dl, st, pb, pe in zip((h, w), kernel, dilations, strides, pads[:2], pads[2:]))
    return kernel, strides, pads, dilations, size


def pool_windows(kernel, strides, pads, dilations, size, h, w):
    """For each output position: the (rows, cols) of its window inside the input, in scan order."""
    for i in range(size[0]):
        rows = [i * strides[0] - pads[0] + k * dilations[0] for k in range(kernel[0])]
        rows = [r for r in rows if 0 <= r < h]
        for j in range(size[1]):
            cols = [j * strides[1] - pads[1] + k * dilations[1] for k in range(kernel[1])]
            yield i, j, rows, [c for c in cols if 0 <= c < w]


def max_pool(inputs, attrs):
    """MaxPool (1-D or 2-D): the maximum over each window's positions inside the input."""
    x = inputs[0]
    kernel, strides, pads, dilations, size = max_pool_geometry(attrs, x.shape)
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    out = np.empty(x4.shape[:2] + size, dtype=x.dtype)
    for i, j, rows, cols in pool_windows(kernel, strides, pads, dilations, size, *x4.shape[2:]):
        out[:, :, i, j] = x4[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return [out[:, :, 0, :] if x.ndim == 3 else out]


def spike_max_pool_step(x: np.ndarray, totals: np.ndarray, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """One step of onnx2snn.SpikeMaxPool: each window passes the current input of the position whose running
    total of inputs (steps before this one) is largest; ties go to the larger current input, then to the
    first position in scan order. The output rate thus tracks the largest input rate. Returns (out, totals)."""
    kernel, strides, pads, dilations, size = max_pool_geometry(attrs, x.shape)
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    t4 = totals.reshape(x4.shape)
    out = np.empty(x4.shape[:2] + size, dtype=np.float32)
    for i, j, rows, cols in pool_windows(kernel, strides, pads, dilations, size, *x4.shape[2:]):
        positions = [(r, c) for r in rows for c in cols]
        tot = np.stack([t4[:, :, r, c] for r, c in positions], axis=-1)
        cur = np.stack([x4[:, :, r, c] for r, c in positions], axis=-1)
        best = np.zeros(x4.shape[:2], dtype=np.int64)
        for k in range(1, len(positions)):  # strict comparisons keep the first of equals
            best_tot = np.take_along_axis(tot, best[..., None], axis=-1)[..., 0]
            best_cur = np.take_along_axis(cur, best[..., None], axis=-1)[..., 0]
            better = (tot[..., k] > best_tot) | ((tot[..., k] == best_tot) & (cur[..., k] > best_cur))
            best = np.where(better, k, best)
        out[:, :, i, j] = np.take_along_axis(cur, best[..., None], axis=-1)[..., 0]
    totals = totals + x.astype(np.float64)
    return (out[:, :, 0, :] if x.ndim == 3 else out), totals


def conv_transpose(inputs, attrs):
    """ConvTranspose (1-D or 2-D), explicit pads and output_padding, any groups and dilations."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "") or "output_shape" in attrs:
        raise SNNFormatError("ConvTranspose with auto_pad or output_shape is not supported; export with explicit pads")
    one_d = x.ndim == 3
    if one_d:
        x, w = x[:, :, None, :], w[:, :, None, :]
    n_sp = 1 if one_d else 2
    strides = list(attrs.get("strides", [1] * n_sp))
    dilations = list(attrs.get("dilations", [1] * n_sp))
    pads = list(attrs.get("pads", [0] * (2 * n_sp)))
    extra = list(attrs.get("output_padding", [0] * n_sp))
    if one_d:
        strides, dilations, pads, extra = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]], [0] + extra
    group = int(attrs.get("group", 1))
    n, c, h, wd = x.shape
    cg, og, kh, kw = c // group, w.shape[1], w.shape[2], w.shape[3]
    full_h = (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1 + extra[0]
    full_w = (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1 + extra[1]
    full = np.zeros((n, og * group, full_h, full_w), np.float64)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for g in range(group):
        for ky in range(kh):
            for kx in range(kw):
                contrib = np.tensordot(x64[:, g * cg:(g + 1) * cg], w64[g * cg:(g + 1) * cg, :, ky, kx], axes=([1], [0]))
                y0, x0 = ky * dilations[0], kx * dilations[1]
                full[:, g * og:(g + 1) * og, y0:y0 + (h - 1) * strides[0] + 1:strides[0],
                     x0:x0 + (wd - 1) * strides[1] + 1:strides[1]] += contrib.transpose(0, 3, 1, 2)
    out = full[:, :, pads[0]:full_h - pads[2], pads[1]:full_w - pads[3]]
    if b is not None:
        out = out + b.astype(np.float64).reshape(1, -1, 1, 1)
    out = out.astype(np.float32)
    return [out[:, :, 0, :] if one_d else out]


def _nearest_source(out_size: int, in_size: int, scale: float, coord_mode: str, nearest_mode: str) -> np.ndarray:
    """Input index of each output index along one axis, per ONNX Resize (mode "nearest")."""
    o = np.arange(out_size, dtype=np.float64)
    if coord_mode == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif coord_mode == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(o)
    elif coord_mode == "align_corners":
        src = o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(o)
    elif coord_mode == "asymmetric":
        src = o / scale
    elif coord_mode == "tf_half_pixel_for_nn":
        src = (o + 0.5) / scale
    else:
        raise SNNFormatError(f"Resize coordinate_transformation_mode {coord_mode!r} is not supported")
    rounding = {"round_prefer_floor": lambda v: np.where(v - np.floor(v) == 0.5, np.floor(v), np.round(v)),
                "round_prefer_ceil": lambda v: np.where(v - np.floor(v) == 0.5, np.ceil(v), np.round(v)),
                "floor": np.floor, "ceil": np.ceil}
    if nearest_mode not in rounding:
        raise SNNFormatError(f"Resize nearest_mode {nearest_mode!r} is not supported")
    return np.clip(rounding[nearest_mode](src), 0, in_size - 1).astype(np.int64)


def resize(inputs, attrs):
    """Resize with mode "nearest" (a copy of input values, so linear in them), by scales or sizes."""
    x = inputs[0]
    if attrs.get("mode", "nearest") != "nearest":
        raise SNNFormatError(f"Resize mode {attrs.get('mode')!r} is not supported (nearest only)")
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].size else None
    sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and inputs[3].size else None
    if sizes is not None:
        sizes = [int(v) for v in sizes]
        scales = [s / d for s, d in zip(sizes, x.shape)]
    elif scales is not None:
        scales = [float(v) for v in scales]
        sizes = [int(np.floor(d * s)) for d, s in zip(x.shape, scales)]
    else:
        raise SNNFormatError("Resize needs scales or sizes")
    out = x
    for axis, (size, scale) in enumerate(zip(sizes, scales)):
        if size != x.shape[axis]:
            index = _nearest_source(size, x.shape[axis], scale, attrs.get("coordinate_transformation_mode", "half_pixel"),
                                    attrs.get("nearest_mode", "round_prefer_floor"))
            out = np.take(out, index, axis=axis)
    return [np.ascontiguousarray(out)]


def global_average_pool(inputs, attrs):
    x = inputs[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(np.float32)]


def reduce_mean(inputs, attrs):
    x = inputs[0]
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = [int(a) for a in inputs[1]]
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    axes = tuple(int(a) % x.ndim for a in axes)
    return [x.mean(axis=axes, keepdims=bool(attrs.get("keepdims", 1)), dtype=np.float64).astype(np.float32)]


def flatten(inputs, attrs):
    x = inputs[0]
    axis = int(attrs.get("axis", 1)) % max(x.ndim, 1)
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def reshape(inputs, attrs):
    x, shape = inputs[0], [int(v) for v in inputs[1]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return [x.reshape(shape)]


def transpose(inputs, attrs):
    x = inputs[0]
    perm = attrs.get("perm", list(range(x.ndim))[::-1])
    return [np.ascontiguousarray(x.transpose(perm))]


def _axes(inputs, attrs):
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in inputs[1]]
    return None


def squeeze(inputs, attrs):
    x, axes = inputs[0], _axes(inputs, attrs)
    return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]


def unsqueeze(inputs, attrs):
    x, axes = inputs[0], _axes(inputs, attrs)
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(sorted(a % rank for a in axes)))]


def concat(inputs, attrs):
    return [np.concatenate(inputs, axis=int(attrs["axis"]))]


def pad(inputs, attrs):
    """Pad: constant, reflect, edge or wrap (all of them copy or fix values, so they are linear per step)."""
    x = inputs[0]
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise SNNFormatError(f"Pad mode {mode!r} is not supported")
    pads = [int(v) for v in (inputs[1] if len(inputs) > 1 else attrs["pads"])]
    value = float(inputs[2].reshape(-1)[0]) if len(inputs) > 2 and inputs[2] is not None and inputs[2].size else float(attrs.get("value", 0.0))
    if len(inputs) > 3 and inputs[3] is not None:
        axes = [int(a) % x.ndim for a in inputs[3]]
    else:
        axes = list(range(x.ndim))
    widths = [(0, 0)] * x.ndim
    k = len(axes)
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + k])
    if any(v < 0 for pair in widths for v in pair):
        raise SNNFormatError("Pad with negative pads is not supported")
    if mode == "constant":
        return [np.pad(x, widths, constant_values=np.array(value, x.dtype))]
    return [np.pad(x, widths, mode=mode)]


def shape(inputs, attrs):
    dims = np.array(inputs[0].shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end")
    return [dims[start:end]]


def gather(inputs, attrs):
    return [np.take(inputs[0], inputs[1].astype(np.int64), axis=int(attrs.get("axis", 0)))]


def _binary(fn: Callable) -> Callable:
    def op(inputs, attrs):
        out = fn(inputs[0], inputs[1])
        return [out.astype(np.result_type(inputs[0], inputs[1]), copy=False)]
    op.__doc__ = f"Broadcasting {fn.__name__}."
    return op


def _div(a, b):
    return a // b if np.issubdtype(np.result_type(a, b), np.integer) else a / b


def sum_(inputs, attrs):
    out = inputs[0]
    for x in inputs[1:]:
        out = out + x
    return [out]


def identity(inputs, attrs):
    return [inputs[0]]


OPS: dict[str, Callable] = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Sum": sum_,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "ReduceMean": reduce_mean,
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Concat": concat,
    "Pad": pad,
    "Shape": shape,
    "Gather": gather,
    "Identity": identity,
    "MaxPool": max_pool,
    "SpikeMaxPool": max_pool,  # on a constant input the gated pool is the plain max; dynamic inputs are stateful
    "ConvTranspose": conv_transpose,
    "Resize": resize,
    "Cast": lambda inputs, attrs: [inputs[0].astype(_ONNX_DTYPES.get(int(attrs["to"]), np.float32))],
}
FLOAT32_OPS: dict[str, Callable] = dict(OPS, Conv=conv_float32, Gemm=gemm_float32, MatMul=matmul_float32)
