/** RFC 7009 revocation and logout on a real gateway. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { login, postForm, registerClient, startAuthGateway, type AuthGateway } from './fixture.ts';

let gw: AuthGateway;
before(async () => {
  gw = await startAuthGateway({ upstreams: [{ name: 'kube', url: 'http://127.0.0.1:9/mcp' }, { name: 'docs', url: 'http://127.0.0.1:9/mcp' }] });
});
after(async () => {
  await gw.close();
});

const revokeUrl = () => `${gw.issuer}/oauth/revoke`;

describe('POST /oauth/revoke', () => {
  test('a refresh token ends its session (family, IdP tokens)', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('kube') });
    const res = await postForm(revokeUrl(), { client_id: client.clientId, token: tokens.refreshToken, token_type_hint: 'refresh_token' });
    assert.equal(res.status, 200);
    assert.equal(await gw.stores.sessions.get(tokens.sessionId), undefined);
    assert.equal(await gw.stores.idpTokens.get(tokens.sessionId), undefined);
  });

  test('an access token ends its session too (any hint, or none)', async () => {
    const client = await registerClient(gw);
    const tokens = await login(gw, client, { resource: gw.resource('docs') });
    assert.equal((await postForm(revokeUrl(), { client_id: client.clientId, token: tokens.accessToken })).status, 200);
    assert.equal(await gw.stores.sessions.get(tokens.sessionId), undefined);
  });

  test('unknown tokens and tokens of another client get 200 and change nothing', async () => {
    const owner = await registerClient(gw);
    const other = await registerClient(gw);
    const tokens = await login(gw, owner, { resource: gw.resource('kube') });
    for (const token of ['never-issued', 'a.b.c', tokens.refreshToken, tokens.accessToken]) {
      assert.equal((await postForm(revokeUrl(), { client_id: other.clientId, token })).status, 200);
    }
    assert.ok(await gw.stores.sessions.get(tokens.sessionId), 'another client cannot end the session');
  });

  test('client authentication and the token parameter are required', async () => {
    const client = await registerClient(gw);
    assert.equal((await postForm(revokeUrl(), { token: 'x' })).body.error, 'invalid_request');
    assert.equal((await postForm(revokeUrl(), { client_id: 'nobody', token: 'x' })).body.error, 'invalid_client');
    assert.equal((await postForm(revokeUrl(), { client_id: client.clientId })).body.error, 'invalid_request');
  });
});

describe('logout', () => {
  test('/oauth/logout ends the session of the bearer token only', async () => {
    const client = await registerClient(gw);
    const first = await login(gw, client, { resource: gw.resource('kube'), subject: 'carol' });
    const second = await login(gw, client, { resource: gw.resource('kube'), subject: 'carol' });
    const res = await fetch(`${gw.issuer}/oauth/logout`, { method: 'POST', headers: { authorization: `Bearer ${first.accessToken}` } });
    assert.equal(res.status, 204);
    assert.equal(await gw.stores.sessions.get(first.sessionId), undefined);
    assert.ok(await gw.stores.sessions.get(second.sessionId));
    const again = await fetch(`${gw.issuer}/oauth/logout`, { method: 'POST', headers: { authorization: `Bearer ${first.accessToken}` } });
    assert.equal(again.status, 401, 'a token of an ended session cannot log out again');
  });

  test('/oauth/logout/all ends every session of the user and no one else’s', async () => {
    const client = await registerClient(gw);
    const d1 = await login(gw, client, { resource: gw.resource('kube'), subject: 'dave' });
    const d2 = await login(gw, client, { resource: gw.resource('docs'), subject: 'dave' });
    const erin = await login(gw, client, { resource: gw.resource('kube'), subject: 'erin' });
    const res = await fetch(`${gw.issuer}/oauth/logout/all`, { method: 'POST', headers: { authorization: `Bearer ${d1.accessToken}` } });
    assert.equal(res.status, 204);
    assert.equal(await gw.stores.sessions.get(d1.sessionId), undefined);
    assert.equal(await gw.stores.sessions.get(d2.sessionId), undefined);
    assert.deepEqual(await gw.stores.sessions.listForUser('dave'), []);
    assert.ok(await gw.stores.sessions.get(erin.sessionId));
  });

  test('without a valid bearer token: 401', async () => {
    for (const authorization of [undefined, 'Bearer nope', 'Basic eDp5']) {
      const res = await fetch(`${gw.issuer}/oauth/logout`, { method: 'POST', headers: authorization ? { authorization } : {} });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    }
  });
});
