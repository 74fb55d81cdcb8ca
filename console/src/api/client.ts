// The console's only way to the server: the public API (`/api/v1`), with the caller's
// credential, and RFC 9457 problems turned into `Problem` errors that name the failing fields.
import type { components } from './schema';

type S = components['schemas'];
export type TaskView = S['TaskView'];
export type TaskList = S['TaskList'];
export type TaskStatus = S['TaskStatus'];
export type Priority = S['Priority'];
export type SubmitTask = S['SubmitTask'];
export type ToolInfo = S['ToolInfo'];
export type QueueInfo = S['QueueInfo'];
export type WorkerInfo = S['WorkerInfo'];
export type Identity = S['Identity'];
export type Permission = S['Permission'];
export type FieldError = S['FieldError'];
export type ProblemDoc = S['Problem'];
export type WsServerMessage = S['WsServerMessage'];

const KEY = 'wharf.credential';

/** The API key or bearer token this tab signed in with; kept for the tab only (sessionStorage). */
export function credential(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setCredential(value: string | null) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** A refusal from the API: its problem document, with the fields it names. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly doc: ProblemDoc,
  ) {
    super(doc.detail || doc.title);
  }
  get code() {
    return this.doc.code;
  }
  get fields(): FieldError[] {
    return this.doc.errors ?? [];
  }
}

function problemOf(status: number, body: unknown): Problem {
  if (body && typeof body === 'object' && 'code' in body && 'detail' in body) {
    return new Problem(status, body as ProblemDoc);
  }
  return new Problem(status, {
    type: 'about:blank',
    title: `HTTP ${status}`,
    status,
    detail: typeof body === 'string' && body ? body : `the server answered ${status}`,
    code: 'internal',
  });
}

/** Calls the API; the parsed JSON answer, or throws a `Problem`. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const c = credential();
  if (c) headers.authorization = `Bearer ${c}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw problemOf(0, `the server cannot be reached (${e})`);
  }
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: kept as text for the problem below.
  }
  if (!response.ok) throw problemOf(response.status, parsed);
  return parsed as T;
}

/** `?a=1&b=2` from the set values of `params` (empty string when none are set). */
export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The URL of a stream (SSE, WebSocket): browsers cannot set headers on those, so the
 * credential travels as `access_token`, which the gateway accepts on streams only. */
export function streamUrl(path: string): string {
  const c = credential();
  if (!c) return path;
  return `${path}${path.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(c)}`;
}
