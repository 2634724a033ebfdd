"""Train/test split rules: every n-th by sorted name, configurable, split files override, unknown names fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
from recon.data.errors import ReconError
from recon.data.formats.nerfstudio import write_transforms
from recon.data.scene import load_scene
from recon.data.split import SplitConfig, make_split, split_every, split_from_file

NAMES = [f"IMG_{i:04d}.jpg" for i in range(20)]


def _shuffled(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [NAMES[i] for i in rng.permutation(len(NAMES))]


def test_default_is_every_8th_by_sorted_name():
    names = _shuffled()
    train, test = make_split(names, SplitConfig())
    assert sorted(names[i] for i in test) == ["IMG_0000.jpg", "IMG_0008.jpg", "IMG_0016.jpg"]
    assert len(train) == 17 and set(train) | set(test) == set(range(20)) and not set(train) & set(test)
    assert train.dtype == np.int64 and list(train) == sorted(train)


def test_every_is_configurable():
    names = _shuffled(1)
    _, test = split_every(names, 3)
    assert sorted(names[i] for i in test) == [NAMES[i] for i in range(0, 20, 3)]
    train, test = split_every(names, 0)
    assert len(test) == 0 and len(train) == 20
    with pytest.raises(ReconError, match="no training images"):
        split_every(names, 1)
    with pytest.raises(ReconError, match="negative"):
        split_every(names, -2)


def test_split_file_overrides(tmp_path):
    names = ["a/IMG_1.jpg", "a/IMG_2.jpg", "b/IMG_3.jpg", "b/IMG_1.jpg"]
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"test": ["IMG_2.jpg", "b/IMG_1.jpg"]}))  # bare name matches when unambiguous
    train, test = make_split(names, SplitConfig(every=2, split_file=str(f)))
    assert list(test) == [1, 3] and list(train) == [0, 2]
    f.write_text(
        json.dumps({"train": ["a/IMG_1.jpg"], "test": ["IMG_3.jpg"]})
    )  # an image in neither is unused
    train, test = split_from_file(
        names, "split.json", root=tmp_path
    )  # relative path: found in the scene root
    assert list(train) == [0] and list(test) == [2]
    # Blender's own split is overridden too.
    train, test = make_split(
        names, SplitConfig(split_file=str(f)), default=(np.array([0, 1]), np.array([2, 3]))
    )
    assert list(train) == [0] and list(test) == [2]
    train, test = make_split(names, SplitConfig(), default=(np.array([0, 1]), np.array([2, 3])))
    assert list(train) == [0, 1] and list(test) == [2, 3]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"test": ["IMG_9.jpg"]}, "not in the scene"),
        ({"test": ["IMG_1.jpg"]}, "not in the scene"),  # ambiguous bare name: a/IMG_1.jpg or b/IMG_1.jpg
        ({"train": ["IMG_2.jpg"], "test": ["IMG_2.jpg"]}, "both train and test"),
        ({"train": ["IMG_2.jpg"]}, '"test" list'),
        ({"test": ["a/IMG_1.jpg", "a/IMG_2.jpg", "b/IMG_3.jpg", "b/IMG_1.jpg"]}, "no training images"),
    ],
)
def test_split_file_errors(tmp_path, content, match):
    names = ["a/IMG_1.jpg", "a/IMG_2.jpg", "b/IMG_3.jpg", "b/IMG_1.jpg"]
    f = tmp_path / "split.json"
    f.write_text(json.dumps(content))
    with pytest.raises(ReconError, match=match):
        split_from_file(names, str(f))


def test_split_file_missing_or_not_json(tmp_path):
    with pytest.raises(ReconError, match="not found"):
        split_from_file(NAMES, str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("IMG_0001.jpg\n")
    with pytest.raises(ReconError, match="not valid JSON"):
        split_from_file(NAMES, str(tmp_path / "bad.json"))


def test_load_scene_applies_split(tmp_path):
    n = 10
    rng = np.random.default_rng(2)
    paths = []
    for i in rng.permutation(n):
        p = tmp_path / "images" / f"f_{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    vms = np.stack([look_at_viewmat([np.cos(i), np.sin(i), 1.0], [0, 0, 0]) for i in range(n)])
    cams = Cameras(vms, np.tile(intrinsics_matrix(8, 8, 4, 4), (n, 1, 1)), 8, 8)
    write_transforms(tmp_path / "transforms.json", cams, paths)
    scene = load_scene(tmp_path)
    assert [scene.names[i] for i in scene.test_ids] == ["images/f_00.png", "images/f_08.png"]
    scene = load_scene(tmp_path, split=SplitConfig(every=4))
    assert [scene.names[i] for i in scene.test_ids] == [
        "images/f_00.png",
        "images/f_04.png",
        "images/f_08.png",
    ]
    assert len(scene.train_cameras()) == 7 and scene.test_cameras().names == [
        scene.names[i] for i in scene.test_ids
    ]
    (tmp_path / "split.json").write_text(json.dumps({"test": ["f_03.png"]}))
    scene = load_scene(tmp_path, split=SplitConfig(split_file="split.json"))
    assert [scene.names[i] for i in scene.test_ids] == ["images/f_03.png"] and len(scene.train_ids) == 9
    (tmp_path / "split.json").write_text(json.dumps({"test": ["f_99.png"]}))
    with pytest.raises(ReconError, match="f_99.png"):
        load_scene(tmp_path, split=SplitConfig(split_file="split.json"))
