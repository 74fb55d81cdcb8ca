// The tool catalog the workers serve: what each does, its input schema, a link to submit it.
import { createResource, createSignal, For, Show } from 'solid-js';
import { api, type ToolInfo } from '../api/client';
import { Link } from '../router';
import { can } from '../session';
import { ErrorBox, Json, Section } from '../ui';

export default function Tools() {
  const [tools] = createResource(() => api<{ tools: ToolInfo[] }>('GET', '/api/v1/tools').then((l) => l.tools));
  const [q, setQ] = createSignal('');
  const shown = () =>
    (tools() ?? []).filter((t) => `${t.name} ${t.title ?? ''} ${t.description ?? ''}`.toLowerCase().includes(q().toLowerCase()));
  return (
    <Section title="Tools">
      <div class="toolbar">
        <label for="tool-search">Search</label>
        <input id="tool-search" type="search" value={q()} onInput={(e) => setQ(e.currentTarget.value)} />
      </div>
      <Show when={tools.error}>
        <ErrorBox error={tools.error} />
      </Show>
      <ul class="cards" data-loaded={tools() ? 'true' : undefined}>
        <For each={shown()}>
          {(t) => (
            <li class="card" data-tool={t.name}>
              <h3>{t.name}</h3>
              <Show when={t.title}>
                <p>{t.title}</p>
              </Show>
              <p class="muted">{t.description}</p>
              <details>
                <summary>Input schema</summary>
                <Json value={t.inputSchema} label={`Input schema of ${t.name}`} />
              </details>
              <Show when={can('tasks:submit')}>
                <Link href={`/submit?tool=${encodeURIComponent(t.name)}`}>Submit a task</Link>
              </Show>
            </li>
          )}
        </For>
      </ul>
    </Section>
  );
}
