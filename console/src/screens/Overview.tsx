// The platform at a glance: every queue by level (waiting, running, oldest), how many tasks end
// per second and how many of them fail, and the live workers with their tasks in flight.
import { createSignal, For, Show } from 'solid-js';
import { api, type QueueInfo, type WorkerInfo } from '../api/client';
import { every } from '../live';
import { can } from '../session';
import { Link } from '../router';
import { Ago, ErrorBox, Section } from '../ui';

interface Sample {
  at: number;
  perSec: number;
  failedShare: number | null;
}

const KEEP = 150; // samples: five minutes at one every two seconds

export default function Overview() {
  const [queues, setQueues] = createSignal<QueueInfo[] | null>(null);
  const [workers, setWorkers] = createSignal<WorkerInfo[] | null>(null);
  const [samples, setSamples] = createSignal<Sample[]>([]);
  const [error, setError] = createSignal<unknown>(null);

  if (can('ops:read')) {
    every(2000, async () => {
      try {
        const [q, w] = await Promise.all([
          api<{ queues: QueueInfo[] }>('GET', '/api/v1/queues'),
          api<{ workers: WorkerInfo[] }>('GET', '/api/v1/workers'),
        ]);
        setQueues(q.queues);
        setWorkers(w.workers);
        setError(null);
        const finished = q.queues.reduce((n, x) => n + x.finished_last_minute, 0);
        const failed = q.queues.reduce((n, x) => n + (x.failed_last_minute ?? 0), 0);
        setSamples((s) => [
          ...s.slice(-(KEEP - 1)),
          { at: Date.now(), perSec: finished / 60, failedShare: finished ? failed / finished : null },
        ]);
      } catch (e) {
        setError(e);
        throw e;
      }
    });
  }

  const totals = () => {
    const q = queues() ?? [];
    const finished = q.reduce((n, x) => n + x.finished_last_minute, 0);
    const failed = q.reduce((n, x) => n + (x.failed_last_minute ?? 0), 0);
    return {
      waiting: q.reduce((n, x) => n + x.waiting, 0),
      running: q.reduce((n, x) => n + x.in_flight, 0),
      perSec: finished / 60,
      success: finished ? `${(100 * (1 - failed / finished)).toFixed(1)} %` : '—',
    };
  };

  return (
    <Show
      when={can('ops:read')}
      fallback={
        <Section title="Overview">
          <p>
            The platform's state needs the <code>ops:read</code> permission. Your tasks are under{' '}
            <Link href="/tasks">Tasks</Link>.
          </p>
        </Section>
      }
    >
      <Show when={error()}>
        <ErrorBox error={error()} />
      </Show>
      <div class="stats" aria-live="polite">
        <Stat label="Waiting" value={totals().waiting} />
        <Stat label="Running" value={totals().running} />
        <Stat label="Finished per second (last minute)" value={totals().perSec.toFixed(1)} />
        <Stat label="Succeeded (last minute)" value={totals().success} />
      </div>
      <Section title="Throughput">
        <Chart samples={samples()} />
      </Section>
      <Section title="Queues">
        <Show when={queues()} fallback={<p class="muted">Loading…</p>}>
          <div class="table-wrap">
            <table>
              <caption class="sr-only">Queues by priority level</caption>
              <thead>
                <tr>
                  <th scope="col">Queue</th>
                  <th scope="col">Level</th>
                  <th scope="col" class="num">Waiting</th>
                  <th scope="col" class="num">Running</th>
                  <th scope="col" class="num wide">Oldest</th>
                  <th scope="col" class="num wide">Workers</th>
                </tr>
              </thead>
              <tbody>
                <For each={queues()}>
                  {(q) => (
                    <For each={q.levels}>
                      {(level, i) => (
                        <tr data-queue={q.name} data-priority={level.priority}>
                          <th scope="row">
                            <Show when={i() === 0}>
                              <Link href={`/tasks?queue=${encodeURIComponent(q.name)}`}>{q.name}</Link>
                            </Show>
                          </th>
                          <td>
                            {level.priority}
                            <Show when={level.paused}> (paused)</Show>
                          </td>
                          <td class="num waiting">{level.waiting}</td>
                          <td class="num">{level.in_flight}</td>
                          <td class="num wide">{level.oldest_age_secs == null ? '—' : `${level.oldest_age_secs.toFixed(1)} s`}</td>
                          <td class="num wide">{i() === 0 ? q.workers : ''}</td>
                        </tr>
                      )}
                    </For>
                  )}
                </For>
              </tbody>
            </table>
          </div>
        </Show>
      </Section>
      <Section title="Workers">
        <Show when={workers()?.length} fallback={<p class="muted">{workers() ? 'No worker is running.' : 'Loading…'}</p>}>
          <ul class="workers">
            <For each={workers()}>
              {(w) => (
                <li>
                  <strong>{w.id}</strong>
                  <span>
                    {w.in_flight} of {w.concurrency} in flight · queues {w.queues.join(', ')} · {w.tools.length} tools · v{w.version}
                  </span>
                  <span class="muted">
                    up since <Ago at={w.started_at} />
                  </span>
                </li>
              )}
            </For>
          </ul>
        </Show>
      </Section>
    </Show>
  );
}

function Stat(props: { label: string; value: string | number }) {
  return (
    <div class="stat">
      <span class="stat-value">{props.value}</span>
      <span class="stat-label">{props.label}</span>
    </div>
  );
}

/** Tasks finished per second (line) and the failed share (bars) over the samples kept. */
function Chart(props: { samples: Sample[] }) {
  const W = 600;
  const H = 120;
  const max = () => Math.max(1, ...props.samples.map((s) => s.perSec));
  // The newest sample at the right edge; older ones to its left, one step per sample.
  const x = (i: number) => W - (props.samples.length - 1 - i) * (W / (KEEP - 1));
  const line = () => props.samples.map((s, i) => `${x(i).toFixed(1)},${(H - (s.perSec / max()) * (H - 10)).toFixed(1)}`).join(' ');
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label="Tasks finished per second over the last minutes">
        <For each={props.samples}>
          {(s, i) => (
            <Show when={s.failedShare}>
              <rect class="failed" x={x(i()) - W / KEEP} y={H - (s.failedShare ?? 0) * H} width={W / KEEP} height={(s.failedShare ?? 0) * H} />
            </Show>
          )}
        </For>
        <polyline class="rate" points={line()} fill="none" />
      </svg>
      <figcaption>
        Finished per second, one-minute average, up to {max().toFixed(1)}/s over the last {Math.round((props.samples.length * 2) / 60)} min
        shown; red: the share that failed.
      </figcaption>
    </figure>
  );
}
