//! The CUDA driver through cudarc: opening a device, loading the embedded kernels, typed device memory, copies and
//! launches. The rest of the backend never sees a raw argument array or an untyped device address.
//!
//! Only the driver API is used and libcuda is loaded at run time, so building needs nothing from CUDA and a machine
//! without a GPU gets a clear error instead of a crash.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use bytemuck::Pod;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};
use engine_format::plan::Buf;

use crate::error::{Error, Result};

pub(super) fn dev_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

/// A device address of `T` elements, as kernel parameter blocks hold it (a `CUdeviceptr`; null is 0). Only this
/// module makes one from an allocation; the launch that hands it to a kernel is where validity is asserted.
#[repr(transparent)]
pub(crate) struct DevPtr<T> {
    addr: u64,
    _elem: PhantomData<fn() -> T>,
}

impl<T> DevPtr<T> {
    /// The null pointer: "absent" for kernels that take optional inputs.
    pub const NULL: DevPtr<T> = DevPtr { addr: 0, _elem: PhantomData };

    const fn at(addr: u64) -> Self {
        DevPtr { addr, _elem: PhantomData }
    }
    pub fn addr(self) -> u64 {
        self.addr
    }
    pub fn is_null(self) -> bool {
        self.addr == 0
    }
    /// `n` elements further on.
    pub fn add(self, n: usize) -> Self {
        DevPtr::at(self.addr + (n * std::mem::size_of::<T>()) as u64)
    }
    /// The same address as elements of `U` (for buffers the plan counts in words but kernels read as structs).
    pub fn cast<U>(self) -> DevPtr<U> {
        DevPtr::at(self.addr)
    }
}

/// The device's address of page-locked host memory allocated with `CU_MEMHOSTALLOC_DEVICEMAP` (`host`: its host
/// address, from `cuMemHostAlloc`).
pub(crate) fn mapped_host<T>(host: *mut c_void) -> Result<DevPtr<T>> {
    let mut addr: sys::CUdeviceptr = 0;
    // SAFETY: writes one CUdeviceptr into `addr`; the driver checks that `host` is a mapped page-locked allocation
    // of the current context and fails otherwise.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut addr, host, 0) }
        .result()
        .map_err(|e| dev_err("mapping page-locked host memory into the device's address space", e))?;
    Ok(DevPtr::at(addr))
}

impl<T> Clone for DevPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DevPtr<T> {}
impl<T> Default for DevPtr<T> {
    fn default() -> Self {
        DevPtr::NULL
    }
}
impl<T> std::fmt::Debug for DevPtr<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.addr)
    }
}

/// One device allocation, zeroed, freed on drop. Plan buffers ([`Buf`]) are resolved against it with
/// [`DeviceBuffer::at`], which checks that they lie inside.
pub(crate) struct DeviceBuffer {
    ptr: u64,
    bytes: usize,
    _slice: CudaSlice<u8>,
}

impl DeviceBuffer {
    /// The device address of `buf` in this allocation. Panics if `buf` does not lie inside it (the plan and the
    /// allocation disagree: a bug, not a user error).
    pub fn at<T>(&self, buf: Buf<T>) -> DevPtr<T> {
        assert!(buf.end() <= self.bytes, "{buf:?} lies outside an allocation of {} bytes", self.bytes);
        DevPtr::at(self.ptr + buf.offset as u64)
    }
    /// The whole allocation as `T` elements.
    pub fn all<T>(&self) -> Buf<T> {
        Buf::new(0, self.bytes / std::mem::size_of::<T>())
    }
    /// The address of the first byte, as `T` elements.
    pub fn ptr<T>(&self) -> DevPtr<T> {
        DevPtr::at(self.ptr)
    }
    pub fn len(&self) -> usize {
        self.bytes
    }
}

/// A kernel of the module whose one parameter is a `P`. Made only by [`Kernels::load`], where each kernel's name
/// is paired with its parameter struct once; the pairing is what makes a launch with the wrong struct a compile
/// error.
pub(crate) struct Kernel<P> {
    f: CudaFunction,
    _params: PhantomData<fn(&P)>,
}

