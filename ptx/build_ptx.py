#!/usr/bin/env python3
"""Compile ptx/kernels/*.cu into the committed PTX modules in ptx/generated/, and check them.

The engine ships its kernels as PTX compiled ahead of time, so building it needs no CUDA toolkit and running it
needs only an NVIDIA driver (R550 or newer: NVRTC 12.4 emits PTX ISA 8.4). All kernel files form ONE module per
target, compiled from a generated translation unit that #includes every ptx/kernels/*.cu in sorted order:

    ptx/generated/engine_sm80.ptx    compute_80   sm_80, 86, 89, 90, ... through the driver's JIT
    ptx/generated/engine_sm90a.ptx   compute_90a  sm_90 only (wgmma, setmaxnreg, griddepcontrol)

and assembles them with ptxas into cubins for the common cards, which the engine loads instead of the PTX when
the card matches (the driver's JIT of the whole module takes about 5 s on a first run; a cubin loads in ms):

    ptx/generated/engine_sm_80.cubin, engine_sm_86.cubin, engine_sm_89.cubin   from engine_sm80.ptx
    ptx/generated/engine_sm_90a.cubin                                           from engine_sm90a.ptx

Usage (stdlib only; any python3 runs it, the toolchain comes from the venv that ptx/setup.sh makes):
    python3 ptx/build_ptx.py                 regenerate ptx/generated/*.ptx (commit them)
    python3 ptx/build_ptx.py --check         fail if the committed PTX differs from a fresh compile
    python3 ptx/build_ptx.py --ptxas         assemble the committed PTX with ptxas for every target card, print
                                             registers / shared memory / stack / spills per kernel, fail on spills
    python3 ptx/build_ptx.py --cubin DIR     as --ptxas, and keep the cubins in DIR (engine_sm_80.cubin, ...)
    python3 ptx/build_ptx.py --sass REGEX    print the SASS of the committed sm_90a cubin's kernels matching REGEX,
                                             and which parameter lines each first reads after its PDL wait
Options: --allow-warnings (do not fail on compiler warnings), --venv PATH (default: $ENGINE_PTX_VENV, else
<repo>/.venv-ptx).
"""

import argparse
import ctypes
import difflib
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PTX_DIR = Path(__file__).resolve().parent
REPO = PTX_DIR.parent
KERNELS_DIR = PTX_DIR / "kernels"
GENERATED_DIR = PTX_DIR / "generated"

# (module name, NVRTC virtual architecture, PTX .target it must produce, real architectures ptxas checks it for)
TARGETS = [
    ("engine_sm80", "compute_80", "sm_80", ["sm_80", "sm_86", "sm_89", "sm_90"]),
    ("engine_sm90a", "compute_90a", "sm_90a", ["sm_90a"]),
]

# Options for every target. Deliberately absent: --use_fast_math (kernels choose their own precision with
# intrinsics), -G and -lineinfo (debug info makes the PTX several times larger and embeds file paths, which would
# make it depend on where the repo is checked out).
COMMON_OPTIONS = [
    "-std=c++17",
    "-default-device",
    # More aggressive vectorization of device code by NVVM (still deterministic: --check compiles twice).
    "--extra-device-vectorization",
]

# (PTX module, real architecture) of every committed cubin.
CUBINS = [("engine_sm80", "sm_80"), ("engine_sm80", "sm_86"), ("engine_sm80", "sm_89"), ("engine_sm90a", "sm_90a")]

NVRTC_VERSION = (12, 4)  # must match ptx/requirements.txt
PTX_ISA_VERSION = "8.4"  # what NVRTC 12.4 emits; loads on drivers R550+
PTXAS_RELEASE = "release 12.4"

