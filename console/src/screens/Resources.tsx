// The tenant's agents and sessions, as the API lists them.
import { createResource, For, Show } from 'solid-js';
import { api } from '../api/client';
import type { components } from '../api/schema';
import { paged } from '../paged';
import { Link } from '../router';
import { Ago, ErrorBox, Section, shortId } from '../ui';

type Agent = components['schemas']['Agent'];
type Session = components['schemas']['Session'];

export function Agents() {
  const [agents] = createResource(() => api<{ agents: Agent[] }>('GET', '/api/v1/agents').then((l) => l.agents));
  return (
    <Section title="Agents">
      <Show when={agents.error}>
        <ErrorBox error={agents.error} />
      </Show>
      <div class="table-wrap">
        <table data-loaded={agents() ? 'true' : undefined}>
          <caption class="sr-only">Agents</caption>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Tools</th>
              <th scope="col" class="wide">Queue</th>
              <th scope="col" class="wide num">Revision</th>
            </tr>
          </thead>
          <tbody>
            <For each={agents()}>
              {(a) => (
                <tr>
                  <th scope="row">
                    <Link href={`/tasks?agent=${encodeURIComponent(a.name)}`}>{a.name}</Link>
                    <Show when={a.description}>
                      <p class="hint">{a.description}</p>
                    </Show>
                  </th>
                  <td>{a.allowed_tools.join(', ') || 'every tool'}</td>
                  <td class="wide">{a.default_queue ?? '—'}</td>
                  <td class="wide num">{a.revision}</td>
                </tr>
              )}
            </For>
          </tbody>
        </table>
      </div>
      <Show when={agents()?.length === 0}>
        <p class="empty">No agent.</p>
      </Show>
    </Section>
  );
}

export function Sessions() {
  const list = paged<Session>('/api/v1/sessions', 'sessions');
  void list.reload();
  return (
    <Section title="Sessions">
      <Show when={list.error()}>
        <ErrorBox error={list.error()} />
      </Show>
      <div class="table-wrap">
        <table data-loaded={list.loaded() ? 'true' : undefined}>
          <caption class="sr-only">Sessions</caption>
          <thead>
            <tr>
              <th scope="col">Session</th>
              <th scope="col">Name</th>
              <th scope="col" class="wide">Created</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            <For each={list.items()}>
              {(s) => (
                <tr>
                  <td class="id">
                    <Link href={`/tasks?session_id=${s.id}`} title={s.id}>
                      {shortId(s.id)}
                    </Link>
                  </td>
                  <td>{s.name ?? '—'}</td>
                  <td class="wide">
                    <Ago at={s.created_at} />
                  </td>
                  <td>{s.deleted_at ? 'deleted' : Date.parse(s.expires_at) < Date.now() ? 'expired' : 'open'}</td>
                </tr>
              )}
            </For>
          </tbody>
        </table>
      </div>
      <Show when={list.loaded() && list.items().length === 0}>
        <p class="empty">No session.</p>
      </Show>
      <Show when={list.cursor()}>
        <button type="button" class="more" onClick={list.more}>
          More
        </button>
      </Show>
    </Section>
  );
}
