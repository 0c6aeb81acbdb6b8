"""The GEMMs the contraction ops run on: tiling, packing, the micro-kernel, the f32 and int8 GEMMs.

    tiling = gemm_tiling(target)                      # tiling.py: the micro-tile and cache blocks
    pack_b_panels(w, tiling.columns)                  # packing.py: a constant in panels, at compile time
    emit_gemm(builder, tiling, a, b, c, (M, K, N), scratch)   # gemm.py: the f32 GEMM (micro_kernel.py)
    emit_block(builder, tiling, q, requant, shape, ...)       # qgemm.py: the int8 GEMM (qlinear, qconv2d)

No op is lowered here: ops/matmul.py, ops/conv/ and ops/qlayers.py call these for their nodes.
"""
