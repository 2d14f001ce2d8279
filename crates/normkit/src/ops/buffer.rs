//! Output buffers of the allocating ops, and the cache that lets them reuse the
//! memory of large tensors dropped earlier.
//!
//! A large allocation comes straight from the operating system as pages that
//! exist only once written, and its first write takes a page fault per page
//! (the kernel zeroes each page on that fault): with 4 KiB pages that cost more
//! than the normalization itself (LayerNorm `[8192, 4096]` f32, one thread:
//! 104 ms allocating vs 31 ms into a reused buffer). Two things cut it:
//!
//! - On Linux, buffers of at least [`LARGE_BYTES`] are marked for transparent
//!   huge pages before their first write, so they fault once per 2 MiB (35 ms).
//! - The output of an op (a [`Tensor`](crate::Tensor) of `f32` or `f64` that
//!   an op returned; tensors built by the caller never take part) of at least
//!   [`LARGE_BYTES`] leaves its buffer, when dropped, in a small per-type cache (at most
//!   [`CACHE_MAX_BUFFERS`] buffers and [`CACHE_MAX_BYTES`] bytes, the oldest
//!   evicted first), and the next op that needs an output of exactly that many
//!   elements takes it instead of asking the system: a training loop, which
//!   drops each step's outputs before the next step makes the same ones, pays
//!   no page faults after its first step. ONNX Runtime's arena does the same
//!   for its allocating calls. [`release_output_cache`] frees what is cached.

use crate::float::Float;
use std::any::Any;
use std::sync::Mutex;

/// Buffers of at least this many bytes get huge pages when new and go to the
/// cache when dropped; smaller ones come from and go to the allocator as usual.
const LARGE_BYTES: usize = 4 << 20;

/// Most bytes the cache holds, per element type.
const CACHE_MAX_BYTES: usize = 512 << 20;

/// Most buffers the cache holds, per element type.
const CACHE_MAX_BUFFERS: usize = 16;

/// Dropped buffers, oldest first.
struct Cache<T> {
    buffers: Mutex<Vec<Vec<T>>>,
}

impl<T> Cache<T> {
    const fn new() -> Self {
        Cache { buffers: Mutex::new(Vec::new()) }
    }

    /// The most recently cached buffer of exactly `len` elements, if any.
    fn take(&self, len: usize) -> Option<Vec<T>> {
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let i = buffers.iter().rposition(|b| b.len() == len)?;
        Some(buffers.remove(i))
    }

