export interface Item {
  sku: string;
  name: string;
  quantity: number;
  reorderLevel: number;
}

export class OutOfStock extends Error {
  constructor(
    readonly sku: string,
    readonly wanted: number,
    readonly available: number,
  ) {
    super(`cannot remove ${wanted} of ${sku}: only ${available} in stock`);
    this.name = "OutOfStock";
  }
}

export class Inventory {
  private items = new Map<string, Item>();

  add(item: Item): void {
    const current = this.items.get(item.sku);
    if (current) {
      current.quantity += item.quantity;
    } else {
      this.items.set(item.sku, { ...item });
    }
  }

  remove(sku: string, quantity: number): void {
    const item = this.items.get(sku);
    if (!item) {
      throw new Error(`unknown sku ${sku}`);
    }
    if (quantity > item.quantity) {
      throw new OutOfStock(sku, quantity, item.quantity);
    }
    item.quantity -= quantity;
  }

  get(sku: string): Item | undefined {
    return this.items.get(sku);
  }

  all(): Item[] {
    return [...this.items.values()];
  }
}
