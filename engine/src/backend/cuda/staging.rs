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

use super::driver::{dev_err, mapped_host, DevPtr, DeviceBuffer, Gpu};
use crate::error::Result;

/// Page-locked host memory, freed on drop.
struct Pinned {
    ptr: *mut u8,
}

// SAFETY: the memory is owned by this value; every access goes through `&self`/`&mut self` of its owner.
unsafe impl Send for Pinned {}

impl Pinned {
    fn new(len: usize) -> Result<Pinned> {
        Self::with_flags(len, 0)
    }
    /// Mapped into the device's address space as well ([`mapped_host`] gives its device address).
    fn mapped(len: usize) -> Result<Pinned> {
        Self::with_flags(len, sys::CU_MEMHOSTALLOC_DEVICEMAP)
    }
    fn with_flags(len: usize, flags: u32) -> Result<Pinned> {
        // SAFETY: a page-locked allocation of `len` bytes, freed in Drop.
        let ptr = unsafe { cudarc::driver::result::malloc_host(len.max(1), flags) }
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

/// Decode steps the device may run ahead of the host in the decode loop, and so the tokens in flight to the host.
pub(crate) const RUN_AHEAD: usize = 8;
/// Slots of the host's token ring (by position modulo this): more than [`RUN_AHEAD`], so that no slot is rewritten
/// before the host has read it.
pub(crate) const TOKEN_RING: usize = 64;
const _: () = assert!(RUN_AHEAD < TOKEN_RING, "a slot of the token ring must not be rewritten before it is read");

/// The host end of the decode loop's tokens. `decode_advance` writes each step's token into a ring of page-locked
/// words mapped into the device's address space (slot: its position modulo the ring's length), and the host records
/// an event after each replay of the decode graph; it reads a token only after its replay's event completed.
/// Nothing is copied on the stream: replays follow each other with only the events between them (a 4-byte copy
/// there left the H200 idle ~15 µs per step; BENCHMARKS.md). The device rewrites a slot only a whole ring later, and
/// the host lets at most [`RUN_AHEAD`] replays run ahead of the token it reads, fewer than the ring holds.
pub(crate) struct TokenRing {
    words: Pinned,
    device_words: DevPtr<u32>,
    events: Vec<CudaEvent>,
    /// The position of token 0 of this loop.
    start: usize,
    /// Tokens launched and taken so far (sequence numbers; launched − taken ≤ RUN_AHEAD).
    launched: usize,
    taken: usize,
}

impl TokenRing {
    pub fn new(gpu: &Gpu) -> Result<TokenRing> {
        let events = (0..RUN_AHEAD).map(|_| gpu.event(false)).collect::<Result<_>>()?;
        let words = Pinned::mapped(TOKEN_RING * 4)?;
        let device_words = mapped_host(words.ptr as *mut std::ffi::c_void)?;
        Ok(TokenRing { words, device_words, events, start: 0, launched: 0, taken: 0 })
    }

    /// The ring as the device addresses it (`decode_advance`'s `host_ring`, [`TOKEN_RING`] words).
    pub fn device_words(&self) -> DevPtr<u32> {
        self.device_words
    }

    /// Start a loop whose first token is decoded at `start`, forgetting every token in flight (after the stream
    /// has been synchronized).
    pub fn reset(&mut self, start: usize) {
        (self.start, self.launched, self.taken) = (start, 0, 0);
    }

    /// Whether another replay may be launched before a token is taken.
    pub fn has_room(&self) -> bool {
        self.launched - self.taken < RUN_AHEAD
    }

    /// Record the event after the replay just queued on the stream. Panics if [`TokenRing::has_room`] is false (a
    /// bug in the loop).
    pub fn launched(&mut self, gpu: &Gpu) -> Result<()> {
        assert!(self.has_room(), "token ring overrun");
        gpu.record(&self.events[self.launched % RUN_AHEAD])?;
        self.launched += 1;
        Ok(())
    }

    /// Wait for the oldest launched token and read it. Panics if none is in flight (a bug in the loop).
    pub fn take(&mut self) -> Result<u32> {
        assert!(self.taken < self.launched, "no token in flight");
        self.events[self.taken % RUN_AHEAD].synchronize().map_err(|e| dev_err("running the decode graph", e))?;
        let at = (self.start + self.taken) % TOKEN_RING;
        // SAFETY: `at < TOKEN_RING` words of the mapped buffer, 4-byte aligned inside page-aligned memory. The event
        // of the replay that wrote it has completed (kernel completion makes device writes to mapped memory visible
        // to the host), and the device writes the slot again only TOKEN_RING positions later, which the loop does
        // not launch before this token is taken (RUN_AHEAD < TOKEN_RING).
        let token = unsafe { std::ptr::read_volatile(self.words.ptr.add(4 * at) as *const u32) };
        self.taken += 1;
        Ok(token)
    }
}
