"""The browser viewer: `recon view` (runs, splat PLYs, meshes, scenes) and the live panel of `recon train --viewer`.

Built on viser; imports recon, and nothing in recon imports it (DESIGN.md §2).
"""
