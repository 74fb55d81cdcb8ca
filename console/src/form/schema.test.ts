import { describe, expect, it } from 'vitest';
import { fieldOf, initial, numberFrom, optionOf, pointer, toArguments, toForm, FormError, type Field } from './schema';

// The demo server's `sleep` tool, as schemars writes it.
const sleep = {
  type: 'object',
  properties: {
    seconds: { type: 'number', format: 'double', minimum: 0, maximum: 3600, description: 'How long' },
    steps: { type: ['integer', 'null'], format: 'uint32', minimum: 1, maximum: 1000 },
  },
  required: ['seconds'],
};

describe('fieldOf', () => {
  it('reads an object with a required number and an optional nullable integer', () => {
    const f = fieldOf(sleep);
    expect(f.kind).toBe('object');
    if (f.kind !== 'object') return;
    const [seconds, steps] = f.properties;
    expect(seconds).toMatchObject({ key: 'seconds', field: { kind: 'number', integer: false, minimum: 0, maximum: 3600, required: true } });
    expect(steps).toMatchObject({ key: 'steps', field: { kind: 'number', integer: true, nullable: true, required: false } });
  });

  it('makes a oneOf of objects a choice, and a oneOf of consts an enum', () => {
    const f = fieldOf({
      type: 'object',
      properties: {
        target: {
          oneOf: [
            { type: 'object', title: 'By URL', properties: { url: { type: 'string' } }, required: ['url'] },
            { type: 'object', properties: { host: { type: 'string' }, port: { type: 'integer' } } },
          ],
        },
        mode: { oneOf: [{ const: 'fast' }, { const: 'safe' }], default: 'safe' },
      },
    });
    if (f.kind !== 'object') throw new Error(f.kind);
    const target = f.properties[0].field;
    expect(target.kind).toBe('choice');
    if (target.kind !== 'choice') return;
    expect(target.options.map((o) => o.label)).toEqual(['By URL', 'host, port']);
    expect(optionOf(target, { host: 'a', port: 1 })).toBe(1);
    expect(optionOf(target, { url: 'x' })).toBe(0);
    expect(f.properties[1].field).toMatchObject({ kind: 'enum', options: ['fast', 'safe'], default: 'safe' });
  });

  it('treats an anyOf with null as a nullable field of the other option', () => {
    const f = fieldOf({ anyOf: [{ $ref: '#/$defs/Level' }, { type: 'null' }], $defs: { Level: { enum: ['a', 'b'] } } });
    expect(f).toMatchObject({ kind: 'enum', nullable: true, options: ['a', 'b'] });
  });

  it('follows $ref into $defs and definitions, and merges allOf', () => {
    const f = fieldOf({
      type: 'object',
      properties: { point: { $ref: '#/definitions/Point' }, both: { allOf: [{ $ref: '#/$defs/A' }, { properties: { b: { type: 'boolean' } }, required: ['b'] }] } },
      definitions: { Point: { type: 'object', properties: { x: { type: 'number' } }, required: ['x'] } },
      $defs: { A: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] } },
    });
    if (f.kind !== 'object') throw new Error(f.kind);
    expect(f.properties[0].field).toMatchObject({ kind: 'object', properties: [{ key: 'x', field: { kind: 'number', required: true } }] });
    const both = f.properties[1].field;
    if (both.kind !== 'object') throw new Error(both.kind);
    expect(both.properties.map((p) => [p.key, p.field.kind, p.field.required])).toEqual([
      ['a', 'string', true],
      ['b', 'boolean', true],
    ]);
  });

  it('reads nested arrays, and stops at a recursive $ref', () => {
    const f = fieldOf({
      type: 'object',
      properties: {
        matrix: { type: 'array', items: { type: 'array', items: { type: 'integer', minimum: 0 } }, minItems: 1 },
        tree: { $ref: '#/$defs/Node' },
      },
      $defs: { Node: { type: 'object', properties: { children: { type: 'array', items: { $ref: '#/$defs/Node' } } } } },
    });
    if (f.kind !== 'object') throw new Error(f.kind);
    expect(f.properties[0].field).toMatchObject({ kind: 'array', minItems: 1, items: { kind: 'array', items: { kind: 'number', integer: true, minimum: 0 } } });
    // Node → children → Node again: past the depth limit it becomes JSON text, not a loop.
    let node: Field = f.properties[1].field;
    let depth = 0;
    while (node.kind === 'object') {
      const children: Field = node.properties[0].field;
      if (children.kind !== 'array') throw new Error(children.kind);
      node = children.items;
      depth++;
    }
    expect(node.kind).toBe('json');
    expect(depth).toBeGreaterThan(1);
  });

  it('falls back to JSON text for free-form objects, tuples and mixed types', () => {
    const f = fieldOf({
      type: 'object',
      properties: {
        labels: { type: 'object', additionalProperties: { type: 'string' } },
        pair: { type: 'array', items: [{ type: 'string' }, { type: 'number' }] },
        either: { type: ['string', 'number'] },
      },
    });
    if (f.kind !== 'object') throw new Error(f.kind);
    expect(f.properties.map((p) => p.field.kind)).toEqual(['json', 'json', 'json']);
  });
});

