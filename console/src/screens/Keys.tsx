// API keys of the tenant (keys:admin): create one (its secret is shown once), revoke one.
import { createResource, createSignal, For, Show } from 'solid-js';
import { api, Problem } from '../api/client';
import type { components } from '../api/schema';
import { Ago, ErrorBox, Section } from '../ui';

type Key = components['schemas']['ApiKeyInfo'];
type Created = components['schemas']['CreatedKey'];
const ROLES = ['reader', 'submitter', 'operator', 'tenant-admin', 'admin'];

export default function Keys() {
  const [keys, { refetch }] = createResource(() => api<{ keys: Key[] }>('GET', '/api/v1/keys').then((l) => l.keys));
  const [name, setName] = createSignal('');
  const [role, setRole] = createSignal('submitter');
  const [created, setCreated] = createSignal<Created | null>(null);
  const [error, setError] = createSignal<unknown>(null);
  const [fieldErrors, setFieldErrors] = createSignal<Record<string, string>>({});

  const create = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setFieldErrors({});
    try {
      setCreated(await api<Created>('POST', '/api/v1/keys', { name: name(), role: role() }));
      setName('');
      void refetch();
    } catch (err) {
      if (err instanceof Problem) setFieldErrors(Object.fromEntries(err.fields.map((f) => [f.pointer, f.detail])));
      setError(err);
    }
  };
  const revoke = async (k: Key) => {
    if (!window.confirm(`Revoke key ${k.name} (${k.prefix}…)? Requests with it are refused at once.`)) return;
    try {
      await api('DELETE', `/api/v1/keys/${k.id}`);
      void refetch();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <>
      <Section title="New key">
        <form class="inline-form" onSubmit={create}>
          <div class="field">
            <label for="key-name">Name</label>
            <input
              id="key-name"
              required
              value={name()}
              aria-invalid={fieldErrors()['/name'] ? 'true' : undefined}
              onInput={(e) => setName(e.currentTarget.value)}
            />
            <Show when={fieldErrors()['/name']}>
              <p class="field-error" role="alert">
                {fieldErrors()['/name']}
              </p>
            </Show>
          </div>
          <div class="field">
            <label for="key-role">Role</label>
            <select id="key-role" value={role()} onChange={(e) => setRole(e.currentTarget.value)}>
              <For each={ROLES}>{(r) => <option value={r}>{r}</option>}</For>
            </select>
          </div>
          <button type="submit">Create</button>
        </form>
        <Show when={created()}>
          {(c) => (
            <div class="notice" role="status">
              Key <strong>{c().key.name}</strong> created. Its secret, shown this once: <code class="secret">{c().secret}</code>
            </div>
          )}
        </Show>
        <Show when={error()}>
          <ErrorBox error={error()} />
        </Show>
      </Section>
      <Section title="Keys">
        <div class="table-wrap">
          <table data-loaded={keys() ? 'true' : undefined}>
            <caption class="sr-only">API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col" class="wide">Prefix</th>
                <th scope="col" class="wide">Created</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              <For each={keys()}>
                {(k) => (
                  <tr data-key={k.name}>
                    <th scope="row">{k.name}</th>
                    <td>{k.role}</td>
                    <td class="wide">
                      <code>{k.prefix}…</code>
                    </td>
                    <td class="wide">
                      <Ago at={k.created_at} />
                    </td>
                    <td>
                      <Show when={!k.revoked_at} fallback="revoked">
                        <button type="button" class="small" onClick={() => revoke(k)}>
                          Revoke {k.name}
                        </button>
                      </Show>
                    </td>
                  </tr>
                )}
              </For>
            </tbody>
          </table>
        </div>
      </Section>
    </>
  );
}
