"""Items that need reordering."""

from inventory.core import Inventory, Item


def low_stock(inv: Inventory) -> list[Item]:
    return sorted(
        (item for item in inv.items.values() if item.quantity <= item.reorder_level),
        key=lambda item: item.sku,
    )


def format_report(items: list[Item]) -> str:
    if not items:
        return "All items are above their reorder level.\n"
    lines = [f"{i.sku}  {i.name}: {i.quantity} left (reorder at {i.reorder_level})" for i in items]
    return "\n".join(lines) + "\n"
