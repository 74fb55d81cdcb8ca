// Fails when src/api/schema.d.ts is not what openapi-typescript makes of schemas/openapi.json,
// as the Rust side does for schemas/openapi.json itself. `npm run types` rewrites it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'wharf-console-types-'));
try {
  const out = join(dir, 'schema.d.ts');
  execFileSync('npx', ['openapi-typescript', '../schemas/openapi.json', '-o', out], { stdio: 'ignore' });
  if (readFileSync(out, 'utf8') !== readFileSync('src/api/schema.d.ts', 'utf8')) {
    console.error('console/src/api/schema.d.ts is out of date with schemas/openapi.json: run `npm run types --prefix console`');
    process.exit(1);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
