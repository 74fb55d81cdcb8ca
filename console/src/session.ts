// Who the console acts as: the credential kept for this tab and what `whoami` says it may do.
// Screens and buttons ask `can(...)`; the server checks again on every request.
import { createSignal } from 'solid-js';
import { api, credential, Problem, setCredential, type Identity, type Permission } from './api/client';

const [identity, setIdentity] = createSignal<Identity | null>(null);
const [signInNeeded, setSignInNeeded] = createSignal(false);

export { identity, signInNeeded };

export const can = (permission: Permission) => identity()?.permissions.includes(permission) ?? false;

/** Asks the server who the stored credential (or none, in open mode) is. A 401 asks for one. */
export async function resume(): Promise<void> {
  try {
    setIdentity(await api<Identity>('GET', '/api/v1/whoami'));
    setSignInNeeded(false);
  } catch (e) {
    if (e instanceof Problem && e.status === 401) {
      setCredential(null);
      setIdentity(null);
      setSignInNeeded(true);
    } else throw e;
  }
}

/** Signs in with an API key or a bearer token; throws the server's problem when it is refused
 * (and then keeps the previous credential). */
export async function signIn(value: string): Promise<void> {
  const before = credential();
  setCredential(value.trim());
  try {
    setIdentity(await api<Identity>('GET', '/api/v1/whoami'));
    setSignInNeeded(false);
  } catch (e) {
    setCredential(before);
    throw e;
  }
}

export function signOut() {
  setCredential(null);
  setIdentity(null);
  setSignInNeeded(true);
}
