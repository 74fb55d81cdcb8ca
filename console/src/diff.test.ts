import { describe, expect, it } from 'vitest';
import { diff } from './diff';

describe('diff', () => {
  it('names added, removed and changed leaves by path', () => {
    const before = { limits: { write: { per_sec: 10 }, read: { per_sec: 5 } }, queues: {}, ttl: 60 };
    const after = { limits: { write: { per_sec: 20 } }, queues: { mail: { max_attempts: 5 } }, ttl: 60 };
    expect(diff(before, after)).toEqual([
      { path: 'limits.read.per_sec', before: '5', after: undefined },
      { path: 'limits.write.per_sec', before: '10', after: '20' },
      { path: 'queues', before: '{}', after: undefined },
      { path: 'queues.mail.max_attempts', before: undefined, after: '5' },
    ]);
  });

  it('compares arrays as whole values', () => {
    expect(diff({ q: ['a'] }, { q: ['a', 'b'] })).toEqual([{ path: 'q', before: '["a"]', after: '["a","b"]' }]);
    expect(diff({ q: ['a'] }, { q: ['a'] })).toEqual([]);
  });
});
