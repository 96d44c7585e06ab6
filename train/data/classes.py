"""CIFAR-10's class names (GTSRB's, shared with the road frames, are ``runtime.annotations.GTSRB_CLASS_NAMES``)."""


CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
