#include "server/executor.h"

#include <algorithm>
#include <utility>

namespace dots {

Executor::Executor(std::string name, int threads) : name_(std::move(name)) {
  const int n = std::max(1, threads);
  threads_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

Executor::~Executor() { Shutdown(); }

bool Executor::Schedule(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    if (stopping_) return false;
    tasks_.push_back(std::move(task));
  }
  wake_.Signal();
  return true;
}

void Executor::Shutdown() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  std::call_once(joined_, [this] {
    for (std::thread& t : threads_) t.join();
  });
}

int64_t Executor::queued() const {
  MutexLock lock(&mu_);
  return static_cast<int64_t>(tasks_.size());
}

void Executor::WorkerLoop() {
  while (true) {
    std::function<void()> task;
    {
      MutexLock lock(&mu_);
      while (!stopping_ && tasks_.empty()) wake_.Wait(&mu_);
      // Queued tasks still run after Shutdown: each may be the only thing that finishes an RPC.
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace dots
