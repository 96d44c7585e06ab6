"""Dataset loading: many on-disk layouts, one in-memory ``Split``."""

from train.data.dataset import Split, check_data_path, default_cache_dir, detect_format, load_dataset
from train.data.formats import FORMATS
from train.data.split import random_split, track_split

__all__ = ["FORMATS", "Split", "check_data_path", "default_cache_dir", "detect_format", "load_dataset",
           "random_split", "track_split"]
