// Tile binning and per-tile depth sort, shared by every primitive type (it needs only centre, radius, depth).
//
// A primitive with radius r > 0 covers tiles tx in [clamp(floor((mx - r)/T), 0, TW), clamp(ceil((mx + r)/T), 0, TW))
// and likewise in y. The lists are built as a parallel counting sort by tile (per-block histograms, so the result
// does not depend on thread scheduling) followed by a sort of each tile's list by (depth, index). Besides the
// sorted ids, each slot records its "Gaussian-major" position (offset of its primitive + rank of the tile in the
// primitive's box): the backward writes per-slot gradients there and reduces them per primitive without atomics.
#include "common.h"
#include "ops.h"

#include <cstring>

namespace recon {
namespace {

struct Rect {
  int32_t x0, x1, y0, y1;
};

// Sort key of one slot: depth first, then the flat index (c * N + n, ascending in n within a camera).
template <typename T>
struct SortKey;

// float32: one 64-bit integer, (order-preserving bits of the depth) << 32 | index, sorted as an integer.
template <>
struct SortKey<float> {
  uint64_t key;
  static SortKey make(float depth, int32_t id) {
    uint32_t bits;
    std::memcpy(&bits, &depth, sizeof bits);
    bits ^= (bits >> 31) ? 0xFFFFFFFFu : 0x80000000u;  // total order for negative depths too
    return SortKey{(uint64_t(bits) << 32) | uint32_t(id)};
  }
  int32_t id() const { return int32_t(uint32_t(key)); }
  bool operator<(const SortKey& o) const { return key < o.key; }
};

// float64 (the gradcheck path): the depth itself, compared exactly.
template <>
struct SortKey<double> {
  double depth;
  int32_t id_;
  static SortKey make(double depth, int32_t id) { return SortKey{depth, id}; }
  int32_t id() const { return id_; }
  bool operator<(const SortKey& o) const { return depth < o.depth || (depth == o.depth && id_ < o.id_); }
};

template <typename T>
inline Rect tile_rect(T mx, T my, T r, T ts, int TW, int TH) {
  auto clampi = [](T v, int hi) { return static_cast<int32_t>(std::min(std::max(v, T(0)), T(hi))); };
  Rect rc;
  rc.x0 = clampi(std::floor((mx - r) / ts), TW);
  rc.x1 = clampi(std::ceil((mx + r) / ts), TW);
  rc.y0 = clampi(std::floor((my - r) / ts), TH);
  rc.y1 = clampi(std::ceil((my + r) / ts), TH);
  if (rc.x1 < rc.x0) rc.x1 = rc.x0;
  if (rc.y1 < rc.y0) rc.y1 = rc.y0;
  return rc;
}

template <typename T>
std::vector<at::Tensor> bin_impl(const at::Tensor& means2d, const at::Tensor& radii,
                                    const at::Tensor& depths, int tile_size, int TW, int TH) {
  const int64_t C = means2d.size(0), N = means2d.size(1), CN = C * N;
  const int64_t tiles_per_cam = int64_t(TW) * TH, n_tiles = C * tiles_per_cam;
  const T* m2d = means2d.data_ptr<T>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const T* dep = depths.data_ptr<T>();
  const T ts = T(tile_size);

  // Blocks of primitives: enough for load balance, few enough that block x tile histograms stay small.
  int64_t n_blocks = std::max<int64_t>(1, std::min<int64_t>(64, CN / 4096));
  n_blocks = std::max<int64_t>(1, std::min<int64_t>(n_blocks, (int64_t(1) << 22) / std::max<int64_t>(1, n_tiles)));
  const int64_t block_len = (CN + n_blocks - 1) / std::max<int64_t>(1, n_blocks);

  std::vector<Rect> rects(CN);
  std::vector<int64_t> counts(CN + 1, 0);
  std::vector<int64_t> hist(n_blocks * n_tiles, 0);

#pragma omp parallel for schedule(dynamic, 1) if (CN >= kParallelMinItems)
  for (int64_t b = 0; b < n_blocks; ++b) {
    int64_t* h = hist.data() + b * n_tiles;
    const int64_t g1 = std::min(CN, (b + 1) * block_len);
    for (int64_t g = b * block_len; g < g1; ++g) {
      if (rad[g] <= 0) {
        rects[g] = Rect{0, 0, 0, 0};
        counts[g] = 0;
        continue;
      }
      const Rect rc = tile_rect(m2d[g * 2], m2d[g * 2 + 1], T(rad[g]), ts, TW, TH);
      rects[g] = rc;
      counts[g] = int64_t(rc.x1 - rc.x0) * (rc.y1 - rc.y0);
      const int64_t base = (g / N) * tiles_per_cam;
      for (int32_t ty = rc.y0; ty < rc.y1; ++ty)
        for (int32_t tx = rc.x0; tx < rc.x1; ++tx) ++h[base + int64_t(ty) * TW + tx];
    }
  }

  // Exclusive prefix sums: per-primitive offsets, then (tile, block) slot starts.
  std::vector<int64_t> goff(CN + 1);
  int64_t total = 0;
  for (int64_t g = 0; g < CN; ++g) {
    goff[g] = total;
    total += counts[g];
  }
  goff[CN] = total;
  TORCH_CHECK(total < (int64_t(1) << 31), "too many primitive-tile intersections (", total, ") for int32 indices");

  auto i32 = at::TensorOptions().dtype(at::kInt);
  auto tile_offsets = at::empty({n_tiles + 1}, i32);
  int32_t* toff = tile_offsets.data_ptr<int32_t>();
  {
    int64_t run = 0;
    for (int64_t t = 0; t < n_tiles; ++t) {
      toff[t] = int32_t(run);
      for (int64_t b = 0; b < n_blocks; ++b) {
        int64_t& h = hist[b * n_tiles + t];
        const int64_t cnt = h;
        h = run;  // becomes this block's write cursor for tile t
        run += cnt;
      }
    }
    toff[n_tiles] = int32_t(run);
  }

  std::vector<SortKey<T>> entries(total);
#pragma omp parallel for schedule(dynamic, 1) if (CN >= kParallelMinItems)
  for (int64_t b = 0; b < n_blocks; ++b) {
    int64_t* cursor = hist.data() + b * n_tiles;
    const int64_t g1 = std::min(CN, (b + 1) * block_len);
    for (int64_t g = b * block_len; g < g1; ++g) {
      if (counts[g] == 0) continue;
      const Rect rc = rects[g];
      const int64_t base = (g / N) * tiles_per_cam;
      const SortKey<T> key = SortKey<T>::make(dep[g], int32_t(g));
      for (int32_t ty = rc.y0; ty < rc.y1; ++ty)
        for (int32_t tx = rc.x0; tx < rc.x1; ++tx) entries[cursor[base + int64_t(ty) * TW + tx]++] = key;
    }
  }

  auto ids = at::empty({total}, i32);
  auto slot_pos = at::empty({total}, i32);
  int32_t* o_ids = ids.data_ptr<int32_t>();
  int32_t* o_pos = slot_pos.data_ptr<int32_t>();
#pragma omp parallel for schedule(dynamic, 4) if (total >= kParallelMinItems)
  for (int64_t t = 0; t < n_tiles; ++t) {
    std::sort(entries.begin() + toff[t], entries.begin() + toff[t + 1]);
    const int64_t t_in = t % tiles_per_cam;
    const int32_t tx = int32_t(t_in % TW), ty = int32_t(t_in / TW);
    for (int64_t s = toff[t]; s < toff[t + 1]; ++s) {
      const int32_t g = entries[s].id();
      const Rect& rc = rects[g];
      o_ids[s] = g;
      // Gaussian-major position: the primitive's offset plus the rank of this tile in its box (row-major).
      o_pos[s] = int32_t(goff[g] + int64_t(ty - rc.y0) * (rc.x1 - rc.x0) + (tx - rc.x0));
    }
  }

  auto gauss_offsets = at::empty({CN + 1}, at::TensorOptions().dtype(at::kLong));
  std::copy(goff.begin(), goff.end(), gauss_offsets.data_ptr<int64_t>());
  return {tile_offsets, ids, slot_pos, gauss_offsets};
}

}  // namespace

std::vector<at::Tensor> bin_primitives(const at::Tensor& means2d, const at::Tensor& radii,
                                          const at::Tensor& depths, int64_t tile_size, int64_t tile_width,
                                          int64_t tile_height) {
  RECON_CHECK_INPUT(means2d);
  RECON_CHECK_INPUT(radii);
  RECON_CHECK_INPUT(depths);
  TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
  TORCH_CHECK(means2d.dim() == 3 && radii.dim() == 2 && depths.dim() == 2, "bin: shapes [C,N,2], [C,N], [C,N]");
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_primitives", [&] {
    out = bin_impl<scalar_t>(means2d, radii, depths, int(tile_size), int(tile_width), int(tile_height));
  });
  return out;
}

}  // namespace recon
