// Atomics and the ready queue of the scheduler (see the design notes in _engine.pxi).
//
// Atomics are GCC/Clang __atomic builtins on plain arrays: the per-node arrays stay
// ordinary numpy-allocated memory (struct-of-arrays) while every concurrent access to
// them is a real atomic operation, correct without the GIL.
//
// The ready queue is a mutex-protected FIFO with a condition variable for idle
// workers.  No Python object is touched and the GIL is never requested while its
// mutex is held, so a thread holding the GIL may take the mutex without risk of
// deadlock, and waits happen with the GIL released.
#ifndef FO_SYNC_H
#define FO_SYNC_H

#include <stdint.h>
#include <time.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

// Sequentially consistent throughout: the abort handshake ("running += 1, then read
// aborted" against "aborted = 1, then read running") is a Dekker pattern and needs SC.
static inline int fo_cas_i64(int64_t* p, int64_t expected, int64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline int32_t fo_sub_fetch_i32(int32_t* p, int32_t v) {
    return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST);
}
static inline int64_t fo_add_fetch_i64(int64_t* p, int64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}
static inline int64_t fo_load_i64(const int64_t* p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline uint32_t fo_load_u32(const uint32_t* p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline int fo_cas_u32(uint32_t* p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline void fo_store_i64(int64_t* p, int64_t v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
// Join rules: the bits a node has seen of its dependencies, and its skip reason.
static inline uint8_t fo_or_fetch_u8(uint8_t* p, uint8_t v) {
    return __atomic_or_fetch(p, v, __ATOMIC_SEQ_CST);
}
static inline uint8_t fo_load_u8(const uint8_t* p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline void fo_store_u8(uint8_t* p, uint8_t v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
static inline int64_t fo_fetch_add_i64(int64_t* p, int64_t v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
// Metric counters are updated with the GIL held, which serializes them; only a
// free-threaded build needs (relaxed) atomic adds, and a lock prefix per event costs.
static inline void fo_metric_add(int64_t* p, int64_t v) {
#ifdef Py_GIL_DISABLED
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#else
    *p += v;
#endif
}

// Histogram bucket of a latency in ns: b with ns <= 1000 * 4**b (b = 0 for <= 1 us),
// the last of 16 buckets unbounded; from the bit length, without a loop.
static inline int fo_bucket_of_ns(int64_t ns) {
    if (ns <= 1000) return 0;
    uint64_t micros = (uint64_t)(ns - 1) / 1000;   // ceil(ns / 1000) - 1
    int bits = 64 - __builtin_clzll(micros | 1);    // bit length of ceil(ns/1000) - 1
    int b = (bits + 1) / 2;
    return b > 15 ? 15 : b;
}
static inline int64_t fo_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// FIFO of ready node ids, shared by the workers of one run.
struct FoReadyQueue {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<int32_t> items;
    size_t head = 0;
    int idle = 0;           // workers blocked in wait()
    int wake_all = 0;       // set by wake(): every waiter returns

    void reset() {
        std::lock_guard<std::mutex> lock(mutex);
        items.clear();
        head = 0;
        wake_all = 0;
    }

    size_t size_locked() const { return items.size() - head; }

    size_t size() {
        std::lock_guard<std::mutex> lock(mutex);
        return size_locked();
    }

    // Append n ids; wake idle workers.  Returns how many workers were idle.
    int push(const int32_t* ids, size_t n) {
        int sleepers;
        {
            std::lock_guard<std::mutex> lock(mutex);
            items.insert(items.end(), ids, ids + n);
            sleepers = idle;
        }
        if (sleepers > 0) {
            if (n > 1) cv.notify_all(); else cv.notify_one();
        }
        return sleepers;
    }

    // Take up to max ids into out; returns the number taken.
    size_t pop(int32_t* out, size_t max) {
        std::lock_guard<std::mutex> lock(mutex);
        return pop_locked(out, max);
    }

    size_t pop_locked(int32_t* out, size_t max) {
        size_t n = size_locked();
        if (n > max) n = max;
        for (size_t i = 0; i < n; ++i) out[i] = items[head + i];
        head += n;
        if (head == items.size()) {
            items.clear();
            head = 0;
        } else if (head > 4096 && head * 2 > items.size()) {
            items.erase(items.begin(), items.begin() + head);
            head = 0;
        }
        return n;
    }

    // Block up to timeout_ms for work (or wake()); then take up to max ids.
    size_t wait_pop(int32_t* out, size_t max, long timeout_ms) {
        std::unique_lock<std::mutex> lock(mutex);
        if (size_locked() == 0 && !wake_all) {
            ++idle;
            cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [this] { return size_locked() > 0 || wake_all; });
            --idle;
        }
        return pop_locked(out, max);
    }

    // Wake every waiter now (run finished, cancelled, or a state change to look at).
    void wake() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            wake_all = 1;
        }
        cv.notify_all();
    }

    size_t capacity_bytes() {
        std::lock_guard<std::mutex> lock(mutex);
        return items.capacity() * sizeof(int32_t);
    }

    int idle_workers() {
        std::lock_guard<std::mutex> lock(mutex);
        return idle;
    }
};

// A one-shot event: set() once, wait(timeout) with the GIL released by the caller.
struct FoEvent {
    std::mutex mutex;
    std::condition_variable cv;
    int flag = 0;

    void set() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            flag = 1;
        }
        cv.notify_all();
    }
    void clear() {
        std::lock_guard<std::mutex> lock(mutex);
        flag = 0;
    }
    int is_set() {
        std::lock_guard<std::mutex> lock(mutex);
        return flag;
    }
    int wait(long timeout_ms) {
        std::unique_lock<std::mutex> lock(mutex);
        cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] { return flag != 0; });
        return flag;
    }
};

#endif
