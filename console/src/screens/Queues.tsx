// Queues: each with its backlog, and a pause / resume button for those who hold ops:write. A
// paused queue keeps accepting tasks; workers take none of them until it is resumed.
import { createSignal, For, Show } from 'solid-js';
import { api, type QueueInfo } from '../api/client';
import { every } from '../live';
import { Link } from '../router';
import { can } from '../session';
import { ErrorBox, Section } from '../ui';

export default function Queues() {
  const [queues, setQueues] = createSignal<QueueInfo[] | null>(null);
  const [error, setError] = createSignal<unknown>(null);
  const [busy, setBusy] = createSignal<string | null>(null);
  const load = async () => setQueues((await api<{ queues: QueueInfo[] }>('GET', '/api/v1/queues')).queues);
  every(2000, load);

  const toggle = async (q: QueueInfo) => {
    setBusy(q.name);
    try {
      const updated = await api<QueueInfo>('POST', `/api/v1/queues/${encodeURIComponent(q.name)}/${q.paused ? 'resume' : 'pause'}`);
      setQueues((all) => all?.map((x) => (x.name === updated.name ? updated : x)) ?? null);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  };

  return (
    <Section title="Queues">
      <Show when={error()}>
        <ErrorBox error={error()} />
      </Show>
      <Show when={queues()} fallback={<p class="muted">Loading…</p>}>
        <div class="table-wrap">
          <table class="queues">
            <caption class="sr-only">Queues</caption>
            <thead>
              <tr>
                <th scope="col">Queue</th>
                <th scope="col">State</th>
                <th scope="col" class="num">Waiting</th>
                <th scope="col" class="num wide">Running</th>
                <th scope="col" class="num wide">Oldest</th>
                <th scope="col" class="num wide">Workers</th>
                <th scope="col" class="num wide">Ended / min</th>
                <th scope="col" class="num wide">Failed / min</th>
                <Show when={can('ops:write')}>
                  <th scope="col">
                    <span class="sr-only">Action</span>
                  </th>
                </Show>
              </tr>
            </thead>
            <tbody>
              <For each={queues()}>
                {(q) => (
                  <tr data-queue={q.name} data-paused={q.paused ? 'true' : 'false'}>
                    <th scope="row">
                      <Link href={`/tasks?queue=${encodeURIComponent(q.name)}`}>{q.name}</Link>
                    </th>
                    <td>
                      <span class={`badge ${q.paused ? 'status-cancelled' : 'status-succeeded'}`}>{q.paused ? 'paused' : 'active'}</span>
                    </td>
                    <td class="num waiting">{q.waiting}</td>
                    <td class="num wide">{q.in_flight}</td>
                    <td class="num wide">{q.oldest_age_secs == null ? '—' : `${q.oldest_age_secs.toFixed(1)} s`}</td>
                    <td class="num wide">{q.workers}</td>
                    <td class="num wide">{q.finished_last_minute}</td>
                    <td class="num wide">{q.failed_last_minute ?? 0}</td>
                    <Show when={can('ops:write')}>
                      <td>
                        <button
                          type="button"
                          class="small"
                          aria-label={`${q.paused ? 'Resume' : 'Pause'} ${q.name}`}
                          disabled={busy() === q.name}
                          onClick={() => toggle(q)}
                        >
                          {q.paused ? 'Resume' : 'Pause'}
                        </button>
                      </td>
                    </Show>
                  </tr>
                )}
              </For>
            </tbody>
          </table>
        </div>
        <p class="hint">
          A paused queue keeps accepting tasks; workers take none until it is resumed. Running tasks finish.
        </p>
      </Show>
    </Section>
  );
}
