#include "core/util/mutex.h"

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace dots {
namespace {

// What the thread-safety analysis checks at compile time is exercised by the clang build
// (scripts/tsan.sh); these tests check what the wrappers do at run time.

TEST(MutexTest, ExcludesConcurrentWriters) {
  Mutex mu;
  int64_t count = 0;  // guarded by mu (a local cannot carry the annotation)
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        MutexLock lock(&mu);
        ++count;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  MutexLock lock(&mu);
  EXPECT_EQ(count, 40000);
}

TEST(MutexTest, TryLockFailsWhileHeld) {
  Mutex mu;
  mu.Lock();
  bool taken = true;
  std::thread other([&] {
    if (mu.TryLock()) {
      mu.Unlock();
    } else {
      taken = false;
    }
  });
  other.join();
  mu.Unlock();
  EXPECT_FALSE(taken);
  if (mu.TryLock()) {
    mu.Unlock();
  } else {
    ADD_FAILURE() << "TryLock failed on a free mutex";
  }
}

TEST(SharedMutexTest, ReadersShareAndWritersExclude) {
  SharedMutex mu;
  int value = 0;
  {
    ReaderMutexLock first(&mu);
    // A second reader gets in while the first holds the lock (this would deadlock otherwise).
    std::thread reader([&] { ReaderMutexLock second(&mu); });
    reader.join();
  }
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        WriterMutexLock lock(&mu);
        ++value;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  ReaderMutexLock lock(&mu);
  EXPECT_EQ(value, 4000);
}

TEST(CondVarTest, WaitReturnsWithTheLockHeldOnceSignalled) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread signaller([&] {
    MutexLock lock(&mu);
    ready = true;
    cv.SignalAll();
  });
  {
    MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    EXPECT_TRUE(ready);
  }
  signaller.join();
  // The waiter released the lock on leaving its scope: it can be taken again.
  if (mu.TryLock()) {
    mu.Unlock();
  } else {
    ADD_FAILURE() << "the lock is still held after the waiter's scope";
  }
}

TEST(CondVarTest, WaitWithDeadlineTimesOutWithoutASignal) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  bool timed_out = false;
  while (!timed_out) timed_out = cv.WaitWithDeadline(&mu, deadline);  // spurious wake-ups retry
  EXPECT_GE(absl::Now(), deadline);
  EXPECT_TRUE(cv.WaitWithTimeout(&mu, absl::ZeroDuration()));
}

}  // namespace
}  // namespace dots
