// Dead letters: tasks that failed after every attempt (or whose message could not be read),
// kept for replay. Inspect one, replay one or many; a replay is a new task.
import { createSignal, For, Show } from 'solid-js';
import { api, type TaskView } from '../api/client';
import type { components } from '../api/schema';
import { paged } from '../paged';
import { Link, navigate } from '../router';
import { can } from '../session';
import { selection } from '../selection';
import { each } from '../tasks';
import { Ago, ErrorBox, Json, Section, shortId } from '../ui';

type DeadLetter = components['schemas']['DeadLetter'];

export default function DeadLetters() {
  const list = paged<DeadLetter>('/api/v1/dlq', 'dead_letters');
  void list.reload();
  const { selected, toggle, replace: setSelected } = selection();
  const [notice, setNotice] = createSignal<string | null>(null);
  const [busy, setBusy] = createSignal(false);

  const replay = async (ids: string[]) => {
    if (!ids.length || !window.confirm(`Replay ${ids.length} dead ${ids.length === 1 ? 'task' : 'tasks'} as new tasks?`)) return;
    setBusy(true);
    const failures = await each(ids, (id) => api<TaskView>('POST', `/api/v1/dlq/${id}/replay`));
    setBusy(false);
    setSelected();
    setNotice(`Replayed ${ids.length - failures.length} of ${ids.length}.${failures.length ? ` Refused: ${failures.map((f) => shortId(f.id)).join(', ')}.` : ''}`);
    await list.reload();
  };

  return (
    <Section
      title="Dead letters"
      actions={
        <Show when={can('dlq:replay')}>
          <button type="button" disabled={!selected().size || busy()} onClick={() => replay([...selected()])}>
            Replay selected
          </button>
        </Show>
      }
    >
      <Show when={notice()}>
        <p class="notice" role="status">
          {notice()}
        </p>
      </Show>
      <Show when={list.error()}>
        <ErrorBox error={list.error()} />
      </Show>
      <div class="table-wrap">
        <table class="letters" data-loaded={list.loaded() ? 'true' : undefined}>
          <caption class="sr-only">Dead letters, oldest first</caption>
          <thead>
            <tr>
              <Show when={can('dlq:replay')}>
                <th scope="col" class="pick">
                  <span class="sr-only">Select</span>
                </th>
              </Show>
              <th scope="col">Task</th>
              <th scope="col">Tool</th>
              <th scope="col">Error</th>
              <th scope="col" class="wide">Queue</th>
              <th scope="col" class="wide num">Attempts</th>
              <th scope="col" class="wide">Dead</th>
            </tr>
          </thead>
          <tbody>
            <For each={list.items()}>
              {(l) => (
                <tr data-letter={l.task_id}>
                  <Show when={can('dlq:replay')}>
                    <td class="pick">
                      <input
                        type="checkbox"
                        aria-label={`Select dead letter ${l.task_id}`}
                        checked={selected().has(l.task_id)}
                        onChange={(e) => toggle(l.task_id, e.currentTarget.checked)}
                      />
                    </td>
                  </Show>
                  <td class="id">
                    <Link href={`/dlq/${l.task_id}`} title={l.task_id}>
                      {shortId(l.task_id)}
                    </Link>
                  </td>
                  <td>{l.task?.tool ?? '(unreadable)'}</td>
                  <td>
                    <code>{l.error.code}</code> {l.error.message}
                  </td>
                  <td class="wide">{l.queue}</td>
                  <td class="wide num">{l.attempts}</td>
                  <td class="wide">
                    <Ago at={l.dead_at} />
                  </td>
                </tr>
              )}
            </For>
          </tbody>
        </table>
      </div>
      <Show when={list.loaded() && list.items().length === 0}>
        <p class="empty">No dead letter.</p>
      </Show>
      <Show when={list.cursor()}>
        <button type="button" class="more" onClick={list.more}>
          More
        </button>
      </Show>
    </Section>
  );
}

/** One dead letter: the task as submitted, the error that ended it, and its replay. */
export function DeadLetterView(props: { id: string }) {
  const [letter, setLetter] = createSignal<DeadLetter | null>(null);
  const [error, setError] = createSignal<unknown>(null);
  api<DeadLetter>('GET', `/api/v1/dlq/${encodeURIComponent(props.id)}`).then(setLetter, setError);
  const replay = async () => {
    try {
      const task = await api<TaskView>('POST', `/api/v1/dlq/${encodeURIComponent(props.id)}/replay`);
      navigate(`/tasks/${task.id}`);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <>
      <Show when={error()}>
        <ErrorBox error={error()} />
      </Show>
      <Show when={letter()}>
        {(l) => (
          <Section
            title={`Dead letter ${shortId(l().task_id)}`}
            actions={
              <Show when={can('dlq:replay') && l().task}>
                <button type="button" onClick={replay}>
                  Replay
                </button>
              </Show>
            }
          >
            <p>
              <code>{l().error.code}</code> {l().error.message} — after {l().attempts} attempts on {l().worker},{' '}
              <Ago at={l().dead_at} />. <Link href={`/tasks/${l().task_id}`}>The task</Link>.
            </p>
            <Json value={l().task ?? l().payload} label="The task as submitted" />
          </Section>
        )}
      </Show>
    </>
  );
}
