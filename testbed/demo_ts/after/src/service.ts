import { toCsv } from "./export";
import { Inventory, OutOfStock } from "./inventory";
import { formatReport, lowStock } from "./report";

export interface Request {
  method: "GET" | "POST";
  path: string;
  body?: { sku: string; quantity: number };
}

export interface Response {
  status: number;
  type: "text/csv" | "text/plain";
  body: string;
}

export function handle(inv: Inventory, req: Request): Response {
  if (req.method === "GET" && req.path === "/export.csv") {
    return { status: 200, type: "text/csv", body: toCsv(inv) };
  }
  if (req.method === "GET" && req.path === "/low-stock") {
    return { status: 200, type: "text/plain", body: formatReport(lowStock(inv)) };
  }
  if (req.method === "POST" && req.path === "/remove" && req.body) {
    try {
      inv.remove(req.body.sku, req.body.quantity);
      return { status: 204, type: "text/plain", body: "" };
    } catch (err) {
      if (err instanceof OutOfStock) {
        return { status: 409, type: "text/plain", body: err.message };
      }
      return { status: 404, type: "text/plain", body: (err as Error).message };
    }
  }
  return { status: 404, type: "text/plain", body: "not found" };
}
