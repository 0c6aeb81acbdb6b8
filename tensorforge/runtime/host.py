"""In-process execution: the artifact's object code linked by LLVM's ORC JIT (LLJIT), called through ctypes.

    executor = HostExecutor(artifact)
    executor.run([x], [y])            # tf_run(inputs, outputs, weights, workspace); raises NativeError

The object code is `artifact.object_code()`: made from the LLVM IR once (a saved model holds it,
so loading one runs the same machine code and needs no LLVM optimization or code generation, but
for the few instructions of the array entry). The caller has already checked the arrays
(CompiledModel does). Each Python thread gets its own workspace arena and pointer arrays
(threading.local), so calls from several threads overlap
safely: ctypes releases the GIL for the native call. The JIT engine lives as long as this object
(and any call in flight holds a reference to it); it is released when the object is collected.

In a forked child the model works on its inherited copy of the code and weights; the pool's workers
are its parent's and do not exist there, so a threaded model's parts all run on the calling thread
(the pool's caller claims every unclaimed part itself). Only the process that made the engine
joins the pool and frees it.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable, Sequence

import llvmlite.binding as llvm
import numpy as np

from ..codegen.gemm.amx import TILES_REFUSED
from ..codegen.memory import ALIGNMENT, aligned_empty
from ..codegen.target import initialize_llvm
from ..codegen.threads.thread_pool import SHUTDOWN
from .array_entry import ARRAYS_ENTRY_SUFFIX, arrays_entry_ir, arrays_entry_type, data_offset
from .errors import NativeError

ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def aligned_copy(data: np.ndarray, alignment: int = ALIGNMENT) -> np.ndarray:
    """`data` as a flat uint8 buffer at an aligned address; no copy when it already is one."""
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if flat.ctypes.data % alignment == 0 and flat.size > 0:
        return flat
    buffer = aligned_empty(flat.size, alignment)
    buffer[:flat.size] = flat
    return buffer


def data_address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's data.

    `c_char.from_buffer` takes a third of the time of `array.ctypes.data` (0.23 us against 0.73 us
    here) but needs a writable, non-empty buffer; other arrays take the slow way.
    """
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


SHUTDOWN_TYPE = ctypes.CFUNCTYPE(None)


def _release(owner: int, tracker, engine, shutdown) -> None:
    if os.getpid() != owner:  # a forked child: the pool's threads and the engine are its parent's
        return
    if shutdown is not None:  # join the model's pool threads before their code is freed
        shutdown()
    tracker.close()
    engine.close()


class _ThreadState:
    """One thread's arguments for tf_run: pointer arrays for inputs and outputs, and a workspace arena."""

    def __init__(self, n_inputs: int, n_outputs: int, workspace_bytes: int):
        self.inputs = (ctypes.c_void_p * max(n_inputs, 1))()
        self.outputs = (ctypes.c_void_p * max(n_outputs, 1))()
        self.inputs_address = ctypes.addressof(self.inputs)
        self.outputs_address = ctypes.addressof(self.outputs)
        self.workspace = aligned_empty(workspace_bytes)
        self.workspace_address = self.workspace.ctypes.data


class HostExecutor:
    """Runs an artifact's tf_run in this process, its object code linked by the JIT."""

    def __init__(self, artifact):
        initialize_llvm()
        self.entry = getattr(artifact, "entry", "tf_run")
        code = artifact.object_code()  # bad IR raises here, with LLVM's message, before the JIT sees it
        engine = llvm.create_lljit_compiler(artifact.target.target_machine())
        library = llvm.JITLibraryBuilder().add_object_img(code).add_current_process().export_symbol(self.entry)
        n_inputs, n_outputs = len(artifact.input_types), len(artifact.output_types)
        offset = data_offset()
        if offset is not None:  # run() passes the array objects themselves (array_entry.py)
            library.add_ir(arrays_entry_ir(self.entry, n_inputs, n_outputs, offset, artifact.target.triple))
            library.export_symbol(self.entry + ARRAYS_ENTRY_SUFFIX)
        threaded = getattr(artifact, "threads", 1) > 1
        if threaded:
            library.export_symbol(SHUTDOWN)
        tracker = library.link(engine, "tensorforge_model")
        self._function = ENTRY_TYPE(tracker[self.entry])
        self._arrays_function = None if offset is None else \
            arrays_entry_type(n_inputs + n_outputs)(tracker[self.entry + ARRAYS_ENTRY_SUFFIX])
        shutdown = SHUTDOWN_TYPE(tracker[SHUTDOWN]) if threaded else None
        weakref.finalize(self, _release, os.getpid(), tracker, engine, shutdown)
        self.weights = aligned_copy(artifact.weights)
        self._weights_address = self.weights.ctypes.data
        self._counts = (n_inputs, n_outputs, int(artifact.workspace_bytes))
        self._local = threading.local()
        self._profile = (getattr(artifact, "profile_offset", None), len(getattr(artifact, "profile_kernels", ())))

    def kernel_nanoseconds(self) -> np.ndarray:
        """A profiling build's kernel times (int64 ns, Artifact.profile_kernels order) of this thread's last run."""
        offset, count = self._profile
        if offset is None:
            raise ValueError("this artifact was not built with profile=True")
        return self._local.state.workspace[offset:offset + 8 * count].view(np.int64).copy()

    def _failure(self, status: int) -> NativeError:
        if status == TILES_REFUSED:
            return NativeError(f"{self.entry} returned status {status}: Linux refused this process the AMX tile state "
                               f"(arch_prctl ARCH_REQ_XCOMP_PERM) its int8 kernels need; compile for a target "
                               f"without amx-int8", status)
        return NativeError(f"{self.entry} returned status {status} (0 means success)", status)

    def _thread_state(self) -> _ThreadState:
        state = _ThreadState(*self._counts)
        self._local.state = state
        return state

    def bound(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Callable[[], None]:
        """run(inputs, outputs) as a call of no arguments: the arrays' addresses are taken once (the
        call holds the arrays, so their memory stays where it is)."""
        pointers = [(ctypes.c_void_p * max(len(arrays), 1))(*map(data_address, arrays)) for arrays in (inputs, outputs)]
        addresses = (*map(ctypes.addressof, pointers), self._weights_address)
        function, local = self._function, self._local

        def run() -> None:  # the same call as run()'s, its pointer arrays filled once
            try:
                state = local.state
            except AttributeError:
                state = self._thread_state()
            status = function(*addresses, state.workspace_address)
            if status != 0:
                raise self._failure(status)

        run.held = (list(inputs), list(outputs), pointers)  # the memory the addresses point at stays alive
        return run

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """Call tf_run on checked C-contiguous `inputs`, writing into the preallocated `outputs`."""
        try:
            state = self._local.state
        except AttributeError:
            state = self._thread_state()
        if self._arrays_function is not None:  # the array objects themselves (array_entry.py)
            status = self._arrays_function(*inputs, *outputs, self._weights_address, state.workspace_address)
        else:
            pointers = state.inputs
            for i, array in enumerate(inputs):
                pointers[i] = data_address(array)
            pointers = state.outputs
            for i, array in enumerate(outputs):
                pointers[i] = data_address(array)
            status = self._function(state.inputs_address, state.outputs_address, self._weights_address,
                                    state.workspace_address)
        if status != 0:
            raise self._failure(status)
