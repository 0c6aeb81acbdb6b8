"""A second entry for in-process calls: `tf_run` on ndarray objects instead of data pointers.

    define i32 @tf_run_arrays(ptr %input.0, ..., ptr %output.0, ..., ptr %weights, ptr %workspace)
      ; each argument is a numpy array object (a PyArrayObject *); its data pointer sits at a fixed
      ; offset in the object (NumPy's C API reads it the same way: PyArray_DATA)
      %inputs = alloca [n x ptr]  ...  store (load ptr at %input.i + offset) ...
      call i32 @tf_run(ptr %inputs, ptr %outputs, ptr %weights, ptr %workspace)

Why: CompiledModel.__call__ spent more of a small model's call taking the arrays' addresses in
Python (`ctypes.c_char.from_buffer`, 0.4 us an array here) and filling ctypes pointer arrays than
the ctypes call itself. Passed as `ctypes.py_object`, an array costs ctypes nothing to convert.

Only ever called on arrays the runtime has checked (exact type np.ndarray, shape, dtype, aligned,
C-contiguous: CompiledModel._is_ready), so the object really is an ndarray. The offset is not
assumed: `data_offset()` finds it on probe arrays of this process (CPython puts `id(obj)` at the
object's address) and returns None where it cannot, and then the runtime keeps the pointer path.
"""

from __future__ import annotations

import ctypes
import functools
import platform

import numpy as np
from llvmlite import ir

from ..codegen.llvm.utils import I32, PTR, byte_pointer

ARRAYS_ENTRY_SUFFIX = "_arrays"


@functools.cache
def data_offset() -> int | None:
    """The byte offset of the data pointer inside an ndarray object in this process, or None
    (found once per process)."""
    if platform.python_implementation() != "CPython":
        return None  # id() is an address only in CPython
    probes = [np.empty(n, dtype) for n, dtype in ((3, np.float32), (5, np.int64), (7, np.uint8))]
    for offset in range(8, 8 * 12, 8):  # within the fields that precede the data pointer in any layout
        if all(ctypes.c_void_p.from_address(id(a) + offset).value == a.ctypes.data for a in probes):
            return offset
    return None


def arrays_entry_ir(entry: str, n_inputs: int, n_outputs: int, offset: int, triple: str) -> str:
    """LLVM IR of `<entry>_arrays`: takes n_inputs + n_outputs array objects, weights and workspace."""
    module = ir.Module(name="tensorforge_arrays")
    module.triple = triple
    run = ir.Function(module, ir.FunctionType(I32, [PTR] * 4), entry)
    names = [f"input.{i}" for i in range(n_inputs)] + [f"output.{i}" for i in range(n_outputs)]
    function = ir.Function(module, ir.FunctionType(I32, [PTR] * (len(names) + 2)), entry + ARRAYS_ENTRY_SUFFIX)
    for argument, name in zip(function.args, [*names, "weights", "workspace"]):
        argument.name = name
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    tables = []
    for objects, label in ((function.args[:n_inputs], "inputs"), (function.args[n_inputs:len(names)], "outputs")):
        table = builder.alloca(ir.ArrayType(PTR, max(len(objects), 1)), name=label)
        for i, array in enumerate(objects):
            data = builder.load(byte_pointer(builder, array, offset), typ=PTR, name=f"{array.name}.data")
            builder.store(data, builder.gep(table, [I32(0), I32(i)], inbounds=True))
        tables.append(table)
    status = builder.call(run, [*tables, *function.args[len(names):]])
    builder.ret(status)
    return str(module)


def arrays_entry_type(n_arrays: int):
    """The ctypes prototype of `<entry>_arrays`."""
    return ctypes.CFUNCTYPE(ctypes.c_int32, *[ctypes.py_object] * n_arrays, ctypes.c_void_p, ctypes.c_void_p)
