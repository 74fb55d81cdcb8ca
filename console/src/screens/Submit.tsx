// Submit a task: pick a tool, fill the form made from its `inputSchema`, choose when and where
// it runs. The server validates; its field errors are shown next to the fields they name.
import { createMemo, createResource, createSignal, For, Show } from 'solid-js';
import { api, Problem, type SubmitTask, type TaskView, type ToolInfo } from '../api/client';
import { FieldInput, type Errors } from '../form/form';
import { fieldOf, FormError, initial, numberFrom, toArguments, toForm, type Field, type Schema } from '../form/schema';
import { location, navigate } from '../router';
import { ErrorBox, Section } from '../ui';

export default function Submit() {
  const catalog = api<{ tools: ToolInfo[] }>('GET', '/api/v1/tools').then((l) => l.tools);
  const [tools] = createResource(() => catalog);
  const [toolName, setToolName] = createSignal(location().query.get('tool') ?? '');
  const [value, setValue] = createSignal<unknown>({});
  const [errors, setErrors] = createSignal<Errors>({});
  const [problem, setProblem] = createSignal<unknown>(null);
  const [sending, setSending] = createSignal(false);
  const [queue, setQueue] = createSignal('');
  const [priority, setPriority] = createSignal('normal');
  const [delay, setDelay] = createSignal('');
  const [key, setKey] = createSignal('');

  const tool = () => tools()?.find((t) => t.name === toolName());
  const field = createMemo<Field | null>(() => {
    const t = tool();
    return t ? fieldOf(t.inputSchema as Schema, t.inputSchema as Schema, 'arguments', true) : null;
  });
  const choose = (name: string, args?: unknown) => {
    setToolName(name);
    const f = field();
    setValue(f ? (args === undefined ? initial(f) : toForm(f, args)) : {});
    setErrors({});
    setProblem(null);
  };

  // The tool the address names, or, for "Edit and run", the task's tool, arguments, level and
  // queue: chosen once the catalog is read.
  const from = location().query.get('from');
  const source = from ? api<TaskView>('GET', `/api/v1/tasks/${encodeURIComponent(from)}`) : null;
  void Promise.all([catalog, source])
    .then(([, t]) => {
      if (t) {
        choose(t.tool, t.arguments ?? {});
        setQueue(t.queue);
        setPriority(t.priority ?? 'normal');
      } else if (toolName()) {
        choose(toolName());
      }
    })
    .catch(setProblem);

  const submit = async (e: Event) => {
    e.preventDefault();
    const f = field();
    if (!f) return;
    setErrors({});
    setProblem(null);
    let args: unknown;
    try {
      args = toArguments(f, value()) ?? {};
    } catch (err) {
      if (err instanceof FormError) {
        setErrors({ [`/arguments${err.pointer}`]: err.detail });
        return;
      }
      throw err;
    }
    const body: SubmitTask = {
      tool: toolName(),
      arguments: args as SubmitTask['arguments'],
      priority: priority() as SubmitTask['priority'],
    };
    if (queue().trim()) body.queue = queue().trim();
    if (key().trim()) body.idempotency_key = key().trim();
    // Text that is not a number goes as it is: the server names the field.
    if (delay().trim()) body.delay_secs = numberFrom(delay()) as number;
    setSending(true);
    try {
      const task = await api<TaskView>('POST', '/api/v1/tasks', body);
      navigate(`/tasks/${task.id}`);
    } catch (err) {
      if (err instanceof Problem && err.fields.length) {
        setErrors(Object.fromEntries(err.fields.map((f) => [f.pointer, f.detail])));
      }
      setProblem(err);
    } finally {
      setSending(false);
    }
  };

  return (
    <Section title="Submit a task">
      <form class="submit" onSubmit={submit} novalidate>
        <div class="field">
          <label for="tool">Tool</label>
          <select id="tool" value={toolName()} onChange={(e) => choose(e.currentTarget.value)}>
            <option value="">choose a tool…</option>
            <For each={tools()}>{(t) => <option value={t.name}>{t.title ? `${t.name} — ${t.title}` : t.name}</option>}</For>
          </select>
          <Show when={tool()?.description}>
            <p class="hint">{tool()!.description}</p>
          </Show>
        </div>
        <Show when={field()}>
          {(f) => <FieldInput field={f()} path={['arguments']} value={value()} onChange={setValue} errors={errors()} />}
        </Show>
        <details>
          <summary>When and where</summary>
          <div class="field">
            <label for="opt-priority">Level</label>
            <select id="opt-priority" value={priority()} onChange={(e) => setPriority(e.currentTarget.value)}>
              <option value="high">high</option>
              <option value="normal">normal</option>
              <option value="low">low</option>
            </select>
          </div>
          <Opt id="opt-queue" label="Queue" pointer="/queue" value={queue()} set={setQueue} errors={errors()} placeholder="default" />
          <Opt id="opt-delay" label="Delay (seconds)" pointer="/delay_secs" value={delay()} set={setDelay} errors={errors()} numeric />
          <Opt id="opt-key" label="Idempotency key" pointer="/idempotency_key" value={key()} set={setKey} errors={errors()} />
        </details>
        <Show when={problem()}>
          <ErrorBox error={problem()} />
        </Show>
        <button type="submit" disabled={!field() || sending()}>
          {sending() ? 'Submitting…' : 'Submit'}
        </button>
      </form>
    </Section>
  );
}

function Opt(props: {
  id: string;
  label: string;
  pointer: string;
  value: string;
  set: (v: string) => void;
  errors: Errors;
  placeholder?: string;
  numeric?: boolean;
}) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      <input
        id={props.id}
        inputmode={props.numeric ? 'numeric' : undefined}
        placeholder={props.placeholder}
        value={props.value}
        aria-invalid={props.errors[props.pointer] ? 'true' : undefined}
        aria-describedby={props.errors[props.pointer] ? `${props.id}-error` : undefined}
        onInput={(e) => props.set(e.currentTarget.value)}
      />
      <Show when={props.errors[props.pointer]}>
        <p class="field-error" id={`${props.id}-error`} role="alert">
          {props.errors[props.pointer]}
        </p>
      </Show>
    </div>
  );
}
