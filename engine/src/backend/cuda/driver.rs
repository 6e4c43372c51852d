//! The CUDA driver through cudarc: opening a device, loading the embedded PTX, device memory, and kernel launches.
//!
//! Only the driver API is used and libcuda is loaded at run time, so building needs nothing from CUDA and a machine
//! without a GPU gets a clear error instead of a crash.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};

use super::params::{attn_prefill_tc_smem_bytes, GEMM_SMALL_MAX_SMEM_BYTES};
use crate::error::{Error, Result};

/// Every kernel of the engine's PTX module.
pub struct Kernels {
    pub fill_u32: CudaFunction,
    pub copy_bw: CudaFunction,
    pub embed: CudaFunction,
    pub rmsnorm_rows: CudaFunction,
    pub permute_cols: CudaFunction,
    pub rope_kv_rows: CudaFunction,
    pub swiglu_rows: CudaFunction,
    pub gemv_qkv: CudaFunction,
    pub gemv_gate_up: CudaFunction,
    pub gemv_residual: CudaFunction,
    pub gemv_residual_wide: CudaFunction,
    pub gemv_store: CudaFunction,
    pub gemv_norm_store: CudaFunction,
    pub gemm_store16: CudaFunction,
    pub gemm_residual: CudaFunction,
    pub gemm_store32: CudaFunction,
    pub gemm128_store16: CudaFunction,
    pub gemm128_residual: CudaFunction,
    pub gemm128_store32: CudaFunction,
    pub gemm_small_store16: CudaFunction,
    pub gemm_small_residual: CudaFunction,
    pub attn_decode: CudaFunction,
    pub attn_prefill: CudaFunction,
    pub attn_prefill_tc64: CudaFunction,
    pub attn_prefill_tc128: CudaFunction,
    pub lm_head: CudaFunction,
    pub decode_advance: CudaFunction,
}

/// An open device: context, the stream all work goes to, and the loaded kernels.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    pub k: Kernels,
    pub name: String,
    pub cc: (u32, u32),
    pub sm_count: u32,
    /// Launch with programmatic dependent launch (sm_90+): each kernel may start while the previous one drains.
    pub pdl: bool,
    /// Seconds spent loading the module (the driver's JIT of the PTX, or its cache).
    pub module_load_s: f64,
    /// Launch-shape knobs of the decode kernels (environment overrides for measurements).
    pub tuning: Tuning,
    /// Whether the 128 × 128 prefill GEMM tile (`gemm128_*`) can run: one block needs
    /// [`GEMM128_SMEM_BYTES`](super::params::GEMM128_SMEM_BYTES) of shared memory, which sm_80 and sm_90 grant but
    /// sm_86 / sm_89 (99 KB per block) do not; without it long chunks use the 64-row tile.
    pub gemm128: bool,
    /// Blocks of the 128 × 128 tile one SM holds at once, as its shared memory allows (2 on sm_90, 1 on sm_80).
    pub gemm128_blocks_per_sm: u32,
    /// Whether prefill uses the 128 × 128 tile for long chunks: [`Gpu::gemm128`] unless `ENGINE_NO_GEMM128` is set
    /// (an A/B knob: long chunks then take the 64-row tile, as before the 128 tile existed).
    pub gemm128_prefill: bool,
}

/// Launch-shape knobs of the decode kernels. Defaults are what measured best (BENCHMARKS.md); the environment
/// variables exist to measure alternatives without rebuilding.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// GEMV blocks per SM the grids are sized for (`ENGINE_GEMV_BLOCKS_PER_SM`, 1..=16). More blocks than fit
    /// at once is deliberate: a block that finishes frees its slot for one that starts streaming at once, and the
    /// kernel is bound by memory latency, so more independent blocks keep more loads in flight.
    pub gemv_blocks_per_sm: u32,
    /// Run the residual GEMVs (o/down) of projections with fewer than 4 tiles per SM with 16 warps per block
    /// instead of 8 (`ENGINE_GEMV_WIDE=0` turns it off).
    pub gemv_wide: bool,
}

/// Default GEMV blocks per SM: the best of 2, 4, 6, 8, 12 on an H200 (BENCHMARKS.md).
const DEFAULT_GEMV_BLOCKS_PER_SM: u32 = 12;

