// What an operator checks before applying deploy/: the rendered manifests
// (kubectl kustomize, the same renderer `kubectl apply -k` uses), the config
// they ship, the per-IdP examples and the Dockerfile. Nothing here needs a
// cluster or Docker, so it runs in CI on every change to deploy/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const deployDir = join(repo, 'deploy');
const kube = join(deployDir, 'kubernetes');

// The gateway's drain deadline on SIGTERM (streams finish within it).
const DRAIN_SECONDS = 25;
// Secret-bearing config fields: their values must be references, never literals.
const SECRET_FIELDS = new Set(['clientSecret', 'password', 'value', 'key', 'initialAccessToken']);
const SECRET_REF = /^(env:[A-Za-z_][A-Za-z0-9_]*|file:\/\S+)$/;

// ---- minimal shapes of what the assertions read -----------------------------

interface Meta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface K8s {
  apiVersion: string;
  kind: string;
  metadata: Meta;
  [field: string]: unknown;
}
interface Probe { httpGet?: { path: string; port: string | number }; tcpSocket?: { port: string | number } }
interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }
interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  volumeMounts?: { name: string; mountPath: string }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] }; sleep?: { seconds: number } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type: string };
  };
}
interface KeyToPath { key: string; path: string }
interface Volume {
  name: string;
  emptyDir?: object;
  persistentVolumeClaim?: { claimName: string };
  configMap?: { name: string; items?: KeyToPath[] };
  secret?: { secretName: string; items?: KeyToPath[] };
  projected?: { sources: { configMap?: { name: string; items?: KeyToPath[] }; secret?: { name: string; items?: KeyToPath[] } }[] };
}
interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
  containers: Container[];
  volumes?: Volume[];
}
interface ClaimTemplate { metadata: Meta; spec: { accessModes?: string[]; resources?: { requests?: { storage?: string } } } }
interface Workload extends K8s {
  spec: {
    replicas?: number;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: Meta; spec: PodSpec };
    volumeClaimTemplates?: ClaimTemplate[];
  };
}
interface Service extends K8s {
  spec: { selector: Record<string, string>; ports: { name?: string; port: number; targetPort?: string | number }[] };
}
interface IngressPath { path: string; pathType: string; backend: { service: { name: string; port: { name?: string; number?: number } } } }
interface Ingress extends K8s {
  spec: { rules: { host: string; http: { paths: IngressPath[] } }[]; tls?: { secretName: string }[] };
}
interface Hpa extends K8s {
  spec: {
    scaleTargetRef: { apiVersion: string; kind: string; name: string };
    minReplicas?: number;
    maxReplicas: number;
    metrics?: { type: string; resource?: { name: string; target: { type: string; averageUtilization?: number } } }[];
  };
}
interface Pdb extends K8s { spec: { minAvailable?: number | string; maxUnavailable?: number | string; selector: { matchLabels: Record<string, string> } } }
interface NetPolRule { ports?: { port: number | string; protocol?: string }[] }
interface NetPol extends K8s {
  spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress?: NetPolRule[]; egress?: NetPolRule[] };
}
interface SecretObj extends K8s { data?: Record<string, string>; stringData?: Record<string, string> }
type Config = Record<string, unknown>;

// ---- rendering ----------------------------------------------------------------

function kustomize(dir: string): Promise<K8s[]> {
  return new Promise((resolve, reject) => {
    execFile('kubectl', ['kustomize', dir], { timeout: 15_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        // A missing kubectl must fail the suite: skipping would let broken
        // manifests through on a machine that happens to lack it.
        const why = (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? 'kubectl is not on PATH; these tests need it to render the manifests'
          : `kubectl kustomize ${relative(repo, dir)} failed: ${stderr || err.message}`;
        reject(new Error(why));
        return;
      }
      try {
        resolve(parseStream(stdout, dir));
      } catch (parseErr) {
        reject(parseErr as Error);
      }
    });
  });
}

function parseStream(text: string, where: string): K8s[] {
  const out: K8s[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${where}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8s | null;
    if (value !== null) out.push(value);
  }
  return out;
}

