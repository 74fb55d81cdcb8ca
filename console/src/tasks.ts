// What the console does to tasks, alone or in bulk, through the public API.
import { api, query, type SubmitTask, type TaskList, type TaskView } from './api/client';

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export interface Filter {
  status?: string;
  queue?: string;
  priority?: string;
  agent?: string;
  session_id?: string;
  tool?: string;
  /** RFC 3339 times: submitted at or after, and before. */
  created_after?: string;
  created_before?: string;
}

export const FILTER_KEYS = ['status', 'queue', 'priority', 'agent', 'session_id', 'tool', 'created_after', 'created_before'] as const;

export function listPage(filter: Filter, cursor?: string, limit = 50, view?: 'full'): Promise<TaskList> {
  return api<TaskList>('GET', `/api/v1/tasks${query({ ...filter, cursor, limit, view })}`);
}

/** Every task matching `filter` (for "all matching" bulk actions), page by page. */
export async function allMatching(filter: Filter, onProgress?: (n: number) => void): Promise<TaskView[]> {
  const all: TaskView[] = [];
  let cursor: string | undefined;
  do {
    const page = await listPage(filter, cursor, 500);
    all.push(...page.tasks);
    onProgress?.(all.length);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return all;
}

export const cancel = (id: string) => api<TaskView>('POST', `/api/v1/tasks/${id}/cancel`);

/** The submission that runs `task` again: same tool, arguments, queue, level, agent and
 * session (labels kept); a new task with a new id. */
export function again(task: TaskView): SubmitTask {
  return {
    tool: task.tool,
    arguments: task.arguments ?? {},
    queue: task.queue,
    priority: task.priority,
    agent: task.agent ?? undefined,
    session_id: task.session_id ?? undefined,
    metadata: task.metadata ?? undefined,
    max_attempts: task.max_attempts,
    timeout_secs: task.timeout_secs ?? undefined,
  };
}

/** Runs a finished task again. A dead-lettered one is replayed from the dead-letter queue
 * (`replay:<id>` key, `metadata.replay_of`), as `wharf dlq replay` does; any other is
 * submitted anew with `metadata.retry_of` naming it and the idempotency key `retry:<id>`, so
 * two operators (or two clicks) retrying the same task start one new task, not two. */
export async function retry(id: string): Promise<TaskView> {
  const task = await api<TaskView>('GET', `/api/v1/tasks/${id}`);
  if (task.error?.dead_letter) {
    return api<TaskView>('POST', `/api/v1/dlq/${id}/replay`);
  }
  const submission = again(task);
  submission.metadata = { ...(task.metadata ?? {}), retry_of: id };
  submission.idempotency_key = `retry:${id}`;
  return api<TaskView>('POST', '/api/v1/tasks', submission);
}

/** Applies `action` to every id, a few at a time; the ids it failed for, with why. */
export async function each(
  ids: string[],
  action: (id: string) => Promise<unknown>,
  onProgress?: (done: number) => void,
): Promise<{ id: string; error: unknown }[]> {
  const failures: { id: string; error: unknown }[] = [];
  let next = 0;
  let done = 0;
  const lane = async () => {
    while (next < ids.length) {
      const id = ids[next++];
      try {
        await action(id);
      } catch (error) {
        failures.push({ id, error });
      }
      onProgress?.(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, ids.length) }, lane));
  return failures;
}
