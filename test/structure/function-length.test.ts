import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * No function in `src/` longer than a screen and a half: a longer one mixes steps a reader wants
 * named apart, and a stack trace through it names nothing. A factory counts as one function with
 * everything its closure holds, which is why factories hand their steps to module-level functions.
 * Declarative tables are the exception: the config schema reads as a list of keys, however long.
 */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const srcDir = join(root, 'src');
const MAX_LINES = 100;
/** Declarative tables, by `file:function`. */
const TABLES = new Set(['src/config/schema.ts:createConfigSchema']);

interface FunctionSpan {
  where: string;
  name: string;
  lines: number;
}

/** Every function with a body under `src/`, with its length in lines (first line to closing brace). */
function functionSpans(): FunctionSpan[] {
  const spans: FunctionSpan[] = [];
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  for (const file of files) {
    const path = relative(root, join(srcDir, file));
    const source = ts.createSourceFile(path, readFileSync(join(srcDir, file), 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
        const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
        const last = source.getLineAndCharacterOfPosition(node.end).line;
        spans.push({ where: `${path}:${first + 1}`, name: `${path}:${nameOf(node)}`, lines: last - first + 1 });
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return spans;
}

/** A function's own name, or the name it is assigned to; `<anonymous>` otherwise. */
function nameOf(node: ts.SignatureDeclaration): string {
  if (node.name !== undefined) return node.name.getText();
  const parent = node.parent;
  if ((ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)) && parent.name !== undefined) return parent.name.getText();
  return '<anonymous>';
}

describe('function length in src/', () => {
  const spans = functionSpans();

  it('sees the functions it is meant to check', () => {
    // A reader that found nothing would pass the next test for the wrong reason.
    assert.ok(spans.length > 500, `only ${spans.length} functions under src/`);
    assert.ok(spans.some((s) => s.name === 'src/app.ts:createApp'), 'createApp was not found');
    assert.ok(spans.some((s) => TABLES.has(s.name) && s.lines > MAX_LINES), 'the config schema table is no longer long: drop the exception');
  });

  it(`has no function over ${MAX_LINES} lines except declarative tables`, () => {
    const long = spans.filter((s) => s.lines > MAX_LINES && !TABLES.has(s.name)).sort((a, b) => b.lines - a.lines);
    assert.deepEqual(
      long.map((s) => `${s.where} ${s.name.split(':')[1]} (${s.lines} lines)`),
      [],
      'cut these into named steps (module-level functions taking their dependencies by name)',
    );
  });
});
