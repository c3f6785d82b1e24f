import json
import subprocess
import sys
import tempfile
import unittest


class CliTest(unittest.TestCase):
    def run_cli(self, command: str) -> str:
        items = [
            {"sku": "a1", "name": "bolt", "quantity": 10},
            {"sku": "b2", "name": "nut", "quantity": 1},
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(items, handle)
        result = subprocess.run(
            [sys.executable, "-m", "inventory", command, "--data", handle.name],
            capture_output=True, text=True, check=True,
        )
        return result.stdout

    def test_export(self) -> None:
        self.assertEqual(self.run_cli("export"), "sku,name,quantity\na1,bolt,10\nb2,nut,1\n")

    def test_low_stock(self) -> None:
        self.assertIn("b2  nut: 1 left", self.run_cli("low-stock"))
