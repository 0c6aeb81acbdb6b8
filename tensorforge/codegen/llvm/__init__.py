"""LLVM emission helpers the kernels share: loops and memory access, scalar ops, f32 math, strides.

    with for_range(builder, 17, "i") as i: ...         # utils.py: loops, loads, stores, intrinsics
    scalar.add(builder, DType.i8, a, b)                # scalar.py: one element of any dtype
    float_math.exp(builder, x)                         # float_math.py: exp, tanh, gelu... on f32
    broadcast_strides((3, 1), (2, 3, 4))               # layout.py: strides of loop nests -> (0, 1, 0)

Nothing here knows about ops or nodes beyond dtypes.
"""
