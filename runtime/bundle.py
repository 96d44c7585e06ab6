"""A frame-pipeline bundle: the classifier build, the proposal ranking and the sign map in one folder.

    pipe = Bundle.open("runs/quickstart/bundle").pipeline(threads=2)

``python -m export.bundle`` makes it; ``camera_demo --build BUNDLE`` and ``bench.gtsdb --build BUNDLE`` take it alone.
``bundle.json`` names each part's file and SHA-256 and the profile the parts were measured for; opening the bundle
checks every part against it, so a part copied over from another fit is refused, not run. Nothing in it names a path
of the machine that made it: copy the folder anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.builds import file_sha256
from runtime.classifier import Classifier
from runtime.errors import BuildError
from runtime.pipeline import PROFILES, FramePipeline, Profile
from runtime.proposals import Ranker
from runtime.sign_map import SignMap

BUNDLE_FORMAT = "signkit-bundle/1"
BUNDLE_FILE = "bundle.json"


def is_bundle(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / BUNDLE_FILE).is_file()


@dataclass(frozen=True)
class Bundle:
    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path) -> Bundle:
        """Read and check a bundle.

        Raises:
            BuildError: no bundle.json, another format, or a part missing or not the file the manifest names.
        """
        folder = Path(folder)
        try:
            manifest = json.loads((folder / BUNDLE_FILE).read_text())
        except (OSError, ValueError) as err:
            raise BuildError(f"{folder} is not a frame-pipeline bundle ({BUNDLE_FILE}: {err}); make one with "
                             f"`python -m export.bundle`") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BuildError(f"{folder / BUNDLE_FILE} is not a signkit bundle manifest; make one with `python -m export.bundle`")
        for part, entry in (manifest.get("parts") or {}).items():
            path = folder / entry["file"]
            if not path.is_file():
                raise BuildError(f"{folder}: its {part} {entry['file']} is missing; make the bundle again")
            if file_sha256(path) != entry["sha256"]:
                raise BuildError(f"{path} is not the {part} {BUNDLE_FILE} names (SHA-256 differs: replaced since); make the "
                                 f"bundle again with `python -m export.bundle`")
        if "classifier" not in (manifest.get("parts") or {}):
            raise BuildError(f"{folder / BUNDLE_FILE} names no classifier; make the bundle again")
        return cls(folder, manifest)

    def part(self, name: str) -> Path | None:
        entry = (self.manifest.get("parts") or {}).get(name)
        return None if entry is None else self.folder / entry["file"]

    @property
    def profile(self) -> Profile:
        return PROFILES[self.manifest.get("profile", "full")]

    def pipeline(self, threads: int = 1, threshold: float | None = None, profile: str | None = None,
                 second_look: bool = True) -> FramePipeline:
        """The frame pipeline of the bundle's parts, at its profile's budget (or ``profile``'s)."""
        classifier = self.part("classifier")
        assert classifier is not None  # checked in open()
        ranker_file, map_file = self.part("ranker"), self.part("sign_map")
        chosen = PROFILES[profile] if profile else self.profile
        return FramePipeline(Classifier.from_build(classifier, threads=threads, threshold=threshold),
                             ranker=Ranker.load(ranker_file) if ranker_file else None,
                             sign_map=SignMap(map_file) if map_file else None, second_look=second_look, budget=chosen.budget)
