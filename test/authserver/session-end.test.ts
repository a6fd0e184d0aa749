/** The one session-ending path (session-end.ts): the session goes first, then every hook, a failing one logged without stopping the rest. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createSessionEnding } from '../../src/authserver/records/session-end.ts';
import { createAuthStores } from '../../src/authserver/records/stores.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { captureLogs } from '../support/logs.ts';

test('ends the session, then runs every hook in order; a failing hook is logged and the next still runs', async () => {
  const store = createMemoryStore();
  const stores = createAuthStores({ store, sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }) });
  const sid = randomBytes(16).toString('base64url');
  await stores.sessions.put({ sessionId: sid, subject: 'alice', clientId: 'c1', createdAt: Date.now(), expiresAt: Date.now() + 60_000 });
  const logs = captureLogs();
  const seen: string[] = [];
  const endSession = createSessionEnding({
    sessions: stores.sessions,
    logger: createLogger({ level: 'info', destination: logs.destination }),
    onSessionEnded: [
      async (id) => {
        // The session is already gone when a hook runs: nothing of the family works any more.
        seen.push(`first:${(await stores.sessions.get(id)) === undefined}`);
        throw Object.assign(new Error('upstream store unreachable'), { code: 'ECONNREFUSED' });
      },
      async (id) => void seen.push(`second:${id === sid}`),
    ],
  });
  await endSession(sid);
  assert.deepEqual(seen, ['first:true', 'second:true']);
  assert.equal(await stores.sessions.get(sid), undefined);
  const [line] = logs.records().filter((r) => r.msg === 'session ended, but a clean-up step failed');
  assert.equal(line?.sid, sid.slice(0, 8), 'the session id cut to 8 characters');
  const failure = line?.failure as Record<string, unknown>;
  assert.equal(failure.name, 'Error');
  assert.equal(failure.message, 'upstream store unreachable');
  assert.equal(failure.errorCode, 'ECONNREFUSED', 'the error code is not blanked by the redaction of *.code');
  await store.close();
});

test('hooks are checked when the path is built', () => {
  const stores = createAuthStores({ store: createMemoryStore(), sealer: createSealer({ keys: [{ id: 'k1', key: randomBytes(32) }] }) });
  assert.throws(() => createSessionEnding({ sessions: stores.sessions, logger: createLogger({ level: 'silent' }), onSessionEnded: ['nope' as never] }), TypeError);
});
