"""One entity map: the velocity plan, the offline twin and the lists read ``ENTITY_MAP``."""

from __future__ import annotations

from service.features import catalog
from service.features.catalog import ENTITY_MAP, Entity, entity_attribute
from service.features.offline import entity_column
from service.normalisation.normalise import LOG_COLUMNS
from service.normalisation.payment import Payment
from service.stores.list_names import ENTITIES, LOOKUP_ATTRIBUTES
from service.stores.plan import PLAN


def test_every_entity_with_a_history_is_keyed_by_one_payment_attribute() -> None:
    for entity in Entity:
        attribute = entity_attribute(entity)
        assert attribute in Payment.__struct_fields__
        assert entity_column(entity) == attribute
        assert catalog.ENTITY_KEY_COLUMNS[entity] == ENTITY_MAP[entity].log_columns
        assert set(ENTITY_MAP[entity].log_columns) <= set(LOG_COLUMNS)
    assert {e.entity: e.attribute for e in PLAN.entities} == {
        e: entity_attribute(e) for e in {p.entity for p in PLAN.entities}
    }


def test_lists_compare_each_entity_with_the_attributes_the_map_names() -> None:
    assert list(LOOKUP_ATTRIBUTES) == list(ENTITIES)
    for entity in ENTITIES:
        assert LOOKUP_ATTRIBUTES[entity] == ENTITY_MAP[entity].listed_by
        assert all(hasattr(Payment, attribute) for attribute in LOOKUP_ATTRIBUTES[entity])
    # a velocity entity that lists name is matched by its own key first
    for entity in set(ENTITIES) & set(Entity):
        assert LOOKUP_ATTRIBUTES[entity][0] == entity_attribute(Entity(entity))


def test_distinct_members_are_the_entities_own_keys() -> None:
    assert catalog.DISTINCT_OF["cards"] == entity_attribute(Entity.card)
    assert catalog.DISTINCT_OF["customers"] == entity_attribute(Entity.customer)
    assert catalog.DISTINCT_OF["devices"] == entity_attribute(Entity.device)
