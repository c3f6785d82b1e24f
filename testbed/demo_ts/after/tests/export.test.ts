import { toCsv } from "../src/export";
import { Inventory } from "../src/inventory";

test("rows are sorted by sku after the header", () => {
  const inv = new Inventory();
  inv.add({ sku: "B2", name: "Nut, small", quantity: 7, reorderLevel: 2 });
  inv.add({ sku: "A1", name: "Bolt", quantity: 3, reorderLevel: 1 });
  expect(toCsv(inv)).toBe('sku,name,quantity\nA1,Bolt,3\nB2,"Nut, small",7\n');
});