    /// Keeps `v`, evicting the oldest buffers while over either limit.
    fn put(&self, v: Vec<T>) {
        let bytes = |b: &Vec<T>| b.capacity() * std::mem::size_of::<T>();
        if bytes(&v) > CACHE_MAX_BYTES {
            return;
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        buffers.push(v);
        while buffers.len() > CACHE_MAX_BUFFERS || buffers.iter().map(bytes).sum::<usize>() > CACHE_MAX_BYTES {
            buffers.remove(0);
        }
    }

    fn clear(&self) {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

static F32_CACHE: Cache<f32> = Cache::new();
static F64_CACHE: Cache<f64> = Cache::new();

/// Frees every buffer that dropped tensors left for reuse (see the module
/// docs); later ops allocate afresh until large tensors are dropped again.
pub fn release_output_cache() {
    F32_CACHE.clear();
    F64_CACHE.clear();
}

/// A `Vec` of `len` values for an op's output, which the op overwrites whole:
/// a cached buffer of that length when there is one (its values are those of
/// the tensor that left it), else a new zeroed one.
pub(crate) fn output_buffer<T: Float>(len: usize) -> Vec<T> {
    if len * std::mem::size_of::<T>() >= LARGE_BYTES {
        let mut cached: Option<Vec<T>> = None;
        let slot: &mut dyn Any = &mut cached;
        if let Some(slot) = slot.downcast_mut::<Option<Vec<f32>>>() {
            *slot = F32_CACHE.take(len);
        } else if let Some(slot) = slot.downcast_mut::<Option<Vec<f64>>>() {
            *slot = F64_CACHE.take(len);
        }
        if let Some(v) = cached {
            return v;
        }
    }
    zeroed_buffer(len)
}

/// A zeroed `Vec` of `len` values, for the buffers a caller passes to the
/// `_into` ops: as `vec![0; len]`, except that on Linux a buffer of 4 MiB or
/// more asks for transparent huge pages (`madvise(MADV_HUGEPAGE)`, as the
/// allocating ops do for their outputs and numpy does for its arrays), which
/// spares a large sweep a TLB miss every 4 KiB. Never taken from, or given to,
/// the output cache.
pub fn zeroed_buffer<T: Float>(len: usize) -> Vec<T> {
    let mut v = vec![T::default(); len];
    if std::mem::size_of_val(v.as_slice()) >= LARGE_BYTES {
        advise_huge_pages(&mut v);
    }
    v
}

/// Called when a tensor is dropped: keeps a large `f32`/`f64` buffer for reuse.
pub(crate) fn recycle<T: 'static>(mut v: Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() < LARGE_BYTES {
        return;
    }
    let any: &mut dyn Any = &mut v;
    if let Some(v) = any.downcast_mut::<Vec<f32>>() {
        F32_CACHE.put(std::mem::take(v));
    } else if let Some(v) = any.downcast_mut::<Vec<f64>>() {
        F64_CACHE.put(std::mem::take(v));
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr().cast::<u8>();
    let bytes = std::mem::size_of_val(v);
    // The whole 2 MiB pages inside the buffer.
    let head = start.align_offset(HUGE);
    if head >= bytes {
        return;
    }
    let len = (bytes - head) / HUGE * HUGE;
    if len == 0 {
        return;
    }
    // SAFETY: `start + head .. start + head + len` lies inside `v`, which we
    // borrow mutably, and is aligned to a page as madvise requires.
    // MADV_HUGEPAGE only changes how the kernel backs the range, never its
    // contents (zero here), and a failure (e.g. THP disabled) leaves it as it
    // was, so the return value is deliberately ignored.
    unsafe {
        libc::madvise(start.add(head).cast::<libc::c_void>(), len, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_v: &mut [T]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_output_buffers_are_zeroed_at_every_size() {
        // Odd lengths that no other test of this binary drops.
        for len in [0, 1, 1000, (4 << 20) / 4 - 1, (4 << 20) / 4 + 7, (3 << 20) + 5] {
            let v = output_buffer::<f32>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        let v = output_buffer::<f64>((5 << 20) + 3);
        assert!(v.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn the_cache_returns_exact_lengths_and_keeps_to_its_limits() {
        let cache = Cache::<f64>::new();
        let big = LARGE_BYTES / 8;
        cache.put(vec![1.0; big]);
        cache.put(vec![2.0; big + 1]);
        assert!(cache.take(big + 2).is_none());
        assert_eq!(cache.take(big + 1).map(|v| v[0]), Some(2.0));
        assert_eq!(cache.take(big).map(|v| v[0]), Some(1.0));
        assert!(cache.take(big).is_none());
        // Over the buffer count: the oldest go first.
        for k in 0..CACHE_MAX_BUFFERS + 3 {
            cache.put(vec![k as f64; big + k]);
        }
        assert!(cache.take(big).is_none() && cache.take(big + 2).is_none());
        assert_eq!(cache.take(big + 3).map(|v| v[0]), Some(3.0));
        // Over the byte limit: a buffer larger than the whole cache is not kept.
        cache.put(vec![0.0; CACHE_MAX_BYTES / 8 + 1]);
        assert!(cache.take(CACHE_MAX_BYTES / 8 + 1).is_none());
        cache.clear();
        assert!(cache.take(big + 4).is_none());
    }
}