impl<P: KernelParams> Kernel<P> {
    /// The function `name` of `module`, whose one parameter must be a `P` (only `Kernels::load` calls this, from
    /// the list that pairs each kernel with its struct).
    pub(super) fn load(module: &Arc<CudaModule>, name: &str) -> Result<Self> {
        let f = module.load_function(name).map_err(|e| dev_err(&format!("kernel {name}"), e))?;
        // Drivers load a module's functions lazily by default (on first launch); a first prompt would pay for
        // every kernel it meets. Loading them now moves that cost to model load.
        // SAFETY: `f` is a function handle of `module`, which its `CudaFunction` keeps alive.
        unsafe { sys::cuFuncLoad(f.cu_function()) }
            .result()
            .map_err(|e| dev_err(&format!("loading kernel {name}"), e))?;
        Ok(Kernel { f, _params: PhantomData })
    }
    pub fn set_max_dynamic_smem(&self, bytes: u32) -> Result<()> {
        self.f
            .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(|e| dev_err("raising the shared-memory limit", e))
    }
    /// Allow clusters of more than 8 blocks (sm_90 allows 16 with this opt-in).
    pub fn allow_large_clusters(&self) -> Result<()> {
        self.f
            .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
            .map_err(|e| dev_err("allowing clusters of 16 blocks", e))
    }
    /// How many clusters of `launch`'s shape (its threads, shared memory and `cluster_y`) the device can hold at
    /// once; 0 where it cannot run one (e.g. a GPU partition with too few SMs per GPC).
    pub fn max_active_clusters(&self, launch: Launch) -> Result<u32> {
        let mut attrs = LaunchAttributes::new(&launch, false);
        let config = attrs.config(&launch, std::ptr::null_mut());
        let mut n: std::ffi::c_int = 0;
        // SAFETY: `config` and `n` are valid for the call; `f` is a live function of its module; nothing launches.
        unsafe { sys::cuOccupancyMaxActiveClusters(&mut n, self.f.cu_function(), &config) }
            .result()
            .map_err(|e| dev_err("asking how many clusters fit", e))?;
        Ok(n.max(0) as u32)
    }
    /// Ask for the largest shared-memory carveout of the SM's unified L1 / shared memory (a hint).
    pub fn prefer_shared_memory(&self) -> Result<()> {
        self.f
            .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100)
            .map_err(|e| dev_err("setting the shared-memory carveout", e))
    }
}

/// A kernel parameter block: a `#[repr(C)]` mirror of one of the kernels' C structs.
///
/// # Safety
/// The type's size, alignment and field layout equal the C struct's (`kernels.rs` declares every implementation
/// and its tests pin each against the kernel source and the compiled PTX).
pub(crate) unsafe trait KernelParams: Copy {}

/// Grid, block and dynamic shared memory of one launch, and whether it may overlap the kernel before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Launch {
    pub grid: (u32, u32, u32),
    pub threads: u32,
    pub smem: u32,
    /// Programmatic dependent launch where the device has it (the default): the kernel's blocks may become resident
    /// while the previous kernel's last blocks run (each waits in `pdl_wait` for its inputs). False: the kernel
    /// starts once the previous one has finished.
    pub overlap: bool,
    /// Blocks per thread block cluster along the grid's y (sm_90; 1: no clusters).
    pub cluster_y: u32,
}

impl Launch {
    pub fn new(grid: impl Into<Grid>, threads: u32, smem: u32) -> Launch {
        Launch { grid: grid.into().0, threads, smem, overlap: true, cluster_y: 1 }
    }
    /// The same launch with the grid's blocks in clusters of `y` consecutive blocks along y (sm_90 kernels only).
    pub fn in_clusters_y(self, y: u32) -> Launch {
        Launch { cluster_y: y, ..self }
    }
    /// The same launch, started only once the previous kernel has finished.
    pub fn after_previous(self) -> Launch {
        Launch { overlap: false, ..self }
    }
}

/// The driver's attributes of a launch (programmatic dependent launch, the cluster shape and scheduling), which the
/// launch configuration points at: keep it alive while the configuration is in use.
struct LaunchAttributes {
    attrs: [sys::CUlaunchAttribute; 3],
    n: usize,
}

impl LaunchAttributes {
    fn new(launch: &Launch, pdl: bool) -> LaunchAttributes {
        // SAFETY: zeroed is a valid launch attribute (id 0 = ignored); the fields set below make them the PDL and
        // the cluster ones.
        let mut attrs: [sys::CUlaunchAttribute; 3] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if pdl {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attrs[n].value.programmaticStreamSerializationAllowed = 1;
            n += 1;
        }
        if launch.cluster_y > 1 {
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attrs[n].value.clusterDim.x = 1;
            attrs[n].value.clusterDim.y = launch.cluster_y;
            attrs[n].value.clusterDim.z = 1;
            n += 1;
            // Load balancing rather than the driver's default placement of clusters: the decode attention's
            // clusters of 16 (a head's splits) otherwise land so that the step is slower (7B decode on an H100:
            // +1.0% after 16 tokens, +1.7% after 2048; spreading them measured the same as the default).
            attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE;
            attrs[n].value.clusterSchedulingPolicyPreference =
                sys::CUclusterSchedulingPolicy_enum::CU_CLUSTER_SCHEDULING_POLICY_LOAD_BALANCING;
            n += 1;
        }
        LaunchAttributes { attrs, n }
    }

