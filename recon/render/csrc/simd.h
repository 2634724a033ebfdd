// Portable fixed-width SIMD over pixels (GCC/Clang vector extensions), used by the compositor and the kernels.
//
// Simd<T>::V holds 32 bytes of lanes (8 floats or 4 doubles); the compiler maps it to AVX2 in the x86-64-v3 clone
// of the hot functions (RECON_MULTIVERSION) and to pairs of SSE2 / NEON registers elsewhere. Every helper is
// always_inline so no vector crosses a function boundary (the ABI of 32-byte vectors differs between targets).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 11
#define RECON_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RECON_MULTIVERSION
#endif

#define RECON_INLINE inline __attribute__((always_inline))

#pragma GCC diagnostic ignored "-Wpsabi"

namespace recon {

template <typename T>
struct IntOf;
template <>
struct IntOf<float> {
  using type = int32_t;
};
template <>
struct IntOf<double> {
  using type = int64_t;
};

template <typename T>
struct Simd {
  static constexpr int W = 32 / int(sizeof(T));
  using I = typename IntOf<T>::type;
  typedef T V __attribute__((vector_size(32)));
  typedef I M __attribute__((vector_size(32)));  // lane masks (0 or -1) and integer lanes

  static RECON_INLINE V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static RECON_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  static RECON_INLINE M loadi(const I* p) {
    M v;
    std::memcpy(&v, p, sizeof(M));
    return v;
  }
  static RECON_INLINE void storei(I* p, M v) { std::memcpy(p, &v, sizeof(M)); }
  static RECON_INLINE V splat(T x) { return V{} + x; }
  static RECON_INLINE M splati(I x) { return M{} + x; }
  static RECON_INLINE V iota() {
    V v;
    for (int i = 0; i < W; ++i) v[i] = T(i);
    return v;
  }
  static RECON_INLINE V select(M m, V a, V b) { return m ? a : b; }
  static RECON_INLINE M selecti(M m, M a, M b) { return m ? a : b; }
  static RECON_INLINE V vmin(V a, V b) { return a < b ? a : b; }
  static RECON_INLINE V vmax(V a, V b) { return a > b ? a : b; }
  static RECON_INLINE V vabs(V a) { return a < T(0) ? -a : a; }
  static RECON_INLINE bool any(M m) {
    typedef uint64_t Q __attribute__((vector_size(32)));
    Q q;
    std::memcpy(&q, &m, sizeof(Q));
    return ((q[0] | q[1]) | (q[2] | q[3])) != 0;
  }
  static RECON_INLINE int count(M m) {
    int n = 0;
    for (int i = 0; i < W; ++i) n += m[i] != 0;
    return n;
  }
  static RECON_INLINE T hsum(V v) {
    T s = T(0);
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }
  static RECON_INLINE V exp(V x);
};

// exp for float lanes: Cody-Waite range reduction and the Cephes degree-6 polynomial (about 1 ulp), inputs
// clamped to [-87, 88] so every lane stays finite and normal.
template <>
RECON_INLINE Simd<float>::V Simd<float>::exp(V x) {
  x = vmax(vmin(x, splat(88.0f)), splat(-87.0f));
  const V magic = splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const V n = (x * 1.44269504088896341f + magic) - magic;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * (r * r) + r + 1.0f;
  const M bits = (__builtin_convertvector(n, M) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return y * scale;
}

// exp for double lanes (the float64 path exists for gradcheck, so accuracy matters more than speed).
template <>
RECON_INLINE Simd<double>::V Simd<double>::exp(V x) {
  V y;
  for (int i = 0; i < W; ++i) y[i] = std::exp(x[i]);
  return y;
}

}  // namespace recon
