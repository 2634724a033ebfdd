"""Issue 20, deliverable 3: every scene reader checks what it reads. A bad value is one ReconError line naming the
file, the frame and the fix; never a traceback, never a scene that loads with NaN cameras."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main
from recon.data.errors import ReconError
from recon.data.formats.blender import read_blender
from recon.data.formats.colmap import read_colmap
from recon.data.formats.nerfstudio import read_transforms
from recon.data.ply import read_points_ply
from recon.data.scene import load_scene
from tests.data.fuzz_scenes import make_targets


@pytest.fixture
def scenes(tmp_path) -> dict[str, Path]:
    """Valid scene folders by name: transforms, blender, colmap_text, colmap_binary."""
    return {t.name.split("/")[0]: t.folder for t in make_targets(tmp_path)}


def _one_line(err: ReconError, *parts: str) -> str:
    text = str(err)
    assert "\n" not in text, text
    for p in parts:
        assert p in text, text
    return text


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, allow_nan=True))


def test_the_valid_scenes_load(scenes):
    for folder in scenes.values():
        assert len(load_scene(folder)) == 4


# ----- transforms.json (nerfstudio / instant-ngp) -----


def _set_matrix(value):
    def edit(d):
        d["frames"][2]["transform_matrix"] = value

    return edit


def _set_entry(row: int, col: int, value):
    def edit(d):
        d["frames"][2]["transform_matrix"][row][col] = value

    return edit


def _set_key(key: str, value, frame: int | None = 2):
    def edit(d):
        (d["frames"][frame] if frame is not None else d)[key] = value

    return edit


EYE = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]

TRANSFORMS_CASES = {
    "nan in the pose": (_set_entry(0, 3, math.nan), "NaN"),
    "infinity in the pose": (_set_entry(1, 1, math.inf), "Infinity"),
    "ragged pose": (_set_matrix([[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not a matrix"),
    "pose of the wrong shape": (_set_matrix([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "shape [3, 3]"),
    "singular pose": (_set_matrix([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    "non-numeric pose": (_set_entry(0, 0, "one"), "not a matrix of numbers"),
    "pose with a boolean": (_set_entry(0, 0, True), "not a matrix of numbers"),
    "last row not 0 0 0 1": (_set_matrix([*EYE[:3], [0, 0, 1, 1]]), "last row"),
    "negative focal length": (_set_key("fl_x", -30.0), "fl_x is -30.0; it must be positive"),
    "zero focal length": (_set_key("fl_y", 0), "fl_y is 0; it must be positive"),
    "non-numeric focal length": (_set_key("fl_x", "wide"), "fl_x is 'wide', not a number"),
    "huge integer focal length": (_set_key("fl_x", 10**400), "not a number"),
    "zero width": (_set_key("w", 0), "w is 0"),
    "fractional height": (_set_key("h", 7.5), "h is 7.5"),
    "nan principal point": (_set_key("cx", math.nan), "cx is nan"),
    "nan distortion": (_set_key("k1", math.nan), "k1 is nan"),
    "camera model of the wrong type": (_set_key("camera_model", ["OPENCV"]), "is not supported"),
    "frame that is not an object": (lambda d: d["frames"].__setitem__(2, [1, 2]), "lacks file_path"),
    "file_path not a string": (_set_key("file_path", 7), "file_path is not a string"),
}


@pytest.mark.parametrize("case", list(TRANSFORMS_CASES))
def test_transforms_json_values_are_checked(case, scenes):
    edit, expected = TRANSFORMS_CASES[case]
    path = scenes["transforms"] / "transforms.json"
    _edit_json(path, edit)
    with pytest.raises(ReconError) as e:
        read_transforms(path)
    text = _one_line(e.value, str(path), expected)
    assert "regenerate" in text or "; use " in text, text  # the fix
    if "lacks" not in expected and "file_path" not in expected:
        assert "frame 2" in str(e.value)


def test_a_global_bad_value_names_the_file(scenes):
    path = scenes["transforms"] / "transforms.json"
    _edit_json(path, _set_key("fl_x", math.inf, frame=None))
    with pytest.raises(ReconError) as e:
        read_transforms(path)
    _one_line(e.value, str(path), "frame 0", "fl_x is inf, not a finite number")


@pytest.mark.parametrize("angle", [0.0, -1.0, math.pi, 4.0, math.nan])
def test_blender_field_of_view_must_lie_between_0_and_pi(angle, scenes):
    path = scenes["blender"] / "transforms_train.json"
    _edit_json(path, _set_key("camera_angle_x", angle, frame=None))
    with pytest.raises(ReconError) as e:
        read_blender(scenes["blender"])
    _one_line(e.value, str(path), "camera_angle_x")


def test_a_frame_whose_size_cannot_be_read_is_named(scenes):
    path = scenes["transforms"] / "transforms.json"

    def edit(d):
        for k in ("w", "h"):
            d.pop(k)

    _edit_json(path, edit)
    (scenes["transforms"] / "images" / "v1.png").write_bytes(b"not a png")
    with pytest.raises(ReconError) as e:
        read_transforms(path)
    _one_line(e.value, "frame 1", "cannot read the size", "give w and h")


def test_a_nested_json_bomb_is_refused(scenes):
    path = scenes["transforms"] / "transforms.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ReconError) as e:
        read_transforms(path)
    _one_line(e.value, str(path))


# ----- COLMAP, text and binary -----


def _replace_line(path: Path, index: int, edit) -> None:
    """Apply ``edit`` to the tokens of the ``index``-th data line (comments skipped)."""
    lines = path.read_text().splitlines()
    data = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    toks = lines[data[index]].split()
    lines[data[index]] = " ".join(edit(toks))
    path.write_text("\n".join(lines) + "\n")


def _put(i: int, value: str):
    def edit(toks):
        toks[i] = value
        return toks

    return edit


COLMAP_TEXT_CASES = {
    "negative focal length": ("cameras", 0, _put(4, "-10"), "focal length -10"),
    "nan focal length": ("cameras", 0, _put(4, "nan"), "NaN or Infinity among its parameters"),
    "zero width": ("cameras", 0, _put(2, "0"), "image size 0x8"),
    "missing parameter": ("cameras", 0, lambda t: t[:-1], "has 8 parameters"),
    "unknown model": ("cameras", 0, _put(1, "MAGIC"), "COLMAP model name"),
    "nan quaternion": ("images", 1, _put(1, "nan"), "NaN or Infinity"),
    "zero quaternion": ("images", 1, lambda t: [t[0], "0", "0", "0", "0", *t[5:]], "not a rotation"),
    "infinite translation": ("images", 1, _put(6, "inf"), "NaN or Infinity"),
    "unknown camera": ("images", 1, _put(8, "7"), "uses camera 7"),
    "non-numeric id": ("images", 1, _put(0, "first"), "IMAGE_ID is 'first'"),
    "nan point": ("points3D", 2, _put(2, "nan"), "point 3 has NaN"),
    "colour out of range": ("points3D", 2, _put(5, "300"), "colour outside 0..255"),
}


@pytest.mark.parametrize("case", list(COLMAP_TEXT_CASES))
def test_colmap_text_values_are_checked(case, scenes):
    name, index, edit, expected = COLMAP_TEXT_CASES[case]
    sparse = scenes["colmap_text"] / "sparse" / "0"
    _replace_line(sparse / f"{name}.txt", index, edit)
    with pytest.raises(ReconError) as e:
        read_colmap(sparse)
    _one_line(e.value, str(sparse), expected, "re-export")


def _image_record(sparse: Path) -> int:
    """Byte offset of the second image record in images.bin (after its count and the first record)."""
    data = (sparse / "images.bin").read_bytes()
    return data.index(b"v0.png\0") + len(b"v0.png\0") + 8


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated", "truncated or damaged"),
        ("huge count", "more than its"),
        ("nan quaternion", "the pose holds NaN"),
        ("negative focal", "focal length -10"),
        ("trailing bytes", "bytes follow its last record"),
        ("huge 2D point count", "past the file's end"),
    ],
)
def test_colmap_binary_is_checked(case, expected, scenes):
    sparse = scenes["colmap_binary"] / "sparse" / "0"
    images, cameras = sparse / "images.bin", sparse / "cameras.bin"
    data = bytearray(images.read_bytes())
    second = _image_record(sparse)
    if case == "truncated":
        images.write_bytes(data[: len(data) - 5])
    elif case == "huge count":
        images.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    elif case == "nan quaternion":
        data[second + 4 : second + 12] = struct.pack("<d", math.nan)
        images.write_bytes(data)
    elif case == "negative focal":
        cam = bytearray(cameras.read_bytes())
        cam[8 + 24 : 8 + 32] = struct.pack("<d", -10.0)
        cameras.write_bytes(cam)
    elif case == "trailing bytes":
        images.write_bytes(data + b"\0" * 3)
    else:
        at = data.index(b"v1.png\0") + len(b"v1.png\0")
        data[at : at + 8] = struct.pack("<Q", 2**40)
        images.write_bytes(data)
    with pytest.raises(ReconError) as e:
        read_colmap(sparse)
    _one_line(e.value, str(sparse), expected, "re-export")


def test_colmap_reader_matches_pycolmap(scenes):
    """The Python parser reads what pycolmap reads (poses, intrinsics, points), for text and binary."""
    from recon.data.native import pycolmap

    for name in ("colmap_text", "colmap_binary"):
        sparse = scenes[name] / "sparse" / "0"
        cams, names, xyz, rgb = read_colmap(sparse)
        rec = pycolmap.Reconstruction(str(sparse))
        ims = sorted(rec.images.values(), key=lambda im: im.name)
        assert names == [im.name for im in ims]
        for vm, im in zip(cams.viewmats, ims):
            np.testing.assert_allclose(vm[:3], im.cam_from_world().matrix(), atol=1e-12)
        pids = sorted(rec.points3D)
        np.testing.assert_allclose(xyz, [rec.points3D[i].xyz for i in pids], atol=1e-6)
        np.testing.assert_array_equal(rgb, [rec.points3D[i].color for i in pids])


# ----- PLY point clouds -----


def test_a_point_cloud_with_nan_points_is_refused(scenes):
    from recon.data.ply import write_points_ply

    path = scenes["transforms"] / "points3D.ply"
    xyz = np.zeros((5, 3), np.float32)
    xyz[3, 1] = np.nan
    write_points_ply(path, xyz)
    with pytest.raises(ReconError) as e:
        read_points_ply(path)
    _one_line(e.value, str(path), "1 of 5 points", "vertex 3")


# ----- through the command line -----


def test_recon_train_on_a_bad_camera_file_is_one_line(scenes, tmp_path, capsys):
    path = scenes["transforms"] / "transforms.json"
    _edit_json(path, _set_entry(0, 3, math.nan))
    code = main(["train", str(scenes["transforms"]), "--out", str(tmp_path / "run"), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("recon: error:") and "frame 2" in err, err
    assert "Traceback" not in err
