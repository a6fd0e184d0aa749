/**
 * A binary min-heap of deadlines, the memory store's index of what expires next.
 *
 * Entries are never removed from the middle: when a key is overwritten or deleted, its old
 * deadline stays in the heap and the caller skips it as stale when it surfaces. That keeps every
 * operation O(log n); `rebuild` bounds the garbage.
 */
export interface Deadline {
  /** Epoch milliseconds at which the entry expires. */
  readonly at: number;
}

/** A min-heap ordered by `at`. */
export class ExpiryHeap<T extends Deadline> {
  #items: T[] = [];

  /** Number of deadlines held, stale ones included. */
  get size(): number {
    return this.#items.length;
  }

  /** The earliest deadline, without removing it. */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** Adds a deadline in O(log n). */
  push(item: T): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent].at <= item.at) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = item;
  }

  /** Removes and returns the earliest deadline. */
  pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      this.#siftDown(last, 0);
    }
    return top;
  }

  /** Replaces the contents with `items` in O(n) (used to drop stale deadlines). */
  rebuild(items: T[]): void {
    this.#items = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) {
      this.#siftDown(items[i], i);
    }
  }

  #siftDown(item: T, start: number): void {
    const items = this.#items;
    const n = items.length;
    let i = start;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && items[child + 1].at < items[child].at) child++;
      if (items[child].at >= item.at) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = item;
  }
}
