"""onnx2snn runtime: run an SNN graph description (``*.snn.onnx``) on CPU, event-driven and multi-core.

The runtime never imports the converter: the SNN file is the whole interface between them.
"""
from .errors import InputError, Onnx2SnnError, SNNFormatError
from .format import FORMAT_VERSION, load_snn
from .session import InferenceSession, NodeArg

__all__ = ["InferenceSession", "NodeArg", "load_snn", "FORMAT_VERSION", "Onnx2SnnError", "SNNFormatError", "InputError"]
