// Writes a gzip copy next to every text file of the build (dist/**/*.{js,css,html,json,svg,
// webmanifest}), which the gateway serves to browsers that accept gzip, and prints the sizes.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const text = /\.(js|css|html|json|svg|webmanifest)$/;
let js = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (text.test(name)) {
      const zipped = gzipSync(readFileSync(path), { level: 9 });
      writeFileSync(`${path}.gz`, zipped);
      if (name.endsWith('.js')) js += zipped.length;
    }
  }
}
walk('dist');
console.log(`console: ${js} bytes of JavaScript, gzipped`);
