"""Saved models (tensorforge/deploy/saved.py): cm.save / tfg.load and gen.save / tfg.load_generator.

The oracle is the model that was saved: a loaded model must give its outputs bit for bit (host in
process, armv8 under qemu), a loaded generator its greedy tokens. Damaged, foreign or other-version
files must be refused with SavedModelError naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import sys

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import models, nn
from tensorforge.codegen.artifact import Artifact
from tensorforge.codegen.target import Target
from tensorforge.deploy import container
from tensorforge.runtime import ToolMissingError, find_cross_tools

RNG = np.random.default_rng(0)
X_CNN = RNG.standard_normal((2, 3, 12, 12), dtype=np.float32)
X_MLP = RNG.standard_normal((3, 784), dtype=np.float32)


def _has_cross_tools() -> bool:
    try:
        find_cross_tools("aarch64")
        return True
    except ToolMissingError:
        return False


needs_qemu = pytest.mark.skipif(not _has_cross_tools(), reason="needs gcc-aarch64-linux-gnu and qemu-user")


@pytest.fixture(scope="module")
def cnn() -> tfg.CompiledModel:
    with tfg.compile(models.small_cnn(), X_CNN) as compiled:
        yield compiled


@pytest.fixture(scope="module")
def cnn_file(cnn, tmp_path_factory):
    return cnn.save(tmp_path_factory.mktemp("saved") / "cnn.tfm")


def _round_trip(compiled, path, x, **load_options) -> tfg.CompiledModel:
    compiled.save(path)
    loaded = tfg.load(path, **load_options)
    expected = compiled(x)
    got = loaded(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), "the loaded model's bits differ"
    return loaded


def test_cnn_round_trip_on_the_host_is_bit_identical(cnn, tmp_path):
    with _round_trip(cnn, tmp_path / "cnn.tfm", X_CNN) as loaded:
        assert loaded.target.name == "host" and loaded.loaded_from == tmp_path / "cnn.tfm"
        assert str(loaded.graph) == str(cnn.graph)
        assert loaded.input_names == cnn.input_names and loaded.output_types == cnn.output_types
        assert str(loaded.memory_report()) == str(cnn.memory_report())
        assert "loaded from a saved file" in loaded.report() and "fold-constants" in loaded.report()
        assert np.array_equal(loaded(X_CNN[::-1].copy()), cnn(X_CNN[::-1].copy()))


def test_mlp_round_trip_with_threads_and_int8(tmp_path):
    calibration = RNG.standard_normal((16, 784), dtype=np.float32)
    with tfg.compile(models.mlp(), X_MLP, threads=2, quantize="int8", calibration=calibration) as compiled:
        with _round_trip(compiled, tmp_path / "mlp.tfm", X_MLP) as loaded:
            assert loaded.artifact.threads == compiled.artifact.threads
            assert str(loaded.quant_report()) == str(compiled.quant_report())


def test_pruned_model_keeps_its_prune_report(tmp_path):
    with tfg.compile(models.mlp(), X_MLP, prune=tfg.PruneConfig(sparsity=0.9)) as compiled:
        with _round_trip(compiled, tmp_path / "pruned.tfm", X_MLP) as loaded:
            assert str(loaded.prune_report()) == str(compiled.prune_report())


@needs_qemu
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_armv8_round_trip_under_qemu_is_bit_identical(name, tmp_path):
    model, x = (models.mlp(), X_MLP) if name == "mlp" else (models.small_cnn(), X_CNN)
    with tfg.compile(model, x, target="armv8") as compiled:
        with _round_trip(compiled, tmp_path / f"{name}.tfm", x, target="armv8") as loaded:
            assert loaded.target == Target.parse("armv8")


def test_loading_runs_no_llvm(cnn_file, monkeypatch):
    """The object code is linked as saved: no module is parsed, optimized or compiled on load (the
    array entry, a few instructions of IR, is the only thing the JIT compiles)."""
    def refuse(*args, **kwargs):
        raise AssertionError("loading ran LLVM on the model")

    monkeypatch.setattr(Artifact, "module", refuse)
    monkeypatch.setattr(sys.modules["tensorforge.codegen.build"], "optimize", refuse)
    with tfg.load(cnn_file) as loaded:
        loaded(X_CNN)


def test_saving_a_loaded_model_gives_the_same_file_contents(cnn_file, tmp_path):
    with tfg.load(cnn_file) as loaded:
        again = loaded.save(tmp_path / "again.tfm")
    first, second = (json.loads(_header_text(path.read_bytes())) for path in (cnn_file, again))
    assert first["model"]["object"] == second["model"]["object"]
    assert first["sections"].keys() == second["sections"].keys()


def test_save_writes_only_the_named_file(cnn, tmp_path):
    directory = tmp_path / "out"
    directory.mkdir()
    cnn.save(directory / "model.tfm")
    with tfg.load(directory / "model.tfm") as loaded:
        loaded(X_CNN)
    assert [path.name for path in directory.iterdir()] == ["model.tfm"]


@pytest.fixture(scope="module")
def generator():
    gpt = nn.GPT(64, 32, 2, 2, 32, rng=np.random.default_rng(0))
    with tfg.compile_generator(gpt, 32, prompt_len=8, kv_cache="int8") as compiled:
        yield compiled


def test_generator_round_trip_gives_the_same_greedy_tokens(generator, tmp_path):
    generator.save(tmp_path / "gpt.tfm")
    loaded = tfg.load_generator(tmp_path / "gpt.tfm")
    assert (loaded.max_len, loaded.prompt_len, loaded.layers, loaded.graphs.kv_cache) == (32, 8, 2, "int8")
    for prompt in ([5, 1, 7], list(range(1, 12))):  # shorter and longer than prompt_len
        assert loaded.generate(prompt, 12) == generator.generate(prompt, 12)
    assert np.array_equal(loaded.logits([3, 4, 5]), generator.logits([3, 4, 5]))  # the full prefill, compiled late
    assert str(loaded.graphs.decode) == str(generator.graphs.decode)
    loaded.close()


def _data_start(data: bytes) -> int:
    return -(-(24 + len(_header_text(data)) + 32) // 64) * 64


def test_a_generators_models_store_their_shared_weights_once(generator, tmp_path):
    """The first-token prefill's and decode's weights are one WeightsPool's memory: the file holds it
    once, each model's buffer a prefix of it; loaded, they are one memory again, and saving the loaded
    generator gives the same sections."""
    path = generator.save(tmp_path / "gpt.tfm")
    header = json.loads(_header_text(path.read_bytes()))
    models = header["generator"]["models"]
    first, decode = generator.first_model.artifact.weights, generator.decode_model.artifact.weights
    assert models["first"]["weights"] == models["decode"]["weights"]
    assert (models["first"]["weights_bytes"], models["decode"]["weights_bytes"]) == (first.nbytes, decode.nbytes)
    assert header["sections"][models["decode"]["weights"]][1] == max(first.nbytes, decode.nbytes)
    with tfg.load_generator(path) as loaded:
        weights = [loaded.first_model.artifact.weights, loaded.decode_model.artifact.weights]
        assert weights[0].ctypes.data == weights[1].ctypes.data
        assert np.array_equal(weights[0], np.frombuffer(first, np.uint8))
        assert np.array_equal(weights[1], np.frombuffer(decode, np.uint8))
        again = json.loads(_header_text(loaded.save(tmp_path / "again.tfm").read_bytes()))
    assert again["sections"].keys() == header["sections"].keys()


def test_every_copy_of_a_weight_is_checked(generator, tmp_path):
    """A graph constant stored both as a section and as a part of the shared weights has one checksum:
    the reader hashes the first copy and compares the second to it (memcmp). An altered byte in either
    copy, in a part only decode uses (past the first model's prefix) or in one both use, is refused."""
    path = generator.save(tmp_path / "gpt.tfm")
    data = path.read_bytes()
    header = json.loads(_header_text(data))
    start = _data_start(data)
    models = header["generator"]["models"]
    at, _, parts = header["sections"][models["decode"]["weights"]]
    constants = {entry[1] for graph in header["generator"]["graphs"].values() for entry in graph["constants"].values()
                 if entry[0] == "section"}
    twice = max((part for part in parts if part[2] in constants), key=lambda part: part[1])
    decode_only = next(part for part in parts if part[0] >= models["first"]["weights_bytes"])
    positions = {"a shared weights part": start + at + twice[0] + twice[1] // 2,
                 "its copy as a graph constant": start + header["sections"][twice[2]][0] + twice[1] // 2,
                 "a part past the first model's weights": start + at + decode_only[0] + decode_only[1] // 2,
                 "the first part": start + at}
    for where, position in positions.items():
        altered = bytearray(data)
        altered[position] ^= 0x01
        (tmp_path / "altered.tfm").write_bytes(altered)
        try:
            tfg.load_generator(tmp_path / "altered.tfm").close()
        except tfg.SavedModelError as error:
            assert "does not match" in str(error) and str(tmp_path / "altered.tfm") in str(error), where
        else:
            pytest.fail(f"an altered byte in {where} was not refused")


def test_weights_past_their_section_are_refused(generator, tmp_path):
    """A header (with a valid checksum) whose model claims more weights than the shared section holds."""
    data = bytearray(generator.save(tmp_path / "gpt.tfm").read_bytes())
    header = _header_text(bytes(data))
    models = json.loads(header)["generator"]["models"]
    claimed = f'"weights_bytes":{models["first"]["weights_bytes"]}'.encode()
    bigger = f'"weights_bytes":{10 ** (len(claimed) - 16) - 1}'.encode()  # as many digits: the layout stays
    assert claimed in header and len(bigger) == len(claimed)
    data[24:24 + len(header)] = header.replace(claimed, bigger)
    data[24 + len(header):24 + len(header) + 32] = hashlib.sha256(bytes(data[:24 + len(header)])).digest()
    (tmp_path / "bad.tfm").write_bytes(data)
    _refused(tmp_path / "bad.tfm", "weights .* lie outside section", load=tfg.load_generator)


def test_the_writer_never_merges_different_bytes_with_one_digest(monkeypatch):
    """Sections are named by their xxh3_128: should two different arrays ever hash alike, the writer
    refuses rather than store one for the other (equal arrays are still stored once)."""
    writer = container.ContainerWriter()
    first, same = np.arange(2048, dtype=np.float32), np.arange(2048, dtype=np.float32)
    assert writer.add(first) == writer.add(same) and len(writer.sections) == 1
    monkeypatch.setattr(container, "digest", lambda data: "0" * 32)  # every array hashes alike
    writer = container.ContainerWriter()
    writer.add(first)
    with pytest.raises(ValueError, match="same digest"):
        writer.add(first + 1)


# --- refusals -------------------------------------------------------------------------------------------

def _header_text(data: bytes) -> bytes:
    length = struct.unpack_from("<Q", data, 16)[0]
    return data[24:24 + length]


def _refused(path, match: str, load=tfg.load, **options):
    with pytest.raises(tfg.SavedModelError, match=match) as info:
        load(path, **options)
    assert str(path) in str(info.value)


def test_a_file_for_another_target_is_refused(cnn, cnn_file, tmp_path):
    _refused(cnn_file, "holds code for target host .*, not armv8", target="armv8")
    with tfg.compile(models.mlp(), X_MLP, target="armv8") as arm:
        arm.save(tmp_path / "arm.tfm")
    _refused(tmp_path / "arm.tfm", "holds code for target armv8 .*, not host", target="host")


def test_code_for_cpu_features_this_machine_lacks_is_refused(cnn, tmp_path, monkeypatch):
    """A file made on a machine with a feature this one lacks (as x86-64-v4 code on a CPU without AVX-512)."""
    foreign = dataclasses.replace(cnn.target, features=cnn.target.features + ",+madeupfeature")
    monkeypatch.setattr(cnn, "target", foreign)
    cnn.save(tmp_path / "foreign.tfm")
    _refused(tmp_path / "foreign.tfm", "CPU features this machine lacks: madeupfeature")


@pytest.mark.skipif(Target.parse("host").has_feature("avx512f") or Target.parse("host").arch != "x86_64",
                    reason="needs an x86-64 host without AVX-512")
def test_avx512_code_on_a_machine_without_it_is_refused(tmp_path):
    from tensorforge.codegen import build

    graph = tfg.trace(models.mlp(), X_MLP)
    artifact = build(graph, "x86-64-v4")
    model = tfg.CompiledModel.__new__(tfg.CompiledModel)  # it cannot run here, so it was never loaded
    model.artifact, model.target, model.input_names, model.pass_report = artifact, artifact.target, ["x"], None
    from tensorforge.deploy.saved import save_model

    save_model(model, tmp_path / "v4.tfm")
    _refused(tmp_path / "v4.tfm", "avx512")


@pytest.mark.parametrize("version", [container.FORMAT_VERSION - 1, container.FORMAT_VERSION + 1])
def test_another_format_version_is_refused(cnn_file, tmp_path, version):
    """An older file (version 1 checked its parts by sha256) or a newer one."""
    data = bytearray(cnn_file.read_bytes())
    struct.pack_into("<I", data, 8, version)
    (tmp_path / "other.tfm").write_bytes(data)
    _refused(tmp_path / "other.tfm", f"format version {version}; this tensorforge reads version "
                                     f"{container.FORMAT_VERSION} \\(save it again")


@pytest.mark.parametrize("keep", [0, 5, 20, 100, 0.5, -1])
def test_a_truncated_file_is_refused(cnn_file, tmp_path, keep):
    data = cnn_file.read_bytes()
    keep = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (tmp_path / "cut.tfm").write_bytes(data[:keep])
    _refused(tmp_path / "cut.tfm", "truncated|not a tensorforge saved model")


def test_an_extended_file_is_refused(cnn_file, tmp_path):
    (tmp_path / "long.tfm").write_bytes(cnn_file.read_bytes() + b"\0")
    _refused(tmp_path / "long.tfm", "truncated or extended")


def _altered_positions(data: bytes) -> dict[str, int]:
    header = _header_text(data)
    start = _data_start(data)
    sections = json.loads(header)["sections"]
    model = json.loads(header)["model"]
    spans = sorted((start + offset, start + offset + size) for offset, size, _ in sections.values())
    between = next(end for end, (next_start, _) in zip([end for _, end in spans], spans[1:]) if next_start > end)
    weights_at, weights_size, weights_parts = sections[model["weights"]]
    inside = next(weights_at + offset + size for (offset, size, _), (next_offset, _, _)
                  in zip(weights_parts, weights_parts[1:]) if next_offset > offset + size)
    return {"magic": 1, "header": 24 + header.index(b'"entry"') + 3, "header checksum": 24 + len(header) + 5,
            "object code": start + sections[model["object"]][0] + 100, "padding between sections": between,
            "weights": start + weights_at + weights_size // 2, "padding in the weights": start + inside,
            "last byte": len(data) - 1}


@pytest.mark.parametrize("where", ["magic", "header", "header checksum", "object code", "weights",
                                   "padding between sections", "padding in the weights", "last byte"])
def test_an_altered_byte_is_refused(cnn_file, tmp_path, where):
    data = bytearray(cnn_file.read_bytes())
    data[_altered_positions(bytes(data))[where]] ^= 0x10
    (tmp_path / "altered.tfm").write_bytes(data)
    _refused(tmp_path / "altered.tfm", "does not match|padding .* is not zero|not a tensorforge saved model")


def test_other_files_are_refused(cnn_file, tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    _refused(tmp_path / "array.npy", "not a tensorforge saved model")
    _refused(tmp_path / "missing.tfm", "no such file")
    _refused(tmp_path, "is a directory")
    _refused(cnn_file, "holds a model, not a generator: open it with tfg.load", load=tfg.load_generator)
