"""The last step of every conversion: the SNN it emits must run in our own runtime.

Why: a file ``convert`` writes and ``run`` then rejects is the worst failure a converter can have (issue #16: a
bias-less Gemm). So before a conversion returns, the SNN is compiled by ``runtime.InferenceSession`` and run for
one step on a few calibration samples, and each output's shape is checked against the threshold-ReLU ANN's in
onnxruntime on the same samples. Anything that fails is refused at conversion time, naming the node.
"""
from __future__ import annotations

import numpy as np
import onnx

from runtime import InferenceSession
from runtime.errors import Onnx2SnnError

from .calibrate import fixed_batch, ort_session
from .errors import ConversionError

SAMPLES = 2   # two, not one: a size-1 batch broadcasts where a real batch would not


def dry_run(snn: onnx.ModelProto, ann: onnx.ModelProto, samples: dict[str, np.ndarray]) -> None:
    """Run ``snn`` for one step on the first samples (the model's fixed batch size, if it has one); raise a
    ConversionError naming the node or output if the runtime refuses it or an output's shape differs from the ANN's."""
    n = fixed_batch(snn) or min(SAMPLES, len(next(iter(samples.values()))))
    feeds = {k: v[:n] for k, v in samples.items()}
    try:
        got = InferenceSession(snn, threads=1).run(None, feeds, timesteps=1)
    except Onnx2SnnError as exc:
        raise ConversionError(f"the converted SNN does not run in the runtime, so it is not written: {exc}; "
                              "this is a converter bug, please report it with the model") from None
    names = [o.name for o in ann.graph.output]
    want = ort_session(ann).run(names, feeds)
    for name, snn_out, ann_out in zip(names, got, want):
        if np.shape(snn_out) != np.shape(ann_out):
            raise ConversionError(f"output '{name}': the converted SNN gives shape {list(np.shape(snn_out))} where the "
                                  f"threshold-ReLU ANN gives {list(np.shape(ann_out))}, so it is not written; "
                                  "this is a converter bug, please report it with the model")