# Kernels allowed to spill registers or use a stack frame, with the reason. A spill is local memory traffic
# (through L1/L2) inside the hot loop, so every entry needs a measured justification, e.g.
#     "attention_decode_split_k": "24 B spills on sm_80 only, outside the main loop; 0.3% slower than 128 regs cap",
SPILL_ALLOWLIST = {
    "gemm_wgmma_int4_store16": "24 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 128 outputs; the K loop runs at the 128-register cap of two blocks per SM without spilling",
    "gemm_wgmma_int4_residual": "24 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 128 outputs; the K loop runs at the 128-register cap of two blocks per SM without spilling",
    "gemm_wgmma_int4_store32": "24 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 128 outputs; the K loop runs at the 128-register cap of two blocks per SM without spilling",
    "gemm_wgmma256_int4_store16": "20 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 256 outputs; the K loop runs within the 255-register cap of one block per SM without spilling",
    "gemm_wgmma256_int4_residual": "20 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 256 outputs; the K loop runs within the 255-register cap of one block per SM without spilling",
    "gemm_wgmma256_int4_store32": "20 B spilled in the epilogue only (SASS: every STL/LDL after the K loop's last HGMMA wait), once per block of 128 x 256 outputs; the K loop runs within the 255-register cap of one block per SM without spilling",
    "gemm_wgmma_short_int4_qkv_rope": "8 B (the split counter's address) spilled around the split-K merge only (SASS: one STL after the K loop's last HGMMA wait, one LDL after the merge), once per block; the K loop does not spill",
    "gemv_rows16_int4_qkv_rope": "8 B on sm_90a (24 B in the compute_80 module at its 85-register cap) spilled in the q/k/v rotary-epilogue variant only: the store, residual and SwiGLU variants of the same K loop spill nothing at the same register cap, so the spill sits around the epilogue, once per block (sm_90a SASS: two 4-byte STL after the K loop's last HMMA, reloaded in the rotary epilogue, once per thread); the 7B TTFT in BENCHMARKS.md was measured with it",
    "gemv_rows16_wide_int4_qkv_rope": "8 B on sm_90a spilled in the q/k/v rotary-epilogue variant only: the store, residual and SwiGLU variants of the same K loop spill nothing at the same register cap, so the spill sits around the epilogue, once per block (sm_90a SASS: two 4-byte STL after the K loop's last HMMA, reloaded in the rotary epilogue, once per thread); the 7B TTFT in BENCHMARKS.md was measured with it",
    "gemv_rows32_int4_qkv_rope": "8 B on sm_90a spilled in the q/k/v rotary-epilogue variant only: the store, residual and SwiGLU variants of the same K loop spill nothing at the same register cap, so the spill sits around the epilogue, once per block (sm_90a SASS: one STL after the K loop's last HMMA, reloaded in the rotary epilogue, once per thread); the 7B TTFT in BENCHMARKS.md was measured with it",
    "gemv_lean_f16_gate_up": "4 B on sm_90a, the lean K loop's fp16 gate/up variant (fp16 linears only): one value spilled and reloaded at most once per tile, outside the K loop (SASS: no STL or LDL between the K loop's first and last instruction); the int4 q/k/v, gate/up and residual variants, which a GPTQ 7B decode runs, spill nothing",
    "gemv_lean_f16_gate_up_split": "4 B on sm_90a, the lean K loop's fp16 split gate/up variant (fp16 linears only; its address arithmetic reassociated when the int16 dot product's chunk pointer went, the spill came): one value spilled and reloaded at most once per tile, outside the K loop (SASS not inspected); the int4 q/k/v, gate/up and residual variants, which a GPTQ 7B decode runs, spill nothing",
    "gemv_rows64_int4_qkv_rope": "8 B on sm_90a spilled in the q/k/v rotary-epilogue variant only: the store, residual and SwiGLU variants of the same K loop spill nothing at the same register cap (sm_90a SASS: the 8 bytes are one parameter pointer stored and read back in the prologue, before the K loop, once per thread); the 7B TTFT in BENCHMARKS.md was measured with it",
}

