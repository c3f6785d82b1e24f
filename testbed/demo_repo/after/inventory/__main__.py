"""python -m inventory export|low-stock --data stock.json"""

import argparse
import json
import sys

from inventory.core import Inventory, Item
from inventory.export import to_csv
from inventory.report import format_report, low_stock


def load(path: str) -> Inventory:
    inv = Inventory()
    with open(path) as handle:
        for row in json.load(handle):
            inv.add(Item(**row))
    return inv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inventory")
    parser.add_argument("command", choices=["export", "low-stock"])
    parser.add_argument("--data", required=True, help="JSON list of items")
    args = parser.parse_args(argv)
    inv = load(args.data)
    out = to_csv(inv) if args.command == "export" else format_report(low_stock(inv))
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
