import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from './config-error.ts';
import { closestKey } from './did-you-mean.ts';
import { createConfigSchema, type Config, type ConfigSchemaOptions } from './schema.ts';
import { processSecretSources, type SecretSources } from './secrets.ts';

export { ConfigError };

/**
 * Environment variables that override config keys. (`MCPGATE_CONFIG`, read by the CLI, names
 * the file itself.)
 */
export const ENV_OVERRIDES: ReadonlyArray<readonly [string, readonly [string, string]]> = [
  ['MCPGATE_LISTEN', ['server', 'listen']],
  ['MCPGATE_PUBLIC_URL', ['server', 'publicUrl']],
  ['MCPGATE_LOG_LEVEL', ['server', 'logLevel']],
];

/**
 * Parses and validates YAML config text. Throws `ConfigError` listing every problem.
 * @param source a name for messages (usually the file path)
 */
export function parseConfig(text: string, source: string, sources: SecretSources = processSecretSources, options: ConfigSchemaOptions = {}): Config {
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new ConfigError(source, document.errors.map((e) => `yaml: ${e.message.split('\n')[0]}`));
  }
  const raw: unknown = document.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(source, ['(root): must be a mapping with server: and upstreams:']);
  }
  const overridden = applyEnvOverrides(raw as Record<string, unknown>, sources.env);
  const schema = createConfigSchema(sources, options);
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(source, result.error.issues.flatMap((issue) => describeIssue(issue, { schema, raw, overridden })));
  }
  return result.data;
}

/** Reads, parses and validates a config file. Throws `ConfigError`. */
export function loadConfigFile(path: string, sources: SecretSources = processSecretSources, options: ConfigSchemaOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(path, [`(file): cannot read (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  return parseConfig(text, path, sources, options);
}

/** Applies the overrides that are set; returns which variable set which path (`server.logLevel` → `MCPGATE_LOG_LEVEL`). */
function applyEnvOverrides(raw: Record<string, unknown>, env: SecretSources['env']): Map<string, string> {
  const applied = new Map<string, string>();
  for (const [name, [section, key]] of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const target = (raw[section] ??= {}) as Record<string, unknown>;
    if (typeof target === 'object' && target !== null) {
      target[key] = value;
      applied.set(`${section}.${key}`, name);
    }
  }
  return applied;
}

/**
 * One problem as `path: message`. A value that came from an environment override is blamed on
 * the variable (the file may not even contain the key); an unknown key gets the closest known
 * key of its object as a suggestion.
 */
function describeIssue(issue: z.core.$ZodIssue, context: { schema: z.ZodType; raw: unknown; overridden: Map<string, string> }): string[] {
  const path = formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(context.schema, issue.path, context.raw);
    return issue.keys.map((key) => {
      const suggestion = closestKey(key, known.filter((k) => !(k in ((valueAt(context.raw, issue.path) as object | undefined) ?? {}))));
      return `${path}: unknown key "${key}"${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
    });
  }
  const variable = context.overridden.get(path);
  return [variable === undefined ? `${path}: ${issue.message}` : `${path} (from the environment variable ${variable}, not the file): ${issue.message}`];
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let value = raw;
  for (const part of path) value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[part] : undefined;
  return value !== null && typeof value === 'object' ? value : undefined;
}

/** The keys the schema accepts for the object at `path` (for a discriminated union, the variant the raw value names). */
function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[], raw: unknown): string[] {
  let node = unwrap(schema, raw);
  let value = raw;
  for (const part of path) {
    value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[part] : undefined;
    const def = node?._zod.def as { type: string; shape?: Record<string, z.ZodType>; element?: z.ZodType } | undefined;
    const next = def?.type === 'object' && typeof part === 'string' ? def.shape?.[part] : def?.type === 'array' ? def.element : undefined;
    node = next && unwrap(next, value);
  }
  const def = node?._zod.def as { type: string; shape?: Record<string, unknown> } | undefined;
  return def?.type === 'object' ? Object.keys(def.shape ?? {}) : [];
}

/** Looks through defaults, optionals, transforms and unions to the object (or array) schema that applies to `value`. */
function unwrap(schema: z.ZodType, value: unknown): z.ZodType | undefined {
  let node: z.ZodType | undefined = schema;
  for (let depth = 0; node && depth < 10; depth++) {
    const def = node._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; options?: z.ZodType[]; discriminator?: string };
    if (def.type === 'object' || def.type === 'array') return node;
    if (def.type === 'default' || def.type === 'optional' || def.type === 'nullable') node = def.innerType;
    else if (def.type === 'pipe') node = def.in;
    else if (def.type === 'union' && def.options) node = pickVariant(def.options, def.discriminator, value);
    else return undefined;
  }
  return undefined;
}

/** The union member whose discriminator literal matches the value's (e.g. `auth.mode`), else the first object member. */
function pickVariant(options: z.ZodType[], discriminator: string | undefined, value: unknown): z.ZodType | undefined {
  const wanted = discriminator && value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[discriminator] : undefined;
  const match = options.find((option) => {
    const shape = (option._zod.def as { shape?: Record<string, z.ZodType> }).shape;
    const literal = discriminator ? (shape?.[discriminator]?._zod.def as { values?: unknown[] } | undefined) : undefined;
    return literal?.values?.includes(wanted) ?? false;
  });
  return match ?? options[0];
}

function formatPath(path: PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');
}
