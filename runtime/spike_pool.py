"""The engine's handler for onnx2snn.SpikeMaxPool on dynamic (T, N, C, H, W) inputs (kernels/maxpool.py)."""
from __future__ import annotations

import numpy as np

from .errors import SNNFormatError
from .kernels.maxpool import spike_max_pool
from .reference_ops import max_pool_geometry


def window_indices(kernel: int, stride: int, pad: int, dilation: int, out_size: int, in_size: int) -> np.ndarray:
    """(out_size, kernel) input index of each window position, -1 where it falls outside the input."""
    index = np.arange(out_size)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return np.where((index >= 0) & (index < in_size), index, -1).astype(np.int64)


def spike_max_pool_handler(step, args, cache, timesteps: int):
    x = args[0][0]
    if x.ndim not in (4, 5):  # never fall back to a stateless per-step max: that would be a different op
        raise SNNFormatError(f"node '{step.name}': SpikeMaxPool supports 1-D and 2-D pooling, got a rank-{x.ndim - 1} input")
    per_step = x.shape[1:]
    kernel, strides, pads, dilations, size = max_pool_geometry(step.attrs, per_step)
    h, w = (1, per_step[2]) if len(per_step) == 3 else per_step[2:]
    rows = window_indices(kernel[0], strides[0], pads[0], dilations[0], size[0], h)
    cols = window_indices(kernel[1], strides[1], pads[1], dilations[1], size[1], w)
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(timesteps, -1, h, w)
    out = np.empty((timesteps, planes.shape[1]) + size, np.float32)
    spike_max_pool(planes, rows, cols, out)
    shape = per_step[:2] + ((size[1],) if len(per_step) == 3 else size)
    return out.reshape((timesteps,) + shape), True
