//! Page-locked host memory and the two things the backend does with it: the double-buffered staging the weight
//! upload goes through, and the token ring the greedy loop reads the device's tokens from.
//!
//! A copy from pageable memory is synchronous and slow: the driver bounces it through its own pinned buffer. So the
//! upload fills one pinned buffer (in parallel, which also spreads the page faults of the memory-mapped file over
//! the cores) while the GPU copies the other: the repacking on the host and the transfer overlap, and the transfer
//! runs at the bus's speed. Pinned memory is only ever reached through raw pointers here, never lent out as a
//! slice, because the device writes or reads it behind Rust's back until the copy's event has completed.

use bytemuck::Pod;
use cudarc::driver::{sys, CudaEvent};
use engine_format::plan::Buf;
use rayon::prelude::*;

use super::driver::{dev_err, DevPtr, DeviceBuffer, Gpu};
use crate::error::Result;

/// Page-locked host memory, freed on drop.
struct Pinned {
    ptr: *mut u8,
}

// SAFETY: the memory is owned by this value; every access goes through `&self`/`&mut self` of its owner.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(len: usize) -> Result<Pinned> {
        // SAFETY: a plain page-locked allocation of `len` bytes, freed in Drop.
        let ptr = unsafe { cudarc::driver::result::malloc_host(len.max(1), 0) }
            .map_err(|e| dev_err(&format!("allocating {len} bytes of pinned host memory"), e))?;
        Ok(Pinned { ptr: ptr as *mut u8 })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host in `new`, freed once; owners wait for the copies that use it first.
        unsafe {
            let _ = cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void);
        }
    }
}

/// Bytes per staging buffer.
const STAGE: usize = 64 << 20;
/// Copies into a staging buffer above this size are split over the rayon pool.
const PARALLEL_COPY: usize = 1 << 20;

/// Two pinned buffers: one is filled while the GPU copies out of the other.
pub(crate) struct Staging<'g> {
    gpu: &'g Gpu,
    bufs: [Pinned; 2],
    /// Completion of the last copy out of each buffer.
    done: [Option<CudaEvent>; 2],
    cur: usize,
    fill: usize,
    /// (device address, offset in the current buffer, length) copies waiting for the buffer to be sent.
    pending: Vec<(u64, usize, usize)>,
}

impl<'g> Staging<'g> {
    pub fn new(gpu: &'g Gpu) -> Result<Staging<'g>> {
        Ok(Staging {
            gpu,
            bufs: [Pinned::new(STAGE)?, Pinned::new(STAGE)?],
            done: [None, None],
            cur: 0,
            fill: 0,
            pending: Vec::new(),
        })
    }

    /// Queue a copy of `data` into buffer `at` of `dst`, which must hold exactly `data.len()` elements (panics
    /// otherwise: the plan and the layout disagree). `data` is copied into pinned memory before this returns;
    /// `dst` must live until [`Staging::finish`] (it does: the uploader owns it).
    pub fn put<T: Pod>(&mut self, dst: &DeviceBuffer, at: Buf<T>, data: &[T]) -> Result<DevPtr<T>> {
        assert_eq!(at.len, data.len(), "{at:?}: the plan and the repacked tensor disagree");
        let start = dst.at(at);
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut off = 0;
        while off < bytes.len() {
            if self.fill == STAGE {
                self.send()?;
            }
            let n = (STAGE - self.fill).min(bytes.len() - off);
            let src = &bytes[off..off + n];
            // SAFETY: `fill + n <= STAGE` bytes of the current pinned buffer, which no copy reads any more: `send`
            // waited for the copies out of it before making it current. No other reference to it exists.
            let dst_buf = unsafe { std::slice::from_raw_parts_mut(self.bufs[self.cur].ptr.add(self.fill), n) };
            if n >= PARALLEL_COPY {
                dst_buf
                    .par_chunks_mut(PARALLEL_COPY)
                    .zip(src.par_chunks(PARALLEL_COPY))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            } else {
                dst_buf.copy_from_slice(src);
            }
            self.pending.push((start.addr() + off as u64, self.fill, n));
            self.fill += n;
            off += n;
        }
        Ok(start)
    }

    /// Queue every copy `put` has taken so far on the stream, so that work queued after this call sees them.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.send()
    }

