// One task: what it was asked, what it answered, its attempts and events as they happen, and
// the buttons to cancel it or run it again.
import { createSignal, For, Show } from 'solid-js';
import { api, type TaskView } from '../api/client';
import { follow, type TaskMessage } from '../live';
import { navigate } from '../router';
import { can } from '../session';
import { cancel, retry, TERMINAL } from '../tasks';
import { Ago, between, duration, ErrorBox, Json, Section, Status } from '../ui';

export default function Task(props: { id: string }) {
  const [task, setTask] = createSignal<TaskView | null>(null);
  const [events, setEvents] = createSignal<TaskMessage[]>([]);
  const [error, setError] = createSignal<unknown>(null);
  const [acting, setActing] = createSignal(false);

  const load = async () => {
    try {
      setTask(await api<TaskView>('GET', `/api/v1/tasks/${encodeURIComponent(props.id)}`));
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  // The page folds what the events say into the task at once; the recorded view (the API's)
  // may lag the events by a moment, so at the end it is read until it shows the end too.
  const apply = (m: TaskMessage) =>
    setTask((t) => {
      if (!t) return t;
      switch (m.type) {
        case 'task:started':
          return {
            ...t,
            status: TERMINAL.has(t.status) ? t.status : 'running',
            attempts: Math.max(t.attempts, m.attempt),
            started_at: t.started_at ?? m.at ?? null,
          };
        case 'task:progress':
          return { ...t, status: TERMINAL.has(t.status) ? t.status : 'running', progress: { progress: m.progress, total: m.total, message: m.message } };
        case 'task:cancel_requested':
          return { ...t, cancel_requested_at: t.cancel_requested_at ?? m.at ?? new Date().toISOString() };
        default:
          return t;
      }
    });
  const settle = async () => {
    for (let i = 0; i < 40; i++) {
      await load();
      if (TERMINAL.has(task()?.status ?? '')) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  void load().then(() => {
    if (!task()) return;
    follow(
      props.id,
      (m) => {
        setEvents((old) => [...old, m]);
        apply(m);
        if (m.type === 'task:complete' || m.type === 'task:error' || m.type === 'task:cancelled') void settle();
      },
      (detail) => setError(new Error(detail)),
    );
  });

  const act = async (what: () => Promise<TaskView>, then?: (t: TaskView) => void) => {
    setActing(true);
    try {
      const t = await what();
      then?.(t);
      await load();
    } catch (e) {
      setError(e);
    } finally {
      setActing(false);
    }
  };

  const percent = () => {
    const p = task()?.progress;
    if (!p || !p.total) return undefined;
    return Math.min(100, (100 * p.progress) / p.total);
  };

  return (
    <>
      <Show when={error()}>
        <ErrorBox error={error()} />
      </Show>
      <Show when={task()}>
        {(t) => (
          <>
            <header class="task-head">
              <h1>
                {t().tool} <Status status={t().status} />
              </h1>
              <code class="task-id">{t().id}</code>
              <div class="actions">
                <Show when={can('tasks:cancel') && !TERMINAL.has(t().status)}>
                  <button type="button" class="danger" disabled={acting() || !!t().cancel_requested_at} onClick={() => act(() => cancel(t().id))}>
                    {t().cancel_requested_at ? 'Cancelling…' : 'Cancel'}
                  </button>
                </Show>
                <Show when={can('tasks:submit') && TERMINAL.has(t().status)}>
                  <button type="button" disabled={acting()} onClick={() => act(() => retry(t().id), (n) => navigate(`/tasks/${n.id}`))}>
                    Run again
                  </button>
                </Show>
                <Show when={can('tasks:submit') && can('tools:read')}>
                  <button type="button" class="secondary" onClick={() => navigate(`/submit?from=${t().id}`)}>
                    Edit and run
                  </button>
                </Show>
              </div>
            </header>

            <Show when={t().status === 'running' || t().progress}>
              <div class="progress">
                <label for="progress">Progress{t().progress?.message ? `: ${t().progress?.message}` : ''}</label>
                {/* Without a total the bar is indeterminate: a <progress> with no value at all. */}
                <Show
                  when={percent() ?? (TERMINAL.has(t().status) ? 100 : undefined)}
                  fallback={<progress id="progress" max="100" aria-label="In progress, no total known" />}
                >
                  {(value) => (
                    <progress id="progress" max="100" value={value()}>
                      {value().toFixed(0)} %
                    </progress>
                  )}
                </Show>
                <span class="muted">
                  {t().progress ? `${t().progress!.progress}${t().progress!.total ? ` of ${t().progress!.total}` : ''}` : ''}
                </span>
              </div>
            </Show>

            <dl class="facts">
              <dt>Queue</dt>
              <dd>
                {t().queue} · {t().priority}
              </dd>
              <dt>Attempts</dt>
              <dd>
                {t().attempts} of {t().max_attempts}
              </dd>
              <dt>Created</dt>
              <dd>
                <Ago at={t().created_at} />
              </dd>
              <dt>Waited</dt>
              <dd>{between(t().created_at, t().started_at)}</dd>
              <dt>Ran</dt>
              <dd>{t().finished_at || !t().started_at ? between(t().started_at, t().finished_at) : 'running'}</dd>
              <Show when={t().run_at}>
                <dt>Runs at</dt>
                <dd>{new Date(t().run_at!).toLocaleString()}</dd>
              </Show>
              <Show when={t().agent}>
                <dt>Agent</dt>
                <dd>{t().agent}</dd>
              </Show>
              <Show when={t().session_id}>
                <dt>Session</dt>
                <dd>{t().session_id}</dd>
              </Show>
              <Show when={t().trace_id}>
                <dt>Trace</dt>
                <dd>
                  <code class="trace-id">{t().trace_id}</code>
                </dd>
              </Show>
              <Show when={t().idempotency_key}>
                <dt>Idempotency key</dt>
                <dd>{t().idempotency_key}</dd>
              </Show>
            </dl>

            <Show when={t().error}>
              {(e) => (
                <Section title="Error">
                  <p class="error-line">
                    <code>{e().code}</code> {e().message}
                    <Show when={e().dead_letter}> (dead-lettered)</Show>
                  </p>
                  <Show when={e().details !== undefined && e().details !== null}>
                    <Json value={e().details} label="Error details" />
                  </Show>
                </Section>
              )}
            </Show>
            <Show when={t().result !== undefined && t().result !== null}>
              <Section title="Result">
                <Json value={t().result} label="Result" />
              </Section>
            </Show>
            <Section title="Arguments">
              <Json value={t().arguments ?? {}} label="Arguments" />
            </Section>
            <Show when={t().metadata}>
              <Section title="Metadata">
                <Json value={t().metadata} label="Metadata" />
              </Section>
            </Show>
            <Section title="Events">
              <ol class="timeline">
                <For each={events()}>{(m, i) => <Event m={m} first={events()[0]} previous={events()[i() - 1]} />}</For>
              </ol>
            </Section>
          </>
        )}
      </Show>
    </>
  );
}

/** One step of the timeline: what happened, when (after the submission), and how long after
 * the step before. */
function Event(props: { m: TaskMessage; first?: TaskMessage; previous?: TaskMessage }) {
  const m = props.m;
  const offset = (from?: TaskMessage) => (from?.at && m.at ? Date.parse(m.at) - Date.parse(from.at) : undefined);
  const text = (): string => {
    switch (m.type) {
      case 'task:accepted':
        return 'queued';
      case 'task:started':
        return `attempt ${m.attempt} started on ${m.worker}`;
      case 'task:progress':
        return `progress ${m.progress}${m.total ? ` of ${m.total}` : ''}${m.message ? `: ${m.message}` : ''}`;
      case 'task:cancel_requested':
        return 'cancel requested';
      case 'task:retrying':
        return `attempt ${m.attempt} failed (${m.error.code}: ${m.error.message}); again in ${(m.retry_in_ms / 1000).toFixed(1)} s`;
      case 'task:complete':
        return `attempt ${m.attempt} succeeded`;
      case 'task:error':
        return `attempt ${m.attempt} failed for good (${m.error.code}: ${m.error.message})`;
      case 'task:cancelled':
        return `cancelled${m.reason ? `: ${m.reason}` : ''}`;
    }
  };
  return (
    <li class={`event ${m.type.replace(':', '-')}`} data-type={m.type}>
      <Show when={m.at}>
        <time datetime={m.at!} title={new Date(m.at!).toLocaleString()} class="muted">
          {props.previous ? `+${duration(offset(props.first) ?? 0)}` : new Date(m.at!).toLocaleTimeString()}
        </time>{' '}
      </Show>
      {text()}
      <Show when={props.previous && offset(props.previous) !== undefined}>
        <span class="muted"> ({duration(offset(props.previous)!)} later)</span>
      </Show>
    </li>
  );
}
