"""Mesh export (METHODS.md §3.4): TSDF fusion of analytic depth, SuGaR level set + Poisson of Gaussians fitted to
a sphere, clean-up, file formats, and `recon export RUN --mesh`."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from recon.cli import main
from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
from recon.data.errors import ReconError
from recon.data.formats.nerfstudio import write_transforms
from recon.eval.mesh_metrics import mesh_scores
from recon.export.mesh import (
    GaussianField,
    MeshOptions,
    TSDFFusion,
    TSDFParams,
    ViewMaps,
    camera_sphere,
    clean_mesh,
    extract_mesh,
    fuse_view,
    level_set_points,
    poisson_mesh,
    render_view,
    select_views,
    to_trimesh,
    tsdf_mesh,
    tsdf_params,
    upsample_factor,
    upsample_maps,
    write_mesh,
)
from recon.models.splats import SplatModel, rgb_to_sh0

ICO = trimesh.creation.icosphere(subdivisions=5)


def ring_cameras(n: int, dist: float, size: int, f: float, target=(0.0, 0.0, 0.0)) -> Cameras:
    """Cameras around ``target`` at distance ``dist``, at varying elevation, looking at it."""
    target = np.asarray(target, dtype=np.float64)
    vms = []
    for i in range(n):
        a = 2 * math.pi * i / n
        e = 0.5 * math.sin(3 * a)
        eye = target + dist * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        vms.append(look_at_viewmat(eye, target))
    K = intrinsics_matrix(f, f, size / 2, size / 2)
    return Cameras(np.stack(vms), np.repeat(K[None], n, 0), size, size)


def sphere_depth(cams: Cameras, i: int, r: float = 1.0) -> np.ndarray:
    """Ray-cast z-depth of the sphere |x| = r at the pixel centres of camera i (0 where the ray misses)."""
    H, W = int(cams.heights[i]), int(cams.widths[i])
    v, u = np.mgrid[0:H, 0:W] + 0.5
    d = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(cams.Ks[i]).T  # camera rays with z = 1
    dw = d @ cams.viewmats[i, :3, :3]
    o = cams.centers[i]
    a, b, c = (dw**2).sum(-1), 2 * (dw @ o), o @ o - r * r
    disc = b * b - 4 * a * c
    return np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0).astype(np.float32)


def tangent_sphere_model(n: int = 1000, rgb=(0.2, 0.6, 0.4), opacity: float = 0.95) -> SplatModel:
    """Flat Gaussians tangent to the unit sphere on a Fibonacci lattice, scales (0.6a, 0.6a, 0.01a) with a the
    lattice spacing. Opaque by default, as trained surfaces are: with the partition-of-unity opacity
    a²/(2π(0.6a)²) ≈ 0.44 the back of the sphere shows through and pulls the expected depth behind the front."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    th = math.pi * (3 - math.sqrt(5)) * i
    p = np.stack([np.sqrt(1 - z * z) * np.cos(th), np.sqrt(1 - z * z) * np.sin(th), z], 1)
    x = np.cross(p, [0.3, 0.5, 0.8])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rot = np.stack([x, np.cross(p, x), p], -1)  # columns: two tangents, then the normal
    q = Rotation.from_matrix(rot).as_quat()  # x y z w
    a = math.sqrt(4 * math.pi / n)
    op = opacity
    params = {
        "means": torch.tensor(p, dtype=torch.float32),
        "scales": torch.log(torch.tensor([0.6 * a, 0.6 * a, 0.01 * a])).repeat(n, 1),
        "quats": torch.tensor(np.concatenate([q[:, 3:], q[:, :3]], 1), dtype=torch.float32),
        "opacities": torch.full((n,), math.log(op / (1 - op))),
        "sh0": rgb_to_sh0(torch.tensor(rgb).repeat(n, 1, 1)),
        "shN": torch.zeros(n, 0, 3),
    }
    return SplatModel(params, 0)


def test_camera_sphere_is_the_look_at_point():
    target = (0.3, -0.2, 0.5)
    s = camera_sphere(ring_cameras(12, 4.0, 32, 30.0, target))
    assert np.allclose(s.center, target, atol=1e-9)
    assert s.radius == pytest.approx(4.0)


