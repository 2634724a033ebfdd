// Entry points of the CPU rasterizer extension (bound to Python in ext.cpp, wrapped in recon/render/cpu.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace recon {

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats,
                                           const at::Tensor& scales, const at::Tensor& viewmats,
                                           const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                                           double near_plane, double far_plane, double radius_clip,
                                           bool want_normals);

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats,
                                            const at::Tensor& scales, const at::Tensor& viewmats,
                                            const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                                            double near_plane, double far_plane, double radius_clip,
                                            const at::Tensor& g_means2d, const at::Tensor& g_conics,
                                            const at::Tensor& g_depths, const at::Tensor& g_normals);

std::vector<at::Tensor> project_surfels_forward(const at::Tensor& means, const at::Tensor& quats,
                                                const at::Tensor& scales, const at::Tensor& viewmats,
                                                const at::Tensor& Ks, int64_t width, int64_t height,
                                                double near_plane, double far_plane, double radius_clip,
                                                bool want_normals);

std::vector<at::Tensor> project_surfels_backward(const at::Tensor& means, const at::Tensor& quats,
                                                 const at::Tensor& scales, const at::Tensor& viewmats,
                                                 const at::Tensor& Ks, int64_t width, int64_t height,
                                                 double near_plane, double far_plane, double radius_clip,
                                                 const at::Tensor& g_means2d, const at::Tensor& g_payload,
                                                 const at::Tensor& g_depths, const at::Tensor& g_normals);

std::vector<at::Tensor> project_convexes_forward(const at::Tensor& points, const at::Tensor& delta,
                                                 const at::Tensor& sigma, const at::Tensor& viewmats,
                                                 const at::Tensor& Ks, int64_t width, int64_t height,
                                                 double near_plane, double far_plane, double radius_clip,
                                                 double reach, double radius_cull, bool want_normals);

std::vector<at::Tensor> project_convexes_backward(const at::Tensor& points, const at::Tensor& delta,
                                                  const at::Tensor& sigma, const at::Tensor& viewmats,
                                                  const at::Tensor& Ks, int64_t width, int64_t height,
                                                  double near_plane, double far_plane, double radius_clip,
                                                  double reach, double radius_cull, const at::Tensor& g_means2d,
                                                  const at::Tensor& g_payload, const at::Tensor& g_depths,
                                                  const at::Tensor& g_normals);

at::Tensor sh_forward(int64_t degree, const at::Tensor& means, const at::Tensor& coeffs,
                         const at::Tensor& viewmats);

std::vector<at::Tensor> sh_backward(int64_t degree, const at::Tensor& means, const at::Tensor& coeffs,
                                       const at::Tensor& viewmats, const at::Tensor& g_colors);

std::vector<at::Tensor> bin_primitives(const at::Tensor& means2d, const at::Tensor& radii,
                                          const at::Tensor& depths, int64_t tile_size, int64_t tile_width,
                                          int64_t tile_height);

std::vector<at::Tensor> rasterize_forward(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                             const at::Tensor& opacities, const at::Tensor& depths,
                                             const at::Tensor& features, const at::Tensor& backgrounds,
                                             const at::Tensor& tile_offsets, const at::Tensor& ids,
                                             int64_t width, int64_t height, int64_t tile_size, bool want_depth,
                                             bool want_median, bool want_l1, bool want_ndc2, double alpha_max, double alpha_min,
                                             double t_eps, double ndc_near, double ndc_far);

at::Tensor rasterize_backward(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                 const at::Tensor& opacities, const at::Tensor& depths,
                                 const at::Tensor& features, const at::Tensor& backgrounds,
                                 const at::Tensor& tile_offsets, const at::Tensor& ids,
                                 const at::Tensor& slot_pos, const at::Tensor& gauss_offsets, int64_t width,
                                 int64_t height, int64_t tile_size, const at::Tensor& T_final,
                                 const at::Tensor& last, const at::Tensor& median_idx,
                                 const at::Tensor& sums, const at::Tensor& g_feat,
                                 const at::Tensor& g_depth, const at::Tensor& g_alpha, const at::Tensor& g_median,
                                 const at::Tensor& g_l1, const at::Tensor& g_ndc2, double alpha_max,
                                 double alpha_min, double t_eps, double ndc_near, double ndc_far);

std::vector<at::Tensor> rasterize_contributors(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                                                  const at::Tensor& opacities, const at::Tensor& depths,
                                                  const at::Tensor& features, const at::Tensor& backgrounds,
                                                  const at::Tensor& tile_offsets, const at::Tensor& ids,
                                                  int64_t width, int64_t height, int64_t tile_size, int64_t k,
                                                  double alpha_max, double alpha_min, double t_eps);

at::Tensor rasterize_bin_radii(int64_t kernel_id, const at::Tensor& means2d, const at::Tensor& payload,
                               const at::Tensor& opacities, const at::Tensor& depths, const at::Tensor& radii,
                               double alpha_min);

}  // namespace recon
