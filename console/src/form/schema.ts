// From a tool's `inputSchema` (JSON Schema, as MCP servers declare it) to a form model, and from
// what the user typed back to the tool's arguments. Rendering lives in form.tsx; this file has
// no DOM so it can be unit tested.
//
// What the form does not understand (tuples, patternProperties, `not`, recursion past a depth)
// becomes a JSON text field: the user can still type any value, and the server's validation
// against the real schema has the last word either way.

export type Schema = { [key: string]: unknown } | boolean;

interface Base {
  label: string;
  description?: string;
  required: boolean;
  /** `null` is one of the accepted values (`type: [..., "null"]`, or a `{type: "null"}` option). */
  nullable: boolean;
  default?: unknown;
}

export type Field =
  | (Base & { kind: 'string'; format?: string; minLength?: number; maxLength?: number; pattern?: string })
  | (Base & { kind: 'number'; integer: boolean; minimum?: number; maximum?: number })
  | (Base & { kind: 'boolean' })
  | (Base & { kind: 'enum'; options: unknown[] })
  | (Base & { kind: 'object'; properties: { key: string; field: Field }[] })
  | (Base & { kind: 'array'; items: Field; minItems?: number; maxItems?: number })
  | (Base & { kind: 'choice'; options: { label: string; field: Field }[] })
  | (Base & { kind: 'json' });

type Obj = { [key: string]: unknown };
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** Follows a local `$ref` (`#/$defs/x`, `#/definitions/x`, any JSON pointer into the root). */
function resolve(schema: Obj, root: Obj, seen: Set<string>): Obj | null {
  let s = schema;
  while (typeof s.$ref === 'string') {
    const ref = s.$ref;
    if (!ref.startsWith('#') || seen.has(ref)) return null;
    seen.add(ref);
    let target: unknown = root;
    for (const part of ref.slice(1).split('/').filter(Boolean)) {
      const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
      target = isObj(target) ? target[key] : undefined;
    }
    if (!isObj(target)) return null;
    // Keywords beside `$ref` (2019-09 and later) apply too: the referring schema wins.
    const { $ref: _, ...rest } = s;
    s = { ...target, ...rest };
  }
  return s;
}

/** `allOf` folded into one schema: properties and `required` merged, the rest overlaid. */
function flatten(schema: Obj, root: Obj, seen: Set<string>): Obj | null {
  if (!Array.isArray(schema.allOf)) return schema;
  const { allOf, ...rest } = schema;
  let merged: Obj = {};
  for (const part of [...(allOf as unknown[]), rest]) {
    if (!isObj(part)) continue;
    const r = resolve(part, root, new Set(seen));
    if (!r) return null;
    const p = flatten(r, root, seen);
    if (!p) return null;
    merged = {
      ...merged,
      ...p,
      properties: { ...(merged.properties as Obj), ...(p.properties as Obj) },
      required: [...((merged.required as string[]) ?? []), ...((p.required as string[]) ?? [])],
    };
  }
  return merged;
}

const MAX_DEPTH = 8;

/** The form model of `schema`. `root` is the document `$ref`s point into (the tool's whole
 * `inputSchema`). */
