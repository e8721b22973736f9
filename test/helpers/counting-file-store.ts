import { LocalFileStore, type FileStore } from '../../src/drivers/file-store.js';

/** A real LocalFileStore that counts its calls by method name (readdir, readFile, rename, ...). */
export function countingFileStore(): { files: FileStore; calls: Map<string, number>; reset: () => void } {
  const inner = new LocalFileStore();
  const calls = new Map<string, number>();
  const files = new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.set(String(key), (calls.get(String(key)) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { files, calls, reset: () => calls.clear() };
}