// Both renders start at once, at load time; each test awaits the one it needs.
const renders = {
  base: kustomize(join(kube, 'base')),
  production: kustomize(join(kube, 'overlays', 'production')),
};
// Unobserved rejections would crash the runner before the tests report them.
for (const r of Object.values(renders)) r.catch(() => {});

// ---- helpers ---------------------------------------------------------------------

function only<T extends K8s>(objs: K8s[], kind: string, name?: string): T {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `expected exactly one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as T;
}
const all = <T extends K8s>(objs: K8s[], kind: string): T[] => objs.filter((o) => o.kind === kind) as T[];

function gateway(objs: K8s[]): { dep: Workload; pod: PodSpec; c: Container } {
  const dep = only<Workload>(objs, 'Deployment', 'mcpgate');
  const pod = dep.spec.template.spec;
  const c = pod.containers.find((x) => x.name === 'mcpgate');
  assert.ok(c, 'Deployment has a container named mcpgate');
  return { dep, pod, c };
}

/** The gateway's HorizontalPodAutoscaler, if the render has one. */
function hpaOf(objs: K8s[]): Hpa | undefined {
  return all<Hpa>(objs, 'HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.kind === 'Deployment' && h.spec.scaleTargetRef.name === 'mcpgate');
}

/** The fewest gateway pods the render runs: the HPA's floor when it owns the scale, else spec.replicas. */
function minReplicas(objs: K8s[], dep: Workload): number {
  return hpaOf(objs)?.spec.minReplicas ?? dep.spec.replicas ?? 1;
}

/** Quantities such as 256Mi, 1Gi, 200mb (Valkey's own unit: 1mb = 1024*1024 bytes) in bytes. */
function bytes(quantity: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|kb|mb|gb)?$/i.exec(quantity);
  assert.ok(m, `a size: ${quantity}`);
  const unit = { ki: 1, kb: 1, mi: 2, mb: 2, gi: 3, gb: 3 }[(m[2] ?? '').toLowerCase() as 'ki'] ?? 0;
  return Number(m[1]) * 1024 ** unit;
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function containerPort(c: Container, port: string | number | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

function preStopSeconds(c: Container): number {
  const stop = c.lifecycle?.preStop;
  if (stop?.sleep) return stop.sleep.seconds;
  const cmd = stop?.exec?.command ?? [];
  const i = cmd.indexOf('sleep');
  return i >= 0 ? Number(cmd[i + 1]) : 0;
}

function configOf(objs: K8s[]): Config {
  const cms = all<K8s & { data?: Record<string, string> }>(objs, 'ConfigMap').filter((cm) => cm.data?.['mcpgate.yaml']);
  assert.equal(cms.length, 1, 'one ConfigMap carries mcpgate.yaml');
  return parse(cms[0]!.data!['mcpgate.yaml']!) as Config;
}

// Every secret-looking field anywhere in a config, with its path.
function secretFields(node: unknown, path = ''): { path: string; value: unknown }[] {
  if (Array.isArray(node)) return node.flatMap((v, i) => secretFields(v, `${path}[${i}]`));
  if (node === null || typeof node !== 'object') return [];
  return Object.entries(node).flatMap(([k, v]) => {
    const p = path ? `${path}.${k}` : k;
    const here = SECRET_FIELDS.has(k) ? [{ path: p, value: v }] : [];
    return [...here, ...secretFields(v, p)];
  });
}

function assertSecretsAreReferences(cfg: Config, where: string): void {
  const fields = secretFields(cfg);
  for (const { path, value } of fields) {
    // initialAccessToken: null is "no token required", not a literal secret.
    if (value === null && path.endsWith('initialAccessToken')) continue;
    assert.ok(typeof value === 'string' && SECRET_REF.test(value), `${where}: ${path} must be an env: or file: reference, got ${JSON.stringify(value)}`);
  }
  const keys = (cfg.authServer as { signingKeys?: unknown[] } | undefined)?.signingKeys ?? [];
  for (const k of keys) assert.match(String(k), /^file:\//, `${where}: signing keys are PEM files`);
}

// The configuration keys that are the public interface; a key outside these would be
// rejected (or silently ignored) by the gateway.
const CONFIG_KEYS: Record<string, string[]> = {
  '': ['server', 'idp', 'authServer', 'storage', 'log', 'upstreams', 'observability'],
  server: ['listen', 'publicUrl', 'devMode', 'trustedProxies', 'allowedOrigins', 'maxBodyBytes', 'allowHosts'],
  idp: ['kind', 'issuer', 'clientId', 'clientSecret', 'scopes', 'userClaim', 'authParams', 'authorizationEndpoint', 'tokenEndpoint', 'userinfoEndpoint', 'revocationEndpoint', 'tokenEndpointAuthMethod'],
  authServer: ['signingKeys', 'accessTokenTtl', 'refreshTokenTtl', 'sessionMaxLifetime', 'maxSessionsPerUser', 'registration', 'clientMetadataDocuments'],
  'authServer.registration': ['dynamic', 'initialAccessToken', 'unusedTtl', 'maxUnused', 'redirectSchemes'],
  'authServer.registration.redirectSchemes': ['allow', 'deny'],
  storage: ['kind', 'valkey', 'memory', 'encryptionKeys'],
  'storage.memory': ['maxBytes'],
  'storage.valkey': ['url', 'sentinel', 'cluster', 'tls', 'username', 'password', 'keyPrefix'],
  'storage.valkey.sentinel': ['masterName', 'nodes', 'username', 'password'],
  'storage.valkey.cluster': ['nodes'],
  'storage.valkey.tls': ['ca', 'cert', 'key', 'serverName'],
  'storage.encryptionKeys[]': ['id', 'key'],
  log: ['user'],
  observability: ['otlp'],
  'observability.otlp': ['endpoint', 'serviceName'],
  'upstreams[]': ['name', 'url', 'auth'],
  'upstreams[].auth': [
    ...['mode', 'scopes', 'challenge', 'clientId', 'clientSecret', 'header', 'value'],
    ...['tokenEndpoint', 'subjectToken', 'audience', 'resource', 'extraParams', 'expectedIssuer'],
  ],
};

function assertKnownKeys(node: unknown, where: string, path = ''): void {
  if (Array.isArray(node)) {
    for (const v of node) assertKnownKeys(v, where, `${path}[]`);
    return;
  }
  const allowed = CONFIG_KEYS[path];
  if (allowed === undefined || node === null || typeof node !== 'object') return;
  for (const [k, v] of Object.entries(node)) {
    assert.ok(allowed.includes(k), `${where}: unknown config key ${path ? `${path}.` : ''}${k}`);
    assertKnownKeys(v, where, path ? `${path}.${k}` : k);
  }
}

const PLACEHOLDER = /^(|replace[-_ ]?me.*|change[-_ ]?me.*|<[^>]*>|placeholder.*|example.*)$/i;

async function dockerUser(): Promise<number> {
  const text = await readFile(join(deployDir, 'Dockerfile'), 'utf8');
  const last = text.split(/^FROM\s/m).at(-1)!;
  const m = /^USER\s+(\d+)/m.exec(last);
  assert.ok(m, 'the runtime stage sets a numeric USER');
  return Number(m[1]);
}

// ---- the rendered manifests (both base and the production overlay) --------------

for (const [name, render] of Object.entries(renders)) {
  test(`${name}: the gateway runs non-root on a read-only root filesystem`, async () => {
    const { pod, c } = gateway(await render);
    const psc = pod.securityContext ?? {};
    const csc = c.securityContext ?? {};
    assert.equal(psc.runAsNonRoot ?? csc.runAsNonRoot, true, 'runAsNonRoot');
    const uid = csc.runAsUser ?? psc.runAsUser;
    assert.ok(uid !== undefined && uid !== 0, 'a non-zero runAsUser');
    assert.equal(uid, await dockerUser(), 'runAsUser is the image USER, so file ownership in the image matches');
    assert.equal(csc.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
    assert.equal(csc.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation');
    assert.ok(csc.capabilities?.drop?.includes('ALL'), 'all capabilities dropped');
    assert.equal(csc.capabilities?.add, undefined, 'no capability added back');
    assert.equal((csc.seccompProfile ?? psc.seccompProfile)?.type, 'RuntimeDefault', 'seccomp RuntimeDefault');
    assert.equal(pod.automountServiceAccountToken, false, 'no service account token in the pod');
    // The one writable place the image expects (TMPDIR=/tmp).
    const tmp = c.volumeMounts?.find((m) => m.mountPath === '/tmp');
    assert.ok(tmp && pod.volumes?.find((v) => v.name === tmp.name)?.emptyDir, '/tmp is an emptyDir');
  });

  test(`${name}: probes, resources and shutdown timing`, async () => {
    const { pod, c } = gateway(await render);
    assert.equal(c.livenessProbe?.httpGet?.path, '/healthz', 'liveness on /healthz');
    assert.equal(c.readinessProbe?.httpGet?.path, '/readyz', 'readiness on /readyz');
    assert.equal(containerPort(c, c.livenessProbe?.httpGet?.port), 8080, 'liveness probes the app port');
    assert.equal(containerPort(c, c.readinessProbe?.httpGet?.port), 8080, 'readiness probes the app port');
    for (const r of ['cpu', 'memory']) assert.ok(c.resources?.requests?.[r], `requests.${r}`);
    assert.ok(c.resources?.limits?.memory, 'a memory limit');
    assert.deepEqual(c.args, ['serve', '--config', '/etc/mcpgate/mcpgate.yaml']);
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    const pre = preStopSeconds(c);
    assert.ok(pre > 0, 'a preStop delay, so the endpoint is gone before the drain starts');
    assert.ok(grace >= pre + DRAIN_SECONDS, `grace ${grace}s must cover preStop ${pre}s + drain ${DRAIN_SECONDS}s`);
  });

  test(`${name}: Service and Ingress reach the gateway, SSE-safe`, async () => {
    const objs = await render;
    const { dep, c } = gateway(objs);
    const svc = only<Service>(objs, 'Service', 'mcpgate');
    assert.ok(matches(svc.spec.selector, dep.spec.template.metadata.labels), 'Service selects the gateway pods');
    const ingresses = all<Ingress>(objs, 'Ingress');
    const main = ingresses.find((i) => i.spec.rules.some((r) => r.http.paths.some((p) => p.path === '/')));
    assert.ok(main, 'an Ingress routes / to the gateway');
    const a = main.metadata.annotations ?? {};
    assert.equal(a['nginx.ingress.kubernetes.io/proxy-buffering'], 'off', 'response buffering off (SSE)');
    assert.equal(a['nginx.ingress.kubernetes.io/proxy-request-buffering'], 'off', 'request buffering off');
    for (const t of ['proxy-read-timeout', 'proxy-send-timeout']) {
      assert.ok(Number(a[`nginx.ingress.kubernetes.io/${t}`]) >= 3600, `${t} ≥ 3600 s, so idle streams stay open`);
    }
    assert.ok(main.spec.tls?.length, 'TLS on the public host');
    for (const ing of ingresses) {
      for (const p of ing.spec.rules.flatMap((r) => r.http.paths)) {
        assert.equal(p.backend.service.name, svc.metadata.name, `${ing.metadata.name} ${p.path} → the gateway Service`);
        const sp = svc.spec.ports.find((x) => x.name === p.backend.service.port.name || x.port === p.backend.service.port.number);
        assert.ok(sp, `${ing.metadata.name} ${p.path} names a Service port`);
        assert.equal(containerPort(c, sp.targetPort), 8080, 'the Service port reaches the app port');
      }
    }
    // /metrics shares the app port; it must not be public through the Ingress.
    const metrics = ingresses.find((i) => i.spec.rules.some((r) => r.http.paths.some((p) => p.path === '/metrics' && p.pathType === 'Exact')));
    assert.equal(metrics?.metadata.annotations?.['nginx.ingress.kubernetes.io/whitelist-source-range'], '127.0.0.1/32', '/metrics closed at the ingress');
    // The issuer must be the URL agents reach.
    const host = new URL(String((configOf(objs).server as Config).publicUrl)).host;
    assert.ok(main.spec.rules.some((r) => r.host === host), `the Ingress serves the publicUrl host ${host}`);
  });

  test(`${name}: PodDisruptionBudget and NetworkPolicy cover the gateway`, async () => {
    const objs = await render;
    const { dep } = gateway(objs);
    const pods = dep.spec.template.metadata.labels;
    const pdb = all<Pdb>(objs, 'PodDisruptionBudget').find((p) => matches(p.spec.selector.matchLabels, pods));
    assert.ok(pdb, 'a PDB selects the gateway pods');
    // At the smallest scale the gateway runs (the HPA's minReplicas when it owns the scale), a
    // drain must be able to evict a pod (or it blocks forever) and must leave one serving.
    const replicas = minReplicas(objs, dep);
    const { minAvailable, maxUnavailable } = pdb.spec;
    assert.ok((minAvailable === undefined) !== (maxUnavailable === undefined), 'exactly one of minAvailable and maxUnavailable');
    assert.ok(typeof (minAvailable ?? maxUnavailable) === 'number', 'an absolute number (a percentage rounds differently per scale)');
    const disruptable = minAvailable === undefined ? Number(maxUnavailable) : replicas - Number(minAvailable);
    assert.ok(disruptable >= 1, `at ${replicas} replicas the PDB lets a drain evict a pod`);
    assert.ok(replicas - disruptable >= 1, `at ${replicas} replicas the PDB keeps a pod serving`);
    const np = all<NetPol>(objs, 'NetworkPolicy').find((p) => matches(p.spec.podSelector.matchLabels, pods));
    assert.ok(np, 'a NetworkPolicy selects the gateway pods');
    assert.deepEqual([...np.spec.policyTypes].sort(), ['Egress', 'Ingress']);
    const ports = (rules: NetPolRule[] | undefined) => new Set((rules ?? []).flatMap((r) => (r.ports ?? []).map((p) => Number(p.port))));
    assert.ok(ports(np.spec.ingress).has(8080), 'ingress to 8080 allowed');
    for (const p of [53, 443, 6379]) assert.ok(ports(np.spec.egress).has(p), `egress to ${p} allowed`);
  });

  test(`${name}: no secret values are committed; config uses references that the pod provides`, async () => {
    const objs = await render;
    for (const s of all<SecretObj>(objs, 'Secret')) {
      for (const [k, v] of Object.entries(s.data ?? {})) {
        assert.match(Buffer.from(v, 'base64').toString('utf8'), PLACEHOLDER, `Secret ${s.metadata.name}.${k} holds a real-looking value`);
      }
      for (const [k, v] of Object.entries(s.stringData ?? {})) {
        assert.match(v, PLACEHOLDER, `Secret ${s.metadata.name}.${k} holds a real-looking value`);
      }
    }
    const cfg = configOf(objs);
    assertKnownKeys(cfg, 'mcpgate.yaml');
    assertSecretsAreReferences(cfg, 'mcpgate.yaml');
    const { dep, pod, c } = gateway(objs);
    if (minReplicas(objs, dep) > 1) {
      assert.equal((cfg.storage as Config).kind, 'valkey', 'several replicas need the shared Valkey store');
    }
    const env = new Set((c.env ?? []).map((e) => e.name));
    for (const e of c.env ?? []) {
      assert.ok(e.value === undefined || !/SECRET|PASSWORD|TOKEN|KEY/.test(e.name), `${e.name} comes from a Secret, not a literal`);
    }
    const refs = secretFields(cfg).map((f) => f.value).filter((v): v is string => typeof v === 'string');
    const signing = ((cfg.authServer as Config).signingKeys as string[]) ?? [];
    for (const ref of [...refs, ...signing]) {
      if (ref.startsWith('env:')) {
        assert.ok(env.has(ref.slice(4)), `the container sets ${ref.slice(4)} (${ref} in mcpgate.yaml)`);
      } else {
        assert.ok(fileIsMounted(ref.slice(5), c, pod), `${ref} is provided by a volume`);
      }
    }
  });

  test(`${name}: every Secret the workloads use is documented in deploy/README.md`, async () => {
    const objs = await render;
    const readme = await readFile(join(deployDir, 'README.md'), 'utf8');
    const names = new Set<string>();
    for (const w of [...all<Workload>(objs, 'Deployment'), ...all<Workload>(objs, 'StatefulSet')]) {
      const spec = w.spec.template.spec;
      for (const ct of spec.containers) for (const e of ct.env ?? []) if (e.valueFrom?.secretKeyRef) names.add(e.valueFrom.secretKeyRef.name);
      for (const v of spec.volumes ?? []) {
        if (v.secret) names.add(v.secret.secretName);
        for (const s of v.projected?.sources ?? []) if (s.secret) names.add(s.secret.name);
      }
    }
    for (const i of all<Ingress>(objs, 'Ingress')) for (const t of i.spec.tls ?? []) names.add(t.secretName);
    assert.ok(names.size > 0);
    for (const n of names) assert.ok(readme.includes(n), `deploy/README.md explains how to create Secret ${n}`);
  });
}

// Whether a file path in the config exists in the container: under a volume
// mount, and listed by the volume when it lists its items.
function fileIsMounted(path: string, c: Container, pod: PodSpec): boolean {
  const mount = (c.volumeMounts ?? [])
    .filter((m) => path.startsWith(`${m.mountPath}/`))
    .sort((x, y) => y.mountPath.length - x.mountPath.length)[0];
  const vol = mount && pod.volumes?.find((v) => v.name === mount.name);
  if (!mount || !vol) return false;
  const rel = path.slice(mount.mountPath.length + 1);
  const sources = vol.projected
    ? vol.projected.sources.map((s) => s.configMap ?? s.secret)
    : [vol.configMap ?? vol.secret];
  return sources.some((s) => s !== undefined && (s.items === undefined || s.items.some((it) => it.path === rel)));
}

// ---- production specifics ----------------------------------------------------------

test('production: at least three gateway replicas, scaled on CPU by an HPA that owns the replica count', async () => {
  const objs = await renders.production;
  const { dep, c } = gateway(objs);
  const hpa = hpaOf(objs);
  assert.ok(hpa, 'a HorizontalPodAutoscaler targets the mcpgate Deployment');
  assert.equal(hpa.apiVersion, 'autoscaling/v2');
  assert.equal(hpa.spec.scaleTargetRef.apiVersion, 'apps/v1');
  assert.equal(hpa.spec.minReplicas, 3);
  assert.ok(hpa.spec.maxReplicas > 3, 'room to scale out');
  const cpu = hpa.spec.metrics?.find((m) => m.type === 'Resource' && m.resource?.name === 'cpu');
  assert.equal(cpu?.resource?.target.type, 'Utilization');
  const target = cpu?.resource?.target.averageUtilization ?? 0;
  assert.ok(target > 0 && target <= 90, `a CPU utilization target with headroom: ${target}%`);
  assert.ok(c.resources?.requests?.cpu, 'utilization is relative to the cpu request, so the container needs one');
  assert.equal(dep.spec.replicas, undefined, 'no spec.replicas: every kubectl apply would reset the scale the HPA chose');
});

test('production: the bundled Valkey keeps its data on a PersistentVolumeClaim (append-only file)', async () => {
  const objs = await renders.production;
  const sts = only<Workload>(objs, 'StatefulSet', 'valkey');
  const v = sts.spec.template.spec.containers[0]!;
  const arg = (flag: string) => {
    const i = v.args?.indexOf(flag) ?? -1;
    return i < 0 ? undefined : v.args![i + 1];
  };
  assert.equal(arg('--appendonly'), 'yes', 'every write goes to the append-only file');
  assert.ok(['everysec', 'always'].includes(String(arg('--appendfsync'))), 'fsynced at least once a second');
  const dataDir = arg('--dir') ?? '/data';
  const mount = v.volumeMounts?.find((m) => m.mountPath === dataDir);
  assert.ok(mount, `the data directory ${dataDir} is a mounted volume`);
  const claim = sts.spec.volumeClaimTemplates?.find((t) => t.metadata.name === mount.name);
  const podVolume = sts.spec.template.spec.volumes?.find((vol) => vol.name === mount.name);
  assert.ok(claim ?? podVolume?.persistentVolumeClaim, `${mount.name} is a PersistentVolumeClaim, not an emptyDir that dies with the pod`);
  assert.equal(podVolume?.emptyDir, undefined);
  if (claim) {
    assert.ok(claim.spec.accessModes?.includes('ReadWriteOnce'));
    assert.ok(bytes(claim.spec.resources?.requests?.storage ?? '0') >= 2 * bytes(String(arg('--maxmemory'))), 'room for the AOF and its rewrite');
  }
});

test('production: a full Valkey evicts least recently used keys (all have a TTL) instead of refusing every login', async () => {
  const objs = await renders.production;
  const sts = only<Workload>(objs, 'StatefulSet', 'valkey');
  const v = sts.spec.template.spec.containers[0]!;
  const i = v.args?.indexOf('--maxmemory-policy') ?? -1;
  // noeviction refuses every write once full (no login for anyone); volatile-ttl evicts the
  // shortest-lived keys first (the pending logins in progress). Every mcpgate key has a TTL, so
  // volatile-lru drops what was used least recently: a flood's one-off writes, idle sessions.
  assert.equal(v.args?.[i + 1], 'volatile-lru');
  const maxmemory = bytes(String(v.args?.[(v.args?.indexOf('--maxmemory') ?? -2) + 1]));
  const limit = bytes(v.resources?.limits?.memory ?? '0');
  assert.ok(maxmemory > 0, 'a maxmemory, or the policy never applies (the pod is OOM-killed first)');
  assert.ok(limit >= 2 * maxmemory, `the memory limit (${limit}) leaves room for the AOF rewrite fork above maxmemory (${maxmemory})`);
  const readme = await readFile(join(deployDir, 'README.md'), 'utf8');
  assert.match(readme, /volatile-lru/, 'deploy/README.md explains the memory policy');
  assert.match(readme, /appendonly/, 'deploy/README.md explains the persistence');
});

test('production: the bundled Valkey, shared by every replica', async () => {
  const objs = await renders.production;
  const { dep, c } = gateway(objs);
  const sts = only<Workload>(objs, 'StatefulSet', 'valkey');
  const v = sts.spec.template.spec.containers[0]!;
  assert.match(v.image, /^valkey\/valkey:8/);
  assert.equal(sts.spec.template.spec.securityContext?.runAsNonRoot, true, 'Valkey runs non-root too');
  assert.equal(v.securityContext?.readOnlyRootFilesystem, true, 'Valkey has a read-only root filesystem');
  // One password, read by both sides from the same Secret key.
  const pw = (ct: Container) => ct.env?.find((e) => e.name === 'VALKEY_PASSWORD')?.valueFrom?.secretKeyRef;
  assert.ok(pw(v), 'Valkey reads its password from a Secret');
  assert.deepEqual(pw(v), pw(c), 'gateway and Valkey use the same Secret key');
  assert.ok(v.args?.includes('--requirepass'), 'Valkey requires the password');
  const url = new URL(String(((configOf(objs).storage as Config).valkey as Config).url));
  const svc = only<Service>(objs, 'Service', url.hostname);
  assert.ok(svc.spec.ports.some((p) => p.port === Number(url.port || 6379)), 'the config URL reaches the Valkey Service');
  assert.ok(matches(svc.spec.selector, sts.spec.template.metadata.labels));
  for (const o of objs) assert.equal(o.metadata.namespace, dep.metadata.namespace, `${o.kind} ${o.metadata.name} shares the gateway namespace`);
});

// ---- files outside the renders -------------------------------------------------------

async function yamlFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && /\.ya?ml$/.test(e.name)).map((e) => join(e.parentPath, e.name));
}

test('no committed manifest holds a Secret with real data', async () => {
  // Also catches a Secret file that no kustomization includes (yet).
  for (const file of await yamlFiles(kube)) {
    for (const o of parseStream(await readFile(file, 'utf8'), file)) {
      if (o.kind !== 'Secret') continue;
      const s = o as SecretObj;
      const values = [...Object.values(s.data ?? {}).map((v) => Buffer.from(v, 'base64').toString('utf8')), ...Object.values(s.stringData ?? {})];
      for (const v of values) assert.match(v, PLACEHOLDER, `${relative(repo, file)}: Secret ${s.metadata.name}`);
    }
  }
});

const EXAMPLES = ['keycloak', 'okta', 'entra-id', 'google', 'dex', 'auth0', 'github'];

test('every example config parses, uses known keys and only secret references', async () => {
  const dir = join(deployDir, 'examples');
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f));
  for (const idp of EXAMPLES) assert.ok(files.includes(`${idp}.yaml`), `deploy/examples/${idp}.yaml exists`);
  for (const f of files) {
    const docs = parseAllDocuments(await readFile(join(dir, f), 'utf8'));
    assert.equal(docs.length, 1, `${f}: one YAML document`);
    assert.deepEqual(docs[0]!.errors, [], `${f}: parses`);
    const cfg = docs[0]!.toJS() as Config;
    assertKnownKeys(cfg, f);
    assertSecretsAreReferences(cfg, f);
    const idp = cfg.idp as Config;
    if (idp.kind === 'oauth2') {
      // Plain OAuth 2.0: no issuer and no openid scope, every endpoint https.
      for (const key of ['authorizationEndpoint', 'tokenEndpoint', 'userinfoEndpoint']) assert.match(String(idp[key]), /^https:\/\//, `${f}: https ${key}`);
      continue;
    }
    assert.match(String(idp.issuer), /^https:\/\//, `${f}: https issuer`);
    assert.ok(Array.isArray(idp.scopes) && idp.scopes.includes('openid'), `${f}: openid scope`);
  }
});

test('examples follow each IdP’s documented shapes', async () => {
  const load = async (n: string) => (parse(await readFile(join(deployDir, 'examples', `${n}.yaml`), 'utf8')) as Config).idp as Config;
  const google = await load('google');
  assert.ok(!(google.scopes as string[]).includes('offline_access'), 'Google rejects offline_access');
  assert.deepEqual(google.authParams, { access_type: 'offline', prompt: 'consent' }, 'Google refresh tokens via access_type=offline');
  assert.match(String((await load('entra-id')).issuer), /^https:\/\/login\.microsoftonline\.com\/[^/]+\/v2\.0$/);
  const auth0 = await load('auth0');
  assert.match(String(auth0.issuer), /\/$/, 'Auth0 issuers end with a slash');
  assert.ok((auth0.authParams as Config).audience, 'Auth0 needs an audience for JWT access tokens');
  assert.match(String((await load('keycloak')).issuer), /\/realms\/[^/]+$/);
  assert.match(String((await load('okta')).issuer), /\/oauth2\/[^/]+$/, 'an Okta custom authorization server');
  const github = await load('github');
  assert.deepEqual(
    [github.kind, github.authorizationEndpoint, github.tokenEndpoint, github.userinfoEndpoint],
    ['oauth2', 'https://github.com/login/oauth/authorize', 'https://github.com/login/oauth/access_token', 'https://api.github.com/user'],
    'GitHub: plain OAuth 2.0 at github.com, identity from the user API',
  );
  assert.ok(['login', 'id'].includes(String(github.userClaim)), 'GitHub names users by login or id');
});

test('Dockerfile: multi-stage Node 24, non-root, port and stop signal', async () => {
  const text = await readFile(join(deployDir, 'Dockerfile'), 'utf8');
  const froms = [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!);
  assert.ok(froms.length >= 2, 'multi-stage');
  for (const f of froms) assert.match(f, /^(node:24-|gcr\.io\/distroless\/nodejs24)/, `Node 24 base image: ${f}`);
  const runtime = text.split(/^FROM\s/m).at(-1)!;
  assert.ok((await dockerUser()) >= 10000, 'a high uid, clear of host users');
  assert.match(runtime, /^EXPOSE\s+8080\b/m);
  assert.match(runtime, /^STOPSIGNAL\s+SIGTERM\b/m);
  // node_modules/.bin/node (the `node` devDependency) must not be what runs.
  assert.doesNotMatch(runtime, /node_modules\/\.bin\/node/);
  assert.match(runtime, /^ENTRYPOINT\s+\["\/usr\/local\/bin\/node",\s*"\/app\/dist\/cli\.js"\]/m, 'the image’s node runs dist/cli.js');
  assert.doesNotMatch(runtime, /^(CMD|ENTRYPOINT)\s+\["npm"/m, 'npm would swallow SIGTERM');
});
