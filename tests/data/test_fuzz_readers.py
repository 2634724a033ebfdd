"""Issue 20, deliverable 7: seeded mutations of a valid transforms.json (and its points3D.ply), a Blender scene
and a COLMAP model (text and binary) either load or are refused in one ReconError line; never another exception.
``scripts/fuzz_readers.py --n 1000`` runs the same with more mutations."""

from __future__ import annotations

import logging

from tests.data.fuzz_scenes import fuzz


def test_mutated_scene_files_load_or_are_refused_in_one_line(tmp_path):
    logger = logging.getLogger("recon")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the skipped-frame warnings of hundreds of loads
    try:
        result = fuzz(tmp_path, 600, seed=0)
    finally:
        logger.setLevel(level)
    assert not result.tracebacks, result.tracebacks[0]
    assert not result.multiline, result.multiline[:3]
    assert result.mutations == 600 and result.loaded + result.refused == 600
    assert result.loaded > 50 and result.refused > 300  # both outcomes are exercised
