"""Write the bundle's JSON configs in one layout: 4-space indents; a list or object that holds only plain values
(strings, numbers, booleans, null, lists of those) and fits in ``MAX_WIDTH`` columns takes one line, so a short
component is one line (``{"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.3, "std": 0.05}``) and a
3-vector is ``[64, 64, 32]``; anything holding a component is expanded, one entry per line.

``json.dump(indent=4)`` puts every value on its own line, which made a 3-vector five lines and a four-setting
transform six; the configs read as a table of contents only when such values take one. The content is unchanged:
``json.load`` of the output equals ``json.load`` of the input (checked before writing).

    python scripts/format_configs.py            # rewrite bundle/configs/*.json in place (not the upstream schema)
    python scripts/format_configs.py --check    # exit 1 and name the files that are not in this layout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
MAX_WIDTH = 160  # columns: the one-line components of a transform list fit; ruff keeps Python at 120


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _flat(value: object) -> bool:
    """Plain, or a list of plain values."""
    return _plain(value) or (isinstance(value, list) and all(map(_plain, value)))


def format_config(value: object, indent: int = 0, prefix: int = 0) -> str:
    """``value`` as JSON text in the layout above (``indent``: its line's indent; ``prefix``: the columns its key
    takes before it on that line, so a one-line value is measured with its key and trailing comma)."""
    pad, inner = " " * indent, " " * (indent + 4)
    one_line = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, (dict, list)) and indent + prefix + len(one_line) + 1 <= MAX_WIDTH:
        children = value.values() if isinstance(value, dict) else value
        if all(map(_flat, children)):
            return one_line
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = []
        for k, v in value.items():
            key = f"{json.dumps(k, ensure_ascii=False)}: "
            items.append(f"{inner}{key}{format_config(v, indent + 4, len(key))}")
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + format_config(v, indent + 4) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def formatted(path: Path) -> str:
    data = json.loads(path.read_text())
    text = format_config(data) + "\n"
    if json.loads(text) != data:
        raise AssertionError(f"{path}: the layout changed the content")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files not in this layout")
    parser.add_argument("files", nargs="*", type=Path, help="default: bundle/configs/*.json")
    args = parser.parse_args()
    files = args.files or sorted(p for p in CONFIGS.glob("*.json") if p.name != "metadata_schema.json")  # upstream
    stale = []
    for path in files:
        text = formatted(path)
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    verb = "not in the layout" if args.check else "rewritten"
    print(f"{len(stale)} of {len(files)} configs {verb}" + "".join(f"\n  {p}" for p in stale))
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
