import unittest

from inventory.core import Inventory, Item
from inventory.export import to_csv


class ExportTest(unittest.TestCase):
    def test_rows_sorted_by_sku_after_header(self) -> None:
        inv = Inventory()
        inv.add(Item("b2", "nut", 4))
        inv.add(Item("a1", "bolt", 10))
        self.assertEqual(to_csv(inv), "sku,name,quantity\na1,bolt,10\nb2,nut,4\n")
