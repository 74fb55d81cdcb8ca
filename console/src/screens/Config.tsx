// The runtime configuration (config:read): the settings now, and every revision with who made
// it and what it changed against the one before.
import { createResource, createSignal, For, Show } from 'solid-js';
import { api } from '../api/client';
import type { components } from '../api/schema';
import { diff } from '../diff';
import { Ago, ErrorBox, Json, Section } from '../ui';

type View = components['schemas']['ConfigView'];
type Revision = components['schemas']['ConfigRevision'];

export default function Config() {
  const [view] = createResource(() => api<View>('GET', '/api/v1/config'));
  const [history] = createResource(() =>
    api<{ revisions: Revision[] }>('GET', '/api/v1/config/revisions?limit=100').then((h) =>
      [...h.revisions].sort((a, b) => b.revision - a.revision),
    ),
  );
  const [open, setOpen] = createSignal<number | null>(null);
  // Against the revision before; the oldest one kept is compared with nothing, so only the
  // settings the server says it changed are shown for it.
  const changes = (i: number) => {
    const list = history() ?? [];
    const before = list[i + 1];
    const all = diff(before?.config ?? {}, list[i].config);
    return before ? all : all.filter((c) => list[i].changed.some((p) => c.path === p || c.path.startsWith(`${p}.`)));
  };
  return (
    <>
      <Section title="Configuration">
        <Show when={view.error}>
          <ErrorBox error={view.error} />
        </Show>
        <Show when={view()}>
          {(v) => (
            <>
              <p>
                Revision {v().revision}
                <Show when={v().updated_by}>
                  , by {v().updated_by} <Ago at={v().updated_at} />
                </Show>
                .
              </p>
              <Json value={v().config} label="The configuration now" />
            </>
          )}
        </Show>
      </Section>
      <Section title="Revisions">
        <ol class="revisions" data-loaded={history() ? 'true' : undefined}>
          <For each={history()}>
            {(r, i) => (
              <li>
                <button type="button" class="small" aria-expanded={open() === r.revision} onClick={() => setOpen(open() === r.revision ? null : r.revision)}>
                  Revision {r.revision}
                </button>{' '}
                by {r.by}, <Ago at={r.at} />: {r.changed.join(', ') || 'nothing'}
                <Show when={open() === r.revision}>
                  <table class="diff">
                    <caption class="sr-only">Changes in revision {r.revision}</caption>
                    <thead>
                      <tr>
                        <th scope="col">Setting</th>
                        <th scope="col">Before</th>
                        <th scope="col">After</th>
                      </tr>
                    </thead>
                    <tbody>
                      <For each={changes(i())}>
                        {(c) => (
                          <tr>
                            <th scope="row">
                              <code>{c.path}</code>
                            </th>
                            <td class="removed">{c.before ?? '—'}</td>
                            <td class="added">{c.after ?? '—'}</td>
                          </tr>
                        )}
                      </For>
                    </tbody>
                  </table>
                </Show>
              </li>
            )}
          </For>
        </ol>
        <Show when={history()?.length === 0}>
          <p class="empty">No change since the configuration file.</p>
        </Show>
      </Section>
    </>
  );
}
