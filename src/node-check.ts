/**
 * Refuses to start on a Node.js older than `engines.node` of package.json, with one line that
 * names the version required. Imported first by `cli.ts`, so it runs before any dependency is
 * evaluated: `node dist/cli.js` on Node 20 would otherwise die inside undici with a TypeError.
 * (`bin/mcpgate.js`, the package's `bin`, checks the same before it loads the CLI.)
 */
import { readFileSync } from 'node:fs';

const required = requiredNode();
if (required !== undefined && !atLeast(process.versions.node, required)) {
  process.stderr.write(`mcpgate: Node.js ${required} or newer is required, this is ${process.versions.node} (${process.execPath})\n`);
  process.exit(1);
}

/** The lowest version `engines.node` accepts (">=22.19" → "22.19"); package.json is one level above src/ and dist/. */
function requiredNode(): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines?: { node?: string } };
    return /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(String(pkg.engines?.node).trim())?.[1];
  } catch {
    return undefined;
  }
}

/** Numeric comparison of dotted versions; missing parts count as 0. */
function atLeast(version: string, minimum: string): boolean {
  const have = version.split('.').map(Number);
  const want = minimum.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const a = have[i] ?? 0;
    const b = want[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}
