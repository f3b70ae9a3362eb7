#include "client/dotsctl/placement.h"

#include <algorithm>

namespace dots::dotsctl {
namespace {

// HAProxy's BE_WEIGHT_SCALE (points per unit of weight) and SRV_EWGHT_RANGE (256 * 16).
constexpr uint32_t kPointsPerReplica = 16;
constexpr uint32_t kIdStride = 256 * 16;

}  // namespace

uint32_t HaproxyFullHash(uint32_t a) {
  a = (a + 0x7ed55d16u) + (a << 12);
  a = (a ^ 0xc761c23cu) ^ (a >> 19);
  a = (a + 0x165667b1u) + (a << 5);
  a = (a + 0xd3a2646cu) ^ (a << 9);
  a = (a + 0xfd7046c5u) + (a << 3);
  a = (a ^ 0xb55a4f09u) ^ (a >> 16);
  return a * 3221225473u;
}

uint32_t HaproxySdbm(std::string_view key) {
  uint32_t hash = 0;
  for (unsigned char c : key) hash = c + (hash << 6) + (hash << 16) - hash;
  return hash;
}

Placement::Placement(int replicas) : replicas_(std::max(replicas, 0)) {
  ring_.reserve(static_cast<size_t>(replicas_) * kPointsPerReplica);
  for (int r = 0; r < replicas_; ++r) {
    const uint32_t id = static_cast<uint32_t>(r) + 1;
    for (uint32_t j = 0; j < kPointsPerReplica; ++j) {
      ring_.push_back({HaproxyFullHash(id * kIdStride + j), r});
    }
  }
  // Equal keys (vanishingly rare) keep their insertion order, as HAProxy's ebtree does.
  std::stable_sort(ring_.begin(), ring_.end(),
                   [](const Point& a, const Point& b) { return a.key < b.key; });
}

int Placement::Owner(std::string_view run_id) const {
  if (ring_.empty()) return -1;
  if (replicas_ == 1) return 0;  // HAProxy does not hash with one server
  const uint32_t hash = HaproxyFullHash(HaproxySdbm(run_id));
  auto next = std::lower_bound(ring_.begin(), ring_.end(), hash,
                               [](const Point& p, uint32_t h) { return p.key < h; });
  if (next == ring_.end()) next = ring_.begin();
  auto prev = next == ring_.begin() ? ring_.end() - 1 : next - 1;
  const uint32_t dp = hash - prev->key;  // unsigned: distances wrap around the ring
  const uint32_t dn = next->key - hash;
  return dp <= dn ? prev->replica : next->replica;
}

}  // namespace dots::dotsctl