GENERATED_BANNER = (
    "//\n"
    "// GENERATED by ptx/build_ptx.py from ptx/kernels/*.cu -- do not edit.\n"
    "// Regenerate: ptx/setup.sh && python3 ptx/build_ptx.py   (then commit ptx/generated/)\n"
    "// Compiler: NVRTC {major}.{minor}, options: {options}\n"
    "//\n"
)


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Toolchain discovery
# ---------------------------------------------------------------------------------------------------------------


class Toolchain:
    def __init__(self, venv):
        self.venv = venv
        roots = sorted(glob.glob(str(venv / "lib*" / "python3*" / "site-packages" / "nvidia")))
        self.root = Path(roots[-1]) if roots else None

    def _need(self, rel_path, what):
        hint = (
            f"run ptx/setup.sh to install the pinned wheels (ptx/requirements.txt) into {self.venv}, "
            "or point ENGINE_PTX_VENV (or --venv) at a venv that has them"
        )
        if self.root is None:
            die(f"{what} not found: {self.venv} has no site-packages/nvidia; {hint}")
        path = self.root / rel_path
        if not path.exists():
            die(f"{what} not found at {path}; {hint}")
        return path

    @property
    def libnvrtc(self):
        return self._need("cuda_nvrtc/lib/libnvrtc.so.12", "libnvrtc 12.4 (nvidia-cuda-nvrtc-cu12)")

    @property
    def cuda_include(self):
        return self._need("cuda_runtime/include", "CUDA headers (nvidia-cuda-runtime-cu12)")

    @property
    def ptxas(self):
        path = self._need("cuda_nvcc/bin/ptxas", "ptxas (nvidia-cuda-nvcc-cu12)")
        if not os.access(path, os.X_OK):
            die(f"{path} is not executable; rerun ptx/setup.sh")
        return path

    @property
    def cuobjdump(self):
        # The CUDA 13 wheels keep their tools under nvidia/cu13; cuobjdump calls the nvdisasm beside it.
        path = self._need("cu13/bin/cuobjdump", "cuobjdump (nvidia-cuda-cuobjdump)")
        self._need("cu13/bin/nvdisasm", "nvdisasm (nvidia-cuda-nvdisasm)")
        return path


# ---------------------------------------------------------------------------------------------------------------
# NVRTC through ctypes
# ---------------------------------------------------------------------------------------------------------------