fn dev_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu> {
        // SAFETY: only probes whether the driver library can be loaded; cudarc's dynamic loading would panic at the
        // first driver call without it.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::BackendUnavailable(
                "no NVIDIA driver found (libcuda.so could not be loaded); use --backend cpu".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| {
            Error::BackendUnavailable(format!("the NVIDIA driver reports no usable device ({e}); use --backend cpu"))
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::BackendUnavailable(format!(
                "CUDA device {ordinal} does not exist ({count} device(s) present)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| dev_err("creating the CUDA context", e))?;
        // SAFETY: the engine orders its own work on one stream; cudarc's per-buffer events would otherwise be
        // recorded during graph capture and break it (CUDA_ERROR_STREAM_CAPTURE_ISOLATION).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| dev_err("reading the compute capability", e))?;
        let cc = (major as u32, minor as u32);
        let name = ctx.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let ptx = engine_ptx::ptx_for(cc.0, cc.1).ok_or_else(|| {
            Error::BackendUnavailable(format!(
                "{name} has compute capability {major}.{minor}; the engine needs 8.0 (sm_80) or newer"
            ))
        })?;
        let t0 = std::time::Instant::now();
        // The prebuilt cubin for this card when there is one (milliseconds), else the PTX through the driver's JIT
        // (seconds on a first run; the driver caches the result). A cubin the driver refuses falls back to the PTX.
        let from_ptx = || {
            ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| dev_err("loading the kernels (the driver must support PTX ISA 8.4: R550 or newer)", e))
        };
        let module = match engine_ptx::cubin_for(cc.0, cc.1) {
            Some(cubin) if std::env::var_os("ENGINE_FORCE_PTX").is_none() => {
                ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec())).or_else(|_| from_ptx())?
            }
            _ => from_ptx()?,
        };
        let module_load_s = t0.elapsed().as_secs_f64();
        let f = |n: &str| module.load_function(n).map_err(|e| dev_err(&format!("kernel {n}"), e));
        use engine_ptx::kernels as kn;
        let k = Kernels {
            fill_u32: f(kn::FILL_U32)?,
            copy_bw: f(kn::COPY_BYTES_READ_BW)?,
            embed: f(kn::EMBED_TOKENS)?,
            rmsnorm_rows: f(kn::RMSNORM_ROWS)?,
            permute_cols: f(kn::PERMUTE_COLS)?,
            rope_kv_rows: f(kn::ROPE_KV_ROWS)?,
            swiglu_rows: f(kn::SWIGLU_ROWS)?,
            gemv_qkv: f(kn::GEMV_INT4_QKV)?,
            gemv_gate_up: f(kn::GEMV_INT4_GATE_UP)?,
            gemv_residual: f(kn::GEMV_INT4_RESIDUAL)?,
            gemv_residual_wide: f(kn::GEMV_INT4_RESIDUAL_WIDE)?,
            gemv_store: f(kn::GEMV_INT4_STORE)?,
            gemv_norm_store: f(kn::GEMV_INT4_NORM_STORE)?,
            gemm_store16: f(kn::GEMM_INT4_STORE16)?,
            gemm_residual: f(kn::GEMM_INT4_RESIDUAL)?,
            gemm_store32: f(kn::GEMM_INT4_STORE32)?,
            gemm128_store16: f(kn::GEMM128_INT4_STORE16)?,
            gemm128_residual: f(kn::GEMM128_INT4_RESIDUAL)?,
            gemm128_store32: f(kn::GEMM128_INT4_STORE32)?,
            gemm_small_store16: f(kn::GEMM_SMALL_INT4_STORE16)?,
            gemm_small_residual: f(kn::GEMM_SMALL_INT4_RESIDUAL)?,
            attn_decode: f(kn::ATTN_DECODE)?,
            attn_prefill: f(kn::ATTN_PREFILL)?,
            attn_prefill_tc64: f(kn::ATTN_PREFILL_TC64)?,
            attn_prefill_tc128: f(kn::ATTN_PREFILL_TC128)?,
            lm_head: f(kn::LM_HEAD_F16)?,
            decode_advance: f(kn::DECODE_ADVANCE)?,
        };
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| dev_err("reading the SM count", e))? as u32;
        let stream = ctx.new_stream().map_err(|e| dev_err("creating a stream", e))?;
        let pdl = cc.0 >= 9 && std::env::var_os("ENGINE_NO_PDL").is_none();
        let tuning = Tuning {
            gemv_blocks_per_sm: std::env::var("ENGINE_GEMV_BLOCKS_PER_SM")
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| (1..=16).contains(v))
                .unwrap_or(DEFAULT_GEMV_BLOCKS_PER_SM),
            gemv_wide: std::env::var("ENGINE_GEMV_WIDE").map_or(true, |v| v != "0"),
        };
        let smem_optin = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| dev_err("reading the shared-memory limit", e))? as u32;
        let smem_per_sm = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
            .map_err(|e| dev_err("reading the shared memory per SM", e))? as u32;
        // The kernel's static shared memory (16 bytes: the split-K flag) counts against the same limit, and every
        // resident block costs the SM another 1 KB the system reserves.
        let gemm128 = smem_optin >= super::params::GEMM128_SMEM_BYTES + 16;
        let gemm128_blocks_per_sm = (smem_per_sm / (super::params::GEMM128_SMEM_BYTES + 16 + 1024)).clamp(1, 2);
        let gpu = Gpu {
            ctx,
            stream,
            _module: module,
            k,
            name,
            cc,
            sm_count,
            pdl,
            module_load_s,
            tuning,
            gemm128,
            gemm128_blocks_per_sm,
            gemm128_prefill: gemm128 && std::env::var_os("ENGINE_NO_GEMM128").is_none(),
        };
        // Kernels that take more than 48 KB of dynamic shared memory must say so once.
        for f in [
            &gpu.k.gemv_qkv,
            &gpu.k.gemv_gate_up,
            &gpu.k.gemv_residual,
            &gpu.k.gemv_residual_wide,
            &gpu.k.gemv_store,
            &gpu.k.gemv_norm_store,
            &gpu.k.lm_head,
            &gpu.k.gemm_store16,
            &gpu.k.gemm_residual,
            &gpu.k.gemm_store32,
        ] {
            gpu.set_max_dynamic_smem(f, 160 * 1024)?;
        }
        // Exactly what they take (69632 bytes for head_dim 128, more than the default 48 KB).
        gpu.set_max_dynamic_smem(&gpu.k.attn_prefill_tc64, attn_prefill_tc_smem_bytes(64))?;
        gpu.set_max_dynamic_smem(&gpu.k.attn_prefill_tc128, attn_prefill_tc_smem_bytes(128))?;
        if gpu.gemm128 {
            for f in [&gpu.k.gemm128_store16, &gpu.k.gemm128_residual, &gpu.k.gemm128_store32] {
                gpu.set_max_dynamic_smem(f, super::params::GEMM128_SMEM_BYTES)?;
                // Two blocks per SM need 2 × 106 KB of the SM's unified L1 / shared memory: ask for the largest
                // shared-memory carveout rather than leave the split to the driver (a hint; the L1 left over is
                // enough, A and the weights bypass L1 anyway).
                f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100)
                    .map_err(|e| dev_err("setting the shared-memory carveout", e))?;
            }
        }
        // At most 95232 bytes (46 K steps per split), which every card from sm_80 up allows.
        gpu.set_max_dynamic_smem(&gpu.k.gemm_small_store16, GEMM_SMALL_MAX_SMEM_BYTES)?;
        gpu.set_max_dynamic_smem(&gpu.k.gemm_small_residual, GEMM_SMALL_MAX_SMEM_BYTES)?;
        Ok(gpu)
    }

    fn set_max_dynamic_smem(&self, f: &CudaFunction, bytes: u32) -> Result<()> {
        f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(|e| dev_err("raising the shared-memory limit", e))
    }

    pub fn describe(&self) -> String {
        format!("{}, sm_{}{}, {} SMs", self.name, self.cc.0, self.cc.1, self.sm_count)
    }

    /// Allocate `bytes` of zeroed device memory.
    pub fn alloc(&self, bytes: usize, what: &str) -> Result<DeviceMem> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| Error::Device(format!("allocating {:.1} MB for {what}: {e}", bytes as f64 / 1e6)))?;
        let ptr = {
            let (ptr, _sync) = slice.device_ptr(&self.stream);
            ptr
        };
        Ok(DeviceMem { ptr, len: bytes, _slice: slice })
    }

    /// Copy host bytes to a device address (stream-ordered; the source must outlive the copy: the call is
    /// synchronous for pageable memory, which is all this engine passes).
    pub fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        // SAFETY: `dst` points into an allocation of at least `src.len()` bytes (callers take it from the plan).
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| dev_err("copying to the device", e))
    }

    /// Copy device bytes to the host, waiting for everything queued before.
    pub fn download<T: Copy>(&self, dst: &mut [T], src: u64) -> Result<()> {
        // SAFETY: `src` points into an allocation of at least `size_of_val(dst)` bytes.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| dev_err("copying from the device", e))?;
        self.sync()
    }

    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err("running the kernels", e))
    }

    /// Launch `f` on the engine's stream with one parameter block (a `#[repr(C)]` struct mirroring the kernel's).
    pub fn launch_struct<P: Copy>(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        params: &P,
    ) -> Result<()> {
        let mut args = [params as *const P as *mut c_void];
        // SAFETY: the kernel takes exactly one parameter whose C layout `P` mirrors (params.rs pins the sizes).
        unsafe { self.launch_raw(f, grid, block, smem, &mut args) }
    }

    /// Launch with a list of argument pointers, one per kernel parameter, each pointing at a value of exactly the
    /// parameter's C type.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in count, order and sizes, and every device pointer among the
    /// values must be valid for what the kernel does with it.
    pub unsafe fn launch_raw(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: if self.pdl { 1 } else { 0 },
        };
        sys::cuLaunchKernelEx(&config, f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut())
            .result()
            .map_err(|e| dev_err("launching a kernel", e))
    }
}

/// One device allocation, freed on drop. `ptr` stays valid as long as this value lives.
pub struct DeviceMem {
    pub ptr: u64,
    pub len: usize,
    _slice: CudaSlice<u8>,
}
