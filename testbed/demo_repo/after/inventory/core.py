from dataclasses import dataclass


class OutOfStock(Exception):
    """Raised when removing more than is in stock."""


@dataclass
class Item:
    sku: str
    name: str
    quantity: int
    reorder_level: int = 5


class Inventory:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        self.items[item.sku] = item

    def remove(self, sku: str, count: int) -> None:
        item = self.items[sku]
        if count > item.quantity:
            raise OutOfStock(f"{sku}: only {item.quantity} in stock, cannot remove {count}")
        item.quantity -= count
