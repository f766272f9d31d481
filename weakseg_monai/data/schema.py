"""The structure of a datalist item as a JSON schema, checked before any value (``jsonschema`` is already a
dependency of the bundle metadata check).

Why a schema: a value check that assumes a list (``len(item["label"])``) tracebacks on a scalar; checking the
shapes of the fields first turns every malformed item into one message naming item, field and what was
expected.
"""

from __future__ import annotations

from jsonschema import Draft7Validator

_NUMBER = {"type": "number"}
ITEM_SCHEMA = {
    "type": "object",
    "required": ["image", "box"],
    "properties": {
        "id": {"type": ["string", "integer"]},
        "image": {"type": "string", "minLength": 1},
        "mask": {"type": ["string", "null"]},
        "gt_instances": {"type": ["string", "null"]},
        "box": {"type": "array", "items": {"type": "array", "minItems": 6, "maxItems": 6, "items": _NUMBER}},
        "label": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "mask_annotated": {"type": "array", "items": {"type": "boolean"}},
        "spacing": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number", "exclusiveMinimum": 0}},
    },
}

EXPECTED = {
    "item": "a JSON object with at least 'image' and 'box'",
    "id": "a string",
    "image": "a path (string) relative to the datalist",
    "mask": "a path (string) relative to the datalist",
    "gt_instances": "a path (string) relative to the datalist",
    "box": "a list of boxes, each 6 numbers [x0, y0, z0, x1, y1, z1]",
    "label": "a list of integers >= 0, one per box",
    "mask_annotated": "a list of true / false, one per box",
    "spacing": "3 positive numbers (x, y, z) in µm, e.g. [0.5, 0.5, 1.0]",
}

_VALIDATOR = Draft7Validator(ITEM_SCHEMA)


def structure_errors(item: object) -> list[tuple[str, str]]:
    """``(field, message)`` for each structural problem of one raw datalist item (empty when well formed)."""
    if not isinstance(item, dict):
        return [("item", f"got {_short(item)}; expected {EXPECTED['item']}")]
    found: dict[str, str] = {}
    for error in _VALIDATOR.iter_errors(item):
        if error.validator == "required":
            name = error.message.split("'")[1]
            found.setdefault(name, f"missing; expected {EXPECTED[name]}")
            continue
        name = str(error.absolute_path[0]) if error.absolute_path else "item"
        where = "".join(f"[{p}]" for p in list(error.absolute_path)[1:])
        found.setdefault(name, f"{where + ' ' if where else ''}got {_short(error.instance)}; expected {EXPECTED[name]}")
    return sorted(found.items())


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
