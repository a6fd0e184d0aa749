/**
 * The config file: a minimal file is enough, every problem of a bad file is listed
 * with its path in one error, secrets only by `env:`/`file:` reference, env overrides, durations.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfigFile, parseConfig } from '../../src/config/load.ts';
import type { SecretSources } from '../../src/config/secrets.ts';

/** A real signing key: the schema parses signing keys. */
const SIGNING_PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

/** Secret sources with no process state: an explicit environment and in-memory files. */
function sources(env: Record<string, string> = {}, files: Record<string, string> = {}): SecretSources {
  return {
    env,
    readFile(path) {
      if (!(path in files)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return files[path]!;
    },
  };
}

/** Parses and returns the ConfigError's problems (fails if the text is valid). */
function problemsOf(text: string, from: SecretSources = sources()): string[] {
  try {
    parseConfig(text, 'mcpgate.yaml', from);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.match(error.message, /^invalid configuration in mcpgate\.yaml:/);
    for (const problem of error.problems) assert.ok(error.message.includes(problem), 'the message lists every problem');
    return error.problems;
  }
  assert.fail('the config was accepted');
}

const MINIMAL = `
server:
  publicUrl: "https://mcp.example.com"
upstreams:
  - name: kube
    url: "http://kube-mcp.tools.svc:8080/mcp"
`;

describe('config', () => {
  it('accepts a minimal file (server and upstreams only) and fills the defaults', () => {
    const config = parseConfig(MINIMAL, 'mcpgate.yaml', sources());
    assert.equal(config.server.publicUrl, 'https://mcp.example.com');
    assert.equal(config.server.listen, '127.0.0.1:8080');
    assert.equal(config.server.devMode, false);
    assert.deepEqual(config.server.trustedProxies, []);
    assert.deepEqual(config.server.allowedOrigins, []);
    assert.equal(config.server.maxBodyBytes, 4194304);
    assert.equal(config.server.drainTimeout, 25_000);
    assert.equal(config.server.upstreamTimeout, 30_000);
    assert.equal(config.idp, undefined, 'no idp: section is needed without login');
    assert.equal(config.storage.kind, 'memory');
    assert.deepEqual(config.upstreams, [{ name: 'kube', url: 'http://kube-mcp.tools.svc:8080/mcp', auth: { mode: 'none' } }]);
  });

  it('accepts the documented example keys', () => {
    const config = parseConfig(
      `
server:
  listen: "0.0.0.0:8080"
  publicUrl: "https://mcp.example.com"
  devMode: false
  trustedProxies: ["10.0.0.0/8", "fd00::/8", "192.0.2.1"]
  allowedOrigins: ["https://claude.ai"]
  maxBodyBytes: 4194304
upstreams:
  - name: search
    url: "https://search.internal/mcp"
    auth: { mode: static, header: "Authorization", value: "env:SEARCH_TOKEN" }
`,
      'mcpgate.yaml',
      sources({ SEARCH_TOKEN: 'tok' }),
    );
    assert.deepEqual(config.server.trustedProxies, ['10.0.0.0/8', 'fd00::/8', '192.0.2.1']);
    assert.deepEqual(config.upstreams[0]!.auth, { mode: 'static', header: 'Authorization', value: 'tok' });
  });

  it('lists every problem of a bad file, each with its path, in one error', () => {
    const problems = problemsOf(`
server:
  listen: "nowhere"
  publicUrl: "http://mcp.example.com"
  maxBodyBytes: -1
  trustedProxies: ["10.0.0.0/33", "not-an-ip"]
  drainTimeout: "soon"
  colour: blue
upstreams:
  - name: "Bad Name"
    url: "ftp://example.com/mcp"
  - name: github
    url: "https://api.githubcopilot.com/mcp/"
    auth: { mode: oauth }
  - name: github
    url: "https://example.com/mcp"
    auth: { mode: magic }
`);
    const expected: Array<[string, RegExp]> = [
      ['server.listen', /host:port/],
      ['server.publicUrl', /https/],
      ['server.maxBodyBytes', /./],
      ['server.trustedProxies[0]', /CIDR/],
      ['server.trustedProxies[1]', /CIDR/],
      ['server.drainTimeout', /duration/],
      ['server', /colour/],
      ['upstreams[0].name', /lowercase/],
      ['upstreams[0].url', /http/],
      ['upstreams[1].auth.mode', /idp/],
      ['upstreams[2].auth.mode', /./],
    ];
    for (const [path, message] of expected) {
      assert.ok(
        problems.some((p) => p.startsWith(`${path}: `) && message.test(p)),
        `a problem at ${path} matching ${message}; got:\n${problems.join('\n')}`,
      );
    }
  });

  it('names duplicate upstreams, sections of the wrong type, a missing section, and a YAML syntax error', () => {
    const duplicate = problemsOf(`
server: { publicUrl: "https://mcp.example.com" }
upstreams:
  - { name: a, url: "https://a.example/mcp" }
  - { name: a, url: "https://b.example/mcp" }
`);
    assert.ok(duplicate.some((p) => p.startsWith('upstreams[1].name: ') && /duplicate/.test(p)), duplicate.join('\n'));

    const empty = problemsOf('server: { publicUrl: "https://mcp.example.com" }\nupstreams: []\n');
    assert.ok(empty.some((p) => p.startsWith('upstreams: ')), empty.join('\n'));

    const missing = problemsOf('upstreams: [{ name: a, url: "https://a.example/mcp" }]\n');
    assert.ok(missing.some((p) => p.startsWith('server: ')), missing.join('\n'));

    const wrongTypes = problemsOf('server: 5\nupstreams: { a: 1 }\nstorage: { kind: valkey, encryptionKeys: [7] }\n');
    for (const path of ['server', 'upstreams', 'storage.encryptionKeys[0]', 'storage.valkey']) {
      assert.ok(wrongTypes.some((p) => p.startsWith(`${path}: `)), `${path}: ${wrongTypes.join('\n')}`);
    }

    const syntax = problemsOf('server:\n  publicUrl: "https://x\n  listen: [\n');
    assert.ok(syntax.length > 0 && syntax.every((p) => p.startsWith('yaml: ')), syntax.join('\n'));
  });

  it('refuses inline secrets, and never repeats them in the error', () => {
    const problems = problemsOf(`
server: { publicUrl: "https://mcp.example.com" }
upstreams:
  - name: search
    url: "https://search.internal/mcp"
    auth: { mode: static, value: "hunter2-inline-secret" }
`);
    assert.ok(problems.some((p) => p.startsWith('upstreams[0].auth.value: ') && /env:NAME or file:/.test(p)), problems.join('\n'));
    assert.ok(!problems.join('\n').includes('hunter2'), 'the inline secret is not echoed');
  });

  it('resolves env: and file: references, and names the missing ones without their values', () => {
    const text = `
server: { publicUrl: "https://mcp.example.com" }
upstreams:
  - { name: a, url: "https://a.example/mcp", auth: { mode: static, value: "env:A_TOKEN" } }
  - { name: b, url: "https://b.example/mcp", auth: { mode: static, header: X-Api-Key, value: "file:/run/secrets/b" } }
`;
    const config = parseConfig(text, 'mcpgate.yaml', sources({ A_TOKEN: 'from-env' }, { '/run/secrets/b': 'from-file\n' }));
    assert.equal(config.upstreams[0]!.auth.mode === 'static' && config.upstreams[0]!.auth.value, 'from-env');
    assert.equal(config.upstreams[1]!.auth.mode === 'static' && config.upstreams[1]!.auth.value, 'from-file', 'one trailing newline is dropped');

    const problems = problemsOf(text, sources({}, {}));
    assert.ok(problems.some((p) => p.startsWith('upstreams[0].auth.value: ') && /A_TOKEN is not set/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('upstreams[1].auth.value: ') && /cannot read \/run\/secrets\/b \(ENOENT\)/.test(p)), problems.join('\n'));

    const emptyFile = problemsOf(text, sources({ A_TOKEN: 'x' }, { '/run/secrets/b': '\n' }));
    assert.ok(emptyFile.some((p) => p.startsWith('upstreams[1].auth.value: ') && /empty/.test(p)), emptyFile.join('\n'));
  });

  it('applies the environment overrides over the file', () => {
    const config = parseConfig(
      MINIMAL,
      'mcpgate.yaml',
      sources({ MCPGATE_LISTEN: '0.0.0.0:9090', MCPGATE_PUBLIC_URL: 'https://gw.example.org', MCPGATE_LOG_LEVEL: 'debug' }),
    );
    assert.equal(config.server.listen, '0.0.0.0:9090');
    assert.equal(config.server.publicUrl, 'https://gw.example.org');
    assert.equal(config.server.logLevel, 'debug');

    // An override is validated like the file itself, and a problem it causes names the variable.
    const problems = problemsOf(MINIMAL, sources({ MCPGATE_PUBLIC_URL: 'http://gw.example.org', MCPGATE_LOG_LEVEL: 'loud' }));
    assert.ok(problems.some((p) => p.startsWith('server.publicUrl (from the environment variable MCPGATE_PUBLIC_URL, not the file): ')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('server.logLevel (from the environment variable MCPGATE_LOG_LEVEL, not the file): ')), problems.join('\n'));
  });

  it('reads durations as strings with units, in milliseconds', () => {
    const withDurations = (server: string, auth = '{ mode: none }') => `
server: { publicUrl: "https://mcp.example.com", ${server} }
upstreams: [{ name: a, url: "https://a.example/mcp", auth: ${auth} }]
`;
    const config = parseConfig(withDurations('drainTimeout: "90s", upstreamTimeout: "500ms", sseKeepAlive: "1m"'), 'x', sources());
    assert.equal(config.server.drainTimeout, 90_000);
    assert.equal(config.server.upstreamTimeout, 500);
    assert.equal(config.server.sseKeepAlive, 60_000);

    const ttl = parseConfig(
      `${withDurations('devMode: true')}authServer: { accessTokenTtl: "10m", refreshTokenTtl: "30d" }\nidp: { issuer: "http://idp.localhost", clientId: gw }\n`,
      'x',
      sources(),
    );
    assert.equal(ttl.authServer.accessTokenTtl, 600_000);
    assert.equal(ttl.authServer.refreshTokenTtl, 30 * 86_400_000);

    for (const bad of ['"10 minutes"', '"10"', '"-5s"', '10']) {
      const problems = problemsOf(withDurations(`drainTimeout: ${bad}`));
      assert.ok(problems.some((p) => p.startsWith('server.drainTimeout: ')), `${bad}: ${problems.join('\n')}`);
    }
  });

  describe('storage.valkey', () => {
    const KEY = Buffer.alloc(32, 7).toString('base64');
    const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n';
    const valkeyConfig = (valkey: string) =>
      `${MINIMAL}storage:\n  kind: valkey\n  valkey: ${valkey}\n  encryptionKeys: [{ id: k1, key: "env:STORE_KEY" }]\n`;
    const env = { STORE_KEY: KEY, VALKEY_PASSWORD: 'pw', SENTINEL_PASSWORD: 'spw' };
    const files = { '/tls/ca.crt': PEM_CERT, '/tls/client.crt': PEM_CERT, '/tls/client.key': PEM_KEY };
    const parse = (valkey: string) => parseConfig(valkeyConfig(valkey), 'mcpgate.yaml', sources(env, files)).storage.valkey;
    const problems = (valkey: string) => problemsOf(valkeyConfig(valkey), sources(env, files));
    const has = (list: string[], path: string, message: RegExp) =>
      assert.ok(list.some((p) => p.startsWith(`${path}: `) && message.test(p)), `${path} ${message}:\n${list.join('\n')}`);

    it('one server by url, a Sentinel group, or cluster seed nodes; TLS material resolved from its references', () => {
      assert.deepEqual(parse('{ url: "redis://valkey:6379/0", password: "env:VALKEY_PASSWORD" }'), {
        url: 'redis://valkey:6379/0',
        password: 'pw',
        keyPrefix: 'mcpgate:',
      });
      assert.deepEqual(
        parse('{ sentinel: { masterName: mymaster, nodes: ["s0.sentinel:26379", "[fd00::1]:26379"], password: "env:SENTINEL_PASSWORD" }, password: "env:VALKEY_PASSWORD" }'),
        { sentinel: { masterName: 'mymaster', nodes: ['s0.sentinel:26379', '[fd00::1]:26379'], password: 'spw' }, password: 'pw', keyPrefix: 'mcpgate:' },
      );
      assert.deepEqual(parse('{ cluster: { nodes: ["valkey-0:6379", "10.0.0.2:6379"] }, keyPrefix: "gw:" }'), {
        cluster: { nodes: ['valkey-0:6379', '10.0.0.2:6379'] },
        keyPrefix: 'gw:',
      });
      assert.deepEqual(
        parse('{ cluster: { nodes: ["valkey-0:6379"] }, tls: { ca: "file:/tls/ca.crt", cert: "file:/tls/client.crt", key: "file:/tls/client.key", serverName: "valkey.internal" } }')?.tls,
        // One trailing newline is dropped, as for every file: reference; PEM does not need it.
        { ca: PEM_CERT.trimEnd(), cert: PEM_CERT.trimEnd(), key: PEM_KEY.trimEnd(), serverName: 'valkey.internal' },
      );
      assert.deepEqual(parse('{ url: "rediss://valkey:6380/1", tls: { ca: "file:/tls/ca.crt" } }')?.tls, { ca: PEM_CERT.trimEnd() });
    });

    it('exactly one of url, sentinel and cluster', () => {
      has(problems('{ keyPrefix: "x:" }'), 'storage.valkey', /needs one of url \(one server\), sentinel .* or cluster/);
      has(problems('{ url: "redis://valkey:6379", cluster: { nodes: ["valkey-0:6379"] } }'), 'storage.valkey', /set exactly one \(found url, cluster\)/);
      has(problems('{ sentinel: { masterName: m, nodes: ["s:26379"] }, cluster: { nodes: ["c:6379"] } }'), 'storage.valkey', /found sentinel, cluster/);
    });

    it('every bad field is named with its path, all in one pass', () => {
      const list = problems(
        '{ sentinel: { masterName: "", nodes: ["sentinel-0", "s:99999"], password: "hunter2" }, keyPrefix: "a{b}:", tls: { ca: "file:/tls/client.key", cert: "file:/tls/client.crt" } }',
      );
      has(list, 'storage.valkey.sentinel.masterName', /at least 1|too small|>=1/i);
      has(list, 'storage.valkey.sentinel.nodes[0]', /must be host:port/);
      has(list, 'storage.valkey.sentinel.nodes[1]', /must be host:port/);
      has(list, 'storage.valkey.sentinel.password', /secret reference/);
      has(list, 'storage.valkey.keyPrefix', /must not contain \{ or \}/);
      has(list, 'storage.valkey.tls.ca', /must hold a PEM CA certificate/);
      has(list, 'storage.valkey.tls', /cert and key go together/);
      assert.ok(!list.join('\n').includes('PRIVATE KEY'), 'a secret file’s content is never echoed');

      has(problems('{ sentinel: { masterName: m, nodes: [] } }'), 'storage.valkey.sentinel.nodes', /at least one Sentinel/);
      has(problems('{ cluster: { nodes: [] } }'), 'storage.valkey.cluster.nodes', /at least one seed node/);
      has(problems('{ cluster: { nodes: ["c:6379"] }, tls: { key: "file:/tls/missing.key" } }'), 'storage.valkey.tls.key', /cannot read \/tls\/missing.key/);
      has(problems('{ url: "redis://valkey:6379/0", tls: {} }'), 'storage.valkey.url', /use rediss:\/\//);
      for (const url of ['http://valkey:6379', 'redis://valkey:6379/db', 'redis:///0', 'redis://valkey:6379/0?x=1']) {
        has(problems(`{ url: "${url}" }`), 'storage.valkey.url', /must be redis:\/\/host:port\/db/);
      }
    });
  });

  it('reports an unreadable config file as a problem, not a crash', () => {
    assert.throws(
      () => loadConfigFile('/nonexistent/mcpgate.yaml', sources()),
      (error: unknown) => error instanceof ConfigError && error.problems.some((p) => /cannot read \(ENOENT\)/.test(p)),
    );
  });

  it('reads authServer.registration.redirectSchemes: lower case, never a dangerous scheme in allow, nothing both allowed and denied', () => {
    const defaults = parseConfig(MINIMAL, 'mcpgate.yaml', sources());
    assert.deepEqual(defaults.authServer.registration.redirectSchemes, { deny: [] });

    const config = parseConfig(
      `${MINIMAL}
authServer:
  registration:
    redirectSchemes: { allow: ["Cursor", "vscode-insiders"], deny: ["windsurf"] }
`,
      'mcpgate.yaml',
      sources(),
    );
    assert.deepEqual(config.authServer.registration.redirectSchemes, { allow: ['cursor', 'vscode-insiders'], deny: ['windsurf'] });

    const problems = problemsOf(`${MINIMAL}
authServer:
  registration:
    redirectSchemes: { allow: ["javascript", "https", "cursor:", "cursor"], deny: ["cursor"], extra: true }
`);
    const expect: Array<[string, RegExp]> = [
      ['authServer.registration.redirectSchemes.allow[0]', /never accepted as a redirect scheme/],
      ['authServer.registration.redirectSchemes.allow[1]', /always accepted/],
      ['authServer.registration.redirectSchemes.allow[2]', /without the colon/],
      ['authServer.registration.redirectSchemes.deny', /cursor cannot be both allowed and denied/],
      ['authServer.registration.redirectSchemes', /extra/],
    ];
    for (const [path, message] of expect) {
      assert.ok(problems.some((p) => p.startsWith(`${path}: `) && message.test(p)), `${path} ${message}:\n${problems.join('\n')}`);
    }
  });
});

describe('what cannot work or would leak is flagged by the schema (issue 10, items 4, 7, 9)', () => {
  const file = (upstreams: string, server = '') => `
server:
  publicUrl: "https://mcp.example.com"
${server}idp: { issuer: "https://login.example.com", clientId: gw }
authServer: { signingKeys: ["env:KEY"] }
upstreams:
${upstreams}`;
  const from = sources({ KEY: SIGNING_PEM, SECRET: 's' });

  it('a preconfigured upstream client needs its issuer (https outside devMode); a secret needs a client id', () => {
    const problems = problemsOf(
      file(`  - name: saas
    url: "https://saas.example.com/mcp"
    auth: { mode: oauth, clientId: gw, clientSecret: "env:SECRET" }
  - name: plain
    url: "https://plain.example.com/mcp"
    auth: { mode: oauth, clientId: gw, issuer: "http://as.example.com" }
  - name: orphan
    url: "https://orphan.example.com/mcp"
    auth: { mode: oauth, clientSecret: "env:SECRET" }
`),
      from,
    );
    assert.ok(problems.some((p) => /^upstreams\[0\]\.auth\.issuer: is required with clientId/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => /^upstreams\[1\]\.auth\.issuer: must be an https URL/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => /^upstreams\[2\]\.auth\.clientId: is required with clientSecret/.test(p)), problems.join('\n'));
    const ok = parseConfig(file(`  - name: saas
    url: "https://saas.example.com/mcp"
    auth: { mode: oauth, clientId: gw, clientSecret: "env:SECRET", issuer: "https://as.saas.example.com" }
`), 'x', from);
    assert.equal((ok.upstreams[0]!.auth as { issuer?: string }).issuer, 'https://as.saas.example.com');
  });

  it('http endpoints the gateway fetches server-side are refused outside devMode', () => {
    const problems = problemsOf(
      file(`  - name: exchange
    url: "http://internal.svc/mcp"
    auth: { mode: token_exchange, tokenEndpoint: "http://sts.internal/token", audience: api, clientId: gw }
  - name: saas
    url: "http://saas.internal/mcp"
    auth: { mode: oauth }
`),
      from,
    );
    assert.ok(problems.some((p) => /^upstreams\[0\]\.auth\.tokenEndpoint: must be an https URL/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => /^upstreams\[1\]\.url: must be an https URL/.test(p)), problems.join('\n'));
    assert.ok(!problems.some((p) => p.startsWith('upstreams[0].url')), 'a proxied upstream may be http (only mode oauth discovers from it)');
  });

  it('server.allowHosts takes host names and IP addresses; server.rateLimits takes positive limits per known route', () => {
    const config = parseConfig(file(`  - name: kube
    url: "https://kube.example.com/mcp"
`, `  allowHosts: ["sts.internal", "10.0.0.7", "[fd00::1]"]
  rateLimits: { token: { perIp: 1000 } }
`), 'x', from);
    assert.deepEqual(config.server.allowHosts, ['sts.internal', '10.0.0.7', '[fd00::1]']);
    assert.deepEqual(config.server.rateLimits, { token: { perIp: 1000 } });
    const problems = problemsOf(file(`  - name: kube
    url: "https://kube.example.com/mcp"
`, `  allowHosts: ["https://sts.internal:8443"]
  rateLimits: { token: { perIp: 0 }, tokn: { perIp: 1 } }
`), from);
    assert.ok(problems.some((p) => /^server\.allowHosts\[0\]: must be a host name/.test(p)), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('server.rateLimits.token.perIp')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('server.rateLimits') && /tokn/.test(p)), problems.join('\n'));
  });
});
