// Sign in with an API key (`wharf keys create`) or a bearer token from your identity provider.
import { createSignal, Show } from 'solid-js';
import { signIn } from '../session';
import { ErrorBox } from '../ui';

export default function SignIn() {
  const [value, setValue] = createSignal('');
  const [error, setError] = createSignal<unknown>(null);
  const [busy, setBusy] = createSignal(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(value());
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin" id="main">
      <h1>Wharf</h1>
      <form onSubmit={submit}>
        <label for="credential">API key or bearer token</label>
        <input id="credential" type="password" autocomplete="off" required value={value()} onInput={(e) => setValue(e.currentTarget.value)} />
        <p class="hint">Kept for this tab only. An admin makes keys with <code>wharf keys create</code>.</p>
        <Show when={error()}>
          <ErrorBox error={error()} />
        </Show>
        <button type="submit" disabled={busy() || !value().trim()}>
          Sign in
        </button>
      </form>
    </main>
  );
}
