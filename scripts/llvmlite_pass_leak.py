"""A minimal reproducer, for llvmlite, of the memory the new pass manager never returns (issue 21).

    python scripts/llvmlite_pass_leak.py [--runs 300]

Optimizes one small module (a loop summing an array) `runs` times at O0, O1 and O3 and prints the
resident set's growth per run after malloc_trim (so fragmentation is not counted). Only llvmlite is
imported. Cause, read in llvmlite's ffi/newpassmanagers.cpp: LLVMPY_CreatePassBuilder allocates a
PassInstrumentationCallbacks that no one deletes, and every LLVMPY_RunNewModulePassManager registers
a StandardInstrumentations' callbacks into it; O0 builds no pipeline and does not grow.
"""

from __future__ import annotations

import argparse
import ctypes
import gc

import llvmlite.binding as llvm

MODULE = """
define float @sum(ptr %p, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %acc = phi float [ 0.0, %entry ], [ %add, %loop ]
  %at = getelementptr inbounds float, ptr %p, i64 %i
  %x = load float, ptr %at
  %add = fadd fast float %acc, %x
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret float %add
}
"""


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def optimize(machine, level: int) -> None:
    module = llvm.parse_assembly(MODULE)
    tuning = llvm.create_pipeline_tuning_options(speed_level=level)
    passes = llvm.create_pass_builder(machine, tuning)
    manager = passes.getModulePassManager()
    manager.run(module, passes)
    manager.close()
    passes.close()
    tuning.close()
    module.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_default_triple().create_target_machine()
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    print(f"llvmlite {llvm.llvm_version_info} ({__import__('llvmlite').__version__}), {args.runs} runs each")
    for level in (0, 1, 3):
        for _ in range(20):  # warm up: caches, first allocations
            optimize(machine, level)
        gc.collect()
        trim(0)
        before = resident_kib()
        for _ in range(args.runs):
            optimize(machine, level)
        gc.collect()
        trim(0)
        print(f"O{level}: {(resident_kib() - before) / args.runs:6.1f} KiB per run")


if __name__ == "__main__":
    main()
