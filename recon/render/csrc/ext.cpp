// Python bindings of the CPU rasterizer kernels (loaded by recon/render/_ext.py).
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "recon CPU rasterizer: projection, SH, tile binning and compositing with hand-written backward";
  m.def("project_forward", &recon::project_forward);
  m.def("project_backward", &recon::project_backward);
  m.def("project_surfels_forward", &recon::project_surfels_forward);
  m.def("project_surfels_backward", &recon::project_surfels_backward);
  m.def("project_convexes_forward", &recon::project_convexes_forward);
  m.def("project_convexes_backward", &recon::project_convexes_backward);
  m.def("sh_forward", &recon::sh_forward);
  m.def("sh_backward", &recon::sh_backward);
  m.def("bin_primitives", &recon::bin_primitives);
  m.def("rasterize_forward", &recon::rasterize_forward);
  m.def("rasterize_backward", &recon::rasterize_backward);
  m.def("rasterize_contributors", &recon::rasterize_contributors);
  m.def("rasterize_bin_radii", &recon::rasterize_bin_radii);
}