def test_tsdf_parameters_follow_2dgs_defaults_and_overrides():
    cams = ring_cameras(12, 4.0, 32, 30.0)
    p = tsdf_params(cams, MeshOptions())
    assert p.depth_trunc == pytest.approx(8.0) and p.voxel == pytest.approx(0.5 * 4.0 / 30.0)  # half a pixel
    hires = tsdf_params(ring_cameras(12, 4.0, 2000, 2000.0), MeshOptions())
    assert hires.voxel == pytest.approx(8.0 / 1024)  # 2DGS's depth_trunc / 1024
    assert p.sdf_trunc == pytest.approx(5 * p.voxel)
    q = tsdf_params(cams, MeshOptions(voxel=0.05, depth_trunc=3.0))
    assert (q.voxel, q.depth_trunc, q.sdf_trunc) == (0.05, 3.0, pytest.approx(0.25))
    with pytest.raises(ReconError):
        tsdf_params(cams, MeshOptions(voxel=-1.0))


def test_tsdf_fusion_of_ray_cast_sphere_depth():
    cams = ring_cameras(24, 3.0, 64, 70.0)
    voxel = 0.02
    fusion = TSDFFusion(TSDFParams(voxel=voxel, sdf_trunc=4 * voxel, depth_trunc=6.0))
    for i in range(len(cams)):
        depth = sphere_depth(cams, i)
        fusion.integrate(depth, np.full((*depth.shape, 3), 0.25, np.float32), cams.Ks[i], cams.viewmats[i])
    mesh = to_trimesh(fusion.mesh(weight_threshold=1.0))
    # the vertex buffer handed to open3d is an upper bound, and the mesh keeps only the vertices in use
    assert fusion.vertex_bound(1.0) >= len(mesh.vertices) > 1000
    assert len(np.unique(mesh.faces)) == len(mesh.vertices)
    s = mesh_scores(mesh, ICO, n_samples=50_000)
    assert s.chamfer_l1 < 2 * voxel
    assert s.fscore > 0.95
    assert np.all(np.abs(mesh.visual.vertex_colors[:, :3].astype(int) - 64) <= 1)


def test_upsampled_depth_interpolates_surfaces_and_keeps_edges_and_holes():
    cams = ring_cameras(1, 3.0, 32, 35.0)
    depth = sphere_depth(cams, 0)  # the sphere fills the middle of the view; the corners miss it (0)
    fine_cams = cams.scaled(0.25)
    fine = sphere_depth(fine_cams, 0)
    up, rgb = upsample_maps(depth, np.full((32, 32, 3), 0.5, np.float32), 4)
    assert up.shape == (128, 128) and rgb.shape == (128, 128, 3) and np.allclose(rgb, 0.5)
    nearest = np.repeat(np.repeat(depth, 4, 0), 4, 1)
    v, u = np.mgrid[0:128, 0:128] + 0.5
    front = np.hypot(u - 64, v - 64) < 24  # the sphere's front half (it spans a radius of 50 fine pixels)
    # on the surface, bilinear values match the finer ray cast far better than repeated pixels
    assert np.abs(up - fine)[front].mean() < 0.35 * np.abs(nearest - fine)[front].mean()
    # every upsampled value is either a blend of depths within 5% of each other or one of the source depths:
    # nothing between the sphere and the empty background
    assert np.all((up == 0) | (up >= depth[depth > 0].min() * 0.999))
    assert set(np.unique(up[nearest == 0])) <= {0.0} | set(np.unique(depth))


def test_upsample_factor_respects_the_pixel_cap():
    assert upsample_factor(320, 240, MeshOptions()) == 4
    assert upsample_factor(1600, 1200, MeshOptions()) == 1  # 4 MP cap: 2× would be 7.7 MP
    assert upsample_factor(800, 600, MeshOptions()) == 2
    assert upsample_factor(320, 240, MeshOptions(depth_upsample=1)) == 1


def test_upsampled_fusion_tracks_the_surface_more_closely():
    """open3d reads the depth at a voxel's nearest pixel: at a coarse resolution that terraces the fused surface;
    fusing maps upsampled with edges kept brings it closer to the true sphere."""
    cams = ring_cameras(24, 3.0, 48, 50.0)
    voxel = 0.02
    errors = {}
    for factor in (1, 4):
        fusion = TSDFFusion(TSDFParams(voxel=voxel, sdf_trunc=4 * voxel, depth_trunc=6.0))
        rgb = np.full((48, 48, 3), 0.25, np.float32)
        for i in range(len(cams)):
            fuse_view(fusion, cams, i, sphere_depth(cams, i), rgb, MeshOptions(depth_upsample=factor))
        errors[factor] = mesh_scores(to_trimesh(fusion.mesh()), ICO, n_samples=50_000).chamfer_l1
    assert errors[4] < 0.7 * errors[1]


