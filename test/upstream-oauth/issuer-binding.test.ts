/**
 * Issue 10, item 7: a preconfigured upstream client is bound to its configured issuer. The
 * attack: a compromised upstream's resource metadata (RFC 9728) names an attacker's authorization
 * server. Real peers: the legitimate upstream's authorization server (`oidc-provider`, which issued
 * the preconfigured client), and the attacker's — a second `oidc-provider` with its own MCP
 * server, which plays the compromised upstream (its metadata names the attacker's server). The
 * attacker's server records every request it receives: it must never see our client id or secret.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BadGateway } from '../../src/http/errors.ts';
import { createGuardedFetch } from '../../src/net/guarded-fetch.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createGatewayMetrics, createRegistry } from '../../src/observability/metrics.ts';
import { createMemoryStore } from '../../src/store/memory.ts';
import { createSealer } from '../../src/store/sealed.ts';
import { createClientRegistration } from '../../src/upstream-oauth/client-registration.ts';
import { createDiscovery } from '../../src/upstream-oauth/discovery.ts';
import { createUpstreamFlows, type OAuthUpstream } from '../../src/upstream-oauth/flow.ts';
import { createUpstreamStores } from '../../src/upstream-oauth/stores.ts';
import { captureLogs } from '../support/logs.ts';
import { metricValue } from '../support/metrics.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { sessionOf, startHarness, type Harness } from './harness.ts';

let legit: UpstreamWithAs;
let attacker: UpstreamWithAs;

before(async () => {
  legit = await startUpstreamWithAs({ registration: 'preconfigured' });
  attacker = await startUpstreamWithAs({ registration: 'dcr' });
});
after(async () => {
  await legit?.close();
  await attacker?.close();
});

/** True when a request the attacker's server received carries our client id or secret anywhere. */
function leaked(): boolean {
  const { clientId, clientSecret } = legit.client!;
  return attacker.asRequests.some((r) => {
    const basic = r.authorization?.startsWith('Basic ') ? Buffer.from(r.authorization.slice(6), 'base64').toString('utf8') : '';
    const seen = decodeURIComponent(`${r.url} ${r.body ?? ''} ${r.authorization ?? ''} ${basic}`);
    return seen.includes(clientId) || seen.includes(clientSecret);
  });
}

describe('a preconfigured client goes only to its configured issuer', () => {
  test('discovery naming another server is refused: clear error, a log line, a metric, nothing sent there', async () => {
    const logs = captureLogs();
    const registry = createRegistry();
    const metrics = createGatewayMetrics(registry);
    const fetch = createGuardedFetch({ allowHttp: true, allowHosts: ['127.0.0.1'] });
    const stores = createUpstreamStores({ store: createMemoryStore(), sealer: createSealer({ keys: [{ id: 't', key: new Uint8Array(32).fill(1) }] }) });
    const publicUrl = 'http://127.0.0.1:9';
    const flows = createUpstreamFlows({
      stores,
      discovery: createDiscovery({ fetch, allowHttp: true }),
      registration: createClientRegistration({ fetch, stores, publicUrl }),
      fetch,
      publicUrl,
      metrics,
      logger: createLogger({ level: 'info', destination: logs.destination }),
    });
    // The compromised upstream: its resource metadata names the attacker's authorization server.
    const upstream: OAuthUpstream = { name: 'saas', url: attacker.mcpUrl, scopes: [], ...legit.client!, issuer: legit.issuer };
    try {
      await assert.rejects(flows.startFlow({ principal: { subject: 'alice', sessionId: 'sid-1' }, upstream }), (error: unknown) => {
        assert.ok(error instanceof BadGateway, String(error));
        assert.match(error.message, /upstream "saas" .* names an authorization server \(127\.0\.0\.1:\d+\) other than the one its client is configured for/);
        return true;
      });
      assert.equal(attacker.asRequests.length, 0, 'the attacker server was not even asked for its metadata');
      assert.equal(leaked(), false);
      const line = logs.records().find((r) => r.upstream === 'saas' && String(r.msg).includes('configured issuer'));
      assert.ok(line, logs.text());
      assert.equal(line.configured, legit.issuer);
      assert.deepEqual(line.named, [attacker.issuer]);
      assert.ok(!logs.text().includes(legit.client!.clientSecret), 'the secret is not logged');
      assert.equal(metricValue(registry.render(), 'mcpgate_auth_flows_total', { upstream: 'saas', outcome: 'issuer_refused' }), 1);
    } finally {
      await fetch.close();
    }
  });

  describe('through the gateway path', () => {
    let h: Harness;
    before(async () => {
      h = await startHarness({
        registration: 'dcr',
        extraUpstreams: [{ name: 'saas', url: attacker.mcpUrl, ...legit.client!, issuer: legit.issuer }],
      });
    });
    after(() => h?.close());

    test('the agent gets a clear error; the attacker server never sees our client id or secret', async () => {
      const user = sessionOf('alice');
      const res = await h.rpc(user, 'tools/call', { name: 'list_notes', arguments: {} }, 'saas');
      const text = res.body;
      // Without the binding the agent gets a connect link: the user follows it, as a user would.
      const link = /https?:\/\/[^"\s\\]+\/oauth\/upstream\/start\?flow=[A-Za-z0-9_-]+/.exec(text)?.[0];
      if (link) await h.browser(user).open(link);
      assert.equal(leaked(), false, 'the attacker server received our client id or secret');
      assert.equal(attacker.asRequests.length, 0);
      assert.match(text, /other than the one its client is configured for/, text);
    });
  });
});
