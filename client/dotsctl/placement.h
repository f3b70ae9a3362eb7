// Which replica owns a run: the placement HAProxy computes for the router of a dots cluster
// (deploy/haproxy/make-config.sh: `balance hdr(x-dots-run)`, `hash-type consistent sdbm
// avalanche`, replica i of the list declared as `server ... id i+1`, weight 1), computed the same
// way here so that `dotsctl cluster rebalance` moves each run to where the router will send its
// calls. The algorithm follows HAProxy 2.6 (src/lb_chash.c chash_init_server_tree and
// chash_get_server_hash, src/backend.c get_server_hh, src/hash.c hash_sdbm,
// include/haproxy/intops.h full_hash): each replica puts 16 points on a 32-bit ring at
// full_hash(id * 4096 + j), j < 16; a run id hashes to full_hash(sdbm(id)); the owner is the
// replica of the ring point closest to it (the point before it on a tie). The cluster test checks
// this against a real HAProxy. Pure functions, thread-safe, no I/O.
#ifndef DOTS_CLIENT_DOTSCTL_PLACEMENT_H_
#define DOTS_CLIENT_DOTSCTL_PLACEMENT_H_

#include <cstdint>
#include <string_view>
#include <vector>

namespace dots::dotsctl {

// HAProxy's full_hash: Bob Jenkins' 32-bit integer avalanche, times 3221225473.
uint32_t HaproxyFullHash(uint32_t a);
// HAProxy's hash_sdbm over the bytes of `key`.
uint32_t HaproxySdbm(std::string_view key);

// The consistent-hash ring of `replicas` replicas with ids 1..replicas. O(replicas log replicas)
// to build; Owner is O(log replicas).
class Placement {
 public:
  explicit Placement(int replicas);
  int replicas() const { return replicas_; }
  // Index (0-based, the position in --servers) of the replica that owns `run_id`; -1 when there
  // is no replica.
  int Owner(std::string_view run_id) const;

 private:
  struct Point {
    uint32_t key;
    int replica;
  };
  int replicas_;
  std::vector<Point> ring_;  // sorted by key, then by replica and point (HAProxy's insertion order)
};

}  // namespace dots::dotsctl

#endif  // DOTS_CLIENT_DOTSCTL_PLACEMENT_H_
