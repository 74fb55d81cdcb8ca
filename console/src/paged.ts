// A list read page by page with the API's cursors (`next_cursor`), for the screens that show
// one: the first page now, the next on demand.
import { createSignal } from 'solid-js';
import { api, query } from './api/client';

export function paged<T>(path: string, key: string, params: () => Record<string, string | undefined> = () => ({})) {
  const [items, setItems] = createSignal<T[]>([]);
  const [cursor, setCursor] = createSignal<string | null>(null);
  const [loaded, setLoaded] = createSignal(false);
  const [error, setError] = createSignal<unknown>(null);
  const read = async (from?: string) => {
    try {
      const page = await api<Record<string, unknown>>('GET', `${path}${query({ ...params(), cursor: from })}`);
      const got = (page[key] as T[]) ?? [];
      setItems((old) => (from ? [...old, ...got] : got));
      setCursor((page.next_cursor as string | null | undefined) ?? null);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setLoaded(true);
    }
  };
  return {
    items,
    cursor,
    loaded,
    error,
    /** The first page again (after a change, or when the filter changed). */
    reload: () => read(),
    more: () => {
      const c = cursor();
      if (c) void read(c);
    },
  };
}
