// A Weft step plugin. Build it with `weft plugin build` (which runs
// `npm install && node build.mjs app.js wit {{name}}.wasm`)
// and try it with `weft plugin run {{name}}.wasm --config '{"name": "Ada"}'`.
import * as weft from './weft-sdk.js';

export const step = weft.plugin({
  name: '{{name}}',
  version: '0.1.0',
  description: 'Greets someone by name.',
  configSchema: {
    type: 'object',
    properties: { name: { type: 'string', minLength: 1 } },
    required: ['name'],
  },
  outputSchema: { type: 'object', properties: { greeting: { type: 'string' } } },
  run(ctx, config) {
    if (typeof config.name !== 'string' || !config.name) {
      throw new weft.InvalidInput('config.name must be a non-empty string');
    }
    weft.log('info', `greeting ${config.name} (attempt ${ctx.attempt})`);
    return { greeting: `Hello, ${config.name}!` };
  },
});
