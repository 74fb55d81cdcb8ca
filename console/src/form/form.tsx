// Renders a form model (schema.ts) as inputs. Each input's id is its JSON pointer, so the
// server's field errors (`/arguments/seconds`) land next to the field they name.
import { For, Index, Match, Show, Switch } from 'solid-js';
import { initial, numberFrom, optionOf, pointer, type Field } from './schema';

export type Path = (string | number)[];
export type Errors = Record<string, string>;

const idOf = (path: Path) => `f${pointer(path).replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.charCodeAt(0)}`)}`;

interface Props {
  field: Field;
  path: Path;
  value: unknown;
  onChange: (value: unknown) => void;
  errors: Errors;
  /** The label is given by the container (array items, choice options). */
  bare?: boolean;
}

function Label(props: { field: Field; path: Path }) {
  return (
    <label for={idOf(props.path)}>
      {props.field.label || String(props.path[props.path.length - 1])}
      <Show when={props.field.required}>
        <span class="required" aria-hidden="true"> *</span>
      </Show>
    </label>
  );
}

function Help(props: { field: Field; path: Path; errors: Errors }) {
  const error = () => props.errors[pointer(props.path)];
  return (
    <>
      <Show when={props.field.description}>
        <p class="hint" id={`${idOf(props.path)}-hint`}>{props.field.description}</p>
      </Show>
      <Show when={error()}>
        <p class="field-error" id={`${idOf(props.path)}-error`} role="alert">
          {error()}
        </p>
      </Show>
    </>
  );
}

function range(field: Field & { kind: 'number' }) {
  const parts = [];
  if (field.minimum !== undefined) parts.push(`≥ ${field.minimum}`);
  if (field.maximum !== undefined) parts.push(`≤ ${field.maximum}`);
  return parts.join(', ');
}

export function FieldInput(props: Props) {
  const id = () => idOf(props.path);
  const described = () =>
    [props.errors[pointer(props.path)] ? `${id()}-error` : '', props.field.description ? `${id()}-hint` : '']
      .filter(Boolean)
      .join(' ') || undefined;
  const invalid = (): 'true' | undefined => (props.errors[pointer(props.path)] ? 'true' : undefined);
  const common = () => ({ id: id(), 'aria-describedby': described(), 'aria-invalid': invalid() });

  return (
    <div class={`field field-${props.field.kind}`}>
      <Switch>
        <Match when={props.field.kind === 'object' && props.field}>
          {(f) => (
            <fieldset aria-describedby={described()}>
              <Show when={!props.bare}>
                <legend>{f().label || 'arguments'}</legend>
              </Show>
              <Help field={f()} path={props.path} errors={props.errors} />
              <For each={f().properties}>
                {(p) => (
                  <FieldInput
                    field={p.field}
                    path={[...props.path, p.key]}
                    value={(props.value as Record<string, unknown> | undefined)?.[p.key]}
                    errors={props.errors}
                    onChange={(v) => props.onChange({ ...((props.value as object) ?? {}), [p.key]: v })}
                  />
                )}
              </For>
            </fieldset>
          )}
        </Match>
        <Match when={props.field.kind === 'array' && props.field}>
          {(f) => {
            const items = () => (Array.isArray(props.value) ? (props.value as unknown[]) : []);
            return (
              <fieldset aria-describedby={described()}>
                <legend>{f().label}</legend>
                <Help field={f()} path={props.path} errors={props.errors} />
                <Index each={items()}>
                  {(item, i) => (
                    <div class="array-item">
                      <FieldInput
                        field={{ ...f().items, label: `${f().label} ${i + 1}` }}
                        path={[...props.path, i]}
                        value={item()}
                        errors={props.errors}
                        onChange={(v) => props.onChange(items().map((old, j) => (j === i ? v : old)))}
                      />
                      <button type="button" class="small" onClick={() => props.onChange(items().filter((_, j) => j !== i))}>
                        Remove {f().label} {i + 1}
                      </button>
                    </div>
                  )}
                </Index>
                <Show when={f().maxItems === undefined || items().length < f().maxItems!}>
                  <button type="button" class="small" onClick={() => props.onChange([...items(), initial(f().items)])}>
                    Add {f().label}
                  </button>
                </Show>
              </fieldset>
            );
          }}
        </Match>
        <Match when={props.field.kind === 'choice' && props.field}>
          {(f) => {
            const chosen = () => optionOf(f(), props.value);
            return (
              <fieldset>
                <legend>{f().label}</legend>
                <Help field={f()} path={props.path} errors={props.errors} />
                <label for={`${id()}-kind`}>Kind</label>
                <select
                  id={`${id()}-kind`}
                  value={chosen()}
                  onChange={(e) => props.onChange(initial(f().options[Number(e.currentTarget.value)].field))}
                >
                  <For each={f().options}>{(o, i) => <option value={i()}>{o.label}</option>}</For>
                </select>
                <FieldInput
                  bare
                  field={{ ...f().options[chosen()].field, label: f().label }}
                  path={props.path}
                  value={props.value}
                  errors={{}}
                  onChange={props.onChange}
                />
              </fieldset>
            );
          }}
        </Match>
        <Match when={props.field.kind === 'boolean'}>
          <label class="check" for={id()}>
            <input type="checkbox" {...common()} checked={props.value === true} onChange={(e) => props.onChange(e.currentTarget.checked)} />
            {props.field.label}
          </label>
          <Help field={props.field} path={props.path} errors={props.errors} />
        </Match>
        <Match when={props.field.kind === 'enum' && props.field}>
          {(f) => {
            const index = () => f().options.findIndex((o) => JSON.stringify(o) === JSON.stringify(props.value));
            return (
              <>
                <Label field={f()} path={props.path} />
                <select
                  {...common()}
                  value={index()}
                  onChange={(e) => {
                    const i = Number(e.currentTarget.value);
                    props.onChange(i < 0 ? undefined : f().options[i]);
                  }}
                >
                  <option value={-1}>{f().required ? 'choose…' : '(not set)'}</option>
                  <For each={f().options}>
                    {(o, i) => <option value={i()}>{typeof o === 'string' ? o : JSON.stringify(o)}</option>}
                  </For>
                </select>
                <Help field={f()} path={props.path} errors={props.errors} />
              </>
            );
          }}
        </Match>
        <Match when={props.field.kind === 'number' && props.field}>
          {(f) => (
            <>
              <Label field={f()} path={props.path} />
              <input
                type="number"
                inputmode={f().integer ? 'numeric' : 'decimal'}
                step={f().integer ? 1 : 'any'}
                min={f().minimum}
                max={f().maximum}
                placeholder={range(f())}
                {...common()}
                value={props.value === undefined || props.value === null ? '' : String(props.value)}
                onInput={(e) => props.onChange(numberFrom(e.currentTarget.value))}
              />
              <Help field={f()} path={props.path} errors={props.errors} />
            </>
          )}
        </Match>
        <Match when={props.field.kind === 'string' && props.field}>
          {(f) => (
            <>
              <Label field={f()} path={props.path} />
              <input
                type="text"
                placeholder={f().format ?? (f().default !== undefined ? String(f().default) : undefined)}
                {...common()}
                value={typeof props.value === 'string' ? props.value : ''}
                onInput={(e) => props.onChange(e.currentTarget.value)}
              />
              <Help field={f()} path={props.path} errors={props.errors} />
            </>
          )}
        </Match>
        <Match when={props.field.kind === 'json'}>
          <Label field={props.field} path={props.path} />
          <textarea
            rows={4}
            spellcheck={false}
            placeholder="JSON"
            {...common()}
            value={typeof props.value === 'string' ? props.value : JSON.stringify(props.value ?? '')}
            onInput={(e) => props.onChange(e.currentTarget.value)}
          />
          <Help field={props.field} path={props.path} errors={props.errors} />
        </Match>
      </Switch>
    </div>
  );
}
