// A caching allocator for the ATAC operators' activation-sized outputs (y, the kept z1, dx).
//
// PyTorch's CPU allocator hands large blocks to the C library, which maps fresh pages for them
// and unmaps them on free once the heap's top is large enough: every output then costs a page
// fault per 4 KiB page on first write (about 2000 for a 128 x 16 x 32 x 32 float tensor), and
// the faults were a tenth of a training node's time at resnet_cifar's first stage. Blocks of
// this pool go back to it when their tensor dies and serve the next request of the same size,
// so a training step reuses the last step's pages. The tensors are ordinary (resizable) CPU
// tensors; only their storage's allocator differs.
//
// Bounded: at most kMaxCachedBytes are held free (a block given back beyond that is freed), and
// attnact::release_cached_outputs frees them all.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <mutex>
#include <unordered_map>
#include <vector>

namespace attnact_pool {

constexpr size_t kMaxCachedBytes = size_t(1) << 30;

class OutputPool final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    Block* block = take(n);
    if (!block) block = new Block{c10::GetDefaultCPUAllocator()->allocate(n), n};
    return {block->memory.get(), block, &OutputPool::give_back, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> guard(mu_);
    return cached_;
  }
  void release() {
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> guard(mu_);
      for (auto& [n, blocks] : free_) drop.insert(drop.end(), blocks.begin(), blocks.end());
      free_.clear();
      cached_ = 0;
    }
    for (Block* b : drop) delete b;
  }

 private:
  struct Block {
    c10::DataPtr memory;  // from PyTorch's CPU allocator (its alignment and settings)
    size_t n;
  };

  Block* take(size_t n) {
    std::lock_guard<std::mutex> guard(mu_);
    auto it = free_.find(n);
    if (it == free_.end() || it->second.empty()) return nullptr;
    Block* b = it->second.back();
    it->second.pop_back();
    cached_ -= n;
    return b;
  }

  static void give_back(void* ctx);

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<Block*>> free_;  // by exact size: outputs repeat
  size_t cached_ = 0;
};

// Never destroyed: tensors may outlive static destruction at exit.
inline OutputPool& pool() {
  static OutputPool* p = new OutputPool();
  return *p;
}

inline void OutputPool::give_back(void* ctx) {
  auto* block = static_cast<Block*>(ctx);
  OutputPool& self = pool();
  {
    std::lock_guard<std::mutex> guard(self.mu_);
    if (self.cached_ + block->n <= kMaxCachedBytes) {
      self.free_[block->n].push_back(block);
      self.cached_ += block->n;
      return;
    }
  }
  delete block;  // beyond the bound: back to PyTorch's allocator
}

// at::empty(sizes, options, memory_format) with its storage from the pool
inline at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& opts,
                        at::MemoryFormat fmt = at::MemoryFormat::Contiguous) {
  return at::detail::empty_generic(sizes, &pool(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   opts.dtype().toScalarType(), fmt);
}

inline at::Tensor empty_like(const at::Tensor& x, at::MemoryFormat fmt) {
  return empty(x.sizes(), x.options(), fmt);
}

}  // namespace attnact_pool
