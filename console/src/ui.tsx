// Small pieces every screen uses: status badges, times, JSON, errors.
import { Show, type JSX } from 'solid-js';
import { Problem } from './api/client';

export function Status(props: { status: string }) {
  return <span class={`badge status-${props.status}`}>{props.status}</span>;
}

/** "3 s ago", "5 min ago", … with the exact time as the tooltip. */
export function Ago(props: { at?: string | null }) {
  return (
    <Show when={props.at} fallback={<span class="muted">—</span>}>
      {(at) => (
        <time datetime={at()} title={new Date(at()).toLocaleString()}>
          {ago(at())}
        </time>
      )}
    </Show>
  );
}

export function ago(at: string, now = Date.now()): string {
  const s = Math.max(0, (now - Date.parse(at)) / 1000);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(at).toLocaleDateString();
}

/** A duration in the unit that reads best: 850 ms, 12.3 s, 4 min 10 s, 2 h 5 min. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function between(from?: string | null, to?: string | null): string {
  if (!from || !to) return '—';
  return duration(Date.parse(to) - Date.parse(from));
}

export function Json(props: { value: unknown; label: string }) {
  return (
    <pre class="json" tabindex="0" aria-label={props.label}>
      {JSON.stringify(props.value, null, 2)}
    </pre>
  );
}

/** An API refusal (or any error) as a readable alert. */
export function ErrorBox(props: { error: unknown }) {
  const text = () => {
    const e = props.error;
    if (e instanceof Problem) return `${e.doc.title}: ${e.doc.detail}`;
    return e instanceof Error ? e.message : String(e);
  };
  return (
    <div class="alert" role="alert">
      {text()}
    </div>
  );
}

export function Section(props: { title: string; children: JSX.Element; actions?: JSX.Element }) {
  return (
    <section class="card">
      <header class="card-head">
        <h2>{props.title}</h2>
        {props.actions}
      </header>
      {props.children}
    </section>
  );
}

export const shortId = (id: string) => id.slice(-12);
