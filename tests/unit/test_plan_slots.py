"""The plan numbers its output slots entity by entity (begin packs each entity's run)."""

from service.stores.plan import PLAN


def test_each_entity_fills_one_run_of_slots_in_plan_order() -> None:
    """Entity by entity, in plan order, the slots run on from the last entity's."""
    expected = 0
    for e in PLAN.entities:
        assert e.slots == tuple(range(expected, expected + len(e.slots))), e.entity
        expected += len(e.slots)
    assert expected == PLAN.slot_count
    used = {s for o in PLAN.outputs for s in o.slots}
    assert used == set(range(PLAN.slot_count))


def test_count_returns_the_entity_sums_packed_from_locals() -> None:
    """Each COUNT sums in locals and packs its run; no shared output table is written."""
    prelude = PLAN.lua_prelude()
    for e in PLAN.entities:
        names = ", ".join(f"o{s + 1}" for s in e.slots)
        assert f"struct.pack('<{'d' * len(e.slots)}', {names})" in prelude
    assert "out[" not in prelude
