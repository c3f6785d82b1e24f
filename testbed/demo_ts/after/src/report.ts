import { Inventory, Item } from "./inventory";

export function lowStock(inv: Inventory): Item[] {
  return inv
    .all()
    .filter((item) => item.quantity <= item.reorderLevel)
    .sort((a, b) => a.sku.localeCompare(b.sku));
}

export function formatReport(items: Item[]): string {
  if (items.length === 0) {
    return "nothing is low on stock\n";
  }
  const lines = items.map((i) => `${i.sku} ${i.name}: ${i.quantity} (reorder at ${i.reorderLevel})`);
  return `${items.length} low on stock\n${lines.join("\n")}\n`;
}
