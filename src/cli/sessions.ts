/**
 * `mcpgate sessions list [--user U]` and `mcpgate sessions revoke --user U | --session ID`:
 * operators' control of login sessions, against the configured Valkey store while the gateway
 * serves. Revoking goes through the gateway's own session-ending path: the session record goes
 * first, and every replica checks it on every MCP request (no process caches it), so their tokens
 * are refused from the next request on; then each upstream grant of the session is forgotten and
 * revoked at its authorization server (RFC 7009). Session ids are printed cut to 8 characters,
 * and `--session` takes such a prefix.
 */
import { parseArgs } from 'node:util';
import type { SessionRecord } from '../authserver/records/records.ts';
import type { Config } from '../config/schema.ts';
import { openOperatorContext, OperatorStoreError, type OperatorContext } from './operator-context.ts';

/** Where a command writes. */
export interface CommandOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

export const SESSIONS_USAGE = `usage: mcpgate sessions list [--user USER] --config FILE
       mcpgate sessions revoke (--user USER | --session ID) --config FILE`;

/** Shortest `--session` prefix accepted: what `sessions list` prints. */
const MIN_PREFIX = 8;

/**
 * Runs `mcpgate sessions …` (argv after `sessions`). `loadConfig` reads `--config` (or
 * `MCPGATE_CONFIG`) and prints its problems itself, returning undefined when invalid.
 * Exit codes: 0 done, 1 failed (store, nothing found to revoke), 2 usage.
 */
export async function sessionsCommand(argv: string[], loadConfig: (path: string) => Config | undefined, out: CommandOutput): Promise<number> {
  let values: { config?: string; user?: string; session?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { config: { type: 'string', short: 'c' }, user: { type: 'string' }, session: { type: 'string' } },
    }));
  } catch (error) {
    out.stderr(`mcpgate sessions: ${(error as Error).message}\n${SESSIONS_USAGE}\n`);
    return 2;
  }
  const [action, ...extra] = positionals;
  if ((action !== 'list' && action !== 'revoke') || extra.length > 0) {
    out.stderr(`${SESSIONS_USAGE}\n`);
    return 2;
  }
  if (action === 'list' && values.session !== undefined) {
    out.stderr(`mcpgate sessions list: --session is for revoke\n${SESSIONS_USAGE}\n`);
    return 2;
  }
  if (action === 'revoke' && (values.user === undefined) === (values.session === undefined)) {
    out.stderr(`mcpgate sessions revoke: give exactly one of --user and --session\n${SESSIONS_USAGE}\n`);
    return 2;
  }
  if (values.session !== undefined && values.session.length < MIN_PREFIX) {
    out.stderr(`mcpgate sessions revoke: --session needs at least ${MIN_PREFIX} characters of the session id (as sessions list prints it)\n`);
    return 2;
  }
  const path = values.config ?? process.env.MCPGATE_CONFIG;
  if (!path) {
    out.stderr(`mcpgate sessions ${action}: --config FILE is required\n`);
    return 2;
  }
  const config = loadConfig(path);
  if (config === undefined) return 1;
  let context: OperatorContext;
  try {
    context = openOperatorContext(config);
  } catch (error) {
    if (!(error instanceof OperatorStoreError)) throw error;
    out.stderr(`mcpgate sessions ${action}: ${error.message}\n`);
    return 1;
  }
  try {
    return action === 'list' ? await list(context, values.user, out) : await revoke(context, { user: values.user, session: values.session }, out);
  } catch (error) {
    out.stderr(`mcpgate sessions ${action}: ${(error as Error).message}\n`);
    return 1;
  } finally {
    await context.close();
  }
}

/** The live sessions of a user, or of everyone, oldest first. */
async function sessionsOf(context: OperatorContext, user: string | undefined): Promise<SessionRecord[]> {
  const { sessions } = context.authStores;
  const ids = user === undefined ? await sessions.listAll() : await sessions.listForUser(user);
  const found: SessionRecord[] = [];
  for (const id of ids) {
    const session = await sessions.get(id);
    // A user's index can hold a sid whose record expired; and a record is checked for its user.
    if (session && (user === undefined || session.subject === user)) found.push(session);
  }
  return found.sort((a, b) => a.createdAt - b.createdAt || a.sessionId.localeCompare(b.sessionId));
}

async function list(context: OperatorContext, user: string | undefined, out: CommandOutput): Promise<number> {
  const found = await sessionsOf(context, user);
  const rows = found.map((s) => [printable(s.subject), s.sessionId.slice(0, MIN_PREFIX), printable(s.clientId), iso(s.createdAt), iso(s.expiresAt)]);
  out.stdout(table(['USER', 'SESSION', 'CLIENT', 'CREATED', 'EXPIRES'], rows));
  out.stdout(`${plural(found.length, 'session')}${user === undefined ? '' : ` of ${user}`}\n`);
  return 0;
}

async function revoke(context: OperatorContext, target: { user?: string; session?: string }, out: CommandOutput): Promise<number> {
  let chosen: SessionRecord[];
  let whose: string;
  if (target.user !== undefined) {
    chosen = await sessionsOf(context, target.user);
    whose = `of ${target.user}`;
  } else {
    const prefix = target.session!;
    chosen = (await sessionsOf(context, undefined)).filter((s) => s.sessionId.startsWith(prefix));
    whose = `matching ${prefix.slice(0, MIN_PREFIX)}`;
    if (chosen.length > 1) {
      out.stderr(`mcpgate sessions revoke: ${chosen.length} sessions start with ${prefix}; give more of the id\n`);
      return 1;
    }
  }
  if (chosen.length === 0) {
    out.stderr(`mcpgate sessions revoke: no live session ${whose}\n`);
    return 1;
  }
  let forgotten = 0;
  let revoked = 0;
  for (const session of chosen) {
    const counts = await context.endSession(session.sessionId);
    forgotten += counts.forgotten;
    revoked += counts.revoked;
    out.stdout(`ended ${session.sessionId.slice(0, MIN_PREFIX)} (user ${printable(session.subject)}, client ${printable(session.clientId)}): ${plural(counts.forgotten, 'upstream grant')}, ${counts.revoked} revoked at the upstream\n`);
  }
  out.stdout(
    `revoked ${plural(chosen.length, 'session')} ${whose}; ${plural(forgotten, 'upstream grant')} forgotten, ${revoked} revoked at ${revoked === 1 ? 'its' : 'their'} authorization server${revoked === 1 ? '' : 's'}\n`,
  );
  if (revoked < forgotten) {
    out.stdout(`${forgotten - revoked} grant${forgotten - revoked === 1 ? '' : 's'} could not be revoked upstream (no revocation endpoint, or it failed): they stay valid there until they expire, but the gateway no longer holds them\n`);
  }
  return 0;
}

/** An IdP's or a client's text on an operator's terminal: no control characters (escape sequences). */
function printable(text: string): string {
  let out = '';
  for (const ch of text) out += ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f ? '?' : ch;
  return out;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Left-aligned columns separated by two spaces. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}
