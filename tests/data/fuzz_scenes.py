"""Seeded mutations of valid scene files, fed to the scene readers: each must load or refuse in one ReconError line.

Shared by ``tests/data/test_fuzz_readers.py`` (a few hundred mutations) and ``scripts/fuzz_readers.py`` (as
many as asked). Targets: a nerfstudio ``transforms.json`` and its ``points3D.ply``, a Blender
``transforms_train.json``, and a COLMAP model as text and as binary. Mutations are both structural (a JSON
value or a text token replaced by NaN, Infinity, a negative, a string, a list of the wrong shape; a record
dropped or repeated; a binary count or number overwritten) and raw (bytes flipped, inserted, removed, a file
truncated), so the parsers see both plausible and hostile damage.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
from recon.data.errors import ReconError
from recon.data.formats.colmap import write_colmap
from recon.data.formats.nerfstudio import write_transforms
from recon.data.ply import write_points_ply
from recon.data.scene import load_scene

WEIRD_VALUES = [
    math.nan, math.inf, -math.inf, -1, 0, 1e308, -1e-300, 10**400, "abc", "", None, True, [], {}, [1, 2],
    [[1, 2], [3]], [[math.nan] * 4] * 4, [[0.0] * 4] * 4, "NaN", 3.5,
]  # fmt: skip
WEIRD_TOKENS = [
    b"nan",
    b"inf",
    b"-inf",
    b"-1",
    b"0",
    b"1e308",
    b"1e400",
    b"x",
    b"99999999999999999999",
    b"",
    b"3.5",
]


@dataclass
class Target:
    """One valid scene folder, the file in it to mutate, and how to load the scene."""

    name: str
    folder: Path
    file: Path  # relative to folder
    kind: str  # "json", "text", "binary"


def _cameras(n: int = 4, size: int = 8) -> Cameras:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    vms = np.stack([look_at_viewmat((3 * np.cos(a), 3 * np.sin(a), 1.0), (0, 0, 0)) for a in angles])
    k = intrinsics_matrix(10.0, 10.0, size / 2, size / 2)
    dist = np.tile([0.01, 0.0, 0.0, 0.0], (n, 1))
    return Cameras(vms, np.repeat(k[None], n, 0), size, size, dist, [f"v{i}.png" for i in range(n)])


def make_targets(root: Path) -> list[Target]:
    """Valid scenes in ``root``: transforms.json + points3D.ply, Blender, COLMAP text and COLMAP binary."""
    cams = _cameras()
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(6, 3))
    targets = []
    for name in ("transforms", "blender", "colmap_text", "colmap_binary"):
        folder = root / name
        images = folder / "images"
        images.mkdir(parents=True)
        paths = []
        for n in cams.names:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / n)
            paths.append(images / n)
        if name == "transforms":
            write_points_ply(folder / "points3D.ply", pts)
            write_transforms(folder / "transforms.json", cams, paths, ply_file_path="points3D.ply")
            targets += [
                Target(name, folder, Path("transforms.json"), "json"),
                Target("points3D.ply", folder, Path("points3D.ply"), "binary"),
            ]
        elif name == "blender":
            write_transforms(folder / "transforms_train.json", cams, paths)
            data = json.loads((folder / "transforms_train.json").read_text())
            data["camera_angle_x"] = 2 * math.atan(4 / 10.0)  # Blender's own intrinsics key
            for k in ("fl_x", "fl_y", "cx", "cy"):
                data.pop(k, None)
            (folder / "transforms_train.json").write_text(json.dumps(data, indent=2))
            targets.append(Target(name, folder, Path("transforms_train.json"), "json"))
        else:
            text = name == "colmap_text"
            write_colmap(folder / "sparse" / "0", cams, cams.names, pts, text=text)
            ext = ".txt" if text else ".bin"
            for f in ("cameras", "images", "points3D"):
                targets.append(
                    Target(
                        f"{name}/{f}", folder, Path("sparse/0") / f"{f}{ext}", "text" if text else "binary"
                    )
                )
    return targets


# ----- mutations -----


def _json_paths(node, prefix=()) -> list[tuple]:
    """Every key / index path inside a JSON value."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _json_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _json_paths(v, (*prefix, i))
    return out


