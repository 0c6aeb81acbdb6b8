"""Sanity check of the armv8 build: the MLP and the CNN at batch 1 under qemu-user, against the reference.

    python benchmarks/armv8_sanity.py

qemu emulates AArch64 on this x86 host: the times say the code runs and how long emulation takes,
nothing about an ARM board's speed (the issue asks for them only as a sanity check).
"""

import time

import numpy as np

import tensorforge as tf
from tensorforge.models import cifar_cnn, mlp

for name, model, shape in (("MLP b1", mlp(), (1, 784)), ("CNN b1", cifar_cnn(), (1, 3, 32, 32))):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with tf.compile(model, x, target="armv8") as cm:
        np.testing.assert_allclose(cm(x), tf.interpret(tf.trace(model, x), x), rtol=1e-4, atol=1e-5)
        start = time.perf_counter()
        for _ in range(20):
            cm(x)
        per_call = (time.perf_counter() - start) / 20
        print(f"{name} armv8 under qemu-user (emulated, not a speed): {per_call * 1e3:.2f} ms per call, "
              f"pipe round trip included")
