"""onnx2snn converter: turn a trained ANN exported to ONNX into a spiking neural network description.

Method: Deng & Gu, "Optimal Conversion of Conventional ANNs to SNNs" (ICLR 2021): threshold ReLU with a
per-layer V_th from calibration data, IF neurons with soft reset, and a shift of V_th/(2T) per step.
"""
from .convert import ConvertedSNN, convert
from .errors import CalibrationError, ConversionError, InputError, ModelLoadError, Onnx2SnnError, SNNFormatError, UnsupportedOpError

__all__ = ["convert", "ConvertedSNN", "Onnx2SnnError", "ConversionError", "ModelLoadError", "UnsupportedOpError",
           "CalibrationError", "SNNFormatError", "InputError"]
