"""The codegen's lowering registry against the IR's op registry (codegen/lowering.py, codegen/ops/).

Every op the IR knows can be compiled, every fusable op has an element function for fused chains,
and no lowering is registered for an op the IR does not know. A failure names the op and what is
missing.
"""

from __future__ import annotations

import pytest

from tensorforge import ir
from tensorforge.codegen import lowering
from tensorforge.codegen.lowering import LOWERINGS, VIEW, Lowering, register_lowering
from tensorforge.codegen.ops.elementwise import ELEMENT, map_op_elements

NOT_LOWERED = {"input", "constant"}  # tf_run reads them from its arguments; no kernel


def _name(emit) -> str:
    return "None (a view)" if emit is None else f"{emit.__module__}.{emit.__qualname__}"


def test_every_ir_op_has_a_lowering():
    missing = [f"op '{op}' has no lowering: register one with register_lowering(\"{op}\", Lowering(...)) in "
               f"the codegen/ops/ module of its family" for op in sorted(set(ir.OPS) - NOT_LOWERED - set(LOWERINGS))]
    assert not missing, "\n".join(missing)


def test_every_fusable_op_has_an_element_function():
    missing = [f"op '{op}' is fusable (ir trait) but has no element function: add it to ELEMENT in "
               f"codegen/ops/elementwise.py" for op in ir.ops_with("fusable") if op not in ELEMENT]
    assert not missing, "\n".join(missing)


def test_every_lowering_is_for_an_ir_op():
    unknown = [f"a lowering is registered for op '{op}', which the IR does not know (ir.OPS): "
               f"emit {_name(LOWERINGS[op].emit)}" for op in sorted(set(LOWERINGS) - set(ir.OPS))]
    assert not unknown, "\n".join(unknown)


def test_element_functions_are_for_elementwise_ops_and_give_their_map_lowering():
    problems = []
    for op, element in ELEMENT.items():
        if op not in ir.OPS or not ir.get_op(op).has("elementwise"):
            problems.append(f"ELEMENT has op '{op}', which is not an elementwise op of the IR")
        elif LOWERINGS.get(op) is None or LOWERINGS[op].emit is not map_op_elements:
            problems.append(f"op '{op}' has an element function but its lowering is not the table's map")
        elif LOWERINGS[op].dtypes != element.dtypes:
            problems.append(f"op '{op}': its lowering's dtypes differ from its ELEMENT entry's")
    assert not problems, "\n".join(problems)


def test_views_are_the_ops_with_the_view_trait():
    assert {op for op, found in LOWERINGS.items() if found.is_view} == set(ir.ops_with("view"))
    assert all(LOWERINGS[op] is VIEW for op in ir.ops_with("view"))


def test_an_op_cannot_have_two_lowerings(monkeypatch):
    monkeypatch.setattr(lowering, "LOWERINGS", dict(LOWERINGS))
    with pytest.raises(ValueError, match=r"op 'add' already has a lowering .*map_op_elements"):
        register_lowering("add", Lowering(map_op_elements, frozenset()))
    assert register_lowering("an_op_of_a_plugin", VIEW) is VIEW  # a new op registers once
