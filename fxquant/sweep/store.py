"""Finished sweep cells on disk, one JSON file each, named by a hash of everything that decides
the cell's numbers: a restarted sweep skips them, and a killed one loses none (each file is
written whole, under a temporary name, then renamed)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import metadata
from pathlib import Path

from fxquant.errors import FxQuantError
from fxquant.sweep.cell import Cell

DATA_OPTIONS = ("calib_data", "test_data")  # paths whose content, not their name, decides results
BLOCK = 1 << 20


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes; of a folder's file names and sizes (reading every image of a
    large test folder would cost more than a cell)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}\0{f.stat().st_size}\0".encode())
        return digest.hexdigest()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _identity(value: str) -> str:
    """A path's content hash, or the value itself (a model name, a missing path the cell reports)."""
    return content_hash(Path(value)) if Path(value).exists() else value


def cell_key(cell: Cell, shared: dict) -> str:
    """`<model>_<recipe>_<bits>-<hash>`: the hash covers the cell, every shared option (the
    calibration and test data by content, the number of images, the target) and fxquant's version."""
    facts = {"model": _identity(cell.model), "recipe": cell.recipe, "bits": cell.bits,
             "options": {k: _identity(v) if k in DATA_OPTIONS else v for k, v in shared.items()},
             "fxquant": metadata.version("fxquant")}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^\w.+-]+", "_", f"{Path(cell.model).stem}_{cell.recipe}_{cell.bits}")
    return f"{name}-{digest}"


class ResultStore:
    """A folder of `<key>.json` results, and the `<key>.onnx` files the cells export."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FxQuantError(f"--results {folder}: cannot create the folder ({e.strerror})") from e

    def onnx_path(self, key: str) -> Path:
        return self.folder / f"{key}.onnx"

    def load(self, key: str) -> dict | None:
        """The finished cell's result, or None when it has not finished."""
        path = self.folder / f"{key}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise FxQuantError(f"{path}: not a sweep result ({e}); delete it to redo the cell") from e

    def save(self, key: str, result: dict) -> dict:
        tmp = self.folder / f".{key}.{os.getpid()}.json.tmp"  # open() gives it the umask's mode
        try:
            with tmp.open("w") as f:
                json.dump(result, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / f"{key}.json")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return result