def test_tsdf_mesh_fuses_what_a_render_function_returns():
    """TSDF fusion takes camera index -> ViewMaps, not a model: ray-cast sphere depth meshes the sphere."""
    cams = ring_cameras(24, 3.0, 48, 50.0)
    rendered = []

    def render(i: int) -> ViewMaps:
        rendered.append(i)
        depth = sphere_depth(cams, i)
        rgb = np.full((*depth.shape, 3), 0.25, np.float32)
        return ViewMaps(rgb=rgb, alpha=(depth > 0).astype(np.float32), depth=depth, depth_median=depth)

    raw, surface, info = tsdf_mesh(render, cams, MeshOptions(voxel=0.02, max_views=12))
    assert rendered == select_views(24, 12).tolist()
    assert info["voxel"] == 0.02 and len(surface) > 500
    assert np.abs(np.linalg.norm(surface, axis=1) - 1).max() < 1e-4  # the depth points lie on the sphere
    assert mesh_scores(to_trimesh(raw), ICO, n_samples=30_000).chamfer_l1 < 0.02


def test_a_grid_too_large_for_open3d_stops_with_a_message(monkeypatch):
    cams = ring_cameras(4, 3.0, 32, 35.0)
    fusion = TSDFFusion(TSDFParams(voxel=0.02, sdf_trunc=0.08, depth_trunc=6.0))
    for i in range(len(cams)):
        fusion.integrate(
            sphere_depth(cams, i), np.full((32, 32, 3), 0.5, np.float32), cams.Ks[i], cams.viewmats[i]
        )
    monkeypatch.setattr("recon.export.mesh.tsdf.MAX_TSDF_BLOCKS", 10)
    with pytest.raises(ReconError, match="larger --voxel"):
        fusion.mesh()


@pytest.fixture(scope="module")
def sphere_views():
    """The tangent-sphere model, its cameras and their rendered maps (the C++ renderer: 10× the reference's speed)."""
    model = tangent_sphere_model()
    cams = ring_cameras(12, 3.0, 64, 70.0)
    opts = MeshOptions(backend="cpu")
    return model, cams, [render_view(model, cams, i, opts) for i in range(len(cams))]


def test_sugar_level_set_points_and_poisson_mesh_of_a_sphere(sphere_views):
    model, cams, maps = sphere_views
    field = GaussianField.from_model(model, 16)
    found = [
        level_set_points(field, model, cams, i, m.depth_median, 0.3, 100_000) for i, m in enumerate(maps)
    ]
    pts = np.concatenate([f[0] for f in found])
    nrm = np.concatenate([f[1] for f in found])
    col = np.concatenate([f[2] for f in found])
    assert len(pts) > 0.25 * sum(int((m.depth_median > 0).sum()) for m in maps)
    assert np.abs(np.linalg.norm(pts, axis=1) - 1).max() < 0.02
    # normals face the camera, so outwards on the sphere; a few percent of grazing rays cross a Gaussian's
    # shell from the side and come out turned inwards
    outward = (nrm * pts).sum(1)
    assert np.median(outward) > 0.95 and np.mean(outward < 0) < 0.05
    assert np.allclose(col, [0.2, 0.6, 0.4], atol=1e-5)
    mesh = to_trimesh(poisson_mesh(pts, nrm, col, depth=7, density_quantile=0.0))
    assert mesh_scores(mesh, ICO, n_samples=50_000).chamfer_l1 < 0.02


@pytest.mark.parametrize("method", ["tsdf", "sugar"])
def test_extract_mesh_end_to_end(sphere_views, method):
    model, cams, _ = sphere_views
    opts = MeshOptions(method=method, backend="cpu", poisson_depth=7, density_quantile=0.0)
    mesh, info = extract_mesh(model, cams, opts)
    assert info["method"] == method and info["triangles"] == len(mesh.faces) > 500
    s = mesh_scores(mesh, ICO, n_samples=50_000)
    assert s.chamfer_l1 < 0.03
    lo, hi = np.array(info["bounds"][0]), np.array(info["bounds"][1])
    assert np.all(lo < -0.95) and np.all(hi > 0.95) and np.all(hi - lo < 2.5)  # observed extent, padded
    rgb = mesh.visual.vertex_colors[:, :3].astype(float) / 255
    assert np.median(np.abs(rgb - [0.2, 0.6, 0.4])) < 0.03


