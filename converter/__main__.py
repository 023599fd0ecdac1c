"""``python -m converter`` is the ``onnx2snn`` command."""
from .cli import entry_point

entry_point()
