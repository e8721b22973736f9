/** Values looked up once per key (an array's ids, which do not change); a lookup that failed is tried again next time. */
export class LookupCache<V> {
  private readonly entries = new Map<string, Promise<V>>();

  get(key: string, lookUp: () => Promise<V>): Promise<V> {
    let value = this.entries.get(key);
    if (!value) {
      value = lookUp().catch((err: unknown) => {
        this.entries.delete(key);
        throw err;
      });
      this.entries.set(key, value);
    }
    return value;
  }
}
