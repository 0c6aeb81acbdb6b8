"""Targets: what machine code is generated for, parsed from a short name.

    Target.parse("armv8")   -> triple aarch64-unknown-linux-gnu, cpu generic, +neon, 4 floats a vector
    Target.parse("host")    -> this machine's triple, cpu and features

Everything that differs between targets lives in this dataclass (triple, cpu, features, vector
width); lowering and emission read it instead of testing architecture names.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import llvmlite.binding as llvm


@functools.cache
def initialize_llvm() -> None:
    """Initialize LLVM's targets once (llvm.initialize() is deprecated in llvmlite 0.50)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@dataclass(frozen=True)
class Target:
    """A code generation target.

    `vector_width` is the number of f32 lanes in one vector register and `vector_registers` the
    number of those registers (16 ymm with AVX2, 32 zmm with AVX-512, 32 v registers on AArch64);
    the GEMM micro-kernel is sized from both (gemm/tiling.py).
    """

    name: str
    triple: str
    cpu: str
    features: str
    vector_width: int
    vector_registers: int = 16

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    @property
    def runs_in_process(self) -> bool:
        """True when this machine can execute the code directly (JIT); otherwise it runs under qemu."""
        host = Target.parse("host")
        if self.arch != host.arch:
            return False
        needed = {f[1:] for f in self.features.split(",") if f.startswith("+")}
        have = {f[1:] for f in host.features.split(",") if f.startswith("+")}
        return needed <= have

    def has_feature(self, feature: str) -> bool:
        return f"+{feature}" in self.features.split(",")

    @property
    def permutes_two_vectors(self) -> bool:
        """Whether one instruction picks a vector of floats from two vectors by index: AVX-512's
        vpermi2ps (16 of 32). The sparse kernel's windowed slices need it (codegen/ops/sparse/linear.py)."""
        return self.arch == "x86_64" and self.vector_width == 16 and self.has_feature("avx512f")

    @property
    def has_ieee_maximum(self) -> bool:
        """Whether llvm.maximum (NaN wins, +0 above -0) is one instruction: AArch64's fmax; x86's maxps
        returns its second operand on NaN, so there it takes six (scalar.maximum_of)."""
        return self.arch == "aarch64"

    def target_machine(self, opt_level: int = 3, reloc: str = "pic"):
        initialize_llvm()
        llvm_target = llvm.Target.from_triple(self.triple)
        return llvm_target.create_target_machine(cpu=self.cpu, features=self.features, opt=opt_level,
                                                 reloc=reloc, codemodel="default")

    @classmethod
    def parse(cls, name: str | Target) -> Target:
        if isinstance(name, Target):
            return name
        if not isinstance(name, str):
            raise TypeError(f"target must be a name such as 'host' or 'armv8', got {name!r}")
        key = name.strip().lower()
        if key == "host":
            return _host_target()
        if key not in KNOWN_TARGETS:
            raise ValueError(f"unknown target {name!r}; known targets: {', '.join(known_target_names())}")
        return KNOWN_TARGETS[key]


X86 = "x86_64-unknown-linux-gnu"
AARCH64 = "aarch64-unknown-linux-gnu"
X86_V2 = "+sse4.2,+popcnt,+cx16,+sahf"
X86_V3 = X86_V2 + ",+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe"
X86_V4 = X86_V3 + ",+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl"

KNOWN_TARGETS = {
    "x86-64": Target("x86-64", X86, "x86-64", "", 4),
    "x86-64-v3": Target("x86-64-v3", X86, "x86-64-v3", X86_V3, 8),
    "x86-64-v4": Target("x86-64-v4", X86, "x86-64-v4", X86_V4, 16, 32),
    "armv8": Target("armv8", AARCH64, "generic", "+neon", 4, 32),
    "armv8.2-a+dotprod": Target("armv8.2-a+dotprod", AARCH64, "generic", "+v8.2a,+neon,+dotprod", 4, 32),
}


def known_target_names() -> list[str]:
    return ["host", *KNOWN_TARGETS]


@functools.cache
def _host_target() -> Target:
    initialize_llvm()
    features = llvm.get_host_cpu_features().flatten()
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    if "avx512f" in enabled:
        width, registers = 16, 32
    elif "avx2" in enabled:
        width, registers = 8, 16
    else:
        width, registers = 4, 16
    triple = llvm.get_process_triple()
    if platform.machine() in ("aarch64", "arm64"):
        width, registers = 4, 32
    return Target("host", triple, llvm.get_host_cpu_name(), features, width, registers)
