import { Inventory } from "../src/inventory";
import { handle } from "../src/service";

function stock(): Inventory {
  const inv = new Inventory();
  inv.add({ sku: "A1", name: "Bolt", quantity: 2, reorderLevel: 2 });
  return inv;
}

test("GET /export.csv and /low-stock", () => {
  expect(handle(stock(), { method: "GET", path: "/export.csv" }).body).toContain("A1,Bolt,2");
  expect(handle(stock(), { method: "GET", path: "/low-stock" }).body).toContain("1 low");
});

test("POST /remove answers 409 when out of stock and 404 for an unknown sku", () => {
  const inv = stock();
  const remove = (sku: string, quantity: number) =>
    handle(inv, { method: "POST", path: "/remove", body: { sku, quantity } }).status;
  expect(remove("A1", 5)).toBe(409);
  expect(remove("Z9", 1)).toBe(404);
  expect(remove("A1", 2)).toBe(204);
});
