"""Errors the runtime raises for bad input; each message names the file, node or argument and what to do."""


class Onnx2SnnError(Exception):
    """Base of every error onnx2snn raises for bad input (the CLI turns these into exit code 2)."""


class SNNFormatError(Onnx2SnnError):
    """An SNN file that this reader cannot or must not run."""


class InputError(Onnx2SnnError, ValueError):
    """Bad feeds or arguments: wrong names, shapes, dtypes, NaN/Inf, bad thread or step counts."""
