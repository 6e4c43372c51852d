//! Page-locked host memory, and the double-buffered staging the weight upload goes through.
//!
//! A copy from pageable memory is synchronous and slow: the driver bounces it through its own pinned buffer. So the
//! upload fills one pinned buffer (in parallel, which also spreads the page faults of the memory-mapped file over
//! the cores) while the GPU copies the other: the repacking on the host and the transfer overlap, and the transfer
//! runs at the bus's speed.

use cudarc::driver::{sys, CudaEvent};
use rayon::prelude::*;

use super::driver::Gpu;
use crate::error::{Error, Result};

/// `len` bytes of page-locked host memory, freed on drop.
pub struct Pinned {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the memory is owned by this value and only reached through `&mut self`/`&self` methods.
unsafe impl Send for Pinned {}

impl Pinned {
    pub fn new(len: usize) -> Result<Pinned> {
        // SAFETY: a plain page-locked allocation of `len` bytes, freed in Drop.
        let ptr = unsafe { cudarc::driver::result::malloc_host(len.max(1), 0) }
            .map_err(|e| Error::Device(format!("allocating {len} bytes of pinned host memory: {e}")))?;
        Ok(Pinned { ptr: ptr as *mut u8, len })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `len` bytes owned by self; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The start of the memory, for reads of bytes a device copy wrote (with `read_volatile`, after waiting for it).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as above, shared.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host in `new`, freed once.
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
pub struct Staging<'g> {
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

    /// Queue a copy of `bytes` to device address `dst`. The bytes are copied into pinned memory before this returns.
    pub fn put(&mut self, dst: u64, bytes: &[u8]) -> Result<()> {
        let mut off = 0;
        while off < bytes.len() {
            if self.fill == STAGE {
                self.send()?;
            }
            let n = (STAGE - self.fill).min(bytes.len() - off);
            let (fill, src) = (self.fill, &bytes[off..off + n]);
            let dst_buf = &mut self.bufs[self.cur].as_mut_slice()[fill..fill + n];
            if n >= PARALLEL_COPY {
                dst_buf
                    .par_chunks_mut(PARALLEL_COPY)
                    .zip(src.par_chunks(PARALLEL_COPY))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            } else {
                dst_buf.copy_from_slice(src);
            }
            self.pending.push((dst + off as u64, fill, n));
            self.fill += n;
            off += n;
        }
        Ok(())
    }

    /// Start the GPU copies out of the current buffer and switch to the other, once the GPU is done with it.
    fn send(&mut self) -> Result<()> {
        let stream = self.gpu.stream.cu_stream();
        for &(dst, at, n) in &self.pending {
            let src = &self.bufs[self.cur].as_slice()[at..at + n];
            // SAFETY: `dst` lies in a device allocation with room for `n` bytes (the plan's offsets); `src` is pinned
            // and stays untouched until `done[cur]` has completed (checked before the buffer is filled again).
            unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, stream) }
                .map_err(|e| Error::Device(format!("copying weights to the device: {e}")))?;
        }
        self.pending.clear();
        let event = self
            .gpu
            .ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
            .map_err(|e| Error::Device(format!("creating an event: {e}")))?;
        event.record(&self.gpu.stream).map_err(|e| Error::Device(e.to_string()))?;
        self.done[self.cur] = Some(event);
        self.cur ^= 1;
        if let Some(e) = self.done[self.cur].take() {
            e.synchronize().map_err(|e| Error::Device(format!("copying weights to the device: {e}")))?;
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
