"""GemmTiling: the register and cache blocking of the f32 GEMM for one target.

    gemm_tiling(Target.parse("x86-64-v3"))  -> 6 x 16 micro-tile (2 ymm wide), kc 256, mc 144, nc 4096
    gemm_tiling(Target.parse("x86-64-v4"))  -> 14 x 32 micro-tile (2 zmm wide), kc 256, mc 140, nc 4096
    gemm_tiling(Target.parse("armv8"))      -> 8 x 12 micro-tile (3 q registers wide), kc 256, mc 144, nc 4092

The micro-tile holds `rows x columns` accumulators in vector registers across the k loop: columns
is `vectors` registers wide (3 on 32 registers of 4 lanes, else 2), and rows is as many (an even
number) as the register file allows once the B vectors and one broadcast A element are counted,
keeping one register of slack on 32-register machines. The cache blocks follow BLIS: a kc x
columns sliver of B stays in L1 (16-40 KiB), an mc x kc block of packed A in L2 (~144 KiB), and nc
columns of B in the outer cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..target import Target

DEPTH_BLOCK = 256
L2_BLOCK_BYTES = 144 * 1024
OUTER_COLUMNS = 4096
FLOAT_BYTES = 4
INDEPENDENT_CHAINS = 8  # FMAs in flight to hide their latency: ~2 units x 4 cycles on current cores


@dataclass(frozen=True)
class GemmTiling:
    """Sizes of the f32 GEMM: the micro-tile (rows x columns) and the cache blocks kc, mc, nc."""

    vector_width: int  # f32 lanes per vector register
    vectors: int  # vector registers across one row of the micro-tile
    rows: int  # MR: rows of the micro-tile (A elements broadcast per k step)
    kc: int  # depth of one cache block
    mc: int  # rows of one block of packed A (a multiple of `rows`)
    nc: int  # columns of one block of B (a multiple of `columns`)

    @property
    def columns(self) -> int:
        """NR: columns of the micro-tile, `vectors` whole vectors."""
        return self.vectors * self.vector_width

    def depth_blocks(self, depth: int, granule: int = 1, rows: int | None = None) -> tuple[int, int]:
        """(block count, block depth) covering `depth` in near-equal blocks of at most about 1.25 kc.

        Block depths are multiples of `granule` (a convolution's kh * kw taps), except the last.
        A depth a little over kc stays one block: a second pass over c costs more than the
        slightly larger sliver. A GEMM of at most one row panel (`rows` <= MR: a matrix-vector
        product) takes the whole depth at once: no B sliver is reused from L1 anyway, and each
        weight panel is then read in one sequential stream.
        """
        if rows is not None and rows <= self.rows:
            return 1, depth
        granules = -(-depth // granule)
        per_block = max(1, self.kc // granule)
        count = max(1, round(granules / per_block), -(-granules * 4 // (per_block * 5)))
        return count, -(-granules // count) * granule


@functools.cache
def gemm_tiling(target: Target) -> GemmTiling:
    """The tiling for `target`, from its vector width and register count."""
    width, registers = target.vector_width, target.vector_registers
    vectors = 3 if registers >= 32 and width <= 4 else 2
    slack = 1 if registers >= 32 else 0
    rows = (registers - vectors - 1 - slack) // vectors
    rows -= rows % 2
    columns = vectors * width
    mc = rows * max(1, round(L2_BLOCK_BYTES / (DEPTH_BLOCK * FLOAT_BYTES) / rows))
    nc = columns * max(1, OUTER_COLUMNS // columns)
    return GemmTiling(width, vectors, rows, DEPTH_BLOCK, mc, nc)
