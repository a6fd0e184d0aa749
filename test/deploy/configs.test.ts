// Every config deploy/ ships passes `mcpgate check --no-secrets` (the command deploy/README.md
// gives, run as written), and runs in the base Deployment as it is: each `env:` it names is set by
// the container and each `file:` is mounted. Also what deploy/README.md promises around it: the
// Secrets it lists are the ones the manifests use (and as many as kustomization.yaml says), its
// `images:` override renders, and its test command exists. Every config with login also states its
// session and registration bounds and, when registration is open, why and how to close it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import type { SecretSources } from '../../src/config/secrets.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const deployDir = join(repo, 'deploy');
const readme = readFileSync(join(deployDir, 'README.md'), 'utf8');

/** No secrets and no environment overrides: the file alone, as it will be applied. */
const NOTHING: SecretSources = {
  env: {},
  readFile: () => {
    throw new Error('--no-secrets reads no file');
  },
};

interface K8s {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}
interface Container {
  name: string;
  image: string;
  env?: { name: string; valueFrom?: { secretKeyRef?: { name: string } } }[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Volume {
  name: string;
  secret?: { secretName: string; items?: { path: string }[] };
  configMap?: { name: string; items?: { path: string }[] };
  projected?: { sources: { secret?: { name: string; items?: { path: string }[] }; configMap?: { name: string; items?: { path: string }[] } }[] };
}
interface PodSpec {
  containers: Container[];
  volumes?: Volume[];
}

function run(command: string, args: string[], cwd = repo): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MCPGATE_CONFIG: '' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function kustomize(dir: string): Promise<K8s[]> {
  return new Promise((resolve, reject) =>
    execFile('kubectl', ['kustomize', dir], { timeout: 30_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error((error as NodeJS.ErrnoException).code === 'ENOENT' ? 'kubectl is not on PATH; these tests need it' : `kubectl kustomize ${dir}: ${stderr || error.message}`));
        return;
      }
      resolve(parseAllDocuments(stdout).map((d) => d.toJS() as K8s).filter((o) => o !== null));
    }),
  );
}
const renders = { base: kustomize(join(deployDir, 'kubernetes', 'base')), production: kustomize(join(deployDir, 'kubernetes', 'overlays', 'production')) };
for (const r of Object.values(renders)) r.catch(() => {});

/** Every YAML file under deploy/ that is an mcpgate config (it has `upstreams:`). */
function shippedConfigs(): string[] {
  return readdirSync(deployDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .filter((file) => {
      const docs = parseAllDocuments(readFileSync(file, 'utf8'));
      return docs.length === 1 && typeof docs[0]!.toJS() === 'object' && docs[0]!.toJS() !== null && 'upstreams' in (docs[0]!.toJS() as object);
    })
    .sort();
}

function gatewayPod(objs: K8s[]): { pod: PodSpec; container: Container } {
  const dep = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'mcpgate');
  assert.ok(dep, 'the mcpgate Deployment');
  const pod = (dep.spec as { template: { spec: PodSpec } }).template.spec;
  const container = pod.containers.find((c) => c.name === 'mcpgate');
  assert.ok(container);
  return { pod, container };
}