def _mutate_json(text: bytes, rng: random.Random) -> bytes:
    data = json.loads(text)
    paths = [p for p in _json_paths(data) if p]
    path = rng.choice(paths)
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    op = rng.randrange(4)
    if op == 0 or not isinstance(parent, (dict, list)):
        parent[key] = rng.choice(WEIRD_VALUES)
    elif op == 1:
        del parent[key]
    elif op == 2 and isinstance(parent, list):
        parent.append(parent[key])
    else:
        value = parent[key]
        parent[key] = (
            value[: rng.randrange(len(value) + 1)] if isinstance(value, list) else rng.choice(WEIRD_VALUES)
        )
    return json.dumps(data, indent=1, allow_nan=True).encode()


def _mutate_tokens(text: bytes, rng: random.Random) -> bytes:
    lines = text.split(b"\n")
    data_lines = [i for i, line in enumerate(lines) if line.strip() and not line.startswith(b"#")]
    if not data_lines:
        return text + b"\n1 2 3\n"
    i = rng.choice(data_lines)
    op = rng.randrange(4)
    if op == 0:
        toks = lines[i].split(b" ")
        toks[rng.randrange(len(toks))] = rng.choice(WEIRD_TOKENS)
        lines[i] = b" ".join(toks)
    elif op == 1:
        del lines[i]
    elif op == 2:
        lines.insert(i, lines[i])
    else:
        toks = lines[i].split(b" ")
        lines[i] = b" ".join(toks[: rng.randrange(len(toks) + 1)])
    return b"\n".join(lines)


def _mutate_binary(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(3)
    if op == 0 and len(buf) >= 8:  # a count or an id
        at = rng.randrange(len(buf) - 7)
        buf[at : at + 8] = struct.pack(
            "<Q", rng.choice([0, 1, 2**31, 2**63, 2**64 - 1, rng.randrange(2**64)])
        )
    elif op == 1 and len(buf) >= 8:  # a number
        at = rng.randrange(len(buf) - 7)
        buf[at : at + 8] = struct.pack("<d", rng.choice([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308]))
    else:
        return _mutate_bytes(data, rng)
    return bytes(buf)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(4)
    if op == 0 and buf:
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif op == 1:
        buf = buf[: rng.randrange(len(buf) + 1)]
    elif op == 2:
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif buf:
        at = rng.randrange(len(buf))
        del buf[at : at + rng.randrange(1, 16)]
    return bytes(buf)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One mutation of a file's bytes: structural for its kind half the time, raw bytes otherwise."""
    if rng.random() < 0.5:
        return _mutate_bytes(data, rng)
    if kind == "json":
        return _mutate_json(data, rng)
    if kind == "text":
        return _mutate_tokens(data, rng)
    return _mutate_binary(data, rng)


# ----- running -----


@dataclass
class FuzzResult:
    mutations: int = 0
    loaded: int = 0
    refused: int = 0
    tracebacks: list[str] = field(default_factory=list)  # "target: mutation i: the traceback"
    multiline: list[str] = field(default_factory=list)  # refusals whose message is not one line

    def summary(self) -> dict:
        return {
            "mutations": self.mutations, "loaded": self.loaded, "refused": self.refused,
            "tracebacks": len(self.tracebacks), "multiline_errors": len(self.multiline),
        }  # fmt: skip


def _load(folder: Path) -> None:
    scene = load_scene(folder)
    assert len(scene) > 0


def fuzz(root: Path, n: int, seed: int = 0, load: Callable[[Path], None] = _load) -> FuzzResult:
    """``n`` mutations spread over the targets built in ``root``, each applied to a fresh copy of the file."""
    rng = random.Random(seed)
    targets = make_targets(root / "valid")
    originals = {t.name: (t.folder / t.file).read_bytes() for t in targets}
    result = FuzzResult()
    for i in range(n):
        t = targets[i % len(targets)]
        work = root / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(t.folder, work)
        (work / t.file).write_bytes(mutate(originals[t.name], t.kind, rng))
        result.mutations += 1
        try:
            load(work)
            result.loaded += 1
        except ReconError as e:
            result.refused += 1
            if "\n" in str(e).strip() or not str(e).strip():
                result.multiline.append(f"{t.name}: mutation {i}: {str(e)!r}")
        except Exception:
            result.tracebacks.append(f"{t.name}: mutation {i}:\n{traceback.format_exc()}")
    return result
