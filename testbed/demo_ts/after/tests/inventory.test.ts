import { Inventory, OutOfStock } from "../src/inventory";

test("adding twice sums the quantity", () => {
  const inv = new Inventory();
  inv.add({ sku: "A1", name: "Bolt", quantity: 2, reorderLevel: 1 });
  inv.add({ sku: "A1", name: "Bolt", quantity: 3, reorderLevel: 1 });
  expect(inv.get("A1")?.quantity).toBe(5);
});

test("removing more than is in stock throws OutOfStock", () => {
  const inv = new Inventory();
  inv.add({ sku: "A1", name: "Bolt", quantity: 2, reorderLevel: 1 });
  expect(() => inv.remove("A1", 3)).toThrow(OutOfStock);
  expect(inv.get("A1")?.quantity).toBe(2);
});
