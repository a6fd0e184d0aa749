#!/usr/bin/env node
// The `mcpgate` command (the package's `bin`). Plain JavaScript on purpose: it must run on any
// Node, so an old one gets a one-line answer naming the version required instead of a stack
// trace from deep inside a dependency (undici needs APIs Node 20 lacks).
//
// Which CLI it runs:
// - a checkout of the repository (src/ next to this file, not under node_modules): src/cli.ts,
//   which Node runs directly through type stripping, so the command always runs the code you see;
// - an installed package (under node_modules, where Node refuses to strip types, and only dist/
//   is shipped): dist/cli.js, the output of `npm run build`.
import { existsSync, readFileSync } from 'node:fs';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const required = requiredNode();
if (required && !atLeast(process.versions.node, required)) {
  process.stderr.write(`mcpgate: Node.js ${required} or newer is required, this is ${process.versions.node} (${process.execPath})\n`);
  process.exit(1);
}

const source = new URL('src/cli.ts', root);
const built = new URL('dist/cli.js', root);
const installed = fileURLToPath(root).split(/[\\/]/).includes('node_modules');
const entry = !installed && existsSync(source) ? source : built;
if (!existsSync(entry)) {
  process.stderr.write(`mcpgate: ${fileURLToPath(entry)} is missing; run "npm run build" first\n`);
  process.exit(1);
}
// Not top-level await: an old Node that lacks it must still parse this file and print the line above.
import(entry.href);

/** The lowest version `engines.node` of package.json accepts (">=22.19" → "22.19"), or undefined. */
function requiredNode() {
  try {
    const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
    const match = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(String(pkg.engines && pkg.engines.node).trim());
    return match ? match[1] : undefined;
  } catch {
    return undefined;
  }
}

/** Numeric comparison of dotted versions; missing parts count as 0. */
function atLeast(version, minimum) {
  const have = version.split('.').map(Number);
  const want = minimum.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const a = have[i] || 0;
    const b = want[i] || 0;
    if (a !== b) return a > b;
  }
  return true;
}
