import { Inventory } from "./inventory";

function field(value: string | number): string {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(inv: Inventory): string {
  const rows = inv
    .all()
    .sort((a, b) => a.sku.localeCompare(b.sku))
    .map((item) => [item.sku, item.name, item.quantity].map(field).join(","));
  return ["sku,name,quantity", ...rows].join("\n") + "\n";
}
