export interface Item {
  sku: string;
  name: string;
  quantity: number;
  reorderLevel: number;
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
    item.quantity -= quantity;
  }

  get(sku: string): Item | undefined {
    return this.items.get(sku);
  }

  all(): Item[] {
    return [...this.items.values()];
  }
}