    /// The driver's configuration of `launch` on `stream` (null: none, for queries) with these attributes.
    fn config(&mut self, launch: &Launch, stream: sys::CUstream) -> sys::CUlaunchConfig {
        sys::CUlaunchConfig {
            gridDimX: launch.grid.0,
            gridDimY: launch.grid.1,
            gridDimZ: launch.grid.2,
            blockDimX: launch.threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: launch.smem,
            hStream: stream,
            attrs: self.attrs.as_mut_ptr(),
            numAttrs: self.n as u32,
        }
    }
}

/// A grid: `n` blocks, or `(x, y)`, or `(x, y, z)`.
pub(crate) struct Grid((u32, u32, u32));
impl From<u32> for Grid {
    fn from(x: u32) -> Grid {
        Grid((x, 1, 1))
    }
}
impl From<(u32, u32)> for Grid {
    fn from((x, y): (u32, u32)) -> Grid {
        Grid((x, y, 1))
    }
}
impl From<(u32, u32, u32)> for Grid {
    fn from(g: (u32, u32, u32)) -> Grid {
        Grid(g)
    }
}

/// What the card offers that launch choices depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceLimits {
    pub sm_count: u32,
    /// Dynamic shared memory one block may opt into.
    pub smem_per_block: u32,
    /// Shared memory of one SM.
    pub smem_per_sm: u32,
}

/// An open device: its context and the stream all work goes to.
pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub cc: (u32, u32),
    pub limits: DeviceLimits,
    /// Launch with programmatic dependent launch: each kernel may start while the previous one drains.
    pdl: bool,
}

