import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bearerChallenge,
  formatBearerChallenge,
  parseWwwAuthenticate,
  type Challenge,
} from '../../src/upstream-oauth/www-authenticate.ts';

/** Challenges as plain objects, for readable deep comparisons. */
function parse(header: string | string[]) {
  return parseWwwAuthenticate(header).map((c: Challenge) => ({
    scheme: c.scheme,
    params: Object.fromEntries(c.params),
    ...(c.token68 !== undefined ? { token68: c.token68 } : {}),
  }));
}

describe('parseWwwAuthenticate: real-world shapes', () => {
  test('RFC 6750 error response', () => {
    assert.deepEqual(parse('Bearer realm="example", error="invalid_token", error_description="The access token expired"'), [
      { scheme: 'bearer', params: { realm: 'example', error: 'invalid_token', error_description: 'The access token expired' } },
    ]);
  });

  test('RFC 9728 resource_metadata with scope (MCP servers)', () => {
    const header =
      'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:read files:write"';
    assert.deepEqual(bearerChallenge(parseWwwAuthenticate(header)), {
      resourceMetadata: 'https://mcp.example.com/.well-known/oauth-protected-resource/mcp',
      scope: ['files:read', 'files:write'],
    });
  });

  test('RFC 9110 §11.6.1 example: two challenges, escapes, token values', () => {
    assert.deepEqual(parse('Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'), [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
      { scheme: 'basic', params: { realm: 'simple' } },
    ]);
  });

  test('several header lines', () => {
    assert.deepEqual(parse(['Negotiate', 'Basic realm="corp"', 'Bearer error=insufficient_scope, scope="admin"']), [
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'corp' } },
      { scheme: 'bearer', params: { error: 'insufficient_scope', scope: 'admin' } },
    ]);
  });

  test('token68 with padding, next to a parameter challenge', () => {
    assert.deepEqual(parse('Negotiate YIIBhwYGKwYBBQUCoIIBezCC+/Ab==, Bearer realm="r"'), [
      { scheme: 'negotiate', params: {}, token68: 'YIIBhwYGKwYBBQUCoIIBezCC+/Ab==' },
      { scheme: 'bearer', params: { realm: 'r' } },
    ]);
  });

  test('case-insensitive scheme and names; values keep their case', () => {
    assert.deepEqual(parse('BEARER Realm="MixedCase", ERROR=Invalid_Token'), [
      { scheme: 'bearer', params: { realm: 'MixedCase', error: 'Invalid_Token' } },
    ]);
    assert.equal(bearerChallenge(parseWwwAuthenticate('bEaReR Error=invalid_token'))?.error, 'invalid_token');
  });

  test('whitespace around "=" (BWS), empty list elements, tabs', () => {
    assert.deepEqual(parse(' ,, Basic ,\tBearer realm = "x" ,,, scope=\t"a b" , ,'), [
      { scheme: 'basic', params: {} },
      { scheme: 'bearer', params: { realm: 'x', scope: 'a b' } },
    ]);
  });

  test('commas and escaped quotes inside quoted values', () => {
    assert.deepEqual(parse('Bearer error_description="a, b=\\"c\\", \\\\d", error=e'), [
      { scheme: 'bearer', params: { error_description: 'a, b="c", \\d', error: 'e' } },
    ]);
  });

  test('DPoP next to Bearer (RFC 9449)', () => {
    const challenges = parseWwwAuthenticate('DPoP algs="ES256 PS256", error="use_dpop_nonce", Bearer realm="api"');
    assert.deepEqual(challenges.map((c) => c.scheme), ['dpop', 'bearer']);
    assert.equal(challenges[0]?.params.get('error'), 'use_dpop_nonce');
  });

  test('repeated parameter: the first wins', () => {
    assert.deepEqual(parse('Bearer error=first, error=second'), [{ scheme: 'bearer', params: { error: 'first' } }]);
  });

  test('a missing comma between parameters is tolerated', () => {
    assert.deepEqual(parse('Bearer realm="a" error="b"'), [{ scheme: 'bearer', params: { realm: 'a', error: 'b' } }]);
  });

  test('empty and absent headers', () => {
    assert.deepEqual(parse(''), []);
    assert.deepEqual(parse([]), []);
    assert.deepEqual(parseWwwAuthenticate(undefined), []);
  });
});

