import { resealSessionIndexes } from '../authserver/records/session-index-reseal.ts';
import { generateSigningKeyPem, generateStoreKey } from '../authserver/tokens/keys.ts';
import type { Config } from '../config/schema.ts';
import { formatResealReport, resealComplete, resealValues } from '../store/reseal.ts';
import { createSealer } from '../store/sealed.ts';
import { createValkeyStore } from '../store/valkey.ts';
import { createValkeyMaintenance } from '../store/valkey_maintenance.ts';
import { valkeyStoreOptions } from '../store/valkey_settings.ts';

/**
 * `mcpgate keys reseal`: every value sealed under an older key of `storage.encryptionKeys` is
 * sealed again under the first, in place and keeping its TTL, and every session index entry under
 * an older key is swapped for one under the first (the session record's copy with it). Exit 0
 * when every sealed value and index entry is now under the first key (the older ones can be
 * removed), 1 when some could not be opened or kept changing (rerun), or the store failed.
 */
export async function reseal(config: Config): Promise<number> {
  const valkey = config.storage.valkey;
  if (config.storage.kind !== 'valkey' || valkey === undefined) {
    process.stdout.write(
      'mcpgate keys reseal: storage.kind is memory: nothing is stored outside the gateway process, so there is nothing to reseal\n' +
        '(its values die with the process; after a restart everything is sealed under the first key).\n',
    );
    return 0;
  }
  const keys = config.storage.encryptionKeys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') }));
  if (keys.length === 0) {
    process.stderr.write('mcpgate keys reseal: storage.encryptionKeys is empty: nothing is sealed, so nothing can be resealed\n');
    return 1;
  }
  let source;
  try {
    source = await createValkeyMaintenance(valkeyStoreOptions(valkey));
  } catch (error) {
    process.stderr.write(`mcpgate keys reseal: ${(error as Error).message}\n`);
    return 1;
  }
  const store = createValkeyStore(valkeyStoreOptions(valkey));
  try {
    process.stdout.write(`mcpgate keys reseal: sealing every value and session index entry under key "${keys[0]!.id}" (keys under prefix "${valkey.keyPrefix}")\n`);
    const values = await resealValues({ source, keys });
    // Then the index entries: each swap rewrites its session record (already resealed above) to name the new entries.
    const indexes = await resealSessionIndexes({ source, store, sealer: createSealer({ keys }), sealingKeyId: keys[0]!.id });
    const report = { ...values, indexes };
    process.stdout.write(formatResealReport(report));
    if (report.unreadable > 0) {
      process.stderr.write(
        `mcpgate keys reseal: ${report.unreadable} value${report.unreadable === 1 ? '' : 's'} could not be opened by any configured key; ` +
          'they stay as they are (add the key they were sealed with back to storage.encryptionKeys, or let them expire)\n',
      );
    }
    if (indexes.unreadable > 0) {
      process.stderr.write(
        `mcpgate keys reseal: ${indexes.unreadable} session index entr${indexes.unreadable === 1 ? 'y' : 'ies'} could not be opened by any configured key; ` +
          'they stay as they are (listing sessions drops them: add the key they were sealed with back to storage.encryptionKeys to keep them)\n',
      );
    }
    if (report.changed > 0 || indexes.changed > 0) {
      process.stderr.write(`mcpgate keys reseal: ${report.changed} value(s) and ${indexes.changed} session(s) changed during the run; run it again\n`);
    }
    if (!resealComplete(report)) return 1;
    process.stdout.write(`done: every sealed value and session index entry is under "${report.sealingKeyId}"; the other keys can be removed from storage.encryptionKeys\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`mcpgate keys reseal: ${(error as Error).message} (every step is safe to repeat: run it again)\n`);
    return 1;
  } finally {
    await source.close();
    await store.close().catch(() => undefined);
  }
}

/** `mcpgate keys generate`: key material for `authServer.signingKeys` and `storage.encryptionKeys`. */
export function keys(subcommand: string | undefined, alg: string): number {
  if (subcommand !== 'generate') {
    process.stderr.write('usage: mcpgate keys generate [--alg ES256|RS256|EdDSA] | mcpgate keys reseal --config FILE\n');
    return 2;
  }
  if (alg !== 'ES256' && alg !== 'RS256' && alg !== 'EdDSA') {
    process.stderr.write(`mcpgate keys generate: --alg must be ES256, RS256 or EdDSA, not "${alg}"\n`);
    return 2;
  }
  process.stdout.write(
    `# Token-signing key (${alg}). Save the PEM block as a file readable only by mcpgate, e.g.\n` +
      '# /etc/mcpgate/keys/signing.pem, and list it first: authServer.signingKeys: ["file:/etc/mcpgate/keys/signing.pem"]\n' +
      generateSigningKeyPem(alg) +
      '\n# Store encryption key (32 bytes, base64). Keep it in a secret, e.g. the variable MCPGATE_STORE_KEY, and use\n' +
      '# storage.encryptionKeys: [{ id: "k1", key: "env:MCPGATE_STORE_KEY" }]\n' +
      `${generateStoreKey()}\n`,
  );
  return 0;
}
