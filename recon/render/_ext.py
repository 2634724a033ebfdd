"""Build (once) and load the C++/OpenMP rasterizer kernels in ``csrc/``.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` into the default torch extensions
folder (``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``). Its name carries a hash of the sources, the
flags and the torch / Python versions, so an edited kernel or a new torch gets a fresh build while an unchanged one
is imported directly, without starting ninja. A one-line notice goes to stderr only when it actually compiles.

Flags are portable (``-O3``, no ``-march=native``): the cached binary may be shared between machines, and
``-ffast-math`` is left out because it would reorder the float sums the reference parity tests pin down.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch
from torch.utils import cpp_extension

__all__ = ["load_ext", "CSRC"]

CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = (
    "ext.cpp",
    "project.cpp",
    "project_surfels.cpp",
    "project_convexes.cpp",
    "sh.cpp",
    "binning.cpp",
    "rasterize.cpp",
)
_CFLAGS = ["-O3", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
NOTICE = "recon: compiling CPU rasterizer kernels (first use, ~30 s)..."

_lock = threading.Lock()
_module: ModuleType | None = None


def _digest() -> str:
    h = hashlib.sha256()
    for path in sorted(CSRC.glob("*")):
        if path.suffix in (".cpp", ".h"):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update(repr((_CFLAGS, _LDFLAGS, torch.__version__, sys.version_info[:2], sys.abiflags)).encode())
    return h.hexdigest()[:12]


def _build_root() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root)


def _import_built(name: str, so_path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, so_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the rasterizer extension from {so_path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_ext() -> ModuleType:
    """The compiled kernel module, building it first if this source version was never built here."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        name = f"recon_cpu_raster_{_digest()}"
        build_dir = _build_root() / name
        so_path = build_dir / f"{name}.so"
        if so_path.exists() and not (build_dir / "lock").exists():
            _module = _import_built(name, so_path)
            return _module
        build_dir.mkdir(parents=True, exist_ok=True)
        print(NOTICE, file=sys.stderr, flush=True)
        _module = cpp_extension.load(
            name=name,
            sources=[str(CSRC / s) for s in _SOURCES],
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            build_directory=str(build_dir),
            verbose=False,
        )
        return _module