describe('parseWwwAuthenticate: malformed and hostile input', () => {
  test('unterminated quoted-string drops that parameter, keeps the challenge', () => {
    assert.deepEqual(parse('Basic realm="x", Bearer error=e, realm="abc'), [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { error: 'e' } },
    ]);
  });

  test('garbage between parameters is skipped up to the next comma', () => {
    assert.deepEqual(parse('Bearer realm="x"junk"more", @@@, error=y'), [{ scheme: 'bearer', params: { realm: 'x', error: 'y' } }]);
    assert.deepEqual(parse('@@ {}, Bearer error=y'), [{ scheme: 'bearer', params: { error: 'y' } }]);
  });

  test('a parameter with no scheme before it is ignored', () => {
    assert.deepEqual(parse('realm=x, Bearer error=y'), [{ scheme: 'bearer', params: { error: 'y' } }]);
  });

  test('prototype-ish names are plain data', () => {
    const [c] = parseWwwAuthenticate('Bearer __proto__=x, constructor=y');
    assert.equal(c?.params.get('__proto__'), 'x');
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  test('non-string list members are ignored', () => {
    assert.deepEqual(parse(['Bearer a=b', 42 as unknown as string]), [{ scheme: 'bearer', params: { a: 'b' } }]);
  });

  test('1 MB inputs parse in linear time and never throw', () => {
    const MB = 1 << 20;
    const inputs = [
      `Bearer realm="${'a'.repeat(MB)}"`,
      `Bearer realm="${'a'.repeat(MB)}`, // unbalanced
      `Bearer ${','.repeat(MB)}`,
      '"'.repeat(MB),
      `Bearer realm="${'\\"'.repeat(MB / 2)}"`,
      `Bearer ${'a=b, '.repeat(MB / 4)}`,
      'a, '.repeat(MB / 3),
      `Bearer ${'x="'.repeat(MB / 3)}`,
      '='.repeat(MB),
      `Bearer realm="${'\\'.repeat(MB)}`,
      `Negotiate ${'A'.repeat(MB)} x`,
      `Bearer${' '.repeat(MB)}`,
      '\u0000\uffff'.repeat(MB / 2),
    ];
    const started = performance.now();
    for (const input of inputs) assert.doesNotThrow(() => parseWwwAuthenticate(input));
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1500, `took ${elapsed} ms`);
    assert.equal(parseWwwAuthenticate(inputs[0]!)[0]?.params.get('realm')?.length, MB);
  });

  test('challenge and parameter counts are capped', () => {
    assert.equal(parseWwwAuthenticate('A, '.repeat(10_000)).length, 64);
    const many = Array.from({ length: 1000 }, (_, i) => `p${i}=v`).join(', ');
    assert.equal(parseWwwAuthenticate(`Bearer ${many}`)[0]?.params.size, 64);
  });
});

describe('bearerChallenge', () => {
  test('no Bearer challenge → undefined', () => {
    assert.equal(bearerChallenge(parseWwwAuthenticate('Basic realm="x"')), undefined);
  });

  test('picks the Bearer challenge among others; empty values are absent', () => {
    const challenges = parseWwwAuthenticate('Basic realm="x", Bearer scope="", error="invalid_token", error_description="expired"');
    assert.deepEqual(bearerChallenge(challenges), { error: 'invalid_token', errorDescription: 'expired' });
  });

  test('scope splits on runs of spaces', () => {
    assert.deepEqual(bearerChallenge(parseWwwAuthenticate('Bearer scope="  a   b "'))?.scope, ['a', 'b']);
  });
});

describe('formatBearerChallenge', () => {
  test('the gateway challenge shape', () => {
    assert.equal(
      formatBearerChallenge({
        resourceMetadata: 'https://gw.example.com/.well-known/oauth-protected-resource/kube/mcp',
        scope: ['openid', 'kube:read'],
        error: 'invalid_token',
        errorDescription: 'token expired',
      }),
      'Bearer resource_metadata="https://gw.example.com/.well-known/oauth-protected-resource/kube/mcp", scope="openid kube:read", error="invalid_token", error_description="token expired"',
    );
    assert.equal(formatBearerChallenge({ resourceMetadata: 'https://gw/x' }), 'Bearer resource_metadata="https://gw/x"');
  });

  test('escapes quotes and backslashes, and round-trips through the parser', () => {
    const params = { resourceMetadata: 'https://gw/x', errorDescription: 'say "hi", then \\ leave' };
    const header = formatBearerChallenge(params);
    assert.match(header, /error_description="say \\"hi\\", then \\\\ leave"/);
    assert.deepEqual(bearerChallenge(parseWwwAuthenticate(header)), params);
  });

  test('refuses header injection and invalid scope tokens', () => {
    assert.throws(() => formatBearerChallenge({ resourceMetadata: 'https://gw/x', errorDescription: 'a\r\nSet-Cookie: x=y' }), RangeError);
    assert.throws(() => formatBearerChallenge({ resourceMetadata: 'https://gw/x\n' }), RangeError);
    assert.throws(() => formatBearerChallenge({ resourceMetadata: 'https://gw/x', errorDescription: 'café' }), RangeError);
    assert.throws(() => formatBearerChallenge({ resourceMetadata: 'https://gw/x', scope: ['a b'] }), RangeError);
    assert.throws(() => formatBearerChallenge({ resourceMetadata: 'https://gw/x', scope: ['a"b'] }), RangeError);
  });
});
