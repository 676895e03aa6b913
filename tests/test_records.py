"""records.from_wire and from_wire_list: the builders compiled per class build what the
class's own attrs ``__init__`` builds from the same wire map, whatever keys the map has or
lacks."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from browserd.client import records
from browserd.client._async import control as async_control
from browserd.client._async import resources as async_resources
from browserd.client._sync import control as sync_control
from browserd.client._sync import resources as sync_resources
from browserd.client.records import from_wire, from_wire_list


def _classes(module: Any) -> list[type[Any]]:
    return [value for value in vars(module).values()
            if isinstance(value, type) and attrs.has(value) and value.__module__ == module.__name__]


# The records, and the resources built on them (a record plus the private transport).
CLASSES = sorted(
    {cls for module in (records, sync_resources, async_resources, sync_control, async_control)
     for cls in _classes(module) if "raw" in attrs.fields_dict(cls)},
    key=lambda cls: (cls.__module__, cls.__qualname__),
)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5),
    st.dictionaries(st.sampled_from(["url", "http_url", "browser_url", "x"]), st.text(max_size=3),
                    max_size=3),
    st.lists(st.integers(), max_size=2),
)


def _private(cls: type[Any]) -> dict[str, Any]:
    return {f.alias: object() for f in attrs.fields(cls) if f.alias != f.name}


def _by_init(cls: type[Any], wire: dict[str, Any], private: dict[str, Any]) -> Any:
    names = {f.name for f in attrs.fields(cls) if f.name != "raw" and f.alias == f.name}
    return cls(**{key: value for key, value in wire.items() if key in names}, raw=wire,
               **private)


def _fields(obj: Any) -> dict[str, Any]:
    # Every field, those out of eq (raw, the transport) too, with its type: 0 == False.
    return {f.name: (type(value), value)
            for f in attrs.fields(type(obj)) for value in [getattr(obj, f.name)]}


def test_the_classes_are_found() -> None:
    names = {cls.__qualname__ for cls in CLASSES}
    assert {"Event", "SpaceRecord", "Space", "Runtime", "Connection", "Invocation"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
@given(data=st.data())
@settings(deadline=None)  # a class's first example compiles its builders
def test_from_wire_builds_what_init_builds(cls: type[Any], data: st.DataObject) -> None:
    keys = [f.name for f in attrs.fields(cls) if f.alias == f.name and f.name != "raw"]
    wire = data.draw(st.dictionaries(st.sampled_from([*keys, "added_later"]), VALUES))
    private = _private(cls)
    built = from_wire(cls, wire, **private)
    assert type(built) is cls
    assert built.raw is wire  # unknown keys stay there, and only there
    assert _fields(built) == _fields(_by_init(cls, wire, private))
    many = from_wire_list(cls, [wire, {}, wire], **private)  # the list's own compiled loop
    assert [type(one) for one in many] == [cls] * 3 and many[0] is not many[2]
    assert [_fields(one) for one in many] == [
        _fields(_by_init(cls, one, private)) for one in (wire, {}, wire)]


def test_a_class_the_builder_does_not_compile_gets_its_init() -> None:
    seen: list[str] = []

    @attrs.define
    class Checked:
        name: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
        raw: dict[str, Any] = attrs.field(factory=dict)

        def __attrs_post_init__(self) -> None:
            seen.append(self.name)

    @attrs.define
    class Required:
        name: str
        raw: dict[str, Any] = attrs.field(factory=dict)

    assert from_wire(Checked, {"name": "a", "other": 1}).name == "a"
    assert [one.name for one in from_wire_list(Checked, [{"name": "b"}, {}])] == ["b", ""]
    assert seen == ["a", "b", ""]
    with pytest.raises(TypeError):
        from_wire(Checked, {"name": 3})
    assert from_wire(Required, {"name": "b"}).name == "b"
    with pytest.raises(TypeError):
        from_wire(Required, {})
