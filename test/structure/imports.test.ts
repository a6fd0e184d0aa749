import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The import graph of `src/`: no module may reach itself through its imports, type-only imports
 * included. A circle means neither side can be read, tested or moved without the other; shared
 * types belong in a module that imports nothing back.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const srcDir = join(root, 'src');

/** Every static import and re-export (`import … from`, `import type … from`, `export … from`, `import './x.ts'`). */
const IMPORT = /^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s*)?['"](\.{1,2}\/[^'"]+)['"]/gm;

/** The relative imports of each `src/**\/*.ts` file, as paths relative to the repository. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(srcDir, f));
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const targets = [...text.matchAll(IMPORT)].map((m) => relative(root, resolve(dirname(file), m[1]!)));
    graph.set(relative(root, file), [...new Set(targets)]);
  }
  return graph;
}

/** Each circle, as the path that closes it (`a.ts → b.ts → a.ts`), found by depth-first search. */
function findCycles(graph: Map<string, string[]>): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next].join(' → '));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

describe('the import graph of src/', () => {
  it('sees the imports it is meant to check', () => {
    const graph = importGraph();
    // A reader that found nothing would pass the next test for the wrong reason.
    assert.ok(graph.size > 50, `only ${graph.size} modules under src/`);
    assert.ok(graph.get('src/app.ts')!.length > 10, 'src/app.ts imports were not read');
    assert.ok(
      [...graph.values()].some((targets) => targets.includes('src/authserver/records/records.ts')),
      'type-only imports were not read',
    );
  });

  it('has no circle, type-only imports included', () => {
    assert.deepEqual(findCycles(importGraph()), []);
  });
});
