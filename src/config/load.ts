import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { createConfigSchema, type Config } from './schema.ts';
import { processSecretSources, type SecretSources } from './secrets.ts';

/** Every problem found in a config file, each as `path: message`. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}

/** Environment variables that override config keys (DESIGN §8). */
const ENV_OVERRIDES: Array<[string, string[]]> = [
  ['MCPGATE_LISTEN', ['server', 'listen']],
  ['MCPGATE_PUBLIC_URL', ['server', 'publicUrl']],
  ['MCPGATE_LOG_LEVEL', ['server', 'logLevel']],
];

/**
 * Parses and validates YAML config text. Throws `ConfigError` listing every problem.
 * @param source a name for messages (usually the file path)
 */
export function parseConfig(text: string, source: string, sources: SecretSources = processSecretSources): Config {
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new ConfigError(source, document.errors.map((e) => `yaml: ${e.message.split('\n')[0]}`));
  }
  const raw: unknown = document.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(source, ['(root): must be a mapping with server: and upstreams:']);
  }
  applyEnvOverrides(raw as Record<string, unknown>, sources.env);
  const result = createConfigSchema(sources).safeParse(raw);
  if (!result.success) {
    throw new ConfigError(source, result.error.issues.map((issue) => `${formatPath(issue.path)}: ${issue.message}`));
  }
  return result.data;
}

/** Reads, parses and validates a config file. Throws `ConfigError`. */
export function loadConfigFile(path: string, sources: SecretSources = processSecretSources): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(path, [`(file): cannot read (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  return parseConfig(text, path, sources);
}

function applyEnvOverrides(raw: Record<string, unknown>, env: SecretSources['env']): void {
  for (const [name, [section, key]] of ENV_OVERRIDES.map(([n, p]) => [n, p] as const)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const target = (raw[section!] ??= {}) as Record<string, unknown>;
    if (typeof target === 'object' && target !== null) target[key!] = value;
  }
}

function formatPath(path: PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');
}
