// The console's frame: the navigation (only what the caller may see), the live switch, and the
// screen for the current path.
import { createResource, For, Match, Show, Switch, type JSX } from 'solid-js';
import { type Permission } from './api/client';
import { paused, setPaused } from './live';
import { Link, location } from './router';
import Overview from './screens/Overview';
import SignIn from './screens/SignIn';
import Submit from './screens/Submit';
import Task from './screens/Task';
import Tasks from './screens/Tasks';
import { can, identity, resume, signInNeeded, signOut } from './session';
import { ErrorBox } from './ui';

const NAV: { href: string; label: string; needs: Permission }[] = [
  { href: '/', label: 'Overview', needs: 'ops:read' },
  { href: '/tasks', label: 'Tasks', needs: 'tasks:read' },
  { href: '/submit', label: 'Submit', needs: 'tasks:submit' },
];

export default function App() {
  const [started] = createResource(resume);
  return (
    <Switch fallback={<p class="loading">Loading…</p>}>
      <Match when={started.error}>
        <main id="main">
          <ErrorBox error={started.error} />
        </main>
      </Match>
      <Match when={signInNeeded()}>
        <SignIn />
      </Match>
      <Match when={identity()}>
        {(who) => (
          <>
            <a class="skip" href="#main">
              Skip to content
            </a>
            <header class="top">
              <Link href="/" class="brand">
                Wharf
              </Link>
              <nav aria-label="Screens">
                <For each={NAV.filter((n) => can(n.needs))}>{(n) => <Link href={n.href}>{n.label}</Link>}</For>
              </nav>
              <button
                type="button"
                class="live"
                aria-pressed={!paused()}
                title={paused() ? 'Live updates are paused' : 'Updating every 2 s'}
                onClick={() => setPaused(!paused())}
              >
                {paused() ? 'Paused' : 'Live'}
              </button>
              <span class="who" title={`${who().actor}, roles ${who().roles.join(', ') || 'none'}`}>
                {who().tenant}
              </span>
              <Show when={who().actor !== 'anonymous'}>
                <button type="button" class="secondary" onClick={signOut}>
                  Sign out
                </button>
              </Show>
            </header>
            <main id="main">
              <Screen />
            </main>
          </>
        )}
      </Match>
    </Switch>
  );
}

function Screen(): JSX.Element {
  const path = () => location().path;
  const taskId = () => /^\/tasks\/([^/]+)$/.exec(path())?.[1];
  return (
    <Switch fallback={<NotFound />}>
      <Match when={path() === '/'}>
        <Show when={can('ops:read')} fallback={<Tasks />}>
          <Overview />
        </Show>
      </Match>
      <Match when={path() === '/tasks'}>
        <Tasks />
      </Match>
      <Match when={taskId()}>{(id) => <Show keyed when={id()}>{(i) => <Task id={decodeURIComponent(i)} />}</Show>}</Match>
      <Match when={path() === '/submit'}>
        <Submit />
      </Match>
    </Switch>
  );
}

function NotFound() {
  return (
    <p>
      Nothing here. <Link href="/">Back to the overview</Link>.
    </p>
  );
}
