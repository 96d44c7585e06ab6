"""signkit runtime: TensorFlow-free preprocessing and inference for traffic-sign builds.

What a Raspberry Pi runs (numpy, OpenCV and one inference library, loaded lazily when a build is opened):

    preprocess   the one crop/resize/normalise function training also uses
    builds       the registry of builds and their metadata
    backends     ai-edge-litert / tflite-runtime / onnxruntime behind one interface
    classifier   a build opened for inference: crops in, Predictions out
    proposals    candidate sign boxes in a whole frame (colour cues + a fitted ranking)
    pipeline     FramePipeline: a frame in, its signs out, with per-stage times
    roi          boxes: parsing, clamping, IoU, NMS
    errors, atomic, cli   one-line errors, files written whole, the shared --help layout
                          (the camera demo on the Pi uses them too)

Also here, because every other stage needs them and they need nothing but numpy and OpenCV, but
not used by a deployed classifier: ``annotations`` (GTSDB frames + gt.txt, for bench and fitting)
and ``metrics`` (confusion matrix, per-class recall). Nothing in runtime/ imports train/, export/,
bench/ or TensorFlow (tests/test_runtime_light.py proves it).
"""

from runtime.errors import BackendUnavailableError, BuildError, ConfigError, DatasetFormatError, SignkitError
from runtime.preprocess import PreprocessSpec, crop_and_resize, preprocess, to_model_input

__all__ = [
    "BackendUnavailableError",
    "BuildError",
    "ConfigError",
    "DatasetFormatError",
    "PreprocessSpec",
    "SignkitError",
    "crop_and_resize",
    "preprocess",
    "to_model_input",
]
