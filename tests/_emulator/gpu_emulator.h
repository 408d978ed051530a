// A small CUDA execution model for the host C++ compiler (test support only).
//
// Every thread of a block is a fiber (ucontext) with its own stack; the block
// runs on one OS thread, switching fibers only at __syncthreads(), which is
// therefore a real barrier: no thread passes it before every thread of the
// block has reached it.  A thread that exits while others wait at a barrier
// is reported as barrier divergence.  __shared__ variables become function
// statics, shared by the fibers of a block (blocks run one after another).
// Shared memory is not cleared between blocks, like a real GPU's.
//
// A launch runs the blocks, and the threads of a block between barriers, in
// increasing index order or, with `reverse`, in decreasing order; the test
// harness runs both and compares, so a result that depends on the order
// (a race: a missing barrier, two threads writing one element) shows up.
//
// Built with -fsanitize=address, the fiber switches are announced to
// AddressSanitizer so that it tracks which stack is live.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define GC_EMU_ASAN 1
#endif

#define GPUCONV_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
typedef dim3 uint3;

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

using std::max;
using std::min;

inline float gc_half_to_float(unsigned short b) {
    _Float16 h;
    std::memcpy(&h, &b, 2);
    return (float)h;
}
inline unsigned short gc_float_to_half(float f) {
    _Float16 h = (_Float16)f;  // round to nearest even, as cvt.rn.f16.f32
    unsigned short b;
    std::memcpy(&b, &h, 2);
    return b;
}

namespace emu {

struct Fiber {
    ucontext_t ctx;
    dim3 tid;
    bool done = false;
    bool at_barrier = false;
};

struct Block {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    Fiber* current = nullptr;
    const std::function<void()>* body = nullptr;
    long barriers = 0;
    // The scheduler's stack, as AddressSanitizer reports it on the first switch.
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
};

inline Block* g_block = nullptr;
#ifdef GC_EMU_ASAN
constexpr size_t kStack = 256 * 1024;  // instrumented frames are larger
#else
constexpr size_t kStack = 64 * 1024;
#endif

// Fiber switches, announced to AddressSanitizer when it is on.
inline void to_fiber(Block* b, Fiber& f, size_t t) {
#ifdef GC_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, &b->stacks[t * kStack], kStack);
    swapcontext(&b->scheduler, &f.ctx);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    (void)t;
    swapcontext(&b->scheduler, &f.ctx);
#endif
}

inline void to_scheduler(Block* b, bool exiting) {
#ifdef GC_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, b->sched_bottom, b->sched_size);
    if (exiting) return;  // uc_link switches
    swapcontext(&b->current->ctx, &b->scheduler);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    if (!exiting) swapcontext(&b->current->ctx, &b->scheduler);
#endif
}

inline void trampoline() {
    Block* b = g_block;
#ifdef GC_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &b->sched_bottom, &b->sched_size);
#endif
    (*b->body)();
    b->current->done = true;
    to_scheduler(b, true);
    // uc_link returns to the scheduler.
}

}  // namespace emu

inline void __syncthreads() {
    emu::Block* b = emu::g_block;
    b->current->at_barrier = true;
    emu::to_scheduler(b, false);
}

namespace emu {

// Runs body() as every thread of every block of the grid, in increasing or
// (reverse) decreasing order of block and thread index.  Returns 0, or a
// nonzero code: 1 barrier divergence, 2 bad launch geometry.
inline int launch(dim3 grid, dim3 block, const std::function<void()>& body, long* barrier_count,
                  bool reverse = false) {
    const unsigned nthreads = block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.y > 65535 || grid.z > 65535)
        return 2;
    Block b;
    b.body = &body;
    b.fibers.resize(nthreads);
    b.stacks.resize(nthreads * kStack);
    g_block = &b;
    gridDim = grid;
    blockDim = block;
    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long i = 0; i < nblocks; ++i) {
        const unsigned long long bi = reverse ? nblocks - 1 - i : i;
        blockIdx.x = (unsigned)(bi % grid.x);
        blockIdx.y = (unsigned)(bi / grid.x % grid.y);
        blockIdx.z = (unsigned)(bi / grid.x / grid.y);
        unsigned t = 0;
        for (unsigned tz = 0; tz < block.z; ++tz)
        for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx, ++t) {
            Fiber& f = b.fibers[t];
            f.tid.x = tx; f.tid.y = ty; f.tid.z = tz;
            f.done = false;
            f.at_barrier = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = &b.stacks[t * kStack];
            f.ctx.uc_stack.ss_size = kStack;
            f.ctx.uc_link = &b.scheduler;
            makecontext(&f.ctx, trampoline, 0);
        }
        for (;;) {
            unsigned done = 0, waiting = 0;
            for (unsigned k = 0; k < nthreads; ++k) {
                const unsigned t = reverse ? nthreads - 1 - k : k;
                Fiber& f = b.fibers[t];
                if (f.done) { ++done; continue; }
                f.at_barrier = false;
                b.current = &f;
                threadIdx = f.tid;
                to_fiber(&b, f, t);
                if (f.done) ++done; else ++waiting;
            }
            if (waiting == 0) break;
            if (done != 0) { g_block = nullptr; return 1; }  // exited while others wait
            ++b.barriers;
        }
    }
    g_block = nullptr;
    if (barrier_count) *barrier_count = b.barriers;
    return 0;
}

}  // namespace emu
