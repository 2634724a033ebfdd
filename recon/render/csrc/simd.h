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
  static RECON_INLINE V log(V x);
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

// log for float lanes: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log(m) from the Cephes degree-9 polynomial in
// m - 1, and e log(2) added in two parts (Cody-Waite) so the sum keeps its low bits; about 1 ulp. Zero gives -inf,
// negatives and NaN give NaN, +inf gives +inf; subnormal inputs are flushed to the smallest normal (the kernels only
// take logs of sums >= 1).
template <>
RECON_INLINE Simd<float>::V Simd<float>::log(V x) {
  const V xs = vmax(x, splat(1.17549435e-38f));
  M bits;
  std::memcpy(&bits, &xs, sizeof(V));
  // exponent of x / 2 and the mantissa in [0.5, 1)
  V e = __builtin_convertvector((bits >> 23) - 126, V);
  const M mbits = (bits & 0x007fffff) | 0x3f000000;
  V m;
  std::memcpy(&m, &mbits, sizeof(V));
  const M small = m < 0.707106781186547524f;  // fold [0.5, sqrt(1/2)) into [1, sqrt(2)): one more halving
  e = select(small, e - 1.0f, e);
  m = select(small, m + m, m) - 1.0f;
  const V z = m * m;
  V p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  V y = p * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  V r = m + y + e * 0.693359375f;
  r = select(x == 0.0f, splat(-__builtin_inff()), r);
  r = select(x == __builtin_inff(), x, r);
  return select((x < 0.0f) | (x != x), splat(__builtin_nanf("")), r);
}

// log for double lanes: exact std::log, as exp (the float64 path is for gradcheck and parity tests).
template <>
RECON_INLINE Simd<double>::V Simd<double>::log(V x) {
  V y;
  for (int i = 0; i < W; ++i) y[i] = std::log(x[i]);
  return y;
}

}  // namespace recon