/** Whether `path` is inside a mount of the container, listed by its volume when the volume lists items. */
function mounted(path: string, { pod, container }: { pod: PodSpec; container: Container }): boolean {
  const mount = (container.volumeMounts ?? []).filter((m) => path.startsWith(`${m.mountPath}/`)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const volume = mount && pod.volumes?.find((v) => v.name === mount.name);
  if (!mount || !volume) return false;
  const rel = path.slice(mount.mountPath.length + 1);
  const sources = volume.projected ? volume.projected.sources.map((s) => s.secret ?? s.configMap) : [volume.secret ?? volume.configMap];
  return sources.some((s) => s !== undefined && (s.items === undefined || s.items.some((i) => i.path === rel)));
}

/** Every `env:`/`file:` reference anywhere in a config. */
function references(node: unknown): string[] {
  if (typeof node === 'string') return /^(env:[A-Za-z_][A-Za-z0-9_]*|file:\/\S+)$/.test(node) ? [node] : [];
  if (Array.isArray(node)) return node.flatMap(references);
  if (node !== null && typeof node === 'object') return Object.values(node).flatMap(references);
  return [];
}

test('every config under deploy/ passes the shape check (mcpgate check --no-secrets)', async () => {
  const files = shippedConfigs();
  const names = files.map((f) => relative(deployDir, f));
  for (const expected of ['kubernetes/base/mcpgate.yaml', 'examples/keycloak.yaml', 'examples/dex.yaml', 'examples/entra-id.yaml']) {
    assert.ok(names.includes(expected), `${expected} is found among ${names.join(', ')}`);
  }
  for (const file of files) {
    assert.doesNotThrow(() => parseConfig(readFileSync(file, 'utf8'), relative(repo, file), NOTHING, { resolveSecrets: false }), relative(repo, file));
  }
  // And what the overlays actually apply (the ConfigMap they render).
  for (const [name, render] of Object.entries(renders)) {
    for (const cm of (await render).filter((o) => o.kind === 'ConfigMap' && o.data?.['mcpgate.yaml'])) {
      assert.doesNotThrow(() => parseConfig(cm.data!['mcpgate.yaml']!, `${name}: ConfigMap ${cm.metadata.name}`, NOTHING, { resolveSecrets: false }));
    }
  }
});

test('deploy/README.md: its check command, run as written, passes', async () => {
  const command = 'npx mcpgate check --no-secrets --config deploy/kubernetes/base/mcpgate.yaml';
  assert.ok(readme.includes(command), 'deploy/README.md gives the command');
  const [npx, ...args] = command.split(' ');
  const result = await run(npx!, args);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^deploy\/kubernetes\/base\/mcpgate\.yaml: ok \(3 upstreams; secrets not read/);
  // Without --no-secrets, the same file needs what only the pod has: the check says which.
  const full = await run(npx!, args.filter((a) => a !== '--no-secrets'));
  assert.equal(full.code, 1);
  assert.match(full.stderr, /MCPGATE_IDP_CLIENT_SECRET is not set|cannot read \/etc\/mcpgate\/keys\/signing\.pem/);
});

test('every shipped config with login states its session and registration bounds, and why anonymous registration is on', () => {
  const configs = shippedConfigs().filter((file) => 'idp' in (parse(readFileSync(file, 'utf8')) as object));
  assert.ok(configs.length >= 7, configs.join(', '));
  for (const file of configs) {
    const name = relative(deployDir, file);
    const text = readFileSync(file, 'utf8');
    const authServer = (parse(text) as { authServer?: Record<string, unknown> }).authServer ?? {};
    const registration = (authServer.registration ?? {}) as Record<string, unknown>;
    assert.ok(authServer.sessionMaxLifetime !== undefined && authServer.maxSessionsPerUser !== undefined, `${name}: sessionMaxLifetime and maxSessionsPerUser`);
    assert.ok(registration.unusedTtl !== undefined && registration.maxUnused !== undefined, `${name}: registration.unusedTtl and maxUnused`);
    if (registration.initialAccessToken === null) {
      // Open registration is a choice the file explains, with the way to require a token.
      assert.match(text, /# Anonymous registration stays on: [^]*initialAccessToken: "env:MCPGATE_REGISTRATION_TOKEN"/, `${name}: says why registration is open and how to close it`);
    }
  }
});

test('every example runs in the base Deployment: its env: variables are set, its file: paths are mounted', async () => {
  const gw = gatewayPod(await renders.base);
  const env = new Set((gw.container.env ?? []).map((e) => e.name));
  const examples = readdirSync(join(deployDir, 'examples')).filter((f) => /\.ya?ml$/.test(f));
  assert.ok(examples.length >= 6);
  for (const f of examples) {
    for (const ref of references(parse(readFileSync(join(deployDir, 'examples', f), 'utf8')))) {
      if (ref.startsWith('env:')) assert.ok(env.has(ref.slice(4)), `examples/${f}: ${ref} is set by the Deployment`);
      else assert.ok(mounted(ref.slice(5), gw), `examples/${f}: ${ref} is mounted by the Deployment`);
    }
  }
});

test('the Secrets: kustomization.yaml, deploy/README.md and the manifests name the same ones', async () => {
  const objs = await renders.base;
  const { pod, container } = gatewayPod(objs);
  const used = new Set<string>();
  for (const e of container.env ?? []) if (e.valueFrom?.secretKeyRef) used.add(e.valueFrom.secretKeyRef.name);
  for (const v of pod.volumes ?? []) {
    if (v.secret) used.add(v.secret.secretName);
    for (const s of v.projected?.sources ?? []) if (s.secret) used.add(s.secret.name);
  }
  for (const ingress of objs.filter((o) => o.kind === 'Ingress')) {
    for (const t of ((ingress.spec as { tls?: { secretName: string }[] }).tls ?? [])) used.add(t.secretName);
  }
  const words = ['zero', 'one', 'two', 'three', 'four', 'five', 'six'];
  const kustomization = readFileSync(join(deployDir, 'kubernetes', 'base', 'kustomization.yaml'), 'utf8');
  const said = /\b(\w+) Secrets\b/.exec(kustomization)?.[1];
  assert.equal(said, words[used.size], `kustomization.yaml says "${said} Secrets"; the base uses ${[...used].join(', ')}`);
  for (const name of used) assert.ok(kustomization.includes(name), `kustomization.yaml names ${name}`);
  assert.ok(readme.includes(`these ${words[used.size]} Secrets`), `deploy/README.md says "these ${words[used.size]} Secrets"`);
  const table = [...readme.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]!);
  assert.deepEqual(new Set(table.filter((n) => used.has(n) || /^(mcpgate|valkey)-/.test(n))), used, 'the README table lists exactly the Secrets used');
});

test('deploy/README.md: its images: override renders with kubectl alone', async () => {
  const block = /```yaml\n(images:\n[\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'deploy/README.md has an images: block');
  assert.doesNotMatch(readme, /kustomize edit/, 'no command that needs a separate kustomize binary');
  const dir = mkdtempSync(join(tmpdir(), 'mcpgate-overlay-'));
  try {
    // kustomize takes a base only by a relative path.
    writeFileSync(join(dir, 'kustomization.yaml'), `resources:\n  - ${relative(dir, join(deployDir, 'kubernetes', 'overlays', 'production'))}\n${block.replace(/\s+#.*$/gm, '')}`);
    const { container } = gatewayPod(await kustomize(dir));
    const entry = (parse(block) as { images: { newName: string; newTag: string }[] }).images[0]!;
    assert.equal(container.image, `${entry.newName}:${entry.newTag}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('deploy/README.md: its test command exists', () => {
  assert.match(readme, /^npm run test:deploy$/m);
  const scripts = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.match(scripts['test:deploy'] ?? '', /test\/deploy\/\*\.test\.ts/);
  assert.doesNotMatch(readme, /node --test test\/deploy\b(?!\/)/, 'no command that fails with "Cannot find module"');
});
