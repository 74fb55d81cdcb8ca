// A set of selected ids (rows picked for a bulk action), for the list screens.
import { createSignal } from 'solid-js';

export function selection() {
  const [selected, set] = createSignal<Set<string>>(new Set());
  return {
    selected,
    /** Puts `id` in or takes it out. */
    toggle: (id: string, on: boolean) =>
      set((s) => {
        const next = new Set(s);
        if (on) next.add(id);
        else next.delete(id);
        return next;
      }),
    /** Exactly these ids (none when empty). */
    replace: (ids: Iterable<string> = []) => set(new Set(ids)),
  };
}
