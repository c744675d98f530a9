/**
 * A cache of things that are expensive to load (models, judges), keyed by what identifies them
 * (URI + digest): concurrent requests for one key share a single load, and a failed load is
 * forgotten so the next request tries again instead of inheriting the error.
 */
export class LoadOnce<T> {
  private readonly entries = new Map<string, Promise<T>>();

  get(key: string, load: () => Promise<T>): Promise<T> {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = load();
      this.entries.set(key, entry);
      entry.catch(() => this.entries.delete(key));
    }
    return entry;
  }

  /** Forgets a key; returns what it had loaded (for the caller to release), if anything. */
  async delete(key: string): Promise<T | undefined> {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    return entry;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The keys loaded or loading. */
  keys(): string[] {
    return [...this.entries.keys()];
  }
}
