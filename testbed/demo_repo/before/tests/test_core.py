import unittest

from inventory.core import Inventory, Item


class CoreTest(unittest.TestCase):
    def test_add_and_remove(self) -> None:
        inv = Inventory()
        inv.add(Item("a1", "bolt", 10))
        inv.remove("a1", 3)
        self.assertEqual(inv.items["a1"].quantity, 7)