    /// Start the GPU copies out of the current buffer and switch to the other, once the GPU is done with it.
    fn send(&mut self) -> Result<()> {
        let stream = self.gpu.stream.cu_stream();
        let base = self.bufs[self.cur].ptr;
        for &(dst, at, n) in &self.pending {
            // SAFETY: `dst..dst + n` lies in a live device allocation (`put` resolved it through `DeviceBuffer::at`,
            // and the caller keeps it alive until `finish`); `base + at .. + n` is pinned memory that stays
            // untouched until `done[cur]` has completed (checked before the buffer is filled again, and on drop).
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, base.add(at) as *const std::ffi::c_void, n, stream) }
                .result()
                .map_err(|e| dev_err("copying weights to the device", e))?;
        }
        self.pending.clear();
        let event = self.gpu.event(false)?;
        self.gpu.record(&event)?;
        self.done[self.cur] = Some(event);
        self.cur ^= 1;
        if let Some(e) = self.done[self.cur].take() {
            e.synchronize().map_err(|e| dev_err("copying weights to the device", e))?;
        }
        self.fill = 0;
        Ok(())
    }

    /// Send what is left and wait for every copy.
    pub fn finish(mut self) -> Result<()> {
        self.send()?;
        self.gpu.sync()
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        // The pinned buffers are freed next: no copy may still be reading them (an error path may get here with
        // copies in flight).
        let _ = self.gpu.sync();
    }
}

/// Decode steps the device may run ahead of the host in the greedy loop, and so the tokens in flight to the host.
pub(crate) const RUN_AHEAD: usize = 8;

/// The host end of the greedy loop's tokens: each decode step's token is copied from the device's token ring into
/// one of [`RUN_AHEAD`] page-locked words, and an event recorded after the copy; the host reads a word only after
/// its event completed, and a word is copied into again only after it was read.
pub(crate) struct TokenRing {
    words: Pinned,
    events: Vec<CudaEvent>,
    /// Tokens fetched and taken so far (sequence numbers; fetched − taken ≤ RUN_AHEAD).
    fetched: usize,
    taken: usize,
}

impl TokenRing {
    pub fn new(gpu: &Gpu) -> Result<TokenRing> {
        let events = (0..RUN_AHEAD).map(|_| gpu.event(false)).collect::<Result<_>>()?;
        Ok(TokenRing { words: Pinned::new(RUN_AHEAD * 4)?, events, fetched: 0, taken: 0 })
    }

    /// Forget every token in flight (after the stream has been synchronized).
    pub fn reset(&mut self) {
        self.fetched = 0;
        self.taken = 0;
    }

    /// Whether another token may be fetched before one is taken.
    pub fn has_room(&self) -> bool {
        self.fetched - self.taken < RUN_AHEAD
    }

    /// Queue the copy of the token at `src` (a word of the device ring, written by the work queued before) and
    /// the event after it. Panics if [`TokenRing::has_room`] is false (a bug in the loop).
    pub fn fetch(&mut self, gpu: &Gpu, src: DevPtr<u32>) -> Result<()> {
        assert!(self.has_room(), "token ring overrun");
        let slot = self.fetched % RUN_AHEAD;
        // SAFETY: `slot < RUN_AHEAD` words of the pinned buffer; its previous token was taken (has_room), so no
        // copy targets it and nothing reads it until the event below completes. `src` is a word of the device
        // ring inside the workspace allocation, which outlives the backend's use of this ring.
        unsafe {
            let dst = self.words.ptr.add(4 * slot) as *mut std::ffi::c_void;
            sys::cuMemcpyDtoHAsync_v2(dst, src.addr(), 4, gpu.stream.cu_stream())
        }
        .result()
        .map_err(|e| dev_err("copying a token", e))?;
        gpu.record(&self.events[slot])?;
        self.fetched += 1;
        Ok(())
    }

    /// Wait for the oldest fetched token and read it. Panics if none is in flight (a bug in the loop).
    pub fn take(&mut self) -> Result<u32> {
        assert!(self.taken < self.fetched, "no token in flight");
        let slot = self.taken % RUN_AHEAD;
        self.events[slot].synchronize().map_err(|e| dev_err("running the decode graph", e))?;
        // SAFETY: the event orders this read after the copy into the slot, and no later copy targets the slot
        // before this read (it would need the slot's token taken); 4-byte aligned inside page-aligned memory.
        let token = unsafe { std::ptr::read_volatile(self.words.ptr.add(4 * slot) as *const u32) };
        self.taken += 1;
        Ok(token)
    }
}
