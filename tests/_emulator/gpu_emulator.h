// A small CUDA execution model for the host C++ compiler (test support only).
//
// Every thread of a block is a fiber (ucontext) with its own stack; the block
// runs on one OS thread, switching fibers only at __syncthreads(), which is
// therefore a real barrier: no thread passes it before every thread of the
// block has reached it.  A thread that exits while others wait at a barrier
// is reported as barrier divergence.  __shared__ variables become function
// statics, shared by the fibers of a block (blocks run one after another).
// Shared memory is not cleared between blocks, like a real GPU's.
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

#define GPUCONV_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

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
};

inline Block* g_block = nullptr;
constexpr size_t kStack = 64 * 1024;

inline void trampoline() {
    Block* b = g_block;
    (*b->body)();
    b->current->done = true;
    // uc_link returns to the scheduler.
}

}  // namespace emu

inline void __syncthreads() {
    emu::Block* b = emu::g_block;
    b->current->at_barrier = true;
    swapcontext(&b->current->ctx, &b->scheduler);
}

namespace emu {

// Runs body() as every thread of every block of the grid.  Returns 0, or a
// nonzero code: 1 barrier divergence, 2 bad launch geometry.
inline int launch(dim3 grid, dim3 block, const std::function<void()>& body, long* barrier_count) {
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
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
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
            for (Fiber& f : b.fibers) {
                if (f.done) { ++done; continue; }
                f.at_barrier = false;
                b.current = &f;
                threadIdx = f.tid;
                swapcontext(&b.scheduler, &f.ctx);
                if (f.done) ++done; else ++waiting;
            }
            if (waiting == 0) break;
            if (done != 0) return 1;  // some threads exited while others wait at a barrier
            ++b.barriers;
        }
    }
    g_block = nullptr;
    if (barrier_count) *barrier_count = b.barriers;
    return 0;
}

}  // namespace emu
