// The audit log (audit:read): who did what, when, from where, and how it ended; newest first.
import { createSignal, For, Show } from 'solid-js';
import type { components } from '../api/schema';
import { paged } from '../paged';
import { Ago, ErrorBox, Section } from '../ui';

type Entry = components['schemas']['AuditEntry'];

export default function Audit() {
  const [action, setAction] = createSignal('');
  const list = paged<Entry>('/api/v1/audit', 'entries', () => ({ action: action() || undefined }));
  void list.reload();
  return (
    <Section title="Audit log">
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void list.reload();
        }}
      >
        <label for="audit-action">Action</label>
        <input id="audit-action" placeholder="task.cancel" value={action()} onInput={(e) => setAction(e.currentTarget.value.trim())} />
        <button type="submit">Filter</button>
      </form>
      <Show when={list.error()}>
        <ErrorBox error={list.error()} />
      </Show>
      <div class="table-wrap">
        <table data-loaded={list.loaded() ? 'true' : undefined}>
          <caption class="sr-only">Audit entries, newest first</caption>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Action</th>
              <th scope="col">Outcome</th>
              <th scope="col" class="wide">Actor</th>
              <th scope="col" class="wide">Target</th>
            </tr>
          </thead>
          <tbody>
            <For each={list.items()}>
              {(e) => (
                <tr>
                  <td>
                    <Ago at={e.at} />
                  </td>
                  <td>
                    <code>{e.action}</code>
                  </td>
                  <td>
                    {e.outcome} ({e.status})
                  </td>
                  <td class="wide">{e.actor}</td>
                  <td class="wide target">{e.target}</td>
                </tr>
              )}
            </For>
          </tbody>
        </table>
      </div>
      <Show when={list.cursor()}>
        <button type="button" class="more" onClick={list.more}>
          Older
        </button>
      </Show>
    </Section>
  );
}
