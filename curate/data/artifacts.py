"""Artifact steps' folders: files (a model, metrics, plots) plus `_manifest.json` with `kind: artifacts`.

The manifest records the step's fingerprint, its parents' fingerprints, its stage config, the metrics the stage
returned and every file with its size and sha256. As for datasets, it is written last: a folder without it is
unfinished (a resumable build may have left checkpoints there) and is never read as a result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from curate._version import __version__
from curate.data.dataset import atomic_write_text
from curate.data.errors import DatasetError
from curate.data.hashing import file_sha256

KIND = "artifacts"
ARTIFACT_MANIFEST = "_manifest.json"  # inside the folder: an artifact folder is not a Parquet dataset


def _listed(folder: Path) -> list[Path]:
    """The files an artifact folder holds, without curate's bookkeeping (`_manifest.json`, `_pending.json`) or
    hidden files."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts))


def write_artifacts(folder: str | Path, *, fingerprint: str, parents: list[str], stage: str,
                    config: dict[str, Any], metrics: dict[str, Any], stats: dict[str, Any]) -> Artifacts:
    folder = Path(folder)
    files = [{"file": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": file_sha256(str(p))}
             for p in _listed(folder)]
    manifest = {"kind": KIND, "version": __version__, "stage": stage, "fingerprint": fingerprint,
                "parents": parents, "config": config, "files": files, "metrics": metrics, "stats": stats,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(folder / ARTIFACT_MANIFEST, json.dumps(manifest, indent=1, default=str))
    return Artifacts(folder, manifest)


class Artifacts:
    """A finished artifact folder."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @staticmethod
    def exists(path: str | Path) -> bool:
        manifest = Path(path) / ARTIFACT_MANIFEST
        if not manifest.is_file():
            return False
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND

    @classmethod
    def open(cls, path: str | Path) -> Artifacts:
        path = Path(path)
        if not cls.exists(path):
            raise DatasetError(f"{str(path)!r} is not a finished artifact folder (no artifact _manifest.json)")
        return cls(path, json.loads((path / ARTIFACT_MANIFEST).read_text(encoding="utf-8")))

    @property
    def fingerprint(self) -> str:
        return self.manifest.get("fingerprint", "")

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    def verify(self) -> list[str]:
        """Files that are missing or whose sha256 differs from the manifest's."""
        bad = []
        for entry in self.manifest.get("files", []):
            path = self.path / entry["file"]
            if not path.is_file() or file_sha256(str(path)) != entry["sha256"]:
                bad.append(entry["file"])
        return bad
