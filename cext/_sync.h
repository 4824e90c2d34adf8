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

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
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

// The helper board of an engine (Crew in _engine.pxi): runs that want a helper post
// themselves here, at most once each (*on_board, guarded by the mutex); helper tasks on
// the engine's pool take them.  At most `capacity` helper tasks exist at a time, queued
// on the pool or running, and none holds a run while queued: a tiny run that ends
// before a helper gets to it just takes itself off the board.  Entries are PyObject*
// whose reference the board owns; the Cython side adds and drops those references
// with the GIL held (or, on free-threaded builds, with the thread attached), never
// while holding this mutex.
struct FoPost {
    void* run;
    int64_t* on_board;
};

enum { FO_POST_ADDED = 1, FO_POST_SUBMIT = 2 };

struct FoBoard {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<FoPost> posts;
    int waiting = 0;        // helpers blocked in wait()
    int outstanding = 0;    // helper tasks submitted and not retired
    int capacity = 1;
    int closed = 0;

    // Post a run (once); FO_POST_ADDED if it was added (the board now owns the
    // caller's reference), FO_POST_SUBMIT if the caller must submit a new helper task.
    int post(void* run, int64_t* on_board) {
        int out = 0;
        int notify = 0;
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (__atomic_load_n(on_board, __ATOMIC_SEQ_CST) || closed) return 0;
            __atomic_store_n(on_board, 1, __ATOMIC_SEQ_CST);
            posts.push_back(FoPost{run, on_board});
            out = FO_POST_ADDED;
            if (waiting > 0) {
                notify = 1;
            } else if (outstanding < capacity) {
                ++outstanding;
                out |= FO_POST_SUBMIT;
            }
        }
        if (notify) cv.notify_one();
        return out;
    }

    // Take the oldest post (the caller takes over its reference), or NULL.
    void* take() {
        std::lock_guard<std::mutex> lock(mutex);
        if (posts.empty()) return nullptr;
        FoPost p = posts.front();
        posts.pop_front();
        __atomic_store_n(p.on_board, 0, __ATOMIC_SEQ_CST);
        return p.run;
    }

    // Take `run` off the board; 1 if it was on it (the caller drops the reference).
    int remove(void* run, int64_t* on_board) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!__atomic_load_n(on_board, __ATOMIC_SEQ_CST)) return 0;
        for (auto it = posts.begin(); it != posts.end(); ++it) {
            if (it->run == run) {
                posts.erase(it);
                break;
            }
        }
        __atomic_store_n(on_board, 0, __ATOMIC_SEQ_CST);
        return 1;
    }

    // Wait up to timeout_ms for a post; 1 if there is one (0 on timeout or close).
    int wait(long timeout_ms) {
        std::unique_lock<std::mutex> lock(mutex);
        if (posts.empty() && !closed) {
            ++waiting;
            cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [this] { return !posts.empty() || closed; });
            --waiting;
        }
        return !posts.empty() && !closed;
    }

    // A helper task with nothing to do asks to end: 1 (and it no longer counts) when the
    // board is empty or closed, 0 when a post arrived meanwhile (it must take it).
    int retire() {
        std::lock_guard<std::mutex> lock(mutex);
        if (!posts.empty() && !closed) return 0;
        --outstanding;
        return 1;
    }

    // A submission failed: the task that post() asked for does not exist.
    void submit_failed() {
        std::lock_guard<std::mutex> lock(mutex);
        --outstanding;
    }

    void close() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            closed = 1;
        }
        cv.notify_all();
    }

    size_t size() {
        std::lock_guard<std::mutex> lock(mutex);
        return posts.size();
    }

    int helpers() {
        std::lock_guard<std::mutex> lock(mutex);
        return outstanding;
    }
};

// The attempt deadlines of one run: a min-heap of (due, node, running word) under a
// mutex.  An entry whose attempt ended is inert (the node's word moved on) and is
// dropped lazily: when it reaches the top, or when the heap has grown to twice what was
// live at the last compaction (amortized O(1) a push), so the heap holds O(live) entries
// whatever the run length.  `armed` is the due time of the one timer entry the run
// keeps on the engine's timer (0: none); `arm_seq` tells the current arm from stale ones.
struct FoDeadline {
    int64_t due;
    int32_t node;
    uint32_t word;
};

struct FoDeadlineLater {
    bool operator()(const FoDeadline& a, const FoDeadline& b) const { return a.due > b.due; }
};

struct FoDeadlines {
    std::mutex mutex;
    std::vector<FoDeadline> heap;
    size_t compact_at = 64;
    int64_t armed = 0;
    uint64_t arm_seq = 0;
    const uint32_t* state = nullptr;

    bool live(const FoDeadline& d) const {
        return __atomic_load_n(&state[d.node], __ATOMIC_SEQ_CST) == d.word;
    }

    void compact_locked() {
        heap.erase(std::remove_if(heap.begin(), heap.end(),
                                  [this](const FoDeadline& d) { return !live(d); }),
                   heap.end());
        std::make_heap(heap.begin(), heap.end(), FoDeadlineLater());
        compact_at = heap.size() * 2 > 64 ? heap.size() * 2 : 64;
    }

    void drop_inert_top_locked() {
        while (!heap.empty() && !live(heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), FoDeadlineLater());
            heap.pop_back();
        }
    }

    // Add a deadline.  Returns the due time to arm the timer at (and *seq, the arm's
    // number), or 0 when the timer is already armed early enough.
    int64_t push(int64_t due, int32_t node, uint32_t word, uint64_t* seq) {
        std::lock_guard<std::mutex> lock(mutex);
        if (heap.size() >= compact_at) compact_locked();
        heap.push_back(FoDeadline{due, node, word});
        std::push_heap(heap.begin(), heap.end(), FoDeadlineLater());
        if (armed == 0 || due < armed) {
            armed = due;
            *seq = ++arm_seq;
            return due;
        }
        return 0;
    }

    // The timer fired for arm `seq`: move the live entries due by `now` to `out`.
    // Returns the due time of the next arm (and *next_seq) if `seq` is the current arm
    // and live entries remain, else 0 (a stale arm never re-arms).
    int64_t pop_due(int64_t now, uint64_t seq, std::vector<FoDeadline>& out, uint64_t* next_seq) {
        std::lock_guard<std::mutex> lock(mutex);
        while (!heap.empty() && heap.front().due <= now) {
            if (live(heap.front())) out.push_back(heap.front());
            std::pop_heap(heap.begin(), heap.end(), FoDeadlineLater());
            heap.pop_back();
        }
        if (seq != arm_seq) return 0;
        drop_inert_top_locked();
        if (heap.empty()) {
            armed = 0;
            return 0;
        }
        armed = heap.front().due;
        *next_seq = ++arm_seq;
        return armed;
    }

    // Forget every entry and release the memory (the run is over, or reset).
    void clear() {
        std::lock_guard<std::mutex> lock(mutex);
        std::vector<FoDeadline>().swap(heap);
        compact_at = 64;
        armed = 0;
        ++arm_seq;
    }

    size_t size() {
        std::lock_guard<std::mutex> lock(mutex);
        return heap.size();
    }
};

#endif