def test_clean_mesh_drops_small_components_and_decimates():
    big = trimesh.creation.icosphere(subdivisions=4)
    speck = trimesh.creation.icosphere(subdivisions=0, radius=0.01)
    speck.apply_translation([0.0, 0.0, 1.5])
    both = trimesh.util.concatenate([big, speck])
    import open3d as o3d

    o3 = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(both.vertices), o3d.utility.Vector3iVector(both.faces)
    )
    o3.vertex_colors = o3d.utility.Vector3dVector(np.tile([0.1, 0.2, 0.3], (len(both.vertices), 1)))
    out = clean_mesh(o3, (-2, -2, -2), (2, 2, 2), MeshOptions(min_component_triangles=50, decimate=1000))
    tm = to_trimesh(out)
    assert len(tm.faces) <= 1000
    assert tm.vertices[:, 2].max() < 1.01  # the speck is gone
    assert np.allclose(tm.visual.vertex_colors[:, :3], [26, 51, 77], atol=1)
    cropped = to_trimesh(clean_mesh(o3, (-2, -2, 0.0), (2, 2, 2), MeshOptions()))
    assert cropped.vertices[:, 2].min() > -0.1


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_write_mesh_formats_keep_geometry_and_colours(tmp_path, suffix):
    m = trimesh.creation.icosphere(subdivisions=2)
    m.visual.vertex_colors = np.tile([10, 200, 30, 255], (len(m.vertices), 1)).astype(np.uint8)
    path = tmp_path / f"mesh{suffix}"
    write_mesh(m, path)
    back = trimesh.load(path, process=False, force="mesh")
    assert len(back.faces) == len(m.faces)
    assert np.allclose(back.visual.vertex_colors[:, :3], [10, 200, 30], atol=1)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    with pytest.raises(ReconError, match="must end in"):
        write_mesh(m, tmp_path / "mesh.stl")


@pytest.fixture()
def sphere_run(tmp_path):
    """A run folder (splats.ply + run.json) whose scene is a transforms.json with tiny placeholder images."""
    cams = ring_cameras(12, 3.0, 48, 52.0)
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    paths = []
    for name in cams.names:
        path = scene / "images" / f"{name}.png"
        iio.imwrite(path, np.zeros((48, 48, 3), np.uint8))
        paths.append(path)
    write_transforms(scene / "transforms.json", cams, paths)
    run = tmp_path / "run"
    run.mkdir()
    tangent_sphere_model(1500).save_ply(run / "splats.ply")
    (run / "run.json").write_text(json.dumps({"scene": str(scene)}))
    return run


def test_cli_exports_meshes_of_a_run(sphere_run, tmp_path, capsys):
    out = tmp_path / "out" / "tsdf.ply"
    # 1500 wide tangent 3D Gaussians seen at 48 px: each one's median depth is its centre's over its whole
    # footprint, a terraced surface, so this coarse model meshes from the expected depth (--depth-ratio 0)
    args = ["--method", "tsdf", "--decimate", "5000", "--depth-ratio", "0"]
    assert main(["export", str(sphere_run), "--mesh", str(out), *args]) == 0
    mesh = trimesh.load(out, process=False)
    assert 0 < len(mesh.faces) <= 5000
    assert mesh_scores(mesh, ICO, n_samples=30_000).chamfer_l1 < 0.03
    assert "triangles" in capsys.readouterr().err
    glb = tmp_path / "out" / "sugar.glb"
    assert (
        main(["export", str(sphere_run), "--mesh", str(glb), "--method", "sugar", "--poisson-depth", "7"])
        == 0
    )
    assert mesh_scores(trimesh.load(glb, force="mesh"), ICO, n_samples=30_000).chamfer_l1 < 0.03


def test_cli_default_median_depth_meshes_surfels(sphere_run, tmp_path):
    """Surfels' median depth is their exact ray-plane depth per pixel, so the default export needs no blending."""
    flat = tangent_sphere_model(1500)
    SplatModel(flat.params, 0, primitive="surfel2d").save_ply(sphere_run / "splats.ply")
    out = tmp_path / "surfels.ply"
    assert main(["export", str(sphere_run), "--mesh", str(out)]) == 0
    assert mesh_scores(trimesh.load(out, process=False), ICO, n_samples=30_000).chamfer_l1 < 0.03


def test_cli_export_user_errors(sphere_run, tmp_path):
    assert main(["export", str(sphere_run)]) == 2
    assert main(["export", str(sphere_run), "--mesh", str(tmp_path / "m.stl")]) == 2
    assert main(["export", str(tmp_path / "nope"), "--mesh", str(tmp_path / "m.ply")]) == 2
    bounds = ["--bounds", "1", "1", "1", "0", "0", "0"]
    assert main(["export", str(sphere_run), "--mesh", str(tmp_path / "m.ply"), *bounds]) == 2
    assert main(["export", str(sphere_run), "--mesh", str(tmp_path / "m.ply"), "--depth-ratio", "1.5"]) == 2
    assert main(["export", str(sphere_run), "--mesh", str(tmp_path / "m.ply"), "--depth-upsample", "0"]) == 2
    assert not (tmp_path / "m.ply").exists()
