/**
 * Modules loaded on first use, so what a configuration never runs is never loaded: a gateway
 * without `idp:` skips the login (the authorization server's endpoints, openid-client) and the
 * credential modes none of its upstreams has (jose with token exchange). In mode none that is
 * about 6 MB less resident memory at idle (bench/README.md).
 */
import { createRequire } from 'node:module';

const requireHere = createRequire(import.meta.url);
/** tsc rewrites `.ts` to `.js` in imports, not in a string given to require: run from the sources or compiled. */
const EXTENSION = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

/**
 * Loads a module of `src/` synchronously, by its path relative to `src/app/` without the
 * extension (require of an ES module: none of ours awaits at its top level). Give its type as
 * `typeof X` of an `import type * as X` of the same module, so the import graph
 * (test/structure/imports.test.ts) still sees the edge.
 */
export function loadModule<T>(path: string): T {
  return requireHere(`${path}${EXTENSION}`) as T;
}
