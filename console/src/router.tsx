// A small history-API router: the console's screens are paths (`/tasks/<id>`), filters are the
// query string, so every view can be bookmarked, shared and reloaded.
import { createSignal, type JSX } from 'solid-js';

export interface Location {
  path: string;
  query: URLSearchParams;
}

const read = (): Location => ({
  path: window.location.pathname,
  query: new URLSearchParams(window.location.search),
});

const [location, setLocation] = createSignal<Location>(read());
window.addEventListener('popstate', () => setLocation(read()));

export { location };

/** Goes to `href` (a path with an optional query), adding a history entry unless `replace`. */
export function navigate(href: string, replace = false) {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  setLocation(read());
  if (!replace) window.scrollTo(0, 0);
}

/** The current query with `changes` applied (an empty value removes a key), as a path. */
export function withQuery(changes: Record<string, string | undefined>): string {
  const q = new URLSearchParams(location().query);
  for (const [k, v] of Object.entries(changes)) {
    if (v) q.set(k, v);
    else q.delete(k);
  }
  const s = q.toString();
  return `${location().path}${s ? `?${s}` : ''}`;
}

/** A link that navigates inside the console without reloading it. */
export function Link(props: { href: string; class?: string; children: JSX.Element; title?: string }) {
  return (
    <a
      href={props.href}
      class={props.class}
      title={props.title}
      aria-current={location().path === props.href ? 'page' : undefined}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}
