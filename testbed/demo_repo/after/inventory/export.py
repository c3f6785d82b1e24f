"""CSV export of an inventory."""

import csv
import io

from inventory.core import Inventory


def to_csv(inv: Inventory) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sku", "name", "quantity"])
    for sku in sorted(inv.items):
        item = inv.items[sku]
        writer.writerow([item.sku, item.name, item.quantity])
    return out.getvalue()