export function fieldOf(schema: Schema, root: Schema = schema, label = '', required = false, depth = 0): Field {
  const base = (s: Obj): Base => ({
    label: str(s.title) ?? label,
    description: str(s.description),
    required,
    nullable: false,
    default: s.default,
  });
  if (!isObj(schema) || !isObj(root) || depth > MAX_DEPTH) {
    return { kind: 'json', label, required, nullable: true };
  }
  const seen = new Set<string>();
  const resolved = resolve(schema, root, seen);
  const s = resolved && flatten(resolved, root, seen);
  if (!s) return { kind: 'json', ...base(schema), nullable: true };

  const next = (sub: unknown, l: string, req: boolean) => fieldOf(sub as Schema, root, l, req, depth + 1);

  // anyOf / oneOf: `null` options make the field nullable; constants make a choice of values.
  const alternatives = (s.oneOf ?? s.anyOf) as unknown[] | undefined;
  if (Array.isArray(alternatives)) {
    const options = alternatives.filter((o) => !(isObj(o) && o.type === 'null'));
    const nullable = options.length < alternatives.length;
    const { oneOf: _o, anyOf: _a, ...outer } = s;
    if (options.length === 1) {
      const inner = next({ ...outer, ...(options[0] as Obj) }, label, required);
      return { ...inner, nullable: nullable || inner.nullable };
    }
    const consts = options.map((o) => (isObj(o) && 'const' in o ? o.const : undefined));
    if (options.length > 0 && consts.every((c) => c !== undefined)) {
      return { kind: 'enum', ...base(s), nullable, options: consts };
    }
    return {
      kind: 'choice',
      ...base(s),
      nullable,
      options: options.map((o, i) => {
        const field = next(o, '', true);
        return { label: optionLabel(o, field, i), field };
      }),
    };
  }
  if (Array.isArray(s.enum)) {
    const options = s.enum.filter((v) => v !== null);
    return { kind: 'enum', ...base(s), nullable: options.length < s.enum.length, options };
  }
  if ('const' in s) return { kind: 'enum', ...base(s), options: [s.const] };

  let type = s.type;
  let nullable = false;
  if (Array.isArray(type)) {
    const types = type.filter((t) => t !== 'null');
    nullable = types.length < type.length;
    if (types.length !== 1) return { kind: 'json', ...base(s), nullable };
    type = types[0];
  }
  if (type === undefined && isObj(s.properties)) type = 'object';
  switch (type) {
    case 'string':
      return {
        kind: 'string',
        ...base(s),
        nullable,
        format: str(s.format),
        minLength: num(s.minLength),
        maxLength: num(s.maxLength),
        pattern: str(s.pattern),
      };
    case 'number':
    case 'integer':
      return {
        kind: 'number',
        ...base(s),
        nullable,
        integer: type === 'integer',
        minimum: num(s.minimum) ?? num(s.exclusiveMinimum),
        maximum: num(s.maximum) ?? num(s.exclusiveMaximum),
      };
    case 'boolean':
      return { kind: 'boolean', ...base(s), nullable };
    case 'object': {
      if (!isObj(s.properties) || Object.keys(s.properties).length === 0) {
        return { kind: 'json', ...base(s), nullable };
      }
      const req = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
      return {
        kind: 'object',
        ...base(s),
        nullable,
        properties: Object.entries(s.properties).map(([key, sub]) => ({
          key,
          field: next(sub, key, req.has(key)),
        })),
      };
    }
    case 'array':
      if (!isObj(s.items) && s.items !== true && s.items !== undefined) {
        return { kind: 'json', ...base(s), nullable }; // a tuple (items as a list)
      }
      return {
        kind: 'array',
        ...base(s),
        nullable,
        items: next(s.items ?? true, 'item', true),
        minItems: num(s.minItems),
        maxItems: num(s.maxItems),
      };
    default:
      return { kind: 'json', ...base(s), nullable: true };
  }
}

function optionLabel(option: unknown, field: Field, i: number): string {
  if (isObj(option) && typeof option.title === 'string') return option.title;
  if (field.kind === 'object') return field.properties.map((p) => p.key).join(', ') || `option ${i + 1}`;
  if (field.kind === 'number') return field.integer ? 'integer' : 'number';
  if (field.kind === 'array') return 'list';
  return field.kind === 'json' ? `option ${i + 1}` : field.kind;
}

/** The value a field starts with: its default, else an empty value of its kind (objects get
 * their required properties; optional ones stay unset until the user fills them). */
