// Live updates: screens poll the API while the tab is visible and live mode is on (as Sidekiq's
// "live poll" does), and a task's page follows its events over Server-Sent Events.
import { createSignal, onCleanup } from 'solid-js';
import { streamUrl, type WsServerMessage } from './api/client';

const [paused, setPaused] = createSignal(false);
export { paused, setPaused };

/** Runs `load` now and then every `ms` while live and visible, until the owner is disposed.
 * `load` is not started again while a previous run is still going. */
export function every(ms: number, load: () => Promise<unknown>) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const tick = async () => {
    if (!paused() && document.visibilityState === 'visible') {
      try {
        await load();
      } catch {
        // The screen shows its own error state; the next tick tries again.
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  void tick();
  onCleanup(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

/** The messages about one task (the socket's system and error messages aside). */
export type TaskMessage = Extract<WsServerMessage, { type: `task:${string}` }>;

const TYPES = [
  'task:accepted',
  'task:started',
  'task:progress',
  'task:cancel_requested',
  'task:retrying',
  'task:complete',
  'task:error',
  'task:cancelled',
] as const;

const TERMINAL = new Set(['task:complete', 'task:error', 'task:cancelled']);

/** Follows a task's events (its history, then live) until its terminal event or until the
 * owner is disposed. A dropped stream is reopened by the browser and replays the history, so
 * messages already seen (same `seq` and type) are skipped. `onRefused` gets the server's
 * `error` event (e.g. a credential that lapsed). */
export function follow(taskId: string, onMessage: (m: TaskMessage) => void, onRefused?: (detail: string) => void) {
  const source = new EventSource(streamUrl(`/api/v1/tasks/${encodeURIComponent(taskId)}/events`));
  const seen = new Set<string>();
  const handler = (e: MessageEvent) => {
    const m = JSON.parse(e.data) as TaskMessage;
    const key = `${m.seq ?? ''}:${m.type}`;
    if (seen.has(key)) return;
    seen.add(key);
    onMessage(m);
    if (TERMINAL.has(m.type)) source.close();
  };
  for (const t of TYPES) source.addEventListener(t, handler);
  source.addEventListener('error', (e) => {
    if (e instanceof MessageEvent && typeof e.data === 'string') {
      source.close();
      onRefused?.((JSON.parse(e.data) as { message: string }).message);
    }
  });
  onCleanup(() => source.close());
  return source;
}