class Nvrtc:
    def __init__(self, path):
        # libnvrtc dlopens libnvrtc-builtins.so.12.4 by soname; loading it first from the same directory makes that
        # work without LD_LIBRARY_PATH.
        builtins = sorted(Path(path).parent.glob("libnvrtc-builtins.so.*"))
        if builtins:
            ctypes.CDLL(str(builtins[0]), mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(str(path))
        P = ctypes.c_void_p
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        lib.nvrtcVersion.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(P), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p),
        ]
        lib.nvrtcCompileProgram.argtypes = [P, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcGetProgramLogSize.argtypes = [P, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [P, ctypes.c_char_p]
        lib.nvrtcGetPTXSize.argtypes = [P, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetPTX.argtypes = [P, ctypes.c_char_p]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(P)]
        for fn in ("nvrtcVersion", "nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetProgramLogSize",
                   "nvrtcGetProgramLog", "nvrtcGetPTXSize", "nvrtcGetPTX", "nvrtcDestroyProgram"):
            getattr(lib, fn).restype = ctypes.c_int
        self.lib = lib
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        if self.version != NVRTC_VERSION:
            die(f"{path} is NVRTC {self.version[0]}.{self.version[1]}, the pinned toolchain is "
                f"{NVRTC_VERSION[0]}.{NVRTC_VERSION[1]}; rerun ptx/setup.sh")

    def _ok(self, rc, what):
        if rc != 0:
            die(f"{what} failed: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def compile(self, source, name, options):
        """Returns (ptx text or None, log text)."""
        lib, P = self.lib, ctypes.c_void_p
        prog = P()
        self._ok(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
                 "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._ok(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            buf = ctypes.create_string_buffer(size.value)
            self._ok(lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.value.decode(errors="replace").strip()
            if rc != 0:
                return None, log or lib.nvrtcGetErrorString(rc).decode()
            self._ok(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            self._ok(lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
            return buf.value.decode(), log
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


# ---------------------------------------------------------------------------------------------------------------
# Building the modules
# ---------------------------------------------------------------------------------------------------------------


def kernel_sources():
    files = sorted(p.name for p in KERNELS_DIR.glob("*.cu"))
    if not files:
        die(f"no kernel sources in {rel(KERNELS_DIR)}")
    return files


def module_source(files):
    lines = ["// The engine's kernel module: every ptx/kernels/*.cu in sorted order (written by ptx/build_ptx.py)."]
    lines += [f'#include "{f}"' for f in files]
    return "\n".join(lines) + "\n"


def build_modules(toolchain, allow_warnings, quiet=False):
    """Compile every target. Returns {file name: PTX text}; exits on errors (and on warnings unless allowed)."""
    nvrtc = Nvrtc(toolchain.libnvrtc)
    files = kernel_sources()
    source = module_source(files)
    # Include paths are absolute but leave no trace in the PTX (no -lineinfo); check_portable() makes sure.
    includes = [f"-I{KERNELS_DIR}", f"-I{toolchain.cuda_include}"]
    say = (lambda *a: None) if quiet else print
    say(f"nvrtc {nvrtc.version[0]}.{nvrtc.version[1]}: one module from {len(files)} file(s): {', '.join(files)}")
    out = {}
    failed = False
    for name, arch, ptx_target, _ in TARGETS:
        options = [f"--gpu-architecture={arch}"] + COMMON_OPTIONS
        t0 = time.perf_counter()
        ptx, log = nvrtc.compile(source, "engine.cu", options + includes)
        dt = time.perf_counter() - t0
        if log:
            say(f"--- nvrtc log ({arch}) ---\n{log}\n---")
        if ptx is None:
            print(f"error: nvrtc failed for {arch}", file=sys.stderr)
            failed = True
            continue
        warnings = [l for l in log.splitlines() if re.search(r"\bwarning\b", l)]
        if warnings and not allow_warnings:
            print(f"error: nvrtc reported {len(warnings)} warning(s) for {arch} (fix them, or pass "
                  "--allow-warnings while iterating)", file=sys.stderr)
            failed = True
        ptx = postprocess(ptx, name, arch, ptx_target, options, nvrtc.version, toolchain)
        say(f"  {arch:<12} {dt:6.2f} s  {len(ptx.encode()):>8} bytes  {len(entries(ptx))} kernels  -> {name}.ptx")
        out[f"{name}.ptx"] = ptx
    if failed:
        sys.exit(1)
    return out


def postprocess(ptx, name, arch, ptx_target, options, version, toolchain):
    ptx = ptx.rstrip("\0").rstrip() + "\n"
    m = re.search(r"^\.version\s+(\S+)", ptx, re.M)
    if not m or m.group(1) != PTX_ISA_VERSION:
        die(f"{name}: expected .version {PTX_ISA_VERSION} (driver R550+), got {m.group(1) if m else 'none'}")
    m = re.search(r"^\.target\s+(\S+)", ptx, re.M)
    if not m or m.group(1) != ptx_target:
        die(f"{name}: expected .target {ptx_target} for {arch}, got {m.group(1) if m else 'none'}")
    # The committed file must not depend on where the repo or the venv is: no absolute paths in it.
    for path in {str(REPO), str(toolchain.venv.resolve()), str(toolchain.root)}:
        if path in ptx:
            die(f"{name}: the PTX contains the local path {path}; it would differ between machines")
    # NVVM numbers the call sequences of device-function calls in comments (`// callseq N`) with a counter that lives
    # as long as the process, so a second compile in the same process numbers them on: a comment, dropped.
    ptx = re.sub(r"(// callseq) \d+", r"\1", ptx)
    banner = GENERATED_BANNER.format(major=version[0], minor=version[1], options=" ".join(options))
    return banner + ptx


def entries(ptx):
    return re.findall(r"^\.(?:visible\s+)?\.entry\s+([A-Za-z_$][\w$]*)\s*\(", ptx, re.M)


# ---------------------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------------------


def build_cubins(toolchain, modules):
    """ptxas over `modules` ({file name: PTX text}) → {cubin file name: bytes}, for every entry of CUBINS."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ptx in modules.items():
            (Path(tmp) / name).write_text(ptx)
        for module, arch in CUBINS:
            dst = Path(tmp) / f"engine_{arch}.cubin"
            cmd = [str(toolchain.ptxas), f"-arch={arch}", "-O3", "-o", str(dst), str(Path(tmp) / f"{module}.ptx")]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0:
                die(f"ptxas -arch={arch} {module}.ptx failed:\n{p.stdout}")
            out[dst.name] = dst.read_bytes()
    return out


def regenerate(toolchain, allow_warnings):
    GENERATED_DIR.mkdir(exist_ok=True)
    modules = build_modules(toolchain, allow_warnings)
    outputs = {name: ptx.encode() for name, ptx in modules.items()}
    outputs.update(build_cubins(toolchain, modules))
    for fname, data in outputs.items():
        path = GENERATED_DIR / fname
        old = path.read_bytes() if path.exists() else None
        if old == data:
            print(f"unchanged {rel(path)}")
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        print(f"wrote     {rel(path)}")


def check(toolchain, allow_warnings):
    t0 = time.perf_counter()
    fresh = build_modules(toolchain, allow_warnings)
    # A second compile must give the same bytes, or --check would be flaky.
    again = build_modules(toolchain, allow_warnings, quiet=True)
    for fname in fresh:
        if fresh[fname] != again[fname]:
            die(f"NVRTC output for {fname} is not deterministic (two compiles differ); fix the options")
    problems = []
    for fname, ptx in fresh.items():
        path = GENERATED_DIR / fname
        if not path.exists():
            problems.append(f"{rel(path)} is missing")
            continue
        committed = path.read_text()
        if committed != ptx:
            diff = list(difflib.unified_diff(committed.splitlines(), ptx.splitlines(),
                                             f"{rel(path)} (committed)", f"{rel(path)} (fresh compile)", lineterm="",
                                             n=1))
            shown = "\n".join(diff[:40]) + (f"\n... ({len(diff) - 40} more diff lines)" if len(diff) > 40 else "")
            problems.append(f"{rel(path)} differs from what ptx/kernels/*.cu compile to now:\n{shown}")
    cubins = build_cubins(toolchain, fresh)
    if cubins != build_cubins(toolchain, fresh):
        die("ptxas output is not deterministic (two assemblies differ)")
    for fname, data in cubins.items():
        path = GENERATED_DIR / fname
        if not path.exists():
            problems.append(f"{rel(path)} is missing")
        elif path.read_bytes() != data:
            problems.append(f"{rel(path)} differs from what ptxas makes of the fresh PTX")
    expected = set(fresh) | set(cubins)
    for path in sorted(GENERATED_DIR.glob("*")):
        if path.name not in expected:
            problems.append(f"{rel(path)} is not produced by build_ptx.py (stale? delete it)")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        die("the committed PTX or cubins are out of date. Regenerate and commit them:\n"
            "    ptx/setup.sh && python3 ptx/build_ptx.py && git add ptx/generated")
    print(f"ok: committed PTX and cubins match a fresh compile ({', '.join(sorted(expected))}; "
          f"{time.perf_counter() - t0:.2f} s for two compiles of each)")


PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
PTXAS_PROPS = re.compile(r"Function properties for (\S+)")
PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
PTXAS_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def parse_ptxas(output):
    """Parse `ptxas -v` into {function: {regs, smem, stack, spill_st, spill_ld, entry}}."""
    funcs = {}
    current_entry = None
    current_props = None
    for line in output.splitlines():
        m = PTXAS_ENTRY.search(line)
        if m:
            current_entry = m.group(1)
            funcs.setdefault(current_entry, {"entry": True})
            continue
        m = PTXAS_PROPS.search(line)
        if m:
            current_props = m.group(1)
            funcs.setdefault(current_props, {"entry": current_props == current_entry})
            continue
        m = PTXAS_FRAME.search(line)
        if m and current_props:
            f = funcs[current_props]
            f["stack"], f["spill_st"], f["spill_ld"] = (int(x) for x in m.groups())
            continue
        m = PTXAS_USED.search(line)
        if m and current_entry:
            f = funcs[current_entry]
            f["regs"] = int(m.group(1))
            f["smem"] = int(m.group(2) or 0)
    return funcs


def run_ptxas(ptxas, ptx_path, arch, cubin_dir):
    out = Path(cubin_dir) / f"engine_{arch}.cubin" if cubin_dir else Path(os.devnull)
    cmd = [str(ptxas), f"-arch={arch}", "-v", "-O3", "-o", str(out), str(ptx_path)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout, time.perf_counter() - t0


def ptxas_check(toolchain, allow_warnings, cubin_dir):
    ptxas = toolchain.ptxas
    version = subprocess.run([str(ptxas), "--version"], stdout=subprocess.PIPE, text=True).stdout
    if PTXAS_RELEASE not in version:
        die(f"{ptxas} is not CUDA {PTXAS_RELEASE}: {version.strip()}; rerun ptx/setup.sh")
    if cubin_dir:
        Path(cubin_dir).mkdir(parents=True, exist_ok=True)
    jobs = []
    for name, _, _, archs in TARGETS:
        path = GENERATED_DIR / f"{name}.ptx"
        if not path.exists():
            die(f"{rel(path)} is missing; run python3 ptx/build_ptx.py")
        for arch in archs:
            jobs.append((name, path, arch))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda j: run_ptxas(ptxas, j[1], j[2], cubin_dir), jobs))

    failures, warnings, rows, used_allowlist = [], [], [], set()
    for (name, path, arch), (rc, output, dt) in zip(jobs, results):
        if rc != 0:
            failures.append(f"ptxas -arch={arch} {rel(path)} failed (exit {rc}):\n{output}")
            continue
        for line in output.splitlines():
            if "warning" in line.lower() or "performance loss" in line.lower():
                warnings.append(f"{name} {arch}: {line.strip()}")
        funcs = parse_ptxas(output)
        missing = set(entries(path.read_text())) - {f for f, v in funcs.items() if v.get("entry")}
        if missing:
            failures.append(f"{name} {arch}: ptxas -v reported nothing for {sorted(missing)}; parser out of date?")
        for fn in sorted(funcs):
            v = funcs[fn]
            rows.append((name, arch, fn + ("" if v.get("entry") else " (callee)"), v.get("regs", "-"),
                         v.get("smem", "-"), v.get("stack", 0), v.get("spill_st", 0), v.get("spill_ld", 0)))
            if v.get("stack", 0) or v.get("spill_st", 0) or v.get("spill_ld", 0):
                if fn in SPILL_ALLOWLIST:
                    used_allowlist.add(fn)
                else:
                    failures.append(f"{fn} on {arch} ({name}): {v.get('stack', 0)} B stack frame, "
                                    f"{v.get('spill_st', 0)} B spill stores, {v.get('spill_ld', 0)} B spill loads; "
                                    "fix it, or add it to SPILL_ALLOWLIST in ptx/build_ptx.py with a reason")
        print(f"ptxas -arch={arch:<7} {rel(path)}: {dt:.2f} s")

    header = ("module", "arch", "kernel", "regs", "smem B", "stack B", "spill st B", "spill ld B")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print()
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(*r))
    print()
    for fn in sorted(set(SPILL_ALLOWLIST) - used_allowlist):
        print(f"note: SPILL_ALLOWLIST entry {fn!r} no longer spills anywhere; remove it")
    for w in warnings:
        print(f"{'warning' if allow_warnings else 'error'}: ptxas: {w}", file=sys.stderr)
    if warnings and not allow_warnings:
        failures.append(f"ptxas printed {len(warnings)} warning(s) (see above); pass --allow-warnings to ignore")
    if cubin_dir:
        print(f"cubins in {cubin_dir}: " + ", ".join(f"engine_{a}.cubin" for _, _, a in jobs))
    if failures:
        for f in failures:
            print(f"error: {f}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(jobs)} ptxas runs, no spills, no stack frames")


def sass(toolchain, pattern):
    """Print the SASS of the committed sm_90a cubin's kernels whose names match `pattern` (a full match), each
    followed by the 64-byte lines of its parameter block it first reads after `griddepcontrol.wait` (SASS
    `ACQBULK`): a constant-cache miss there would sit between the kernel's dependency and its work. (Reading every
    line before the wait measured no faster in the decode step: BENCHMARKS.md, session 31.)"""
    cubin = GENERATED_DIR / "engine_sm_90a.cubin"
    out = subprocess.run([str(toolchain.cuobjdump), "-sass", str(cubin)], capture_output=True, text=True)
    if out.returncode != 0:
        die(f"cuobjdump -sass {rel(cubin)} failed:\n{out.stderr}")
    found = 0
    for body in re.split(r"\n\s*Function : ", out.stdout)[1:]:
        name, _, text = body.partition("\n")
        name = name.strip()
        if not re.fullmatch(pattern, name):
            continue
        found += 1
        code = [re.sub(r"\s*/\* 0x[0-9a-f]{16} \*/", "", l).rstrip() for l in text.split("\n")]
        code = [l for l in code if re.search(r"/\*[0-9a-f]{4}\*/", l)]
        print(f"== {name}")
        print("\n".join(code))
        before, late, waited = set(), [], False
        for line in code:
            if "ACQBULK" in line:
                waited = True
                continue
            for m in re.finditer(r"c\[0x0\]\[(0x[0-9a-f]+)\]", line):
                at = int(m.group(1), 16) // 64
                if not waited:
                    before.add(at)
                elif at not in before and at not in late:
                    late.append(at)
        if not waited:
            print(f"-- {name}: no griddepcontrol.wait")
        else:
            lines = ", ".join(f"0x{64 * at:x}" for at in late) or "none"
            print(f"-- {name}: 64-byte parameter lines first read after the wait: {lines}")
    if not found:
        die(f"no kernel of {rel(cubin)} matches {pattern!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail if the committed PTX differs from a fresh compile")
    ap.add_argument("--ptxas", action="store_true", help="assemble the committed PTX and print the per-kernel table")
    ap.add_argument("--cubin", metavar="DIR", help="with the ptxas step, write cubins to DIR")
    ap.add_argument("--sass", metavar="REGEX", help="print the SASS of the sm_90a kernels whose names match REGEX")
    ap.add_argument("--allow-warnings", action="store_true", help="do not fail on compiler warnings")
    ap.add_argument("--venv", help="venv holding the pinned wheels (default $ENGINE_PTX_VENV or <repo>/.venv-ptx)")
    args = ap.parse_args()

    venv = Path(args.venv or os.environ.get("ENGINE_PTX_VENV") or REPO / ".venv-ptx")
    toolchain = Toolchain(venv)
    if args.check:
        check(toolchain, args.allow_warnings)
    if args.ptxas or args.cubin:
        ptxas_check(toolchain, args.allow_warnings, args.cubin)
    if args.sass:
        sass(toolchain, args.sass)
    if not (args.check or args.ptxas or args.cubin or args.sass):
        regenerate(toolchain, args.allow_warnings)


if __name__ == "__main__":
    main()