describe('values', () => {
  it('starts from defaults, nested ones included, and from minItems', () => {
    const f = fieldOf({
      type: 'object',
      properties: {
        name: { type: 'string', default: 'wharf' },
        opts: { type: 'object', properties: { depth: { type: 'integer', default: 2 }, deep: { type: 'boolean' } }, required: ['depth', 'deep'] },
        tags: { type: 'array', items: { type: 'string', default: 'x' }, minItems: 2 },
        note: { type: 'string' },
      },
      required: ['name', 'opts', 'tags'],
    });
    expect(initial(f)).toEqual({ name: 'wharf', opts: { depth: 2, deep: false }, tags: ['x', 'x'] });
  });

  it('leaves unset optional fields out of the arguments and parses JSON text fields', () => {
    const f = fieldOf({
      type: 'object',
      properties: {
        message: { type: 'string' },
        note: { type: 'string' },
        extra: { type: 'object', additionalProperties: true },
        list: { type: 'array', items: { type: 'object', properties: { a: { type: 'string' } } } },
      },
      required: ['message'],
    });
    expect(toArguments(f, { message: '', note: '', extra: '{"k": [1, 2]}', list: [{ a: '' }, { a: 'b' }] })).toEqual({
      message: '',
      extra: { k: [1, 2] },
      list: [{}, { a: 'b' }],
    });
    expect(() => toArguments(f, { message: 'm', extra: '{nope' })).toThrow(FormError);
    try {
      toArguments(f, { message: 'm', extra: '{nope' });
    } catch (e) {
      expect((e as FormError).pointer).toBe('/extra');
    }
  });

  it('round-trips a task\'s arguments through the form for a re-run', () => {
    const f = fieldOf({
      type: 'object',
      properties: { data: { type: 'string' }, meta: { type: 'object' }, target: { oneOf: [{ type: 'string' }, { type: 'object', properties: { url: { type: 'string' } } }] } },
    });
    const args = { data: 'x', meta: { a: 1 }, target: { url: 'u' }, unknown: 5 };
    const form = toForm(f, args);
    expect(form).toEqual({ data: 'x', meta: '{\n  "a": 1\n}', target: { url: 'u' }, unknown: 5 });
    expect(toArguments(f, form)).toEqual(args);
  });

  it('keeps unreadable number text for the server to name', () => {
    expect(numberFrom('')).toBeUndefined();
    expect(numberFrom(' 2.5 ')).toBe(2.5);
    expect(numberFrom('abc')).toBe('abc');
  });

  it('escapes pointers', () => {
    expect(pointer(['arguments', 'a/b', 0, 'c~d'])).toBe('/arguments/a~1b/0/c~0d');
  });
});
