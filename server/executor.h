// A fixed-size pool of worker threads running queued tasks in FIFO order. The gRPC callback
// threads hand every piece of work that can take long (waiting for a round plan, parsing a pool
// file, taking a run's mutex while its planner holds it) to an Executor, so that they stay free
// to read and write messages (docs/conventions.md §2.4: "never block in a reaction").
//
// Thread-safe. Tasks must not throw.
#ifndef DOTS_SERVER_EXECUTOR_H_
#define DOTS_SERVER_EXECUTOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "core/util/mutex.h"

namespace dots {

class Executor {
 public:
  // Starts `threads` (>= 1; smaller values are raised to 1) worker threads. `name` appears in
  // error messages only.
  Executor(std::string name, int threads);
  // Shutdown(), then joins. Blocks until every queued task has run.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task` behind the ones already queued. Returns false, without running or keeping the
  // task, once Shutdown() has been called. O(1); never blocks beyond the queue's mutex.
  bool Schedule(std::function<void()> task);

  // Refuses new tasks, runs the queued ones to completion and joins the threads. Idempotent;
  // blocks until the last task returns. Must not be called from one of the pool's own tasks.
  void Shutdown();

  // Tasks queued and not yet started. O(1).
  int64_t queued() const;
  const std::string& name() const { return name_; }

 private:
  void WorkerLoop();

  const std::string name_;
  mutable Mutex mu_;
  CondVar wake_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  std::once_flag joined_;
};

}  // namespace dots

#endif  // DOTS_SERVER_EXECUTOR_H_