export function initial(field: Field): unknown {
  if (field.default !== undefined) {
    return field.kind === 'json' ? JSON.stringify(field.default, null, 2) : structuredClone(field.default);
  }
  switch (field.kind) {
    case 'object': {
      const value: Obj = {};
      for (const p of field.properties) {
        if (p.field.required) value[p.key] = initial(p.field);
      }
      return value;
    }
    case 'array':
      return Array.from({ length: field.minItems ?? 0 }, () => initial(field.items));
    case 'boolean':
      return field.required ? false : undefined;
    case 'choice':
      return initial(field.options[0].field);
    case 'json':
      return '';
    default:
      return undefined;
  }
}

/** Which option of a choice `value` belongs to (the first whose kind matches), for showing it. */
export function optionOf(field: Field & { kind: 'choice' }, value: unknown): number {
  const fits = (f: Field): boolean => {
    switch (f.kind) {
      case 'string':
        return typeof value === 'string';
      case 'number':
        return typeof value === 'number' && (!f.integer || Number.isInteger(value));
      case 'boolean':
        return typeof value === 'boolean';
      case 'enum':
        return f.options.some((o) => JSON.stringify(o) === JSON.stringify(value));
      case 'array':
        return Array.isArray(value);
      case 'object':
        return isObj(value) && Object.keys(value).every((k) => f.properties.some((p) => p.key === k));
      default:
        return false;
    }
  };
  const i = field.options.findIndex((o) => fits(o.field));
  return i < 0 ? 0 : i;
}

/** What a form value means as JSON for the tool: unset optional fields left out, a JSON text
 * field parsed. Throws `FormError` (with the field's path) for JSON text that does not parse. */
export function toArguments(field: Field, value: unknown, path: (string | number)[] = []): unknown {
  switch (field.kind) {
    case 'object': {
      if (!isObj(value)) return value;
      const out: Obj = {};
      for (const p of field.properties) {
        const v = toArguments(p.field, value[p.key], [...path, p.key]);
        if (v !== undefined) out[p.key] = v;
      }
      // Keys the schema does not name (from a default, or a re-run) are kept as they were.
      for (const [k, v] of Object.entries(value)) {
        if (!field.properties.some((p) => p.key === k) && v !== undefined) out[k] = v;
      }
      return Object.keys(out).length === 0 && !field.required ? undefined : out;
    }
    case 'array':
      return Array.isArray(value) ? value.map((v, i) => toArguments(field.items, v, [...path, i])) : value;
    case 'choice': {
      const option = field.options[optionOf(field, value)];
      return toArguments(option.field, value, path);
    }
    case 'json': {
      if (typeof value !== 'string') return value;
      if (value.trim() === '') return undefined;
      try {
        return JSON.parse(value);
      } catch {
        throw new FormError(pointer(path), 'is not valid JSON');
      }
    }
    case 'string':
      return value === '' && !field.required ? undefined : value;
    default:
      return value;
  }
}

export class FormError extends Error {
  constructor(
    readonly pointer: string,
    readonly detail: string,
  ) {
    super(`${pointer}: ${detail}`);
  }
}

/** The RFC 6901 JSON pointer of a path (`["a", 0, "b/c"]` → `/a/0/b~1c`). */
export function pointer(path: (string | number)[]): string {
  return path.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** A number input's text as a value: a number when it reads as one, unset when empty, and the
 * text itself otherwise (so the server names the field rather than the form guessing). */
export function numberFrom(text: string): number | string | undefined {
  const t = text.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : text;
}

/** A value of the tool's arguments as the form holds it (the inverse of `toArguments`): JSON
 * text fields get their value as text. Used to run a task again with its arguments. */
export function toForm(field: Field, value: unknown): unknown {
  switch (field.kind) {
    case 'object': {
      if (!isObj(value)) return value;
      const out: Obj = { ...value };
      for (const p of field.properties) {
        if (p.key in value) out[p.key] = toForm(p.field, value[p.key]);
      }
      return out;
    }
    case 'array':
      return Array.isArray(value) ? value.map((v) => toForm(field.items, v)) : value;
    case 'choice':
      return toForm(field.options[optionOf(field, value)].field, value);
    case 'json':
      return value === undefined ? '' : JSON.stringify(value, null, 2);
    default:
      return value;
  }
}
