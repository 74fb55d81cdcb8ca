// The task list: filters in the query string, search by id, newest first, more pages appended
// as you scroll (rows rendered only where the window shows them), live refresh of the newest
// page, and bulk cancel / retry of the selected tasks or of every task matching the filter.
import { batch, createEffect, createMemo, createSignal, For, on, onCleanup, onMount, Show } from 'solid-js';
import { type TaskView } from '../api/client';
import { every } from '../live';
import { location, Link, navigate, withQuery } from '../router';
import { can } from '../session';
import { selection } from '../selection';
import { allMatching, cancel, each, FILTER_KEYS, listPage, retry, TERMINAL, type Filter } from '../tasks';
import { Ago, between, ErrorBox, shortId, Status } from '../ui';

const ROW = 44; // px: every row has this height, so the window's rows can be computed
const OVERSCAN = 10;
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
// Narrow screens show four of the eight columns (styles.css hides the `.wide` ones); the
// spacer rows must span exactly the columns shown, or the table grows phantom columns.
const narrow = window.matchMedia('(max-width: 640px)');

/** An RFC 3339 time as a `datetime-local` input shows it: local, to the minute. */
function localTime(iso?: string): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export default function Tasks() {
  const filter = createMemo<Filter>(() => {
    const q = location().query;
    const f: Filter = {};
    for (const k of FILTER_KEYS) {
      const v = q.get(k);
      if (v) f[k] = v;
    }
    return f;
  }, {}, { equals: (a, b) => JSON.stringify(a) === JSON.stringify(b) });

  const [tasks, setTasks] = createSignal<TaskView[]>([]);
  const [cursor, setCursor] = createSignal<string | null>(null);
  const [loading, setLoading] = createSignal(false);
  // The first page of the current filter has arrived (a test and a screen reader can tell
  // "no task" from "not loaded yet").
  const [loaded, setLoaded] = createSignal(false);
  const [error, setError] = createSignal<unknown>(null);
  const { selected, toggle, replace: setSelected } = selection();
  const [notice, setNotice] = createSignal<string | null>(null);
  const [busy, setBusy] = createSignal<string | null>(null);

  // A new filter starts from its first page.
  createEffect(
    on(filter, async (f) => {
      batch(() => {
        setTasks([]);
        setLoaded(false);
        setCursor(null);
        setSelected();
      });
      await loadMore(f, true);
    }),
  );

  async function loadMore(f = filter(), first = false) {
    if (loading() || (!first && !cursor())) return;
    setLoading(true);
    try {
      // The first page small, to show something at once; the next ones larger, so that a
      // long scroll asks the server less often.
      const page = await listPage(f, first ? undefined : (cursor() ?? undefined), first ? 50 : 200);
      if (JSON.stringify(f) !== JSON.stringify(filter())) return; // the filter changed meanwhile
      batch(() => {
        setTasks((old) => (first ? page.tasks : [...old, ...page.tasks]));
        setCursor(page.next_cursor ?? null);
        setError(null);
        setLoaded(true);
      });
    } catch (e) {
      setError(e);
    } finally {
      setLoading(false);
    }
  }

  // Live: the newest page is read again; new tasks go on top, changed ones are updated in place.
  every(2000, async () => {
    if (loading()) return;
    const f = filter();
    const page = await listPage(f);
    if (JSON.stringify(f) !== JSON.stringify(filter())) return;
    setTasks((old) => {
      const fresh = new Map(page.tasks.map((t) => [t.id, t]));
      const known = new Set(old.map((t) => t.id));
      const added = page.tasks.filter((t) => !known.has(t.id));
      return [...added, ...old.map((t) => fresh.get(t.id) ?? t)];
    });
    if (tasks().length === page.tasks.length) setCursor(page.next_cursor ?? null);
  });

  // Virtual rows: only those the window shows (plus some) are in the document.
  let table!: HTMLTableElement;
  const [range, setRange] = createSignal({ first: 0, last: 40 });
  const measure = () => {
    const top = table ? table.getBoundingClientRect().top + window.scrollY : 0;
    const first = Math.max(0, Math.floor((window.scrollY - top) / ROW) - OVERSCAN);
    const last = first + Math.ceil(window.innerHeight / ROW) + 2 * OVERSCAN;
    setRange({ first, last });
    // Near the end: the next page.
    if (last >= tasks().length - OVERSCAN && cursor()) void loadMore();
  };
  onMount(() => {
    window.addEventListener('scroll', measure, { passive: true });
    window.addEventListener('resize', measure);
    measure();
  });
  onCleanup(() => {
    window.removeEventListener('scroll', measure);
    window.removeEventListener('resize', measure);
  });
  createEffect(on(() => tasks().length, measure, { defer: true }));
  const visible = () => tasks().slice(range().first, Math.min(range().last, tasks().length));
  const [isNarrow, setNarrow] = createSignal(narrow.matches);
  const onWidth = (e: MediaQueryListEvent) => setNarrow(e.matches);
  narrow.addEventListener('change', onWidth);
  onCleanup(() => narrow.removeEventListener('change', onWidth));
  const columns = () => (isNarrow() ? 4 : 8);

  async function bulk(kind: 'cancel' | 'retry', scope: 'selected' | 'matching') {
    setNotice(null);
    let chosen: TaskView[];
    if (scope === 'selected') {
      chosen = tasks().filter((t) => selected().has(t.id));
    } else {
      setBusy('counting the matching tasks…');
      try {
        chosen = await allMatching(filter(), (n) => setBusy(`counting the matching tasks… ${n}`));
      } catch (e) {
        setBusy(null);
        setError(e);
        return;
      }
      setBusy(null);
    }
    // Cancel what has not ended; run again what has.
    const ids = chosen.filter((t) => TERMINAL.has(t.status) === (kind === 'retry')).map((t) => t.id);
    if (ids.length === 0) {
      setNotice(kind === 'cancel' ? 'None of these tasks is still queued or running.' : 'None of these tasks has ended.');
      return;
    }
    const what = scope === 'matching' ? `${ids.length} tasks matching this filter` : `${ids.length} selected tasks`;
    if (!window.confirm(`${kind === 'cancel' ? 'Cancel' : 'Run again'} ${what}?`)) return;
    setBusy(`${kind === 'cancel' ? 'cancelling' : 'retrying'} 0 of ${ids.length}`);
    const failures = await each(ids, kind === 'cancel' ? cancel : retry, (n) =>
      setBusy(`${kind === 'cancel' ? 'cancelling' : 'retrying'} ${n} of ${ids.length}`),
    );
    setBusy(null);
    setSelected();
    setNotice(
      `${kind === 'cancel' ? 'Cancelled' : 'Ran again'}: ${ids.length - failures.length} of ${ids.length}.` +
        (failures.length ? ` Refused: ${failures.map((f) => shortId(f.id)).join(', ')}.` : ''),
    );
  }

  const [search, setSearch] = createSignal('');
  const go = (e: Event) => {
    e.preventDefault();
    const id = search().trim();
    if (id) navigate(`/tasks/${encodeURIComponent(id)}`);
  };

  const setFilter = (key: string, value: string) => navigate(withQuery({ [key]: value }), true);
  const allShownSelected = () => tasks().length > 0 && tasks().every((t) => selected().has(t.id));

  return (
    <>
      <form class="toolbar" role="search" onSubmit={go}>
        <label for="search">Task id</label>
        <input id="search" type="search" placeholder="019…" value={search()} onInput={(e) => setSearch(e.currentTarget.value)} />
        <button type="submit">Open</button>
      </form>
      <form class="filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="f-status">Status</label>
          <select id="f-status" value={filter().status ?? ''} onChange={(e) => setFilter('status', e.currentTarget.value)}>
            <option value="">any</option>
            <For each={STATUSES}>{(s) => <option value={s}>{s}</option>}</For>
          </select>
        </div>
        <div>
          <label for="f-priority">Level</label>
          <select id="f-priority" value={filter().priority ?? ''} onChange={(e) => setFilter('priority', e.currentTarget.value)}>
            <option value="">any</option>
            <option value="high">high</option>
            <option value="normal">normal</option>
            <option value="low">low</option>
          </select>
        </div>
        <For each={[['tool', 'Tool'], ['queue', 'Queue'], ['agent', 'Agent'], ['session_id', 'Session']] as const}>
          {([key, label]) => (
            <div>
              <label for={`f-${key}`}>{label}</label>
              <input id={`f-${key}`} value={filter()[key] ?? ''} onChange={(e) => setFilter(key, e.currentTarget.value.trim())} />
            </div>
          )}
        </For>
        <For each={[['created_after', 'Submitted from'], ['created_before', 'Submitted before']] as const}>
          {([key, label]) => (
            <div>
              <label for={`f-${key}`}>{label}</label>
              <input
                id={`f-${key}`}
                type="datetime-local"
                value={localTime(filter()[key])}
                onChange={(e) => setFilter(key, e.currentTarget.value ? new Date(e.currentTarget.value).toISOString() : '')}
              />
            </div>
          )}
        </For>
      </form>

      <div class="toolbar bulk">
        <span aria-live="polite">{selected().size ? `${selected().size} selected` : `${tasks().length}${cursor() ? '+' : ''} ${tasks().length === 1 && !cursor() ? 'task' : 'tasks'}`}</span>
        <Show when={can('tasks:cancel')}>
          <button type="button" disabled={!selected().size || !!busy()} onClick={() => bulk('cancel', 'selected')}>
            Cancel selected
          </button>
          <button type="button" disabled={!!busy()} onClick={() => bulk('cancel', 'matching')}>
            Cancel all matching
          </button>
        </Show>
        <Show when={can('tasks:submit')}>
          <button type="button" disabled={!selected().size || !!busy()} onClick={() => bulk('retry', 'selected')}>
            Retry selected
          </button>
          <button type="button" disabled={!!busy()} onClick={() => bulk('retry', 'matching')}>
            Retry all matching
          </button>
        </Show>
      </div>
      <Show when={busy() || notice()}>
        <p class="notice" role="status">{busy() ?? notice()}</p>
      </Show>
      <Show when={error()}>
        <ErrorBox error={error()} />
      </Show>

      <table class="tasks" ref={table} aria-busy={!loaded()} data-loaded={loaded() ? 'true' : undefined}>
        <caption class="sr-only">Tasks, newest first</caption>
        <thead>
          <tr>
            <th scope="col" class="pick">
              <input
                type="checkbox"
                aria-label="Select every task shown"
                checked={allShownSelected()}
                onChange={(e) => setSelected(e.currentTarget.checked ? tasks().map((t) => t.id) : [])}
              />
            </th>
            <th scope="col" class="id">Task</th>
            <th scope="col">Tool</th>
            <th scope="col" class="status">Status</th>
            <th scope="col" class="wide">Queue</th>
            <th scope="col" class="wide num attempts">Attempts</th>
            <th scope="col" class="wide when">Created</th>
            <th scope="col" class="wide num took">Took</th>
          </tr>
        </thead>
        <tbody>
          <tr class="spacer" aria-hidden="true">
            <td colspan={columns()} style={{ height: `${range().first * ROW}px` }} />
          </tr>
          <For each={visible()}>
            {(t) => (
              <tr data-task={t.id} data-status={t.status}>
                <td class="pick">
                  <input
                    type="checkbox"
                    aria-label={`Select task ${t.id}`}
                    checked={selected().has(t.id)}
                    onChange={(e) => toggle(t.id, e.currentTarget.checked)}
                  />
                </td>
                <td class="id">
                  <Link href={`/tasks/${t.id}`} title={t.id}>
                    {shortId(t.id)}
                  </Link>
                </td>
                <td>{t.tool}</td>
                <td>
                  <Status status={t.status} />
                </td>
                <td class="wide">
                  {t.queue}
                  <Show when={t.priority !== 'normal'}> · {t.priority}</Show>
                </td>
                <td class="wide num">
                  {t.attempts}/{t.max_attempts}
                </td>
                <td class="wide">
                  <Ago at={t.created_at} />
                </td>
                <td class="wide num">{between(t.started_at ?? t.created_at, t.finished_at)}</td>
              </tr>
            )}
          </For>
          <tr class="spacer" aria-hidden="true">
            <td colspan={columns()} style={{ height: `${Math.max(0, tasks().length - range().last) * ROW}px` }} />
          </tr>
        </tbody>
      </table>
      <Show when={loaded() && tasks().length === 0 && !error()}>
        <p class="empty">No task matches.</p>
      </Show>
      <Show when={cursor()}>
        <button type="button" class="more" disabled={loading()} onClick={() => loadMore()}>
          {loading() ? 'Loading…' : 'Older tasks'}
        </button>
      </Show>
    </>
  );
}
