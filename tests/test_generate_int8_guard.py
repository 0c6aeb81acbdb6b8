"""The generator's int8 has the guard compile's int8 has: each layer measured on prefills of calibration
prompts (default: random ids), layers below the budgets kept in f32 in prefill and decode alike, and
gen.quant_report() showing the figures. It had no guard: every linear went int8 unmeasured."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge import nn


def _gpt(outlier: bool) -> nn.GPT:
    gpt = nn.GPT(120, 32, 2, 4, 32, rng=np.random.default_rng(0))
    if outlier:  # one hidden feature of block 0's MLP a thousand times the others, which linear2 ignores:
        mlp = gpt.blocks[0].mlp  # its range sets linear2's per-tensor activation scale, the rest drowns
        mlp.linear1.weight[:, 5] *= 1000.0
        mlp.linear1.bias[5] = 1000.0
        mlp.linear2.weight[5, :] = 0.0
    return gpt


def _ops_of_layer(graph, layer: str) -> set[str]:
    return {node.op for node in graph.nodes if node.op in ("linear", "dynamic_qlinear")
            and any(operand.name.startswith(layer) for operand in node.inputs)}


def test_every_layer_is_measured_and_a_clean_model_stays_int8():
    with tfg.compile_generator(_gpt(False), 32, prompt_len=8, quantize="int8") as gen:
        report = gen.quant_report()
        assert len(report.rows) == 13 and report.calibration_samples == 8
        assert all(np.isfinite(sqnr) and sqnr > 30 and decision == "int8" for _, _, sqnr, decision, _ in report.rows)


def test_a_layer_below_the_budget_stays_f32_in_prefill_and_decode():
    gpt = _gpt(True)
    prompts = np.random.default_rng(1).integers(0, 120, (6, 8))
    with tfg.compile_generator(gpt, 32, prompt_len=8, quantize="int8", calibration=prompts) as gen, \
            tfg.compile_generator(gpt, 32, prompt_len=8) as fp32:
        rows = {row[0]: row for row in gen.quant_report().rows}
        assert rows["blocks.0.mlp.linear2"][3].startswith("fp32"), str(gen.quant_report())
        assert rows["blocks.0.mlp.linear2"][2] < 30
        assert sum(row[3] == "int8" for row in rows.values()) == 12
        for graph in (gen.graphs.prefill, gen.graphs.decode):
            assert _ops_of_layer(graph, "blocks.0.mlp.linear2") == {"linear"}
            assert _ops_of_layer(graph, "blocks.1.mlp.linear2") == {"dynamic_qlinear"}
        assert sum(node.op == "dynamic_qlinear" for node in gen.graphs.decode.nodes) == 12
        prompt = [3, 14, 15, 92]
        assert gen.generate(prompt, 6, temperature=0)[:4] == prompt
        logits, reference = gen.next_logits(prompt), fp32.next_logits(prompt)
        assert np.abs(logits - reference).max() < 0.05 * np.abs(reference).max()


def test_calibration_prompts_are_checked():
    gpt = _gpt(False)
    with pytest.raises(ValueError, match="prompt_len"):
        tfg.compile_generator(gpt, 32, prompt_len=4, quantize="int8", calibration=[[1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match=r"token ids in \[0, 120\)"):
        tfg.compile_generator(gpt, 32, prompt_len=4, quantize="int8", calibration=[[1, 200]])
