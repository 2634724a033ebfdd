"""Train/test split of a scene's images.

The default follows 3DGS and nerfstudio so metrics are comparable with published numbers: images are sorted by
name and the ones whose sorted index satisfies ``index % every == 0`` are held out for testing (index 0, 8,
16, ... with ``every = 8``). A split file overrides the rule; Blender datasets bring their own train/test
files, which the reader uses instead of ``every`` (a split file still overrides them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.data.errors import ReconError


@dataclass
class SplitConfig:
    """How to choose the held-out test images.

    Test images are those whose index in name order satisfies ``index % every == 0`` (0, 8, 16, ...): the rule of
    3DGS (``llffhold``) and nerfstudio (``eval_interval``), chosen so metrics compare with published numbers. A
    split file is JSON rather than a plain list because it can also say which images train.
    """

    # Every ``every``-th image by sorted name is a test image (sorted index % every == 0, as 3DGS and
    # nerfstudio). 0 means no test split: every image trains.
    every: int = 8
    # A JSON file {"test": [names], "train": [names]} that overrides ``every``. "train" is optional (default:
    # every image not in "test"); an image in neither list is not used. Names are image names as the scene
    # lists them (e.g. "IMG_0001.jpg" or "images/IMG_0001.jpg"); a bare file name matches when it is
    # unambiguous. A relative path is looked up from the current directory, then from the scene folder.
    split_file: str | None = None


def split_every(names: list[str], every: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, test_ids) with the images whose sorted-name index is a multiple of ``every`` as test."""
    if every < 0:
        raise ReconError(
            f"split every={every} is negative; use 0 for no test split or a positive interval like 8"
        )
    n = len(names)
    if every == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    is_test = rank % every == 0
    train = np.flatnonzero(~is_test)
    if n > 0 and len(train) == 0:
        raise ReconError(
            f"split every={every} leaves no training images out of {n}; use a larger interval (e.g. 8) or 0"
        )
    return train.astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def _resolve_split_file(split_file: str, root: Path | None) -> Path:
    p = Path(split_file).expanduser()
    if p.is_file():
        return p
    if root is not None and not p.is_absolute() and (Path(root) / p).is_file():
        return Path(root) / p
    raise ReconError(f'split file {split_file} not found; give a JSON file like {{"test": ["IMG_0001.jpg"]}}')


def _match(names: list[str], wanted: list[str], path: Path) -> np.ndarray:
    """Indices of ``wanted`` in ``names``; a bare file name may match a name with folders if unambiguous."""
    exact = {n: i for i, n in enumerate(names)}
    by_base: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_base.setdefault(Path(n).name, []).append(i)
    ids, unknown = [], []
    for w in wanted:
        if w in exact:
            ids.append(exact[w])
        elif len(by_base.get(w, [])) == 1:
            ids.append(by_base[w][0])
        else:
            unknown.append(w)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ReconError(
            f"split file {path} names {len(unknown)} image(s) not in the scene ({shown}); "
            f"use names as the scene lists them, e.g. {names[0] if names else 'IMG_0001.jpg'}"
        )
    return np.asarray(sorted(set(ids)), dtype=np.int64)


def split_from_file(
    names: list[str], split_file: str, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, test_ids) read from a JSON split file (see ``SplitConfig.split_file``)."""
    path = _resolve_split_file(split_file, root)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReconError(f'split file {path} is not valid JSON ({e}); write {{"test": [names]}}') from e
    if not isinstance(data, dict) or not isinstance(data.get("test"), list):
        raise ReconError(f'split file {path} must be a JSON object with a "test" list of image names')
    if "train" in data and not isinstance(data["train"], list):
        raise ReconError(f'split file {path}: "train" must be a list of image names')
    test = _match(names, [str(x) for x in data["test"]], path)
    if "train" in data:
        train = _match(names, [str(x) for x in data["train"]], path)
        both = np.intersect1d(train, test)
        if len(both):
            raise ReconError(
                f"split file {path} lists {names[both[0]]} in both train and test; keep it in one"
            )
    else:
        train = np.setdiff1d(np.arange(len(names), dtype=np.int64), test)
    if len(train) == 0:
        raise ReconError(f"split file {path} leaves no training images; list fewer test images")
    return train, test


def make_split(
    names: list[str],
    cfg: SplitConfig,
    root: Path | None = None,
    default: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``cfg``: a split file wins, then a format's own ``default`` split (Blender), then ``every``."""
    if cfg.split_file:
        return split_from_file(names, cfg.split_file, root)
    if default is not None:
        return np.asarray(default[0], dtype=np.int64), np.asarray(default[1], dtype=np.int64)
    return split_every(names, cfg.every)
