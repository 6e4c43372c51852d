# Type stub of the cffi module that maturin generates from engine/include/engine.h: `ffi` (the cffi FFI object
# holding the header's declarations) and `lib` (the loaded library, one attribute per function and constant).
# cffi's objects are dynamic, so they are typed as Any; the typed API is engine's own modules.
from typing import Any

ffi: Any
lib: Any
