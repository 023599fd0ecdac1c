"""Errors the converter raises; each names the file, node or argument, what is wrong and what to do."""
from runtime.errors import InputError, Onnx2SnnError, SNNFormatError


class ConversionError(Onnx2SnnError):
    """The model cannot be converted as given."""


class ModelLoadError(ConversionError):
    """The file is missing, is not ONNX, or fails onnx's checker."""


class UnsupportedOpError(ConversionError):
    """A node whose op has no spiking equivalent (or none implemented yet)."""


class CalibrationError(ConversionError):
    """Calibration data that does not fit the model (names, shapes, dtypes, NaN/Inf, empty)."""


__all__ = ["Onnx2SnnError", "ConversionError", "ModelLoadError", "UnsupportedOpError", "CalibrationError",
           "SNNFormatError", "InputError"]
