import unittest

from inventory.core import Inventory, Item
from inventory.report import format_report, low_stock


class ReportTest(unittest.TestCase):
    def test_items_at_or_below_reorder_level(self) -> None:
        inv = Inventory()
        inv.add(Item("a1", "bolt", 10))
        inv.add(Item("b2", "nut", 5))
        inv.add(Item("c3", "washer", 1, reorder_level=2))
        self.assertEqual([i.sku for i in low_stock(inv)], ["b2", "c3"])
        self.assertIn("c3  washer: 1 left", format_report(low_stock(inv)))
