import { readFileSync } from 'node:fs';

/** Where secret references are resolved from; injected so tests and `check` stay side-effect free. */
export interface SecretSources {
  env: Record<string, string | undefined>;
  readFile(path: string): string;
}

/** The process environment and the real file system. */
export const processSecretSources: SecretSources = {
  env: process.env,
  readFile: (path) => readFileSync(path, 'utf8'),
};

/** True for `env:NAME` and `file:/path` references, the only way config may name a secret. */
export function isSecretRef(value: string): boolean {
  return /^env:[A-Za-z_][A-Za-z0-9_]*$/.test(value) || /^file:.+/.test(value);
}

/**
 * Resolves an `env:NAME` or `file:/path` reference. Files are read whole and a single trailing
 * newline is dropped (Kubernetes secret volumes and `echo` both add one).
 * Throws an Error whose message names the reference but never the secret.
 */
export function resolveSecretRef(ref: string, sources: SecretSources): string {
  if (ref.startsWith('env:')) {
    const name = ref.slice(4);
    const value = sources.env[name];
    if (value === undefined || value === '') throw new Error(`environment variable ${name} is not set`);
    return value;
  }
  if (ref.startsWith('file:')) {
    const path = ref.slice(5);
    let text: string;
    try {
      text = sources.readFile(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new Error(`cannot read ${path} (${code})`);
    }
    text = text.replace(/\r?\n$/, '');
    if (text === '') throw new Error(`${path} is empty`);
    return text;
  }
  throw new Error('must be a secret reference: env:NAME or file:/path');
}
