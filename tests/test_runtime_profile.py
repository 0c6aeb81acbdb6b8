"""cm.profile (runtime/profile.py), the measured machine peaks (runtime/machine.py) and cm.memory_report.

Times are not asserted (the machine is shared); what is: every kernel is timed, FLOPs and bytes
follow from the shapes (counted here independently), the roofline classification is consistent
with the peaks, the picture is written, and the memory report's figures add up.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tf
from tensorforge.models import mlp, small_cnn
from tensorforge.runtime.machine import MachinePeaks, machine_peaks
from tensorforge.runtime.profile import KernelTime


@pytest.fixture(scope="module")
def compiled_mlp():
    x = np.random.default_rng(0).standard_normal((8, 784)).astype(np.float32)
    with tf.compile(mlp(), x, threads=1) as cm:
        yield cm, x


def test_every_kernel_is_timed_with_its_flops_and_bytes(compiled_mlp):
    cm, x = compiled_mlp
    profile = cm.profile(x, repeat=3, warmup=1)
    computed = [node for node in cm.graph.nodes if node.op not in ("input", "constant")]
    assert [row.name for row in profile.rows] == [node.name for node in computed]
    by_shape = {row.shape: row for row in profile.rows}
    first = by_shape[(8, 256)]  # linear 784 -> 256 with bias and the fused relu
    assert first.op == "linear"
    assert first.flops == 2 * 8 * 784 * 256 + 8 * 256 + 8 * 256
    assert first.nbytes == 4 * (8 * 784 + 784 * 256 + 256 + 8 * 256)
    assert all(row.seconds > 0 for row in profile.rows)
    assert 0 < profile.kernel_seconds <= profile.call_seconds * 10  # kernels are part of a call (noisy machine)
    table = str(profile)
    assert all(f"%{row.name}" in table for row in profile.rows)
    assert [entry["kernel"] for entry in profile.as_dicts()] == [row.name for row in profile.rows]


def test_roofline_classification_follows_the_ridge():
    peaks = MachinePeaks(1, gflops=100.0, gbytes_per_second=20.0)  # ridge 5 FLOP/byte
    low = KernelTime("a", "relu", (10,), 1e-6, flops=10, nbytes=80, parts=1, peaks=peaks)
    high = KernelTime("b", "linear", (10,), 1e-3, flops=10**8, nbytes=10**6, parts=2, peaks=peaks)
    assert low.bound == "memory" and high.bound == "compute"
    assert low.of_roof == pytest.approx(80 / 1e-6 / 1e9 / 20.0)
    assert high.of_roof == pytest.approx(10**8 / 1e-3 / 1e9 / 100.0)
    assert high.roof_gflops == 100.0 and low.roof_gflops == pytest.approx(10 / 80 * 20.0)


def test_the_roofline_picture_is_written(compiled_mlp, tmp_path):
    cm, x = compiled_mlp
    path = cm.profile(x, repeat=2, warmup=0).plot(tmp_path / "roofline.svg")
    assert path.stat().st_size > 1000 and path.read_text().lstrip().startswith("<?xml")


def test_peaks_are_measured_once_and_positive():
    peaks = machine_peaks(1)
    assert peaks is machine_peaks(1)
    assert peaks.gflops > 1 and peaks.gbytes_per_second > 0.5 and peaks.ridge > 0


def test_int8_roof_is_measured_and_above_a_tenth_of_the_f32_roof():
    from tensorforge.runtime.machine import int8_peak

    # the int8 multiply-add packs 2-4 products per 32-bit lane: its roof is never far below f32's
    assert int8_peak(1) > 0.1 * machine_peaks(1).gflops


def test_profile_refuses_a_foreign_target():
    x = np.ones((1, 784), np.float32)
    with tf.compile(mlp(), x, target="armv8") as cm, pytest.raises(ValueError, match="qemu"):
        cm.profile(x)


def test_memory_report_adds_up():
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    with tf.compile(small_cnn(), x) as cm:
        report = cm.memory_report()
        computed = [node for node in cm.graph.nodes if node.op not in ("input", "constant")
                    and node.op not in ("reshape", "flatten")]
        assert report.intermediate_bytes == sum(node.type.nbytes for node in computed)
        assert report.arena_bytes == cm.artifact.memory.size <= cm.artifact.workspace_bytes
        assert report.arena_bytes <= report.intermediate_bytes + report.scratch_bytes + 64 * len(computed)
        assert report.saving >= 1.0
        assert report.weight_bytes == cm.artifact.weights.size
        assert "workspace arena" in str(report) and all(f"%{node.name}" in str(report) for node in computed)
