// A small parallel loop for the commands that compare many pairs.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <opencv2/core.hpp>
#include <thread>
#include <vector>

namespace bien::cli {

// OpenCV's own thread pool off while our workers run (restored after, also
// when they throw).
class CvSingleThread {
 public:
  CvSingleThread() : saved_(cv::getNumThreads()) { cv::setNumThreads(1); }
  ~CvSingleThread() { cv::setNumThreads(saved_); }
  CvSingleThread(const CvSingleThread&) = delete;
  CvSingleThread& operator=(const CvSingleThread&) = delete;

 private:
  int saved_;
};

// Runs f(i) for i in [0, n) on `jobs` threads; the first exception is
// rethrown on the caller's thread after all threads stop (the others stop
// taking new items once one has failed).
template <typename F>
void ParallelFor(size_t n, int jobs, F f) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < jobs; ++t) {
      threads.emplace_back([&] {
        for (size_t i = next++; i < n && !failed; i = next++) {
          try {
            f(i);
          } catch (...) {
            std::lock_guard lock(error_mutex);
            if (!error) error = std::current_exception();
            failed = true;
          }
        }
      });
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace bien::cli
