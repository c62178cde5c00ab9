// Builds a Weft step plugin written in JavaScript into a component:
//
//   node build.mjs <app.js> <wit dir> <out.wasm>
//
// The app imports the SDK as './weft-sdk.js' (beside it). componentize-js
// reads files through the WASI shim, which starts with no preopened
// directories: open the root first.
import { _setPreopens } from '@bytecodealliance/preview2-shim/filesystem';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

_setPreopens({ '/': '/' });
const { componentize } = await import('@bytecodealliance/componentize-js');

const [source, wit, out] = process.argv.slice(2);
if (!source || !wit || !out) {
  console.error('usage: node build.mjs <app.js> <wit dir> <out.wasm>');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: 'step-plugin',
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
