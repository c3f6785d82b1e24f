import unittest

from inventory.core import Inventory, Item, OutOfStock


class CoreTest(unittest.TestCase):
    def test_add_and_remove(self) -> None:
        inv = Inventory()
        inv.add(Item("a1", "bolt", 10))
        inv.remove("a1", 3)
        self.assertEqual(inv.items["a1"].quantity, 7)

    def test_remove_more_than_stock_raises(self) -> None:
        inv = Inventory()
        inv.add(Item("a1", "bolt", 2))
        with self.assertRaises(OutOfStock):
            inv.remove("a1", 3)
        self.assertEqual(inv.items["a1"].quantity, 2)
