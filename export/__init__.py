"""signkit export: compile a trained Keras model into verified TFLite and ONNX builds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
