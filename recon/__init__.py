"""recon: photos in, 3D out."""

import os

# Idle OpenMP threads spin after every parallel region by default; on a shared 2-core machine that spinning steals
# the core the working thread needs (measured 2-3x slower rasterization). This must be set before torch loads
# OpenMP, hence here, in the first module of the package to be imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