impl Gpu {
    /// Open device `ordinal`; `pdl` asks for programmatic dependent launch, which only sm_90 and newer have.
    pub fn open(ordinal: usize, pdl: bool) -> Result<Gpu> {
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
        let attr = |a, what| ctx.attribute(a).map(|v| v as u32).map_err(|e| dev_err(what, e));
        use sys::CUdevice_attribute as A;
        let limits = DeviceLimits {
            sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "reading the SM count")?,
            smem_per_block: attr(
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "reading the shared-memory limit",
            )?,
            smem_per_sm: attr(
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
                "reading the shared memory per SM",
            )?,
        };
        let stream = ctx.new_stream().map_err(|e| dev_err("creating a stream", e))?;
        Ok(Gpu { ctx, stream, name, cc, limits, pdl: cc.0 >= 9 && pdl })
    }

    /// Load a module: the prebuilt `cubin` when given (milliseconds), falling back to `ptx` through the driver's
    /// JIT (seconds on a first run; the driver caches the result) if there is none or the driver refuses it.
    pub fn load_module(&self, ptx: &str, cubin: Option<&[u8]>) -> Result<Arc<CudaModule>> {
        let from_ptx = || {
            self.ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| dev_err("loading the kernels (the driver must support PTX ISA 8.4: R550 or newer)", e))
        };
        match cubin {
            Some(cubin) => {
                self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec())).or_else(|_| from_ptx())
            }
            None => from_ptx(),
        }
    }

    /// Whether the loaded module has Hopper's `wgmma` kernels: compute capability 9.0 exactly, the only one the
    /// sm_90a module is loaded on (`engine_ptx::ptx_for`); newer cards get the compute_80 module.
    pub fn has_wgmma(&self) -> bool {
        self.cc == (9, 0)
    }

    pub fn describe(&self) -> String {
        format!("{}, sm_{}{}, {} SMs", self.name, self.cc.0, self.cc.1, self.limits.sm_count)
    }

    /// Allocate `bytes` of zeroed device memory; `what` names it in the error.
    pub fn alloc(&self, bytes: usize, what: &str) -> Result<DeviceBuffer> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| Error::Device(format!("allocating {:.1} MB for {what}: {e}", bytes as f64 / 1e6)))?;
        Ok(Self::buffer(slice, bytes, &self.stream))
    }

    /// Allocate `bytes` of device memory left as it is: for buffers every reader only reads where a kernel wrote
    /// before (the KV cache), where zeroing gigabytes would only delay the first prompt.
    pub fn alloc_uninit(&self, bytes: usize, what: &str) -> Result<DeviceBuffer> {
        // SAFETY: device memory of any content is a valid `u8` buffer for the device; the host never reads it
        // (copies out go through `download`, into `Pod` types, of buffers kernels wrote).
        let slice = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| Error::Device(format!("allocating {:.1} MB for {what}: {e}", bytes as f64 / 1e6)))?;
        Ok(Self::buffer(slice, bytes, &self.stream))
    }

    fn buffer(slice: CudaSlice<u8>, bytes: usize, stream: &Arc<CudaStream>) -> DeviceBuffer {
        let ptr = {
            let (ptr, _sync) = slice.device_ptr(stream);
            ptr
        };
        DeviceBuffer { ptr, bytes, _slice: slice }
    }

    /// Copy `src` into the first `src.len()` elements of buffer `at` of `dst`, in stream order. Fails if `src`
    /// does not fit in `at`; panics if `at` is not inside `dst`.
    pub fn upload<T: Pod>(&self, dst: &DeviceBuffer, at: Buf<T>, src: &[T]) -> Result<()> {
        if src.len() > at.len {
            return Err(Error::Device(format!("copying {} elements into a buffer of {}", src.len(), at.len)));
        }
        let addr = dst.at(at).addr;
        // SAFETY: `addr` starts a range of at least `size_of_val(src)` bytes inside the live allocation `dst`
        // (checked above). `src` is pageable memory (the crate's only page-locked memory is staging.rs's, which
        // never lends it out as a slice), for which the driver has read the bytes into its own buffer by the time
        // the call returns, so `src` may be dropped or changed right after.
        unsafe { cudarc::driver::result::memcpy_htod_async(addr, src, self.stream.cu_stream()) }
            .map_err(|e| dev_err("copying to the device", e))
    }

    /// Copy the first `dst.len()` elements of buffer `at` of `src` to the host, after everything queued before.
    pub fn download<T: Pod>(&self, dst: &mut [T], src: &DeviceBuffer, at: Buf<T>) -> Result<()> {
        if dst.len() > at.len {
            return Err(Error::Device(format!("copying {} elements out of a buffer of {}", dst.len(), at.len)));
        }
        let addr = src.at(at).addr;
        // SAFETY: the range lies inside the live allocation `src` (checked above); `dst` is an exclusive borrow of
        // host memory that outlives the copy, because the stream is synchronized before returning; any bit pattern
        // is a valid `T` (Pod).
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, addr, self.stream.cu_stream()) }
            .map_err(|e| dev_err("copying from the device", e))?;
        self.sync()
    }

    /// Wait for everything queued on the stream.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err("running the kernels", e))
    }

    /// An event on the engine's context (`timing`: one that can measure elapsed time).
    pub fn event(&self, timing: bool) -> Result<CudaEvent> {
        let flags =
            if timing { sys::CUevent_flags::CU_EVENT_DEFAULT } else { sys::CUevent_flags::CU_EVENT_DISABLE_TIMING };
        self.ctx.new_event(Some(flags)).map_err(|e| dev_err("creating an event", e))
    }

    /// Record `event` on the engine's stream.
    pub fn record(&self, event: &CudaEvent) -> Result<()> {
        event.record(&self.stream).map_err(|e| dev_err("recording an event", e))
    }

    /// Launch `kernel` with `params` on the engine's stream.
    ///
    /// # Safety
    /// Every device address in `params` must point to memory that stays allocated until the kernel has run and
    /// that holds what the kernel reads and writes for the sizes in `params` and `launch` (see the kernel's
    /// comment in `ptx/kernels/`); `launch` must be a shape the kernel accepts.
    pub unsafe fn launch<P: KernelParams>(&self, kernel: &Kernel<P>, launch: Launch, params: &P) -> Result<()> {
        let mut attrs = LaunchAttributes::new(&launch, self.pdl && launch.overlap);
        let config = attrs.config(&launch, self.stream.cu_stream());
        // The kernel takes one parameter of type `P` (the `Kernel<P>` pairing, `KernelParams` layout); the driver
        // copies it from `params` before returning.
        let mut args = [params as *const P as *mut c_void];
        // SAFETY: `config` and `args` are valid for the call; the device memory contract is the caller's.
        unsafe { sys::cuLaunchKernelEx(&config, kernel.f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(|e| dev_err("launching a kernel", e))
    }
}
