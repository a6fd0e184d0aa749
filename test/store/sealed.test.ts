import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { createSealer, SealedValueError, sealedKeyId, withOpenedCache, type Sealer, type SealedValueFailure } from '../../src/store/sealed.ts';

const k1 = { id: 'k1', key: randomBytes(32) };
const k2 = { id: 'k2', key: randomBytes(32) };
const NAME = 'grant:{s1}:refresh';

/** Asserts `fn` throws a SealedValueError for `reason` whose message leaks neither name nor value. */
function assertRefused(fn: () => unknown, reason: SealedValueFailure): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SealedValueError);
    assert.equal(error.reason, reason);
    assert.ok(!error.message.includes('s1') && !error.message.includes('secret'), error.message);
    return true;
  });
}

/** Flips one bit of a base64url string's decoded bytes. */
function flipBit(text: string, byte: number): string {
  const bytes = Buffer.from(text, 'base64url');
  bytes[byte] = bytes[byte]! ^ 1;
  return bytes.toString('base64url');
}

describe('sealer', () => {
  test('round trip, with a fresh IV every time', () => {
    const sealer = createSealer({ keys: [k1] });
    for (const plaintext of ['secret refresh token', '', 'ünïcødé ✓ 🔑', 'x'.repeat(65_536)]) {
      const sealed = sealer.seal(NAME, plaintext);
      assert.equal(sealer.open(NAME, sealed), plaintext);
    }
    const a = sealer.seal(NAME, 'secret');
    const b = sealer.seal(NAME, 'secret');
    assert.notEqual(a, b);
    assert.match(a, /^v1\.k1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    assert.ok(!a.includes(Buffer.from('secret').toString('base64url')));
  });

  test('rotation: the first key seals, every key opens', () => {
    const before = createSealer({ keys: [k1] });
    const after = createSealer({ keys: [k2, k1] });
    const old = before.seal(NAME, 'sealed before rotation');
    assert.equal(after.open(NAME, old), 'sealed before rotation');
    const fresh = after.seal(NAME, 'sealed after rotation');
    assert.match(fresh, /^v1\.k2\./);
    assert.equal(after.open(NAME, fresh), 'sealed after rotation');
    assertRefused(() => before.open(NAME, fresh), 'unknown_key');
  });

  test('a value does not open under another name', () => {
    const sealer = createSealer({ keys: [k1] });
    const sealed = sealer.seal(NAME, 'secret');
    assertRefused(() => sealer.open('grant:{s2}:refresh', sealed), 'authentication');
    assertRefused(() => sealer.open(`${NAME} `, sealed), 'authentication');
  });

  test('any tampering is detected', () => {
    const sealer = createSealer({ keys: [k1, k2] });
    const sealed = sealer.seal(NAME, 'secret');
    const [version, id, iv, body] = sealed.split('.') as [string, string, string, string];
    const bodyBytes = Buffer.from(body, 'base64url').length;
    const tampered = [
      [version, id, flipBit(iv, 0), body],
      [version, id, iv, flipBit(body, 0)],
      [version, id, iv, flipBit(body, bodyBytes - 1)], // the tag
      [version, 'k2', iv, body], // relabelled with the other known key
    ];
    for (const parts of tampered) assertRefused(() => sealer.open(NAME, parts.join('.')), 'authentication');
    const truncated = Buffer.from(body, 'base64url').subarray(0, 15).toString('base64url');
    assertRefused(() => sealer.open(NAME, [version, id, iv, truncated].join('.')), 'malformed');
  });

  test('malformed envelopes and unknown key ids are refused clearly', () => {
    const sealer = createSealer({ keys: [k1] });
    const [, , iv, body] = sealer.seal(NAME, 'secret').split('.') as [string, string, string, string];
    for (const bad of ['', 'secret', `v2.k1.${iv}.${body}`, `v1.k1.${iv}`, `v1.k1.${iv}.${body}.x`, `v1.k1.${iv}!.${body}`, `v1.k1.${iv}.${body}=`, `v1.k1.${iv}AA.${body}`, `v1.k1..${body}`]) {
      assertRefused(() => sealer.open(NAME, bad), 'malformed');
    }
    assertRefused(() => sealer.open(NAME, `v1.k9.${iv}.${body}`), 'unknown_key');
    assert.throws(() => sealer.open(NAME, `v1.k9.${iv}.${body}`), /unknown key id "k9"/);
  });

  test('keys are validated when the sealer is created', () => {
    const bad = [
      [],
      [{ id: 'k1', key: randomBytes(16) }],
      [{ id: 'k1', key: randomBytes(33) }],
      [{ id: 'k1', key: 'a'.repeat(32) as unknown as Uint8Array }],
      [{ id: 'k.1', key: randomBytes(32) }],
      [{ id: '', key: randomBytes(32) }],
      [k1, { id: 'k1', key: randomBytes(32) }],
    ];
    for (const keys of bad) assert.throws(() => createSealer({ keys }), TypeError, JSON.stringify(keys.map((k) => k.id)));
  });

  test('a name is required', () => {
    const sealer = createSealer({ keys: [k1] });
    assert.throws(() => sealer.seal('', 'x'), TypeError);
    assert.throws(() => sealer.open('', sealer.seal(NAME, 'x')), TypeError);
  });
});

test('sealedKeyId: the key id of an envelope; nothing for the unsealed values the stores keep', () => {
  const sealer = createSealer({ keys: [k2, k1] });
  assert.equal(sealedKeyId(sealer.seal(NAME, 'x')), 'k2');
  assert.equal(sealedKeyId(createSealer({ keys: [k1] }).seal(NAME, '')), 'k1');
  for (const unsealed of ['{"sessionId":"s1","expiresAt":1}', 'flow-id-abc', '3', '', 'v1.k1', 'v1.k1.short.body', 'v2.k1.AAAAAAAAAAAAAAAA.BBBB', 'v1.k.1.AAAAAAAAAAAAAAAA.BBBB']) {
    assert.equal(sealedKeyId(unsealed), undefined, unsealed);
  }
});

describe('withOpenedCache', () => {
  /** A sealer that counts the decryptions it really does. */
  function counting() {
    const inner = createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] });
    const counter = { opens: 0 };
    const sealer: Sealer = { seal: (n, p) => inner.seal(n, p), open: (n, s) => (counter.opens++, inner.open(n, s)) };
    return { inner, counter, cached: withOpenedCache(sealer, 2) };
  }

  test('the same sealed text under the same name is decrypted once; what it sealed itself not at all', () => {
    const { inner, counter, cached } = counting();
    const sealed = inner.seal('session:{a}', 'alice');
    assert.equal(cached.open('session:{a}', sealed), 'alice');
    assert.equal(cached.open('session:{a}', `${sealed}`), 'alice');
    assert.equal(counter.opens, 1);
    const own = cached.seal('session:{b}', 'bob');
    assert.equal(cached.open('session:{b}', own), 'bob');
    assert.equal(counter.opens, 1);
  });

  test('a changed value is opened afresh; a value copied under another name or tampered with still fails, and is not remembered', () => {
    const { inner, counter, cached } = counting();
    const first = inner.seal('rt:x', 'one');
    const second = inner.seal('rt:x', 'two');
    assert.equal(cached.open('rt:x', first), 'one');
    assert.equal(cached.open('rt:x', second), 'two');
    assert.equal(counter.opens, 2);
    assert.throws(() => cached.open('rt:y', second), { name: 'SealedValueError', reason: 'authentication' });
    const tampered = `${second.slice(0, -2)}${second.endsWith('AA') ? 'BB' : 'AA'}`;
    assert.throws(() => cached.open('rt:x', tampered), { name: 'SealedValueError' });
    assert.throws(() => cached.open('rt:x', tampered), { name: 'SealedValueError' }, 'a failure is not remembered as a success');
    assert.equal(cached.open('rt:x', second), 'two');
  });

  test('at most maxEntries names are remembered, the oldest forgotten first', () => {
    const { inner, counter, cached } = counting();
    const values = ['a', 'b', 'c'].map((name) => [name, inner.seal(name, name)] as const);
    for (const [name, sealed] of values) cached.open(name, sealed);
    assert.equal(counter.opens, 3);
    cached.open('c', values[2]![1]);
    cached.open('b', values[1]![1]);
    assert.equal(counter.opens, 3, 'the two newest are remembered');
    cached.open('a', values[0]![1]);
    assert.equal(counter.opens, 4, 'the oldest was forgotten');
    assert.throws(() => withOpenedCache(inner, 0), TypeError);
  });
});
