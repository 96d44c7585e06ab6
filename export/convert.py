"""Keras model -> TFLite (float32, float16, dynamic-range, full int8) and ONNX (float32, QDQ int8) bytes."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ONNX_OPSET = 17


def saved_model(model: Any, folder: Path) -> Path:
    # Keras 3 -> SavedModel freezes variables; from_concrete_functions would leave READ_VARIABLE ops.
    model.export(str(folder), format="tf_saved_model", verbose=False)
    return folder


def tflite_converter(saved: Path, precision: str, calib: np.ndarray | None = None, io_dtype: str = "float32",
                     allow_float_ops: bool = False) -> Any:
    """A TFLite converter set up for one precision; ``calib`` feeds int8 calibration one image at a time.

    ``allow_float_ops`` lets an int8 model keep some ops in float (layers left unquantized on purpose)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calib is None:
            raise ValueError("int8 conversion needs calibration images")
        converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float_ops else [])
        if io_dtype != "float32":  # float32: QUANTIZE / DEQUANTIZE ops inside the graph instead of numpy outside it
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
    return converter


def to_tflite(model: Any, precision: str, calib: np.ndarray | None = None, io_dtype: str = "float32",
              keep_float: tuple[str, ...] = ()) -> bytes:
    """Convert with the TFLite converter; with ``keep_float``, those nodes stay in float (TFLite's
    QuantizationDebugger with ``denylisted_nodes``), the rest is int8."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="signkit-sm-") as tmp:
        saved = saved_model(model, Path(tmp) / "sm")
        if not keep_float:
            return tflite_converter(saved, precision, calib, io_dtype).convert()
        if precision != "int8" or calib is None:
            raise ValueError("only an int8 build can keep layers in float")
        debugger = quantization_debugger(tflite_converter(saved, precision, calib, io_dtype, allow_float_ops=True), calib,
                                         tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(keep_float)))
        return debugger.get_nondebug_quantized_model()


def quantization_debugger(converter: Any, calib: np.ndarray, options: Any = None) -> Any:
    """TFLite's QuantizationDebugger over ``calib``, one image a step. It runs ``tf.lite.Interpreter`` itself,
    whose deprecation warning is TensorFlow's business, not the user's: silenced here."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        return tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([calib[i:i + 1]] for i in range(len(calib))), debug_options=options)


def to_onnx(model: Any, size: int, channels: int) -> Any:
    """tf2onnx from a traced function with a free batch dimension; returns an onnx.ModelProto."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec([None, size, size, channels], tf.float32, name="image")]

    @tf.function(input_signature=signature, autograph=False)
    def serve(image: tf.Tensor) -> tf.Tensor:
        return model(image, training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=ONNX_OPSET)
    return proto


class _Reader:
    """onnxruntime CalibrationDataReader over the calibration images (batches of 1, like TFLite)."""

    def __init__(self, name: str, calib: np.ndarray) -> None:
        self._items = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def onnx_prepped(float_model: Path, out: Path) -> Path:
    """onnxruntime's quant_pre_process (shape inference, graph optimisation): what quantize_static works on."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(float_model), str(out), skip_symbolic_shape=True)
    return out


def onnx_int8(float_model: Path, calib: np.ndarray, out: Path, keep_float: tuple[str, ...] = ()) -> Path:
    """quant_pre_process, then static QDQ quantisation, per-channel int8 weights and activations
    (``keep_float``: the names of nodes onnxruntime leaves in float, ``nodes_to_exclude``)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="signkit-onnx-") as tmp:
        prepped = onnx_prepped(float_model, Path(tmp) / "prepped.onnx")
        name = onnx.load(str(prepped)).graph.input[0].name
        quantize_static(str(prepped), str(out), calibration_reader(name, calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(keep_float))
    return out


def calibration_reader(input_name: str, images: np.ndarray) -> Any:
    """An onnxruntime CalibrationDataReader over model inputs (batches of 1)."""
    from onnxruntime.quantization import CalibrationDataReader

    return type("SignkitCalibrationReader", (_Reader, CalibrationDataReader), {})(input_name, images)
