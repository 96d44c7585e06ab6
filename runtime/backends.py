"""Inference backends, imported lazily: ai-edge-litert, else tflite-runtime, for .tflite; onnxruntime for .onnx.

Never falls back to full TensorFlow (600 MB on a Pi). Each backend takes the float32 tensor
``to_model_input`` makes and returns float32 probabilities, quantising and dequantising with
the model's own scale and zero-point.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import BackendUnavailableError, BuildError


def load_tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        raise BackendUnavailableError(
            "no TFLite interpreter installed; pip install ai-edge-litert (or tflite-runtime, which needs numpy<2)"
        ) from None


def onnx_session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed; pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise BuildError(f"{path} is not a loadable ONNX model ({str(err).splitlines()[0][:120]}); re-export it") from None


def _quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


class TFLiteBackend:
    """A TFLite interpreter that resizes its batch dimension to take every crop of a frame at once.

    An interpreter holds one set of tensors: two threads calling set/invoke/get at once raise
    "There is at least 1 reference to internal data" or, worse, read each other's outputs. So
    ``run`` holds a lock from resize to the copied-out result: a shared backend answers one call at a
    time, each with its own input's result. Open one Classifier per thread to run them in parallel.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter_class = load_tflite_interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise BuildError(f"{path} is not a valid TFLite model ({str(err).splitlines()[0][:100]}); it may be "
                             f"truncated or another format: re-export it") from None
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        sig = self._in.get("shape_signature", self._in["shape"])
        self.supports_batch = len(sig) > 0 and int(sig[0]) == -1
        self.input_shape = tuple(int(v) for v in self._in["shape"][1:])
        self.output_classes = int(self._out["shape"][-1])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_quant = self._in["quantization"]
        self.output_quant = self._out["quantization"]
        self._batch = int(self._in["shape"][0])
        self._lock = threading.Lock()

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [len(x), *self.input_shape])
            self.interpreter.allocate_tensors()
            self._batch = len(x)
        scale, zp = self.input_quant
        if self.input_dtype != np.float32 and scale:
            x = _quantize(x, scale, zp, self.input_dtype)
        self.interpreter.set_tensor(self._in["index"], x.astype(self.input_dtype, copy=False))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])  # a copy: the next invoke cannot change it
        scale, zp = self.output_quant
        if y.dtype != np.float32 and scale:
            y = (y.astype(np.float32) - zp) * scale
        return y.astype(np.float32, copy=False)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if self.supports_batch or len(x) == 1:
                return self._invoke(x)
            return np.concatenate([self._invoke(x[i:i + 1]) for i in range(len(x))])


class ONNXBackend:
    """An onnxruntime session; ``InferenceSession.run`` is thread-safe, so no lock is needed."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.session = onnx_session(path, threads)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._in_name = inp.name
        self.supports_batch = not isinstance(inp.shape[0], int)
        self.input_shape = tuple(int(v) if isinstance(v, int) else -1 for v in inp.shape[1:])
        self.output_classes = int(out.shape[-1]) if isinstance(out.shape[-1], int) else -1
        self.input_dtype = np.dtype(np.float32)
        self.output_dtype = np.dtype(np.float32)
        self.input_quant = (0.0, 0)
        self.output_quant = (0.0, 0)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.supports_batch or len(x) == 1:
            return self.session.run(None, {self._in_name: x.astype(np.float32, copy=False)})[0]
        return np.concatenate([self.session.run(None, {self._in_name: x[i:i + 1]})[0] for i in range(len(x))])


def open_backend(path: Path, backend: str, threads: int = 1) -> TFLiteBackend | ONNXBackend:
    if backend == "tflite":
        return TFLiteBackend(path, threads)
    if backend == "onnx":
        return ONNXBackend(path, threads)
    raise BuildError(f"{path}: unknown backend {backend!r}")
