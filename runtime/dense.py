"""The float32 dense path: onnxruntime runs one linear node (Conv or Gemm) on the (T x N) stack, block by block.

A layer whose input is too dense for the event scatter is a plain convolution or matrix product of the whole
time-unrolled batch: onnxruntime's CPU kernels (MLAS, the library that runs the ANN) do it at GEMM speed. To keep
the result deterministic and the same for every thread count, the stack is cut into blocks of a fixed number of
rows (independent of the threads), each block runs on one onnxruntime thread, and our own threads take whole
blocks; every output is therefore summed by one single-threaded MLAS call in MLAS's own fixed order (tested:
identical for 1 and 2 threads, and whatever the block holds). That order is not the event kernels' canonical
order: docs/runtime.md ("Numerics") says what is tested against what.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BLOCK_BYTES = 2 << 20  # input bytes per onnxruntime call: a few blocks per thread on the bundled models' chunks

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="onnx2snn-dense")
        return _pools[threads]


class DenseNode:
    """One Conv (2-D: 1-D Convs are given height 1) or Gemm node as a one-node onnxruntime session on float32."""

    def __init__(self, op: str, weight: np.ndarray, bias: np.ndarray, attrs: dict | None = None):
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + [None] * (weight.ndim - 1 if op == "Conv" else 1))]
        inits = [numpy_helper.from_array(np.ascontiguousarray(weight, np.float32), "w"),
                 numpy_helper.from_array(np.ascontiguousarray(bias, np.float32), "b")]
        node = helper.make_node(op, ["x", "w", "b"], ["y"], **(attrs or {}))
        graph = helper.make_graph([node], "dense", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one thread per call: each block is summed the same way for any thread count
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._local = threading.local()

    def _run_block(self, x: np.ndarray, out: np.ndarray) -> None:
        binding = getattr(self._local, "binding", None)
        if binding is None:
            binding = self._local.binding = self._session.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu", 0, np.float32, out.shape, out.ctypes.data)  # written in place, no copy
        self._session.run_with_iobinding(binding)

    def __call__(self, x: np.ndarray, out: np.ndarray, threads: int) -> np.ndarray:
        """out = the node applied to the C-contiguous float32 rows of x (axis 0), in blocks of BLOCK_BYTES."""
        per_row = max(1, x[:1].nbytes)
        rows = max(1, BLOCK_BYTES // per_row)
        blocks = [(start, min(x.shape[0], start + rows)) for start in range(0, x.shape[0], rows)]
        if threads <= 1 or len(blocks) == 1:
            for a, b in blocks:
                self._run_block(x[a:b], out[a:b])
        else:
            list(_pool(threads).map(lambda ab: self._run_block(x[ab[0]:ab[1]], out[ab[0]:ab[1]]), blocks))
        return out
