// The console's frame: the navigation (only what the caller may see), the live switch, and the
// screen for the current path.
import { createResource, For, Match, Show, Switch, type JSX } from 'solid-js';
import { type Permission } from './api/client';
import { paused, setPaused } from './live';
import { Link, location } from './router';
import Audit from './screens/Audit';
import Config from './screens/Config';
import DeadLetters, { DeadLetterView } from './screens/DeadLetters';
import Keys from './screens/Keys';
import Overview from './screens/Overview';
import Queues from './screens/Queues';
import { Agents, Sessions } from './screens/Resources';
import SignIn from './screens/SignIn';
import Submit from './screens/Submit';
import Task from './screens/Task';
import Tasks from './screens/Tasks';
import Tools from './screens/Tools';
import { can, identity, resume, signInNeeded, signOut } from './session';
import { ErrorBox } from './ui';

const NAV: { href: string; label: string; needs: Permission }[] = [
  { href: '/', label: 'Overview', needs: 'ops:read' },
  { href: '/tasks', label: 'Tasks', needs: 'tasks:read' },
  { href: '/submit', label: 'Submit', needs: 'tasks:submit' },
  { href: '/queues', label: 'Queues', needs: 'ops:read' },
  { href: '/dlq', label: 'Dead letters', needs: 'dlq:read' },
  { href: '/tools', label: 'Tools', needs: 'tools:read' },
  { href: '/agents', label: 'Agents', needs: 'agents:read' },
  { href: '/sessions', label: 'Sessions', needs: 'sessions:read' },
  { href: '/keys', label: 'Keys', needs: 'keys:admin' },
  { href: '/config', label: 'Config', needs: 'config:read' },
  { href: '/audit', label: 'Audit', needs: 'audit:read' },
];

/** The screens at a fixed path, each shown only to those who hold its permission. */
const SCREENS: Record<string, () => JSX.Element> = {
  '/tasks': Tasks,
  '/submit': Submit,
  '/queues': Queues,
  '/dlq': DeadLetters,
  '/tools': Tools,
  '/agents': Agents,
  '/sessions': Sessions,
  '/keys': Keys,
  '/config': Config,
  '/audit': Audit,
};

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
  const letterId = () => /^\/dlq\/([^/]+)$/.exec(path())?.[1];
  const fixed = () => {
    const needs = NAV.find((n) => n.href === path())?.needs;
    return needs && can(needs) ? SCREENS[path()] : undefined;
  };
  return (
    <Switch fallback={<NotFound />}>
      <Match when={path() === '/'}>
        <Show when={can('ops:read')} fallback={<Tasks />}>
          <Overview />
        </Show>
      </Match>
      <Match when={fixed()}>{(screen) => screen()()}</Match>
      <Match when={taskId()}>{(id) => <Show keyed when={id()}>{(i) => <Task id={decodeURIComponent(i)} />}</Show>}</Match>
      <Match when={letterId()}>{(id) => <Show keyed when={id()}>{(i) => <DeadLetterView id={decodeURIComponent(i)} />}</Show>}</Match>
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
