"""What every benchmark in scripts/ does with its results: print the table, optionally save JSON."""

from __future__ import annotations

import json


def emit(table: str, result: dict, json_path: str | None) -> None:
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
