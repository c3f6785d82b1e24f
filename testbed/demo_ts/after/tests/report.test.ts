import { Inventory } from "../src/inventory";
import { formatReport, lowStock } from "../src/report";

test("items at or below their reorder level are low", () => {
  const inv = new Inventory();
  inv.add({ sku: "A1", name: "Bolt", quantity: 1, reorderLevel: 1 });
  inv.add({ sku: "B2", name: "Nut", quantity: 9, reorderLevel: 2 });
  expect(lowStock(inv).map((i) => i.sku)).toEqual(["A1"]);
  expect(formatReport(lowStock(inv))).toBe("1 low on stock\nA1 Bolt: 1 (reorder at 1)\n");
});
