import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { plainPath } from '../../src/http/request-target.ts';

/**
 * The front door routes on a path cut from the request target without a URL parser when the
 * target is plain (src/http/request-target.ts): whenever it does, the path must be exactly what the
 * WHATWG parser would have given, or a request could be routed, logged or refused differently.
 */
describe('plainPath', () => {
  const parsed = (target: string) => new URL(target, 'http://127.0.0.1:8080').pathname;

  it('returns the parser\'s path for plain targets and steps aside for the rest', () => {
    const examples: Array<[string, string | undefined]> = [
      ['/bench/mcp', '/bench/mcp'],
      ['/a/mcp?x=1&y=%20', '/a/mcp'],
      ['/.well-known/oauth-protected-resource/a/mcp', '/.well-known/oauth-protected-resource/a/mcp'],
      ['/', '/'],
      ['/a/../b', undefined],
      ['/a/./b', undefined],
      ['/a/..', undefined],
      ['/a/%2e%2e/b', undefined],
      ['//evil.example/a', undefined],
      ['/a\\b', undefined],
      ['/a b', undefined],
      ['/a#frag?x', undefined],
      ['/é', undefined],
      ['*', undefined],
    ];
    for (const [target, expected] of examples) {
      assert.equal(plainPath(target), expected, target);
      if (expected !== undefined) assert.equal(expected, parsed(target), target);
    }
  });

  it('agrees with the parser on every target it accepts (generated)', () => {
    // Characters that matter to the parser: separators, dots, escapes, encodable and unicode ones.
    const alphabet = ['/', '/', '.', '.', 'a', 'Z', '0', '-', '_', '~', '%', '2', 'e', '?', '#', '\\', ' ', '"', '<', '>', '`', '{', '|', ':', '@', '!', "'", '(', '*', '+', ',', ';', '=', '&', '$', '\t', 'é', '\u0000'];
    let seed = 42;
    const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      let target = '/';
      const length = next() % 12;
      for (let k = 0; k < length; k++) target += alphabet[next() % alphabet.length];
      const path = plainPath(target);
      if (path === undefined) continue;
      accepted++;
      assert.equal(path, parsed(target), JSON.stringify(target));
    }
    assert.ok(accepted > 1000, `enough plain targets generated (${accepted})`);
  });
});
