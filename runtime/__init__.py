"""signkit runtime: TensorFlow-free preprocessing and inference for traffic-sign builds.

Imports only numpy and OpenCV here; inference backends load lazily when a build is opened.
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
